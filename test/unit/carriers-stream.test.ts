import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { StreamFramer, encodeStreamBatch } from '../../plugins/common/stream-framer.js';
import { connectTcp, connectUnix } from '../../daemon/carriers/connect.js';
import { MAX_CONNECTIONS, dialStream, listenStream } from '../../daemon/carriers/stream.js';
import { MAX_QUEUE, STRANGER_QUEUE } from '../../daemon/carriers/stream-conn.js';
import { MAX_MESSAGE, type Carrier } from '../../daemon/carriers/types.js';
import { Inbox, log, numbered } from './carriers-util.js';

const open: Carrier[] = [];
const sockets: net.Socket[] = [];
let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mvnet-carriers-'));
});
afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  await Promise.all(open.splice(0).map((c) => c.close()));
  fs.rmSync(dir, { recursive: true, force: true });
});

function track<T extends Carrier>(c: T): T {
  open.push(c);
  return c;
}

async function tcpListener(port = 0, host = '127.0.0.1'): Promise<Carrier & { localPort?: number }> {
  return track(await listenStream({ id: 'l', listen: { kind: 'tcp', host, port }, log }));
}

function tcpDialer(port: number, host = '127.0.0.1', backoff = { firstMs: 20, maxMs: 100 }): Carrier {
  return track(dialStream({ id: 'd', kind: 'tcp', connect: () => connectTcp(host, port, 2000), describe: `${host}:${port}`, log, backoff }));
}

async function connected(c: Carrier, to = 'remote'): Promise<void> {
  await vi.waitFor(() => expect(c.reachable(to)).toBe(true), { timeout: 5000, interval: 5 });
}

/** A plain client socket to a listener (not a carrier): to send bad bytes, or to not read. */
function rawClient(opts: net.NetConnectOpts): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.createConnection(opts, () => resolve(s));
    s.once('error', reject);
    sockets.push(s);
  });
}

function closed(s: net.Socket): Promise<void> {
  return new Promise((resolve) => (s.destroyed ? resolve() : s.once('close', () => resolve())));
}

