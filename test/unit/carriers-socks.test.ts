/**
 * connectSocks against a tiny SOCKS5 server on 127.0.0.1 (and on a unix socket, as the embedded
 * Tor's SOCKS port is): the name goes to the proxy as a domain name, never resolved here, with the
 * link's username/password (Tor's stream isolation); the stream then carries framed messages.
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { connectSocks } from '../../daemon/carriers/connect.js';
import { dialStream, listenStream } from '../../daemon/carriers/stream.js';
import type { Carrier } from '../../daemon/carriers/types.js';
import { Inbox, log, numbered } from './carriers-util.js';

const ONION = 'duckduckgogg42xjoc72x3sjasowoarfbgcmvfimaftt6twagswzczad.onion';

interface Request {
  methods: number[];
  user: string;
  pass: string;
  atyp: number;
  host: string;
  port: number;
}

/** Reads exact byte counts from a socket's 'data' events. */
function reader(sock: net.Socket): { read(n: number): Promise<Buffer>; rest(): Buffer; stop(): void } {
  let buf = Buffer.alloc(0);
  let want: { n: number; resolve: (b: Buffer) => void } | null = null;
  const take = (): void => {
    if (want !== null && buf.length >= want.n) {
      const w = want;
      want = null;
      const out = buf.subarray(0, w.n);
      buf = buf.subarray(w.n);
      w.resolve(out);
    }
  };
  const onData = (c: Buffer): void => {
    buf = Buffer.concat([buf, c]);
    take();
  };
  sock.on('data', onData);
  return {
    read: (n) =>
      new Promise((resolve) => {
        want = { n, resolve };
        take();
      }),
    rest: () => buf,
    stop: () => {
      sock.off('data', onData);
    },
  };
}

/** A SOCKS5 server (RFC 1928 CONNECT, RFC 1929 username/password) that sends every stream to `target`, or refuses. */
class TinySocks {
  readonly requests: Request[] = [];
  mode: 'forward' | 'refuse' | 'silent' = 'forward';
  readonly server = net.createServer((s) => void this.serve(s).catch(() => s.destroy()));
  private readonly open = new Set<net.Socket>();

  constructor(private readonly target: () => net.NetConnectOpts) {}

  private async serve(s: net.Socket): Promise<void> {
    this.open.add(s);
    s.on('close', () => this.open.delete(s));
    s.on('error', () => {});
    if (this.mode === 'silent') return;
    const r = reader(s);
    const [ver, nMethods] = await r.read(2);
    if (ver !== 5) throw new Error('not SOCKS5');
    const methods = [...(await r.read(nMethods!))];
    if (!methods.includes(2)) {
      s.end(Buffer.of(5, 0xff));
      return;
    }
    s.write(Buffer.of(5, 2));
    const [, ulen] = await r.read(2);
    const user = (await r.read(ulen!)).toString();
    const [plen] = await r.read(1);
    const pass = (await r.read(plen!)).toString();
    s.write(Buffer.of(1, 0));
    const [, cmd, , atyp] = await r.read(4);
    if (cmd !== 1) throw new Error('not CONNECT');
    let host: string;
    if (atyp === 3) host = (await r.read((await r.read(1))[0]!)).toString();
    else if (atyp === 1) host = [...(await r.read(4))].join('.');
    else host = (await r.read(16)).toString('hex');
    const port = (await r.read(2)).readUInt16BE(0);
    this.requests.push({ methods, user, pass, atyp: atyp!, host, port });
    if (this.mode === 'refuse') {
      s.end(Buffer.of(5, 5, 0, 1, 0, 0, 0, 0, 0, 0));
      return;
    }
    const up = net.createConnection(this.target());
    this.open.add(up);
    up.on('close', () => this.open.delete(up));
    up.on('error', () => s.destroy());
    await new Promise<void>((resolve) => up.once('connect', () => resolve()));
    r.stop();
    const early = r.rest();
    s.write(Buffer.of(5, 0, 0, 1, 127, 0, 0, 1, 0, 9));
    if (early.length > 0) up.write(early);
    s.pipe(up);
    up.pipe(s);
  }

