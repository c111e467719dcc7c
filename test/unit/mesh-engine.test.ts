/**
 * The link engine over real UDP sockets on 127.0.0.1, with a relay in the middle that sees (and
 * can tamper with, replay and redirect) every ciphertext packet, as the host pipe between a VM
 * and a router would. Attacks: tampered, replayed (inside and behind the window), unknown key,
 * a handshake flood; and roaming (the peer's address changes and the link follows).
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import dgram from 'node:dgram';
import pino from 'pino';
import { LinkEngine, type LinkPeer } from '../../daemon/mesh/engine.js';
import { addressRateKey as udpRateKey } from '../../daemon/carriers/types.js';
import { openUdp } from '../../daemon/carriers/udp.js';
import { dialStream, listenStream } from '../../daemon/carriers/stream.js';
import { connectTcp } from '../../daemon/carriers/connect.js';
import net from 'node:net';
import type { Carrier } from '../../daemon/carriers/types.js';
import { parseEndpoint } from '../../daemon/carriers/endpoint.js';
import { fixedKeyPair } from '../support/links-lab.js';
import { CookieGenerator } from '../../daemon/links/cookie.js';
import { Device } from '../../daemon/links/device.js';
import { StreamFramer, encodeStreamBatch } from '../../plugins/common/stream-framer.js';
import { encodeResponse, RESPONSE_MAC1 } from '../../daemon/links/messages.js';

const log = pino({ level: 'silent' });

interface Relay {
  sock: dgram.Socket;
  port: number;
  /** Transport messages (type 4) seen going to B, in order. */
  toB: Buffer[];
  /** Rewrites a packet on its way to B (return null to drop it). */
  tamper: ((m: Buffer) => Buffer | null) | null;
  close(): void;
}

/** A UDP relay on 127.0.0.1: what comes from A goes to B's port; what comes from B goes back to A. */
async function relay(bPort: number): Promise<Relay> {
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
  sock.setRecvBufferSize(4 << 20);
  sock.setSendBufferSize(4 << 20);
  let closed = false;
  let aAddr: { port: number } | null = null;
  const r: Relay = {
    sock,
    port: sock.address().port,
    toB: [],
    tamper: null,
    close: () => {
      if (!closed) sock.close();
      closed = true;
    },
  };
  sock.on('message', (m, rinfo) => {
    if (rinfo.port === bPort) {
      if (aAddr !== null) sock.send(m, aAddr.port, '127.0.0.1');
      return;
    }
    aAddr = { port: rinfo.port };
    if (m[0] === 4) r.toB.push(Buffer.from(m));
    const out = r.tamper !== null ? r.tamper(m) : m;
    if (out !== null) sock.send(out, bPort, '127.0.0.1');
  });
  return r;
}

interface Side {
  engine: LinkEngine;
  carrier: Carrier & { readonly localPort: number };
  peer: LinkPeer;
  got: Buffer[];
  waiters: Array<() => void>;
}

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function frame(n: number, len = 200): Buffer {
  const f = Buffer.alloc(len, n & 0xff);
  f.writeUInt32BE(n, 20);
  return f;
}

async function side(label: string, opts: { loadThreshold?: number } = {}): Promise<Omit<Side, 'peer'> & { key: ReturnType<typeof fixedKeyPair> }> {
  const key = fixedKeyPair(label);
  const engine = new LinkEngine({ privateKey: key.privateKey, log, ...(opts.loadThreshold !== undefined ? { loadThreshold: opts.loadThreshold } : {}) });
  const carrier = await openUdp({ id: `udp-${label}`, host: '127.0.0.1', port: 0, log });
  engine.addCarrier(carrier);
  cleanups.push(() => engine.close());
  return { engine, carrier, got: [], waiters: [], key };
}

function waitFrames(s: { got: Buffer[]; waiters: Array<() => void> }, n: number, ms = 10_000): Promise<void> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`timed out waiting for ${n} frames (have ${s.got.length})`)), ms);
    const check = (): void => {
      if (s.got.length >= n) {
        clearTimeout(t);
        resolve();
      } else s.waiters.push(check);
    };
    check();
  });
}