describe('stream carriers: round trips', () => {
  it('tcp on 127.0.0.1: a dialer and a listener carry batches both ways, whole and in order', async () => {
    const l = await tcpListener();
    const d = tcpDialer(l.localPort!);
    const inL = new Inbox(l);
    const inD = new Inbox(d);
    expect(d.status()).toMatch(new RegExp(`^tcp → 127\\.0\\.0\\.1:${l.localPort} (connecting|connected)$`));
    await connected(d);
    expect(d.status()).toBe(`tcp → 127.0.0.1:${l.localPort} connected`);
    expect(await d.resolve({ kind: 'tcp', host: '127.0.0.1', port: l.localPort! })).toBe('remote');
    // The largest message, split over many reads, and small ones around it.
    const msgs = [numbered(1, 148), numbered(2, MAX_MESSAGE), numbered(3, 4)];
    expect(d.send('remote', msgs)).toBe(true);
    const got = await inL.count(3);
    expect(got.map((r) => r.msg)).toEqual(msgs);
    expect(got.map((r) => r.from)).toEqual(['c1', 'c1', 'c1']);
    expect(l.reachable('c1')).toBe(true);
    expect(l.status()).toBe(`tcp 127.0.0.1:${l.localPort} listening, 1 connection`);
    expect(l.send('c1', [numbered(4, 92), numbered(5, 60)])).toBe(true);
    const back = await inD.count(2);
    expect(back).toEqual([
      { msg: numbered(4, 92), from: 'remote' },
      { msg: numbered(5, 60), from: 'remote' },
    ]);
    expect(d.stats()).toEqual({ rxMessages: 2, rxBytes: 152, txMessages: 3, txBytes: 148 + MAX_MESSAGE + 4, drops: {} });
    expect(l.stats()).toEqual({ rxMessages: 3, rxBytes: 148 + MAX_MESSAGE + 4, txMessages: 2, txBytes: 152, drops: {} });
  });

  it('tcp on ::1, and a listener on any address takes IPv4 as well', async () => {
    const l6 = await tcpListener(0, '::1');
    const d6 = tcpDialer(l6.localPort!, '::1');
    const in6 = new Inbox(l6);
    await connected(d6);
    d6.send('remote', [numbered(6)]);
    expect((await in6.count(1))[0]!.msg).toEqual(numbered(6));

    const any = await tcpListener(0, '');
    expect(any.status()).toBe(`tcp [::]:${any.localPort} listening, 0 connections`);
    const inAny = new Inbox(any);
    const d4 = tcpDialer(any.localPort!, '127.0.0.1');
    const d6b = tcpDialer(any.localPort!, '::1');
    await connected(d4);
    await connected(d6b);
    d4.send('remote', [numbered(4)]);
    d6b.send('remote', [numbered(7)]);
    const got = await inAny.count(2);
    expect(new Set(got.map((r) => r.msg.readUInt32BE(0)))).toEqual(new Set([4, 7]));
    // One source per connection.
    expect(new Set(got.map((r) => r.from))).toEqual(new Set(['c1', 'c2']));
  });

  it('unix socket in a private directory: made at the path, removed at close', async () => {
    const p = path.join(dir, 'link.sock');
    const l = track(await listenStream({ id: 'l', listen: { kind: 'unix', path: p }, log }));
    expect(fs.lstatSync(p).isSocket()).toBe(true);
    expect(fs.lstatSync(p).mode & 0o777).toBe(0o660);
    expect(l.status()).toBe(`unix ${p} listening, 0 connections`);
    const d = track(dialStream({ id: 'd', kind: 'unix', connect: () => connectUnix(p, 2000), describe: p, log }));
    const inL = new Inbox(l);
    const inD = new Inbox(d);
    await connected(d);
    d.send('remote', [numbered(1), numbered(2, 3000)]);
    const got = await inL.count(2);
    expect(got.map((r) => r.msg)).toEqual([numbered(1), numbered(2, 3000)]);
    l.send(got[0]!.from, [numbered(3)]);
    expect((await inD.count(1))[0]!.msg).toEqual(numbered(3));
    await l.close();
    expect(fs.existsSync(p)).toBe(false);
  });

  it('never replaces a live unix socket, nor a symlink, nor a file', async () => {
    const p = path.join(dir, 'link.sock');
    track(await listenStream({ id: 'l', listen: { kind: 'unix', path: p }, log }));
    await expect(listenStream({ id: 'l2', listen: { kind: 'unix', path: p }, log })).rejects.toThrow(/live socket/);
    const link = path.join(dir, 'link2.sock');
    fs.symlinkSync(p, link);
    await expect(listenStream({ id: 'l3', listen: { kind: 'unix', path: link }, log })).rejects.toThrow(/symlink/);
    const file = path.join(dir, 'file');
    fs.writeFileSync(file, 'x');
    await expect(listenStream({ id: 'l4', listen: { kind: 'unix', path: file }, log })).rejects.toThrow(/not a socket/);
    expect(fs.readFileSync(file, 'utf8')).toBe('x');
  });

  it('a listener cannot dial, and says so', async () => {
    const l = await tcpListener();
    await expect(l.resolve({ kind: 'tcp', host: '127.0.0.1', port: 1 })).rejects.toThrow(/only on connections it accepted/);
  });

  it('refuses a tcp port in use with a one-line error', async () => {
    const l = await tcpListener();
    await expect(listenStream({ id: 'x', listen: { kind: 'tcp', host: '127.0.0.1', port: l.localPort! }, log })).rejects.toThrow(
      `cannot listen on tcp 127.0.0.1:${l.localPort}: EADDRINUSE`,
    );
  });
});

