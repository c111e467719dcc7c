/**
 * The pipelined SOCKS5 CONNECT (daemon/tor/socks5.ts): against a strict local SOCKS server that
 * answers nothing until the whole request is there (a client waiting for the method reply would
 * hang), and against the private network's real Tor client (it takes the three messages from one
 * write, and keeps the stream under the credentials given, i.e. on that isolation class).
 */
import net from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTempDir } from '../support/netns.js';
import { TorControl, type ControlEvent } from '../support/tor-control.js';
import { failureOf } from '../../daemon/egress/tor.js';
import { connectSocks } from '../../daemon/tor/socks-endpoint.js';
import { SocksResolveError, socksResolve } from '../../daemon/tor/socks-resolve.js';
import { ConnectReplyParser, Socks5Error, connectRequest, socks5Connect } from '../../daemon/tor/socks5.js';
import { privateTor, torUpstream } from './context.js';

const AUTH = { user: 'mvnet-vmx-0', pass: 'secret-0' };

/** What the strict server got, and what it answers once the full request is in. */
interface Strict {
  path: string;
  server: net.Server;
  got: Buffer[];
}

/** A SOCKS server that stays silent until it holds `expect` bytes, then writes `answer` in one go. */
function strictServer(expectLen: number, answer: Buffer): Promise<Strict> {
  const path = join(makeTempDir('socks5'), 's');
  const got: Buffer[] = [];
  const server = net.createServer((c) => {
    let n = 0;
    c.on('data', (d: Buffer) => {
      got.push(d);
      n += d.length;
      if (n === expectLen) c.write(answer);
    });
    c.on('error', () => {});
  });
  return new Promise((resolve) => server.listen(path, () => resolve({ path, server, got })));
}

const OK_V4 = Buffer.from([5, 2, 1, 0, 5, 0, 0, 1, 127, 0, 0, 1, 0x1f, 0x90]);

describe('pipelined SOCKS5 CONNECT (local server)', () => {
  const servers: net.Server[] = [];
  afterAll(() => {
    for (const s of servers) s.close();
  });

  it('sends greeting, auth and CONNECT before any reply, and hands over bytes that came with the reply', async () => {
    const req = connectRequest(AUTH, '198.51.100.80', 80);
    const s = await strictServer(req.length, Buffer.concat([OK_V4, Buffer.from('early')]));
    servers.push(s.server);
    const sock = await connectSocks({ path: s.path }, 2_000);
    await socks5Connect(sock, AUTH, '198.51.100.80', 80, 2_000);
    expect(Buffer.concat(s.got)).toEqual(req);
    // The socket comes back paused with the early bytes unshifted: nothing is lost before the reader attaches.
    expect(sock.isPaused()).toBe(true);
    const first = new Promise<Buffer>((resolve) => sock.once('data', resolve));
    sock.resume();
    expect((await first).toString()).toBe('early');
    sock.destroy();
  });

  it('turns refusals into reply codes, and reply codes into what the VM sees', async () => {
    const req = connectRequest(AUTH, '198.51.100.80', 80);
    for (const [rep, failure] of [
      [5, 'refused'],
      [2, 'refused'],
      [4, 'timeout'],
      [6, 'timeout'],
    ] as const) {
      const s = await strictServer(req.length, Buffer.from([5, 2, 1, 0, 5, rep, 0, 1, 0, 0, 0, 0, 0, 0]));
      servers.push(s.server);
      const sock = await connectSocks({ path: s.path }, 2_000);
      const err = await socks5Connect(sock, AUTH, '198.51.100.80', 80, 2_000).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(Socks5Error);
      expect((err as Socks5Error).reply).toBe(rep);
      expect(failureOf(rep)).toBe(failure);
      sock.destroy();
    }
    // Credentials refused by the server: an error before any CONNECT reply.
    const s = await strictServer(req.length, Buffer.from([5, 2, 1, 1]));
    servers.push(s.server);
    const sock = await connectSocks({ path: s.path }, 2_000);
    await expect(socks5Connect(sock, AUTH, '198.51.100.80', 80, 2_000)).rejects.toThrow(/authentication failed/);
    sock.destroy();
    // An auth reply that is not RFC 1929's (version 1) is refused, not read as success.
    const bad = await strictServer(req.length, Buffer.from([5, 2, 5, 0, 5, 0, 0, 1, 0, 0, 0, 0, 0, 0]));
    servers.push(bad.server);
    const sock2 = await connectSocks({ path: bad.path }, 2_000);
    await expect(socks5Connect(sock2, AUTH, '198.51.100.80', 80, 2_000)).rejects.toThrow(/bad SOCKS auth reply version 5/);
    sock2.destroy();
  });

  it('rejects when the server closes mid-handshake or never answers', async () => {
    const path = join(makeTempDir('socks5'), 's');
    const server = net.createServer((c) => c.once('data', () => c.end()));
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(path, resolve));
    const a = await connectSocks({ path }, 2_000);
    await expect(socks5Connect(a, AUTH, '10.0.0.1', 1, 2_000)).rejects.toThrow(/closed during the handshake/);
    a.destroy();
    const silent = await strictServer(1 << 20, Buffer.alloc(0));
    servers.push(silent.server);
    const b = await connectSocks({ path: silent.path }, 2_000);
    await expect(socks5Connect(b, AUTH, '10.0.0.1', 1, 100)).rejects.toThrow(/timed out/);
    b.destroy();
  });

  it('encodes IPv4, IPv6 (also with an IPv4 tail) and names', () => {
    const tail = (host: string): Buffer => {
      const r = connectRequest({ user: 'u', pass: 'p' }, host, 0x1234);
      return r.subarray(3 + 2 + 1 + 1 + 1 + 3);
    };
    expect(tail('10.1.2.3')).toEqual(Buffer.from([1, 10, 1, 2, 3, 0x12, 0x34]));
    expect(tail('2001:db8::1')).toEqual(Buffer.from([4, 0x20, 0x01, 0x0d, 0xb8, ...new Array<number>(11).fill(0), 1, 0x12, 0x34]));
    expect(tail('::ffff:1.2.3.4')).toEqual(Buffer.from([4, ...new Array<number>(10).fill(0), 0xff, 0xff, 1, 2, 3, 4, 0x12, 0x34]));
    expect(tail('fe80::')).toEqual(Buffer.from([4, 0xfe, 0x80, ...new Array<number>(14).fill(0), 0x12, 0x34]));
    expect(tail('abc.onion')).toEqual(Buffer.concat([Buffer.from([3, 9]), Buffer.from('abc.onion'), Buffer.from([0x12, 0x34])]));
    expect(() => connectRequest({ user: '', pass: 'p' }, '10.0.0.1', 1)).toThrow(Socks5Error);
  });

  it("accepts Tor's answer to a pipelined request: the auth reply without the method choice before it", async () => {
    const req = connectRequest(AUTH, '198.51.100.80', 80);
    const s = await strictServer(req.length, OK_V4.subarray(2));
    servers.push(s.server);
    const sock = await connectSocks({ path: s.path }, 2_000);
    await socks5Connect(sock, AUTH, '198.51.100.80', 80, 2_000);
    sock.destroy();
    // A method refusal (0xff) is still one.
    const r = await strictServer(req.length, Buffer.from([5, 0xff]));
    servers.push(r.server);
    const sock2 = await connectSocks({ path: r.path }, 2_000);
    await expect(socks5Connect(sock2, AUTH, '198.51.100.80', 80, 2_000)).rejects.toThrow(/refused username\/password/);
    sock2.destroy();
  });

  it('parses replies split at every byte, and domain-typed bound addresses', () => {
    const reply = Buffer.concat([Buffer.from([5, 2, 1, 0, 5, 0, 0, 3, 4]), Buffer.from('host'), Buffer.from([0, 80]), Buffer.from('xy')]);
    const p = new ConnectReplyParser();
    let rest: Buffer | null = null;
    for (let i = 0; i < reply.length && rest === null; i++) rest = p.push(reply.subarray(i, i + 1));
    // Byte by byte, the reply completes exactly at its last byte: nothing after it yet.
    expect(rest).toEqual(Buffer.alloc(0));
    const q = new ConnectReplyParser();
    expect(q.push(reply)?.toString()).toBe('xy');
  });
});