/** A and B, A dialling B through a relay. */
async function pair(opts: { loadThreshold?: number } = {}): Promise<{ a: Side; b: Side; r: Relay }> {
  const a0 = await side('mesh-a');
  const b0 = await side('mesh-b', opts);
  const r = await relay(b0.carrier.localPort);
  cleanups.push(() => r.close());
  const sink = (s: { got: Buffer[]; waiters: Array<() => void> }) => ({
    frames: (batch: readonly Buffer[]) => {
      for (const f of batch) s.got.push(Buffer.from(f));
      for (const w of s.waiters.splice(0)) w();
    },
  });
  const bPeer = b0.engine.addPeer({ name: 'a', publicKey: a0.key.publicKey }, sink(b0));
  const ep = parseEndpoint(`127.0.0.1:${r.port}`);
  const aPeer = a0.engine.addPeer({ name: 'b', publicKey: b0.key.publicKey, endpoint: { carrier: a0.carrier, to: await a0.carrier.resolve(ep), text: ep } }, sink(a0));
  return { a: { ...a0, peer: aPeer }, b: { ...b0, peer: bPeer }, r };
}

async function established(p: LinkPeer): Promise<void> {
  for (let i = 0; i < 200 && p.state() !== 'established'; i++) await new Promise((r) => setTimeout(r, 10));
  expect(p.state()).toBe('established');
}

describe('handshake rate-limit key', () => {
  it('is the IPv4 address or the IPv6 /64 of a UDP sender, whatever its port', () => {
    expect(udpRateKey('198.51.100.7:51820')).toBe('198.51.100.7');
    expect(udpRateKey('[2001:db8:1:2:3::4]:5')).toBe('2001:db8:1:2::/64');
    expect(udpRateKey('[2001:db8:1:2:ffff::9]:6')).toBe('2001:db8:1:2::/64');
    expect(udpRateKey('[2001:db8::1]:7')).toBe('2001:db8:0:0::/64');
    expect(udpRateKey('[::1]:7')).toBe('0:0:0:0::/64');
    expect(udpRateKey('[fe80::1%veth0]:7')).toBe('fe80:0:0:0::/64');
  });
});

describe('link engine over a TCP listener', () => {
  it('a connection a peer authenticated on outlives the stranger deadline; a stranger\'s does not', async () => {
    const ka = fixedKeyPair('tcp-a');
    const kb = fixedKeyPair('tcp-b');
    const ea = new LinkEngine({ privateKey: ka.privateKey, log });
    const eb = new LinkEngine({ privateKey: kb.privateKey, log });
    cleanups.push(() => ea.close(), () => eb.close());
    const l = await listenStream({ id: 'listen', listen: { kind: 'tcp', host: '127.0.0.1', port: 0 }, log, strangerDeadlineMs: 400 });
    eb.addCarrier(l);
    const port = (l as { localPort?: number }).localPort!;
    const got: Buffer[] = [];
    const bPeer = eb.addPeer({ name: 'a', publicKey: ka.publicKey }, { frames: (b) => got.push(...b.map((f) => Buffer.from(f))) });
    const d = dialStream({ id: 'dial', kind: 'tcp', connect: () => connectTcp('127.0.0.1', port, 2000), describe: 'b', log, backoff: { firstMs: 50, maxMs: 100 } });
    ea.addCarrier(d);
    const ep = parseEndpoint(`tcp:127.0.0.1:${port}`);
    const aPeer = ea.addPeer({ name: 'b', publicKey: kb.publicKey, endpoint: { carrier: d, to: await d.resolve(ep), text: ep } }, { frames: () => {} });
    await established(aPeer);
    const stranger = net.createConnection({ host: '127.0.0.1', port });
    cleanups.push(() => void stranger.destroy());
    await new Promise((r) => setTimeout(r, 700));
    expect(stranger.destroyed || stranger.readableEnded).toBe(true);
    expect(l.status()).toMatch('listening, 1 connection');
    aPeer.send([frame(1)]);
    await vi.waitFor(() => expect(got).toHaveLength(1), { timeout: 2000, interval: 10 });
    expect(bPeer.state()).toBe('established');
    // Still the first connection: it was never closed and re-dialled.
    expect(bPeer.peer.endpoint).toBe('listen c1');
  });
});