describe('stream carriers: framing and drops', () => {
  it.each([
    ['a length of 0', 0],
    ['a length over MAX_MESSAGE', MAX_MESSAGE + 1],
    ['a length of 2^32-1', 0xffffffff],
  ])('closes a connection that sends %s, after delivering what came before', async (_name, badLen) => {
    const l = await tcpListener();
    const inL = new Inbox(l);
    const c = await rawClient({ host: '127.0.0.1', port: l.localPort! });
    const bad = Buffer.alloc(4);
    bad.writeUInt32BE(badLen, 0);
    c.write(Buffer.concat([encodeStreamBatch([numbered(1)], 1), bad, encodeStreamBatch([numbered(2)], 1)]));
    await closed(c);
    expect(inL.got.map((r) => r.msg)).toEqual([numbered(1)]);
    expect(l.stats().drops).toEqual({ framing: 1 });
    expect(l.reachable('c1')).toBe(false);
    expect(l.send('c1', [numbered(3)])).toBe(false);
    expect(l.stats().drops).toEqual({ framing: 1, 'no-connection': 1 });
  });

  it('counts sends it cannot make: no connection, oversize, empty', async () => {
    const l = await tcpListener();
    const inL = new Inbox(l);
    expect(l.send('c99', [numbered(1), numbered(2)])).toBe(false);
    expect(l.stats().drops).toEqual({ 'no-connection': 2 });
    const d = tcpDialer(l.localPort!);
    expect(d.send('remote', [numbered(1)])).toBe(false); // not connected yet
    await connected(d);
    expect(d.send('elsewhere', [numbered(1)])).toBe(false);
    expect(d.send('remote', [numbered(1), Buffer.alloc(MAX_MESSAGE + 1), Buffer.alloc(0), numbered(2)])).toBe(false);
    expect(d.stats().drops).toEqual({ 'no-connection': 2, oversize: 2 });
    // The rest of the batch went, still framed right.
    expect((await inL.count(2)).map((r) => r.msg)).toEqual([numbered(1), numbered(2)]);
  });

  it('drops whole messages past the write queue limit, never blocking, and the stream stays in step', async () => {
    const l = await tcpListener();
    const c = await rawClient({ host: '127.0.0.1', port: l.localPort! });
    c.pause();
    await vi.waitFor(() => expect(l.reachable('c1')).toBe(true), { interval: 5 });
    // A peer's connection (the engine authenticated a message on it) has the full queue.
    l.vouch!('c1');
    // The reader reads nothing until the queue is full: in one synchronous loop nothing drains.
    const size = 60_000;
    let sent = 0;
    let refused = 0;
    for (let i = 0; i < 2000 && refused === 0; i++) {
      if (l.send('c1', [numbered(i, size)])) sent++;
      else refused++;
    }
    expect(refused).toBe(1);
    expect(l.stats().drops).toEqual({ 'queue-full': 1 });
    expect(l.stats().txMessages).toBe(sent);
    // At least the queue's worth was taken before the first drop (the kernel took some too).
    expect(sent * (size + 4)).toBeGreaterThanOrEqual(MAX_QUEUE - (size + 4));
    // What was taken arrives whole and in order once the reader reads.
    const framer = new StreamFramer(1, MAX_MESSAGE);
    const ids: number[] = [];
    let bad = 0;
    await new Promise<void>((resolve) => {
      c.on('data', (chunk: Buffer) => {
        if (framer.push(chunk, (fs) => fs.forEach((f) => (f.length === size ? ids.push(f.readUInt32BE(0)) : bad++))) !== 'ok') bad++;
        if (ids.length + bad >= sent) resolve();
      });
      c.resume();
    });
    expect(bad).toBe(0);
    expect(ids).toEqual(Array.from({ length: sent }, (_, i) => i));
  });

  it(`sheds the connection silent longest beyond ${MAX_CONNECTIONS} connections`, async () => {
    const l = await tcpListener();
    const inL = new Inbox(l);
    const clients: net.Socket[] = [];
    for (let i = 0; i < MAX_CONNECTIONS; i++) clients.push(await rawClient({ host: '127.0.0.1', port: l.localPort! }));
    await vi.waitFor(() => expect(l.status()).toMatch(`listening, ${MAX_CONNECTIONS} connections`), { interval: 5 });
    // All but the first speak; the first is then the one silent longest.
    clients.slice(1).forEach((c, i) => c.write(encodeStreamBatch([numbered(i)], 1)));
    await inL.count(MAX_CONNECTIONS - 1);
    const extra = await rawClient({ host: '127.0.0.1', port: l.localPort! });
    await closed(clients[0]!);
    expect(clients.slice(1).every((c) => !c.destroyed)).toBe(true);
    extra.write(encodeStreamBatch([numbered(999)], 1));
    const got = await inL.count(MAX_CONNECTIONS);
    expect(got.at(-1)!.from).toBe(`c${MAX_CONNECTIONS + 1}`);
    expect(l.status()).toMatch(`listening, ${MAX_CONNECTIONS} connections`);
  });
});