  close(): Promise<void> {
    for (const s of this.open) s.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

const open: Carrier[] = [];
let socks: TinySocks[] = [];
let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mvnet-socks-'));
});
afterEach(async () => {
  await Promise.all(open.splice(0).map((c) => c.close()));
  await Promise.all(socks.map((s) => s.close()));
  socks = [];
  fs.rmSync(dir, { recursive: true, force: true });
});

async function startSocks(listen: { port: 0; host: '127.0.0.1' } | { path: string }, target: () => net.NetConnectOpts): Promise<TinySocks> {
  const t = new TinySocks(target);
  socks.push(t);
  await new Promise<void>((resolve) => t.server.listen(listen, () => resolve()));
  return t;
}

async function listener(): Promise<Carrier & { localPort?: number }> {
  const l = await listenStream({ id: 'l', listen: { kind: 'tcp', host: '127.0.0.1', port: 0 }, log });
  open.push(l);
  return l;
}

describe('connectSocks', () => {
  it.each(['tcp', 'unix'] as const)('carries a link stream to an onion name through a SOCKS port on %s, with its isolation credentials', async (via) => {
    const l = await listener();
    const inL = new Inbox(l);
    const target = (): net.NetConnectOpts => ({ host: '127.0.0.1', port: l.localPort! });
    const sockPath = path.join(dir, 'socks');
    const proxy = await startSocks(via === 'tcp' ? { port: 0, host: '127.0.0.1' } : { path: sockPath }, target);
    const ep = via === 'tcp' ? { host: '127.0.0.1', port: (proxy.server.address() as net.AddressInfo).port } : { path: sockPath };
    const d = dialStream({
      id: 'd',
      kind: 'onion',
      connect: () => connectSocks(ep, ONION, 51820, { username: 'link-a', password: 'circuit-1' }, 5000),
      describe: `${ONION}:51820`,
      log,
    });
    open.push(d);
    const inD = new Inbox(d);
    await vi.waitFor(() => expect(d.reachable('remote')).toBe(true), { timeout: 5000, interval: 5 });
    expect(d.status()).toBe(`onion → ${ONION}:51820 connected`);
    expect(proxy.requests).toEqual([{ methods: expect.arrayContaining([2]), user: 'link-a', pass: 'circuit-1', atyp: 3, host: ONION, port: 51820 }]);
    d.send('remote', [numbered(1, 148), numbered(2, 5000)]);
    const got = await inL.count(2);
    expect(got.map((r) => r.msg)).toEqual([numbered(1, 148), numbered(2, 5000)]);
    l.send(got[0]!.from, [numbered(3, 92)]);
    expect((await inD.count(1))[0]).toEqual({ msg: numbered(3, 92), from: 'remote' });
  });

  it('rejects with one line when the proxy refuses the stream', async () => {
    const proxy = await startSocks({ port: 0, host: '127.0.0.1' }, () => ({ port: 1 }));
    proxy.mode = 'refuse';
    const ep = { host: '127.0.0.1', port: (proxy.server.address() as net.AddressInfo).port };
    const err: unknown = await connectSocks(ep, ONION, 443, { username: 'u', password: 'p' }, 5000).then(
      (s) => s.destroy(),
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toMatch(new RegExp(`^Tor could not connect to ${ONION}:443: .*`));
    expect((err as Error).message).not.toContain('\n');
    expect(proxy.requests.map((r) => r.host)).toEqual([ONION]);
  });

  it('gives up after its timeout when the proxy never answers', async () => {
    const proxy = await startSocks({ port: 0, host: '127.0.0.1' }, () => ({ port: 1 }));
    proxy.mode = 'silent';
    const ep = { host: '127.0.0.1', port: (proxy.server.address() as net.AddressInfo).port };
    const started = Date.now();
    await expect(connectSocks(ep, ONION, 443, { username: 'u', password: 'p' }, 200)).rejects.toThrow(/Tor could not connect/);
    expect(Date.now() - started).toBeLessThan(3000);
  });

  it('rejects when the SOCKS port is not there', async () => {
    await expect(connectSocks({ path: path.join(dir, 'absent') }, ONION, 443, { username: 'u', password: 'p' }, 1000)).rejects.toThrow(/ENOENT/);
  });
});