describe('link engine: a peer whose connection is gone', () => {
  it('is sent to at its configured endpoint, not at the closed connection', async () => {
    const ka = fixedKeyPair('fallback-a');
    const kb = fixedKeyPair('fallback-b');
    const ea = new LinkEngine({ privateKey: ka.privateKey, log });
    const eb = new LinkEngine({ privateKey: kb.privateKey, log });
    cleanups.push(() => ea.close(), () => eb.close());
    // A reaches B over TCP; B is configured to reach A over UDP.
    const l = await listenStream({ id: 'listen', listen: { kind: 'tcp', host: '127.0.0.1', port: 0 }, log });
    eb.addCarrier(l);
    const port = (l as { localPort?: number }).localPort!;
    // A's UDP socket is bound but not A's until the TCP session is up: B's own initiations to it go nowhere.
    const ua = await openUdp({ id: 'udp-a', host: '127.0.0.1', port: 0, log });
    cleanups.push(() => ua.close());
    const ub = await openUdp({ id: 'udp-b', host: '127.0.0.1', port: 0, log });
    eb.addCarrier(ub);
    const got: Buffer[] = [];
    ea.addPeer({ name: 'b', publicKey: kb.publicKey }, { frames: (b) => got.push(...b.map((f) => Buffer.from(f))) });
    const d = dialStream({ id: 'dial', kind: 'tcp', connect: () => connectTcp('127.0.0.1', port, 2000), describe: 'b', log, backoff: { firstMs: 60_000, maxMs: 60_000 } });
    ea.addCarrier(d);
    const epB = parseEndpoint(`tcp:127.0.0.1:${port}`);
    const aPeer = ea.peerByKey(kb.publicKey)!;
    aPeer.peer.endpoint = `${d.id} ${await d.resolve(epB)}`;
    const epA = parseEndpoint(`127.0.0.1:${ua.localPort}`);
    const bPeer = eb.addPeer({ name: 'a', publicKey: ka.publicKey, endpoint: { carrier: ub, to: await ub.resolve(epA), text: epA } }, { frames: () => {} });
    // A starts the handshake on the TCP connection; B answers on it.
    await vi.waitFor(() => expect(d.reachable('remote')).toBe(true), { timeout: 2000, interval: 10 });
    aPeer.send([frame(1)]);
    await established(aPeer);
    await vi.waitFor(() => expect(bPeer.peer.endpoint).toBe('listen c1'), { timeout: 2000, interval: 10 });
    ea.addCarrier(ua);
    // The connection goes away (A's dialler closed; it re-dials only in a minute).
    await ea.removeCarrier(d);
    await vi.waitFor(() => expect(l.reachable('c1')).toBe(false), { timeout: 2000, interval: 10 });
    bPeer.send([frame(2)]);
    await vi.waitFor(() => expect(got.map((f) => f.readUInt32BE(20))).toEqual([2]), { timeout: 2000, interval: 10 });
    expect(bPeer.unsent).toBe(0);
  });
});

describe('link engine over a TCP listener, under load', () => {
  it('holds all connections from one address to one handshake allowance', async () => {
    const kb = fixedKeyPair('tcp-load-b');
    const eb = new LinkEngine({ privateKey: kb.privateKey, log, loadThreshold: 1 });
    cleanups.push(() => eb.close());
    const l = await listenStream({ id: 'listen', listen: { kind: 'tcp', host: '127.0.0.1', port: 0 }, log });
    eb.addCarrier(l);
    const port = (l as { localPort?: number }).localPort!;
    // Ten connections, each a stranger who knows B's public key and fetches a cookie for it.
    const conns = await Promise.all(
      Array.from({ length: 10 }, async (_, i) => {
        const sock = await connectTcp('127.0.0.1', port, 2000);
        cleanups.push(() => void sock.destroy());
        const dev = new Device({ privateKey: fixedKeyPair(`tcp-load stranger ${i}`).privateKey });
        const peer = dev.addPeer({ publicKey: kb.publicKey });
        const framer = new StreamFramer(1, 70_000);
        const replies: Buffer[] = [];
        sock.on('data', (c: Buffer) => framer.push(c, (fs) => fs.forEach((f) => replies.push(Buffer.from(f)))));
        return { sock, dev, peer, replies };
      }),
    );
    // Past the threshold: every initiation without mac2 gets a cookie reply.
    for (const c of conns) for (let k = 0; k < 2; k++) c.sock.write(encodeStreamBatch([c.peer.handshakeInit(k * 6000)!], 1));
    await vi.waitFor(() => expect(conns.every((c) => c.replies.some((r) => r[0] === 3))).toBe(true), { timeout: 3000, interval: 10 });
    for (const c of conns) for (const r of c.replies) if (r[0] === 3) c.dev.receive(r, 12_000, 'b');
    const dh0 = eb.device.counters.dh;
    // Then ten initiations with a valid mac2 on each connection.
    for (const c of conns) for (let k = 0; k < 10; k++) c.sock.write(encodeStreamBatch([c.peer.handshakeInit(18_000 + k * 6000)!], 1));
    await vi.waitFor(() => expect(eb.device.counters.drops['unknown-peer'] + eb.device.counters.drops['rate-limit']).toBeGreaterThanOrEqual(100), { timeout: 3000, interval: 10 });
    // One address: one burst (5) and 20 a second, not ten of each.
    expect(eb.device.counters.dh - dh0).toBeLessThan(15);
  });
});