describe('stream carriers: strangers (nothing authenticated yet)', () => {
  it('a stranger that never reads gets a small write queue, not a peer\'s', async () => {
    const l = await tcpListener();
    const fill = async (to: string, vouch: boolean): Promise<number> => {
      const c = await rawClient({ host: '127.0.0.1', port: l.localPort! });
      c.pause();
      await vi.waitFor(() => expect(l.reachable(to)).toBe(true), { interval: 5 });
      if (vouch) l.vouch!(to);
      let sent = 0;
      for (let i = 0; i < 2000 && l.send(to, [numbered(i, 60_000)]); i++) sent++;
      return sent * 60_004;
    };
    const stranger = await fill('c1', false);
    const peer = await fill('c2', true);
    expect(l.stats().drops).toEqual({ 'queue-full': 2 });
    // Both had the kernel's buffers; only the peer had MAX_QUEUE on top.
    expect(peer - stranger).toBeGreaterThan(MAX_QUEUE - STRANGER_QUEUE - 2 * 60_004);
  });

  it(`beyond ${MAX_CONNECTIONS} connections a stranger is shed, never a peer's quiet connection`, async () => {
    const l = await tcpListener();
    const inL = new Inbox(l);
    const peer = await rawClient({ host: '127.0.0.1', port: l.localPort! });
    peer.write(encodeStreamBatch([numbered(0)], 1));
    await inL.count(1);
    l.vouch!('c1');
    // Strangers fill the listener and keep talking: the peer's connection is the one silent longest.
    const strangers: net.Socket[] = [];
    for (let i = 1; i < MAX_CONNECTIONS; i++) strangers.push(await rawClient({ host: '127.0.0.1', port: l.localPort! }));
    await vi.waitFor(() => expect(l.status()).toMatch(`listening, ${MAX_CONNECTIONS} connections`), { interval: 5 });
    await new Promise((r) => setTimeout(r, 5));
    strangers.forEach((c, i) => c.write(encodeStreamBatch([numbered(i + 1)], 1)));
    await inL.count(MAX_CONNECTIONS);
    for (let k = 0; k < 20; k++) await rawClient({ host: '127.0.0.1', port: l.localPort! });
    await vi.waitFor(() => expect(strangers.filter((s) => s.destroyed).length).toBe(20), { interval: 5 });
    expect(peer.destroyed).toBe(false);
    expect(l.reachable('c1')).toBe(true);
  });

  it('sheds the stranger connected longest: chatty strangers cannot shed a new connection mid-handshake', async () => {
    const l = await tcpListener();
    const inL = new Inbox(l);
    const strangers: net.Socket[] = [];
    for (let i = 0; i < MAX_CONNECTIONS - 1; i++) strangers.push(await rawClient({ host: '127.0.0.1', port: l.localPort! }));
    // A peer's dialer connects and sends its initiation; its handshake is not done yet.
    const newcomer = await rawClient({ host: '127.0.0.1', port: l.localPort! });
    newcomer.write(encodeStreamBatch([numbered(0)], 1));
    await inL.count(1);
    await new Promise((r) => setTimeout(r, 10));
    // The strangers talk (more recently than the newcomer), and one more connects.
    strangers.forEach((c, i) => c.write(encodeStreamBatch([numbered(i + 1)], 1)));
    await inL.count(MAX_CONNECTIONS);
    await rawClient({ host: '127.0.0.1', port: l.localPort! });
    await closed(strangers[0]!);
    expect(newcomer.destroyed).toBe(false);
    expect(l.reachable(`c${MAX_CONNECTIONS}`)).toBe(true);
  });

  it('closes a connection on which nothing authenticates in time, and keeps a peer\'s', async () => {
    const l = track(await listenStream({ id: 'l', listen: { kind: 'tcp', host: '127.0.0.1', port: 0 }, log, strangerDeadlineMs: 300 }));
    const stranger = await rawClient({ host: '127.0.0.1', port: l.localPort! });
    stranger.write(Buffer.from([0, 0, 0, 100, 1, 2])); // a partial message, held no longer than the deadline
    const peer = await rawClient({ host: '127.0.0.1', port: l.localPort! });
    await vi.waitFor(() => expect(l.reachable('c2')).toBe(true), { interval: 5 });
    l.vouch!('c2');
    await closed(stranger);
    await new Promise((r) => setTimeout(r, 400));
    expect(peer.destroyed).toBe(false);
    expect(l.reachable('c2')).toBe(true);
  });
});