describe('pipelined SOCKS5 CONNECT (private Tor network)', () => {
  const tor = privateTor();
  const up = torUpstream();
  let ctl: TorControl;
  const events: ControlEvent[] = [];

  beforeAll(async () => {
    ctl = await TorControl.open(tor.client.controlPath, tor.client.cookiePath);
    ctl.onEvent((e) => events.push(e));
    await ctl.setEvents(['STREAM']);
  });
  afterAll(() => ctl.close());

  const get = async (auth: { user: string; pass: string }, host: string): Promise<string> => {
    const sock = await connectSocks({ path: tor.client.socksPath }, 10_000);
    await socks5Connect(sock, auth, host, up.httpPort, 30_000);
    const body: Buffer[] = [];
    const ended = new Promise<void>((resolve, reject) => {
      sock.on('data', (d: Buffer) => body.push(d));
      sock.on('end', resolve);
      sock.on('error', reject);
    });
    sock.resume();
    sock.write(`GET / HTTP/1.0\r\nHost: ${host}\r\n\r\n`);
    await ended;
    sock.destroy();
    return Buffer.concat(body).toString();
  };

  it('Tor takes greeting, auth and CONNECT from one write, by address and by name, under the credentials given', async () => {
    const auth = { user: `mvnet-pipelined-${process.pid}`, pass: 'p-0' };
    expect(await get(auth, up.address)).toContain(up.hello);
    expect(await get(auth, up.name)).toContain(up.hello);
    const ours = events.filter((e) => e.words[1] === 'SUCCEEDED' && (e.lines[0] ?? '').includes(`SOCKS_USERNAME="${auth.user}"`));
    expect(ours.length).toBe(2);
    // Same credentials, same isolation class: both streams rode one circuit.
    expect(new Set(ours.map((e) => e.words[2])).size).toBe(1);
  });

  it("Tor's refusal comes back as its reply code", async () => {
    const sock = await connectSocks({ path: tor.client.socksPath }, 10_000);
    // Port 1 on the upstream: closed, the exit reports the connection refused (or its policy does).
    const err = await socks5Connect(sock, AUTH, up.address, 1, 30_000).catch((e: unknown) => e);
    sock.destroy();
    expect(err).toBeInstanceOf(Socks5Error);
    expect((err as Socks5Error).reply).toBeGreaterThan(0);
  });

  it('RESOLVE goes the same way: a known name gives its address, an unknown one reply 4 (NXDOMAIN)', async () => {
    const auth = { user: `mvnet-resolve-${process.pid}`, pass: 'p-0' };
    const ep = { path: tor.client.socksPath };
    const addr = await socksResolve(ep, auth, up.name, 30_000);
    expect([...addr].join('.')).toBe(up.address);
    const err = await socksResolve(ep, auth, 'nosuchname.upstream.test', 30_000).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SocksResolveError);
    expect((err as SocksResolveError).reply).toBe(4);
  });
});