describe('link engine over UDP', () => {
  it('carries frames both ways, intact and in order', async () => {
    const { a, b } = await pair();
    a.peer.send([frame(1), frame(2, 1400), frame(3, 60)]);
    await waitFrames(b, 3);
    expect(b.got.map((f) => f.readUInt32BE(20))).toEqual([1, 2, 3]);
    expect(b.got[1]!.equals(frame(2, 1400))).toBe(true);
    b.peer.send([frame(7)]);
    await waitFrames(a, 1);
    expect(a.got[0]!.equals(frame(7))).toBe(true);
  });

  it('drops tampered packets (bad-mac) and keeps working', async () => {
    const { a, b, r } = await pair();
    a.peer.send([frame(1)]);
    await waitFrames(b, 1);
    r.tamper = (m) => {
      if (m[0] !== 4) return m;
      const t = Buffer.from(m);
      t[t.length - 20] ^= 0x01;
      return t;
    };
    a.peer.send([frame(2)]);
    for (let i = 0; i < 200 && b.peer.peer.counters.drops['bad-mac'] === 0; i++) await new Promise((res) => setTimeout(res, 5));
    expect(b.peer.peer.counters.drops['bad-mac']).toBe(1);
    r.tamper = null;
    a.peer.send([frame(3)]);
    await waitFrames(b, 2);
    expect(b.got.map((f) => f.readUInt32BE(20))).toEqual([1, 3]);
  });

  it('drops replays inside and behind the window, delivering each frame once', async () => {
    const { a, b, r } = await pair();
    a.peer.send([frame(1)]);
    await waitFrames(b, 1);
    const first = r.toB[r.toB.length - 1]!;
    // Inside the window: the same packet again.
    r.sock.send(first, b.carrier.localPort, '127.0.0.1');
    a.peer.send([frame(2)]);
    await waitFrames(b, 2);
    for (let i = 0; i < 200 && b.peer.peer.counters.drops.replay === 0; i++) await new Promise((res) => setTimeout(res, 5));
    expect(b.peer.peer.counters.drops.replay).toBe(1);
    // Behind the window: 9000 more packets (the window is 8160), then the first again.
    const N = 9000;
    // Paced, so that no socket buffer on the way overflows (a lost packet would leave a gap, not a failure of the window).
    for (let i = 0; i < N; i += 100) {
      a.peer.send(Array.from({ length: 100 }, (_, k) => frame(10 + i + k, 64)));
      await waitFrames(b, 2 + i + 100);
    }
    r.sock.send(first, b.carrier.localPort, '127.0.0.1');
    a.peer.send([frame(99_999)]);
    await waitFrames(b, 3 + N);
    for (let i = 0; i < 200 && b.peer.peer.counters.drops.replay < 2; i++) await new Promise((res) => setTimeout(res, 5));
    expect(b.peer.peer.counters.drops.replay).toBe(2);
    expect(b.got.filter((f) => f.readUInt32BE(20) === 1)).toHaveLength(1);
  }, 60_000);

  it('drops an initiation from an unknown key (unknown-peer) and the link keeps working', async () => {
    const { a, b } = await pair();
    a.peer.send([frame(1)]);
    await waitFrames(b, 1);
    const c = await side('mesh-stranger');
    const ep = parseEndpoint(`127.0.0.1:${b.carrier.localPort}`);
    c.engine.addPeer({ name: 'b', publicKey: b.engine.device.publicKey, endpoint: { carrier: c.carrier, to: await c.carrier.resolve(ep), text: ep } }, { frames: () => {} });
    for (let i = 0; i < 200 && b.engine.device.counters.drops['unknown-peer'] === 0; i++) await new Promise((res) => setTimeout(res, 5));
    expect(b.engine.device.counters.drops['unknown-peer']).toBe(1);
    a.peer.send([frame(2)]);
    await waitFrames(b, 2);
  });

  it('answers a handshake flood with cookies, not DH, and the established link keeps working', async () => {
    const { a, b } = await pair({ loadThreshold: 20 });
    a.peer.send([frame(1)]);
    await waitFrames(b, 1);
    // A stranger's initiation, sent 2000 times from a plain socket (valid mac1: the responder's key is public).
    const c = await side('mesh-flooder');
    let init: Buffer | null = null;
    const capture = dgram.createSocket('udp4');
    await new Promise<void>((res) => capture.bind(0, '127.0.0.1', () => res()));
    cleanups.push(() => void capture.close());
    const got = new Promise<Buffer>((res) => capture.once('message', (m) => res(Buffer.from(m))));
    const ep = parseEndpoint(`127.0.0.1:${capture.address().port}`);
    c.engine.addPeer({ name: 'b', publicKey: b.engine.device.publicKey, endpoint: { carrier: c.carrier, to: await c.carrier.resolve(ep), text: ep } }, { frames: () => {} });
    init = await got;
    expect(init.length).toBe(148);
    const dhBefore = b.engine.device.counters.dh;
    const flood = dgram.createSocket('udp4');
    cleanups.push(() => void flood.close());
    for (let i = 0; i < 2000; i++) flood.send(init, b.carrier.localPort, '127.0.0.1');
    for (let i = 0; i < 400 && b.engine.device.counters.cookieRepliesSent === 0; i++) await new Promise((res) => setTimeout(res, 5));
    expect(b.engine.device.counters.cookieRepliesSent).toBeGreaterThan(0);
    // Data keeps flowing during the flood.
    a.peer.send([frame(2)]);
    await waitFrames(b, 2);
    // Until the load was seen, each initiation cost the responder DH; after, none did.
    expect(b.engine.device.counters.dh - dhBefore).toBeLessThan(2 * 60);
  });

  it('counts forged responses toward the load too: an on-path sender cannot make it spend DH on each', async () => {
    // A dials a silent address (a socket we hold: the host pipe sees A's initiation and its index).
    const a = await side('mesh-resp-a', { loadThreshold: 20 });
    const pipe = dgram.createSocket('udp4');
    await new Promise<void>((res) => pipe.bind(0, '127.0.0.1', () => res()));
    cleanups.push(() => void pipe.close());
    const got = new Promise<Buffer>((res) => pipe.once('message', (m) => res(Buffer.from(m))));
    const ep = parseEndpoint(`127.0.0.1:${pipe.address().port}`);
    a.engine.addPeer({ name: 'b', publicKey: fixedKeyPair('mesh-resp-b').publicKey, endpoint: { carrier: a.carrier, to: await a.carrier.resolve(ep), text: ep } }, { frames: () => {} });
    const init = await got;
    const index = init.readUInt32LE(4);
    // Forged responses to that index: valid mac1 (A's key is public), a fresh ephemeral, a bogus tag.
    const gen = new CookieGenerator(a.engine.device.publicKey);
    const forged = (i: number): Buffer => {
      const m = encodeResponse({ sender: i, receiver: index, ephemeral: fixedKeyPair(`forged ${i % 8}`).publicKey, encryptedNothing: Buffer.alloc(16, i) });
      gen.addMacs(m, RESPONSE_MAC1, 0);
      return m;
    };
    const dhBefore = a.engine.device.counters.dh;
    for (let i = 0; i < 1000; i++) pipe.send(forged(i), a.carrier.localPort, '127.0.0.1');
    await vi.waitFor(() => expect(a.carrier.stats().rxMessages).toBe(1000), { timeout: 5000, interval: 10 });
    expect(a.engine.device.counters.drops['bad-mac']).toBeGreaterThan(0);
    // Each response that reached the handshake cost 2 DH; past the threshold they need a cookie first.
    expect(a.engine.device.counters.dh - dhBefore).toBeLessThan(2 * 60);
    expect(a.engine.device.counters.cookieRepliesSent).toBeGreaterThan(0);
  });

  it('follows a roaming peer: replies go to its latest authenticated address', async () => {
    const { a, b, r } = await pair();
    a.peer.send([frame(1)]);
    await waitFrames(b, 1);
    await established(b.peer);
    const before = b.peer.peer.endpoint;
    // A moves: from now on its packets reach B through another relay (another source address).
    const r2 = await relay(b.carrier.localPort);
    cleanups.push(() => r2.close());
    const ep = parseEndpoint(`127.0.0.1:${r2.port}`);
    a.peer.peer.endpoint = `${a.carrier.id} ${await a.carrier.resolve(ep)}`;
    r.close();
    a.peer.send([frame(2)]);
    await waitFrames(b, 2);
    expect(b.peer.peer.endpoint).not.toBe(before);
    expect(b.peer.peer.endpoint).toContain(String(r2.port));
    // B's reply goes to the new address (the old relay is closed): A gets it.
    b.peer.send([frame(3)]);
    await waitFrames(a, 1);
    expect(a.got[0]!.readUInt32BE(20)).toBe(3);
  });
});
