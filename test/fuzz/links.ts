/**
 * Fuzzes the link protocol (daemon/links): every message decoder, and Device.receive on both
 * sides of a live session, with valid messages (handshake, cookie reply, data, keepalive),
 * mutated ones and random bytes, with the responder's load flag and the clock changing. A throw
 * is a crash; so is a packet the device accepts as data or keepalive that is not, byte for
 * byte, one a peer really sent (a forgery got through).
 */
import { decodeCookieReply, decodeInitiation, decodeResponse, decodeTransport, messageType } from '../../daemon/links/messages.js';
import { DROP_REASONS, type Device } from '../../daemon/links/device.js';
import { handshake, lab, type Lab } from '../support/links-lab.js';
import { inputSeed, mutate, Rng } from './rng.js';
import { errorText, KEEP_CRASHES, type FuzzReport } from './report.js';

interface LinksHarness {
  l: Lab;
  /** Valid messages, each also keyed by hex so an accepted packet can be checked against them. */
  pool: Buffer[];
  genuine: Set<string>;
  now: number;
}

/** A lab with a session up and a pool of valid messages of every type; deterministic (fixed keys and entropy). */
export function linksHarness(): LinksHarness {
  const l = lab();
  const pool: Buffer[] = [];
  // A handshake whose messages we keep, one cookie reply, then a session and its traffic.
  const init = l.ab.handshakeInit(0)!;
  pool.push(init);
  l.b.underLoad = true;
  const c = l.b.receive(init, 0, 'a');
  if (c.kind === 'reply') pool.push(...c.packets);
  l.b.underLoad = false;
  handshake(l, 10_000);
  for (let i = 0; i < 64; i++) pool.push(...l.ab.send(Buffer.alloc(i * 23, i), 10_000).packets, ...l.ba.send(Buffer.alloc(i * 7, i), 10_000).packets);
  const resp = l.b.receive(l.ab.handshakeInit(20_000)!, 20_000, 'a');
  if (resp.kind === 'reply') pool.push(...resp.packets);
  return { l, pool, genuine: new Set(pool.map((p) => p.toString('hex'))), now: 20_000 };
}

export function linksInput(h: LinksHarness, seed: number): Buffer {
  const rng = new Rng(seed);
  const k = rng.int(20);
  if (k < 2) return rng.pick(h.pool);
  if (k < 9) {
    // Same length, a few bytes changed: past the length checks, into the MACs and AEADs.
    const b = Buffer.from(rng.pick(h.pool));
    for (let n = 1 + rng.int(3); n > 0; n--) b[rng.int(b.length)] = rng.u32() & 0xff;
    return b;
  }
  if (k < 15) return mutate(rng, rng.pick(h.pool));
  if (k < 17) {
    const b = rng.bytes(rng.int(200));
    if (b.length >= 4) b.writeUInt32LE(1 + rng.int(4), 0); // a valid type and zero reserved bytes
    return b;
  }
  return rng.bytes(rng.int(rng.bool() ? 64 : 2000));
}

function receiveChecked(h: LinksHarness, d: Device, x: Buffer, source: string): void {
  const r = d.receive(x, h.now, source);
  if ((r.kind === 'data' || r.kind === 'keepalive') && !h.genuine.has(x.toString('hex'))) throw new Error(`forged ${r.kind} accepted`);
}

/** Runs one input against the harness's devices; returns the crash or null. */
export function linksOne(h: LinksHarness, seed: number, input?: Buffer): { where: string; error: string; input: Buffer } | null {
  const rng = new Rng(seed ^ 0x1ee75);
  const x = input ?? linksInput(h, seed);
  let where = 'decode';
  try {
    messageType(x);
    decodeInitiation(x);
    decodeResponse(x);
    decodeCookieReply(x);
    decodeTransport(x);
    if (rng.bool(0.05)) h.l.b.underLoad = !h.l.b.underLoad;
    // The clock moves, but stays short of REJECT_AFTER_TIME so the sessions the pool was made on stay open.
    if (rng.bool(0.01) && h.now < 150_000) {
      h.now += rng.int(1_000);
      where = 'tick';
      h.l.a.tick(h.now);
      h.l.b.tick(h.now);
    }
    where = 'receive a';
    receiveChecked(h, h.l.a, x, rng.pick(['b', 'b2', 'x']));
    where = 'receive b';
    receiveChecked(h, h.l.b, x, rng.pick(['a', 'a2', 'x']));
  } catch (e) {
    return { where, error: errorText(e), input: x };
  }
  return null;
}

export function fuzzLinks(count: number, seed: number): FuzzReport {
  const t0 = performance.now();
  const h = linksHarness();
  const r: FuzzReport = { target: 'links protocol', ran: 0, crashed: 0, crashes: [], ms: 0 };
  for (let i = 0; i < count; i++) {
    const s = inputSeed(seed, i);
    const c = linksOne(h, s);
    r.ran++;
    if (c !== null) {
      r.crashed++;
      if (r.crashes.length < KEEP_CRASHES) r.crashes.push({ seed: s, where: c.where, error: c.error, input: c.input.toString('hex') });
    }
  }
  r.ms = performance.now() - t0;
  r.coverage = { ...Object.fromEntries(DROP_REASONS.map((d) => [d, h.l.a.counters.drops[d] + h.l.b.counters.drops[d]])), handshakes: h.l.a.counters.handshakesCompleted + h.l.b.counters.handshakesCompleted, cookies: h.l.b.counters.cookieRepliesSent };
  return r;
}