describe('stream carriers: re-dialling', () => {
  it('reconnects after the listener restarts, and says why it waits meanwhile', async () => {
    const first = await tcpListener();
    const port = first.localPort!;
    const d = tcpDialer(port, '127.0.0.1', { firstMs: 50, maxMs: 400 });
    const inD = new Inbox(d);
    await connected(d);
    await first.close();
    await vi.waitFor(() => expect(d.status()).toMatch(/reconnecting in \d+ s \(ECONNREFUSED\)$/), { timeout: 5000, interval: 5 });
    expect(d.reachable('remote')).toBe(false);
    expect(d.send('remote', [numbered(1)])).toBe(false);

    const second = await tcpListener(port);
    const inL = new Inbox(second);
    await connected(d);
    d.send('remote', [numbered(2)]);
    const got = await inL.count(1);
    expect(got[0]!.msg).toEqual(numbered(2));
    second.send(got[0]!.from, [numbered(3)]);
    expect((await inD.count(1))[0]!.msg).toEqual(numbered(3));
    expect(d.stats().drops).toEqual({ 'no-connection': 1 });
  });

  it('reconnects a unix stream after the listener restarts on the same path', async () => {
    const p = path.join(dir, 'link.sock');
    const first = track(await listenStream({ id: 'l', listen: { kind: 'unix', path: p }, log }));
    const d = track(dialStream({ id: 'd', kind: 'unix', connect: () => connectUnix(p, 2000), describe: p, log, backoff: { firstMs: 20, maxMs: 100 } }));
    await connected(d);
    await first.close();
    await vi.waitFor(() => expect(d.reachable('remote')).toBe(false), { interval: 5 });
    const second = track(await listenStream({ id: 'l', listen: { kind: 'unix', path: p }, log }));
    const inL = new Inbox(second);
    await connected(d);
    d.send('remote', [numbered(5)]);
    expect((await inL.count(1))[0]!.msg).toEqual(numbered(5));
  });

  it('backs off, doubling up to the limit, while the remote refuses', async () => {
    const l = await tcpListener();
    const port = l.localPort!;
    await l.close();
    const attempts: number[] = [];
    const d = track(
      dialStream({
        id: 'd',
        kind: 'tcp',
        connect: () => {
          attempts.push(Date.now());
          return connectTcp('127.0.0.1', port, 2000);
        },
        describe: `127.0.0.1:${port}`,
        log,
        backoff: { firstMs: 20, maxMs: 80 },
      }),
    );
    await vi.waitFor(() => expect(attempts.length).toBeGreaterThanOrEqual(6), { timeout: 5000, interval: 5 });
    await d.close();
    const n = attempts.length;
    const gaps = attempts.slice(1).map((t, i) => t - attempts[i]!);
    // Waits of 20, 40, 80, 80, … ms (timers never fire early).
    expect(gaps[0]).toBeGreaterThanOrEqual(19);
    expect(gaps[1]).toBeGreaterThanOrEqual(39);
    expect(gaps[2]).toBeGreaterThanOrEqual(79);
    expect(gaps[3]).toBeGreaterThanOrEqual(79);
    expect(d.status()).toBe(`tcp → 127.0.0.1:${port} closed`);
    // Closed means no more attempts: a listener on the port sees nobody.
    const again = await tcpListener(port);
    expect(attempts.length).toBe(n);
    expect(again.status()).toMatch(/0 connections$/);
  });

  it('a failing connect function is retried, not thrown', async () => {
    let calls = 0;
    const d = track(
      dialStream({
        id: 'd',
        kind: 'onion',
        connect: () => {
          calls++;
          throw new Error('Tor is not ready');
        },
        describe: 'x.onion:1',
        log,
        backoff: { firstMs: 10, maxMs: 10 },
      }),
    );
    await vi.waitFor(() => expect(calls).toBeGreaterThanOrEqual(2), { interval: 5 });
    expect(d.status()).toMatch(/^onion → x\.onion:1 (reconnecting in \d s \(Tor is not ready\)|connecting)$/);
  });
});
