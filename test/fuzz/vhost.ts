/**
 * Fuzzes the vhost-user back-end (native.VhostDevice, vhost*.cc) with a hostile front-end and
 * guest (test/support/vhost-frontend.ts): random, mutated and valid control messages (with
 * random descriptors attached), hostile ring contents (descriptors, avail indices and entries,
 * raw bytes over the rings), and valid traffic both ways, in the same process as the device.
 *
 * Inputs come in episodes of EPISODE steps; each episode starts on a new connection from a
 * reset guest, so it replays alone from its seed. A crash is: an exception out of the device's
 * methods, a native crash (the run dies; FUZZ_TRACE=1 prints each episode's seed before it
 * runs, so the last one printed is the culprit), a device that
 * does not come back to `running` for a well-behaved front-end at the next episode (liveness:
 * GET_FEATURES and the rest of QEMU's sequence answered), `broken` without a violation counted,
 * a callback error, more chains per turn than the budget, a frame to JS longer than its slot,
 * and, in clean episodes (valid traffic only), any frame lost, changed or made up either way.
 */
import { setImmediate as yieldLoop } from 'node:timers/promises';
import { closeSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NativeDevice } from '../../plugins/native/types.js';
import { loadNative } from '../../plugins/native/index.js';
import { type Backend, DESC_F_NEXT, DESC_F_WRITE, encodeMsg, F, FLAG_NEED_REPLY, FLAG_VERSION, memTablePayload, Req, RX, startBackend, TX, u64Payload, VhostFrontend, vringAddr, vringState, vt } from '../support/vhost-frontend.js';
import { inputSeed, mutate, Rng } from './rng.js';
import { errorText, KEEP_CRASHES, type FuzzReport } from './report.js';

/** Steps per episode (inputs are counted in steps). */
export const EPISODE = 16;
const NUM = 64;
const BUF = 2048;
const BATCH = 32;
const TRACE = process.env.FUZZ_TRACE === '1';
const REGION = 1 << 20;
const PREFIX = 64 << 10;
const CANARY = 0x5a;
const CANARY_FROM = 512 << 10;
const CANARY_TO = REGION - (8 << 10);

function fillCanaries(h: VhostHarness): void {
  h.fe.regions[0]!.file.fill(CANARY, 0, PREFIX);
  h.fe.regions[0]!.mem.fill(CANARY, CANARY_FROM, CANARY_TO);
}

function canaryIntact(h: VhostHarness): string | null {
  const g = h.fe.regions[0]!;
  for (const [buf, what] of [[g.file.subarray(0, PREFIX), 'before the region (mmap_offset ignored?)'], [g.mem.subarray(CANARY_FROM, CANARY_TO), `at region offsets ${CANARY_FROM}..${CANARY_TO}`]] as const) {
    for (let i = 0; i < buf.length; i++) if (buf[i] !== CANARY) return `guest memory written ${what}, byte ${i}`;
  }
  return null;
}

export interface VhostHarness {
  b: Backend;
  fe: VhostFrontend;
  /** Spare descriptors to attach to messages: an eventfd and an unsealed memfd. */
  spare: { efd: number; memfd: number; mapId: number; mem: Buffer };
  coverage: Record<string, number>;
  /**
   * This episode's guest pointed an RX descriptor into the canary stretch itself (raw bytes
   * over its descriptor table can): the device may then write there, as the guest offered it.
   */
  offeredCanary: boolean;
  /** The front-end's connection is new, started by a well-behaved QEMU, on a reset guest. */
  ready: boolean;
  /**
   * A second, well-behaved guest on the same native forwarding table (cut-through): frames the
   * fuzzed guest sends to MAC_PEER go straight into its RX ring. Nothing the fuzzed guest does
   * may break it.
   */
  peer: { b: Backend; fe: VhostFrontend; fib: object; got: Buffer[] };
  /**
   * A port without the virtio-net header on the same table (a native Device on a unix datagram
   * socket, sending to a second one that records what arrives): frames for MAC_SOCK are cut
   * through to it, TSO super-frames segmented and partial checksums completed natively.
   */
  sock: { dev: NativeDevice; sink: NativeDevice; dir: string; datagrams: number; oversize: number };
}

const MAC_GW = 0x02_6d_76_00_ff_01;
const MAC_A = 0x52_54_00_00_00_0a;
const MAC_PEER = 0x52_54_00_00_00_0b;
const MAC_SOCK = 0x52_54_00_00_00_0c;

/** A plain IPv4 TCP frame from the fuzzed guest to `dst` (what cut-through forwards). */
function cutFrame(rng: Rng, len: number, dst = MAC_PEER): Buffer {
  const f = rng.bytes(Math.max(54, len));
  f.writeUIntBE(dst, 0, 6);
  f.writeUIntBE(MAC_A, 6, 6);
  f.writeUInt16BE(0x0800, 12);
  f[14] = 0x45;
  f[15] = 0;
  f.writeUInt16BE(f.length - 14, 16);
  f.writeUInt16BE(0, 20);  // not a fragment
  f[22] = 64;
  f[23] = 6;
  f.writeUInt32BE(0x0a500001, 26);
  f.writeUInt32BE(0x0a500002, 30);
  if (rng.bool(0.8)) f[46] = (5 + rng.int(11)) << 4;  // a TCP data offset that holds, mostly
  return f;
}

/** A TSO or partial-checksum header for a frame to the socket port (plausible, or not). */
function segHdr(rng: Rng, len: number): Buffer {
  const h = Buffer.alloc(12);
  h[0] = rng.bool(0.8) ? 1 : rng.int(4);
  h[1] = rng.pick([0, 1, 1, 1, 4, 3, 0x81]);
  h.writeUInt16LE(rng.bool(0.7) ? 54 : rng.int(len + 8), 2);
  h.writeUInt16LE(rng.bool(0.7) ? 1 + rng.int(1460) : rng.pick([0, 1, 0xffff]), 4);
  h.writeUInt16LE(rng.bool(0.8) ? 34 : rng.int(len + 8), 6);
  h.writeUInt16LE(rng.bool(0.8) ? 16 : rng.int(0x10000), 8);
  return h;
}

export function vhostHarness(): VhostHarness {
  const b = startBackend({ maxFrame: 1514, batch: BATCH, offloads: true });
  // Region 0 starts 64 KiB into its memfd (as QEMU's regions after the first do): the device must
  // add mmap_offset. Canaries the device must never write: the memfd before the region, and a
  // stretch of the region no descriptor the fuzzer makes points into.
  const fe = VhostFrontend.connect(b.path, { want: F.VERSION_1 | F.MRG_RXBUF | F.PROTOCOL_FEATURES, num: NUM, bufSize: BUF, regions: [{ size: REGION, mmapOffset: PREFIX }], replyTimeoutMs: 2000 });
  const m = vt().memfdMap(4096, false);
  const pb = startBackend({ maxFrame: 1514, batch: BATCH, offloads: true });
  const pfe = VhostFrontend.connect(pb.path, { num: NUM, bufSize: BUF, memSize: 1 << 20 });
  const Fib = loadNative().Device.Fib;
  const fib = new Fib(MAC_GW, 1514);
  b.dev.bindSwitch(fib, 1, 14, 1514, MAC_A, () => {});
  pb.dev.bindSwitch(fib, 1, 14, 1514, MAC_PEER, () => {});
  fib.set(MAC_PEER, pb.dev, 1e9);
  fib.set(MAC_A, b.dev, 1e9);
  const dir = mkdtempSync(join(tmpdir(), 'mvnet-vhost-fuzz-'));
  const native = loadNative();
  const a = native.openUnixDgram({ path: join(dir, 'a') });
  const z = native.openUnixDgram({ path: join(dir, 'z') });
  const sock = { dir, datagrams: 0, oversize: 0 } as VhostHarness['sock'];
  sock.dev = new native.Device({ fd: a.fd, mode: 'dgram', maxFrame: 1514, batch: 32, queueFrames: 256, queueBytes: 1 << 20, onRead: () => {}, onError: () => {} });
  sock.dev.setPeer(join(dir, 'z'));
  sock.sink = new native.Device({
    fd: z.fd,
    mode: 'dgram',
    maxFrame: 65536,
    batch: 64,
    queueFrames: 1,
    queueBytes: 1 << 16,
    onRead: (count) => {
      sock.datagrams += count;
      // Segmentation must have cut super-frames to the port's largest frame.
      for (let i = 0; i < count; i++) if (sock.sink.lengths[i]! > 1514) sock.oversize++;
    },
    onError: () => {},
  });
  sock.dev.start();
  sock.sink.start();
  sock.dev.bindSwitch(fib, 0, 14, 1514, MAC_SOCK, () => {});
  fib.set(MAC_SOCK, sock.dev, 1e9);
  return {
    sock,
    peer: { b: pb, fe: pfe, fib, got: [] }, b, fe, spare: { efd: vt().eventfd(), memfd: m.fd, mapId: m.id, mem: m.mem }, coverage: { episodes: 0, clean: 0, broken: 0, closedByBackend: 0, framesIn: 0, framesOut: 0, ctl: 0, ring: 0, cutThrough: 0 }, ready: false, offeredCanary: false };
}

/** The peer up: QEMU's sequence, then all its RX buffers offered. */
async function startPeer(h: VhostHarness): Promise<void> {
  await h.peer.fe.start();
  h.peer.fe.postRx(NUM);
}

const BASE = F.VERSION_1 | F.MRG_RXBUF | F.PROTOCOL_FEATURES;
// Negotiated at random (each half the time) in half the episodes; EVENT_IDX with them, though the
// fake guest neither moves used_event nor reads avail_event: the harness polls its rings.
const OFFLOADS = [F.CSUM, F.GUEST_CSUM, F.GUEST_TSO4, F.GUEST_TSO6, F.HOST_TSO4, F.HOST_TSO6, F.EVENT_IDX];

/**
 * Frames a guest read from its RX ring, each checked (unless the guest tampered with its own RX
 * ring or the control plane: then what it reads back is not what the device wrote) against
 * what it negotiated: no
 * NEEDS_CSUM without GUEST_CSUM, no GSO type it did not negotiate (UDP GSO never: not offered).
 */
function takeRx(fe: VhostFrontend, who: string, coverage: Record<string, number>, checkHeaders = true): Buffer[] {
  // Each as JS wrote it: the 10-byte virtio_net_hdr (num_buffers left out) then the frame.
  return fe.receiveFrames().map((x) => {
    const whole = Buffer.concat([x.hdr.subarray(0, 10), x.frame]);
    if (!checkHeaders) return whole;
    const flags = x.hdr[0]!;
    const gso = x.hdr[1]! & 0x7f;
    if (gso !== 0 || (flags & 1) !== 0) coverage.offloadFramesIn = (coverage.offloadFramesIn ?? 0) + 1;
    check((flags & 1) === 0 || (fe.features & F.GUEST_CSUM) !== 0n, `${who} got NEEDS_CSUM without GUEST_CSUM`);
    check(gso === 0 || (gso === 1 && (fe.features & F.GUEST_TSO4) !== 0n) || (gso === 4 && (fe.features & F.GUEST_TSO6) !== 0n), `${who} got gso_type ${x.hdr[1]} with features ${fe.features.toString(16)}`);
    return whole;
  });
}

/** A well-formed offload header (NEEDS_CSUM, maybe TSO4/6) for a 10-byte virtio_net_hdr. */
function validOffloadHdr(rng: Rng): Buffer {
  const h = Buffer.alloc(10);
  h[0] = 1;
  h[1] = rng.pick([0, 0, 1, 4]);
  h.writeUInt16LE(54, 2);
  h.writeUInt16LE(h[1] === 0 ? 0 : 1448, 4);
  h.writeUInt16LE(34, 6);
  h.writeUInt16LE(16, 8);
  return h;
}

/** Whether a frame JS writes (10-byte header first) may go to a guest with `features`. */
function offloadOk(f: Buffer, features: bigint): boolean {
  const gso = f[1]! & 0x7f;
  if ((f[0]! & 1) !== 0 && (features & F.GUEST_CSUM) === 0n) return false;
  if (gso === 0) return true;
  if (gso === 1) return (features & F.GUEST_TSO4) !== 0n;
  if (gso === 4) return (features & F.GUEST_TSO6) !== 0n;
  return false;
}

/** A hostile guest's virtio-net header: often a plausible offload, sometimes random bytes. */
function hostileHdr(rng: Rng): Buffer {
  const h = rng.bytes(12);
  if (rng.bool(0.7)) {
    h[0] = rng.pick([0, 1, 2, 3, 0xff]);
    h[1] = rng.pick([0, 1, 3, 4, 5, 0x81, 0x84, 0xff]);
    h.writeUInt16LE(rng.pick([0, 14, 54, 74, 0xffff]), 2);
    h.writeUInt16LE(rng.pick([0, 1, 536, 1448, 0xffff]), 4);
    h.writeUInt16LE(rng.pick([0, 34, 54, 0xfff0]), 6);
    h.writeUInt16LE(rng.pick([6, 16, 0xffff]), 8);
  }
  return h;
}

/** Takes what reached the peer and offers its buffers again (a guest that keeps up). */
function servicePeer(h: VhostHarness): void {
  const p = h.peer;
  p.got.push(...takeRx(p.fe, 'the peer', h.coverage).map((f) => f.subarray(10)));
  p.fe.reclaimTx();
  p.fe.postRx(p.fe.rings[RX]!.free.length);
}

export function closeVhostHarness(h: VhostHarness): void {
  h.sock.dev.unbindSwitch();
  h.sock.dev.close();
  h.sock.sink.close();
  rmSync(h.sock.dir, { recursive: true, force: true });
  h.b.dev.unbindSwitch();
  h.peer.b.dev.unbindSwitch();
  h.peer.fe.close();
  h.peer.b.close();
  h.fe.close();
  h.b.close();
  vt().memfdUnmap(h.spare.mapId);
  closeSync(h.spare.efd);
  closeSync(h.spare.memfd);
}

type Mode = 'clean' | 'ring' | 'ctl' | 'scratch';

const INTERESTING64 = [0n, 1n, 0xfffn, 0x1000n, 0xff000n, 0xfffffn, 0x100000n, 0x100001n, 0xffff_ffffn, 0x1_0000_0000n, 0x7fff_ffff_ffff_ffffn, 0xffff_ffff_ffff_f000n, 0xffff_ffff_ffff_ffffn];
const INTERESTING32 = [0, 1, 5, 11, 12, 13, 60, 1514, 1526, 2047, 2048, 2049, 4096, 65535, 65550, 65562, 0x10_0000, 0x7fff_ffff, 0xffff_fff0, 0xffff_ffff];

function pick64(rng: Rng, fe: VhostFrontend): bigint {
  const k = rng.int(4);
  if (k === 0) return rng.pick(INTERESTING64);
  if (k === 1) return fe.rings[rng.int(2)]!.bufGpa(rng.int(NUM)) + BigInt(rng.int(64)) - 32n;
  if (k === 2) return BigInt(fe.regions[0]!.size) - BigInt(rng.int(4096));
  return (BigInt(rng.u32()) << 32n) | BigInt(rng.u32());
}

function frameOf(rng: Rng, len: number): Buffer {
  const f = rng.bytes(len);
  if (len >= 14) f.writeUInt16BE(0x0800, 12);
  return f;
}

/** A control message valid for the current front-end (mutated by the caller or not). */
function validMessage(rng: Rng, h: VhostHarness): { bytes: Buffer; fds: number[] } {
  const fe = h.fe;
  const q = rng.int(2);
  const r = fe.rings[q]!;
  const flags = rng.bool(0.2) ? FLAG_VERSION | FLAG_NEED_REPLY : FLAG_VERSION;
  switch (rng.int(16)) {
    case 0:
      return { bytes: encodeMsg(Req.GET_FEATURES, undefined, flags), fds: [] };
    case 1:
      return { bytes: encodeMsg(Req.SET_FEATURES, u64Payload(F.VERSION_1 | F.MRG_RXBUF | F.PROTOCOL_FEATURES), flags), fds: [] };
    case 2:
      return { bytes: encodeMsg(rng.pick([Req.SET_OWNER, Req.RESET_OWNER, Req.GET_PROTOCOL_FEATURES, Req.GET_QUEUE_NUM]), undefined, flags), fds: [] };
    case 3:
      return { bytes: encodeMsg(Req.SET_PROTOCOL_FEATURES, u64Payload(rng.bool() ? 8n : BigInt(rng.u32())), flags), fds: [] };
    case 4:
      return { bytes: encodeMsg(Req.SET_MEM_TABLE, memTablePayload(fe.regions.map((g) => g.desc())), flags), fds: fe.regions.map((g) => g.fd) };
    case 5:
      return { bytes: encodeMsg(Req.SET_VRING_NUM, vringState(q, rng.bool(0.7) ? NUM : 1 << rng.int(17)), flags), fds: [] };
    case 6:
      return { bytes: encodeMsg(Req.SET_VRING_BASE, vringState(q, rng.bool(0.7) ? 0 : rng.int(0x10000)), flags), fds: [] };
    case 7:
      return { bytes: encodeMsg(Req.SET_VRING_ADDR, vringAddr(q, r.uva(r.descOff), r.uva(r.usedOff), r.uva(r.availOff)), flags), fds: [] };
    case 8:
      return { bytes: encodeMsg(Req.SET_VRING_KICK, u64Payload(BigInt(q)), flags), fds: [r.kickFd] };
    case 9:
      return { bytes: encodeMsg(Req.SET_VRING_CALL, u64Payload(BigInt(q)), flags), fds: [r.callFd] };
    case 10:
      return { bytes: encodeMsg(Req.SET_VRING_ERR, u64Payload(BigInt(q)), flags), fds: [h.spare.efd] };
    case 11:
      return { bytes: encodeMsg(Req.SET_VRING_ENABLE, vringState(q, rng.int(2)), flags), fds: [] };
    case 12:
      return { bytes: encodeMsg(Req.GET_VRING_BASE, vringState(q, 0), flags), fds: [] };
    case 13:
      return { bytes: encodeMsg(Req.SET_VRING_KICK, u64Payload(BigInt(q) | 0x100n), flags), fds: [] };
    case 14:
      return { bytes: encodeMsg(rng.int(64), rng.bytes(rng.int(48)), flags), fds: [] };
    default:
      return { bytes: encodeMsg(Req.SET_VRING_ADDR, vringAddr(q, pick64(rng, fe), pick64(rng, fe), pick64(rng, fe)), flags), fds: [] };
  }
}

function hostileMessage(rng: Rng, h: VhostHarness): { bytes: Buffer; fds: number[] } {
  const k = rng.int(10);
  let m = validMessage(rng, h);
  if (k < 6) m = { bytes: mutate(rng, m.bytes), fds: m.fds };
  else if (k < 7) m = { bytes: rng.bytes(rng.int(80)), fds: m.fds };
  if (rng.bool(0.25)) {
    const extra = [h.spare.efd, h.spare.memfd, h.fe.regions[0]!.fd, h.fe.rings[0]!.kickFd];
    const n = rng.int(12);
    m.fds = Array.from({ length: n }, () => rng.pick(extra));
  }
  return m;
}

/** Whether an RX descriptor now covers part of the canary stretch (the guest offered it). */
function rxOffersCanary(h: VhostHarness): boolean {
  const g = h.fe.regions[0]!;
  const from = g.gpa + BigInt(CANARY_FROM);
  const to = g.gpa + BigInt(CANARY_TO);
  const r = h.fe.rings[RX]!;
  for (let i = 0; i < NUM; i++) {
    const d = r.readDesc(i);
    if (d.addr < to && d.addr + BigInt(d.len) > from) return true;
  }
  return false;
}

/** A hostile change to the guest's rings. */
function mutateRing(rng: Rng, h: VhostHarness): string {
  const q = rng.int(2);
  const r = h.fe.rings[q]!;
  const k = rng.int(8);
  switch (k) {
    case 0:
    case 1: {
      const i = rng.int(NUM);
      const d = r.readDesc(i);
      const field = rng.int(4);
      if (field === 0) d.addr = pick64(rng, h.fe);
      else if (field === 1) d.len = rng.bool() ? rng.pick(INTERESTING32) : rng.u32();
      else if (field === 2) d.flags = rng.bool() ? rng.int(8) : rng.u32() & 0xffff;
      else d.next = rng.bool() ? rng.int(NUM + 2) : rng.u32() & 0xffff;
      r.writeDesc(i, d);
      return `desc q${q} #${i} ${field}`;
    }
    case 2:
      r.setAvailIdx(rng.bool() ? r.availIdx + rng.int(NUM + 3) : rng.u32());
      return `avail idx q${q}`;
    case 3:
      r.setAvailRingEntry(rng.int(NUM), rng.bool() ? rng.int(NUM + 2) : rng.u32());
      return `avail entry q${q}`;
    case 4: {
      // A chain of valid-looking descriptors, maybe looped or long.
      const n = 1 + rng.int(NUM);
      const start = rng.int(NUM);
      for (let j = 0; j < n; j++) {
        const i = (start + j) % NUM;
        const last = j === n - 1;
        r.writeDesc(i, { addr: r.bufGpa(i), len: rng.int(BUF + 1), flags: (last && rng.bool(0.8) ? 0 : DESC_F_NEXT) | (q === RX ? DESC_F_WRITE : rng.bool(0.05) ? DESC_F_WRITE : 0), next: last ? rng.int(NUM + 1) : (i + 1) % NUM });
      }
      r.availPush(start);
      return `chain q${q} ${n}`;
    }
    case 5: {
      // Raw bytes over a piece of the ring area (desc, avail, used).
      const base = [r.descOff, r.availOff, r.usedOff][rng.int(3)]!;
      const off = base + rng.int(64);
      const bytes = rng.bytes(1 + rng.int(32));
      bytes.copy(h.fe.regions[0]!.mem, off);
      if (q === RX && base === r.descOff && rxOffersCanary(h)) h.offeredCanary = true;
      return `bytes q${q} @${off}`;
    }
    case 6:
      r.setAvailFlags(rng.int(4));
      return `avail flags q${q}`;
    default:
      r.kick();
      return `kick q${q}`;
  }
}

interface Episode {
  mode: Mode;
  trace: string[];
}

function check(cond: boolean, what: string): void {
  if (!cond) throw new Error(what);
}

/** processQueues with the invariants that hold whatever the guest did. */
function pq(h: VhostHarness): number {
  const n = h.b.dev.processQueues();
  check(Number.isInteger(n) && n >= 0 && n <= BATCH, `processQueues took ${n} chains, budget ${BATCH}`);
  return n;
}

function checkDevice(h: VhostHarness, v0: number): void {
  const s = h.b.dev.stats();
  check(['listening', 'connected', 'running', 'broken'].includes(s.state), `state ${s.state}`);
  if (s.state === 'broken') check(s.violations > v0, `broken without a violation counted: ${s.detail}`);
  check(s.callbackErrors === 0, `callbackErrors ${s.callbackErrors}`);
  for (const f of h.b.frames) check(f.length <= h.b.dev.slotSize, `frame of ${f.length} bytes in a ${h.b.dev.slotSize}-byte slot`);
}

/**
 * A new connection from a reset guest; `start`: QEMU's whole sequence, which must bring the
 * device to running (the liveness check after every episode), else only the handshake.
 */
async function freshStart(h: VhostHarness, start: boolean): Promise<void> {
  const { fe, b } = h;
  fe.reconnect(b.path);
  fe.resetGuest();
  try {
    if (start) await fe.start();
    else await fe.handshake();
  } catch (e) {
    throw new Error(`liveness: a well-behaved front-end on a new connection failed: ${errorText(e)}`);
  }
  if (start) check(b.dev.stats().state === 'running', `liveness: not running after a valid start: ${b.dev.stats().state} (${b.dev.stats().detail})`);
}

/** One episode from `seed`, steps [0, steps). Throws at the first invariant broken. */
async function runEpisode(h: VhostHarness, seed: number, steps: number, ep: Episode): Promise<void> {
  const rng = new Rng(seed);
  const fe = h.fe;
  const b = h.b;
  const modes: Mode[] = ['clean', 'clean', 'ring', 'ring', 'ring', 'ctl', 'ctl', 'scratch'];
  ep.mode = rng.pick(modes);
  h.offeredCanary = false;
  h.coverage.episodes!++;
  if (ep.mode === 'clean') h.coverage.clean!++;
  if (h.peer.b.dev.stats().state !== 'running') await startPeer(h);
  // Half the episodes negotiate a random set of offloads (the device offers them all).
  const want = rng.bool() ? BASE : OFFLOADS.reduce((w, bit) => (rng.bool() ? w | bit : w), BASE);
  if (ep.mode === 'scratch' || !h.ready || fe.opts.want !== want) {
    fe.opts.want = want;
    await freshStart(h, ep.mode !== 'scratch');
  }
  if (want !== BASE) h.coverage.offloadEpisodes = (h.coverage.offloadEpisodes ?? 0) + 1;
  h.ready = false;
  fillCanaries(h);
  b.frames.length = 0;
  h.peer.got.length = 0;
  const peerDrops0 = h.peer.b.dev.stats().dropNoBuffers;
  const v0 = b.dev.stats().violations;
  // Half the episodes send (some) frames the switch cuts through into the peer.
  const cut = rng.bool();
  let rxTampered = false;
  const sentTx: Buffer[] = [];
  const wroteRx: Buffer[] = [];
  const gotRx: Buffer[] = [];
  let hostile = ep.mode !== 'clean';
  for (let s = 0; s < steps; s++) {
    const k = rng.int(10);
    const wantCtl = (ep.mode === 'ctl' && k < 3) || (ep.mode === 'scratch' && k < 6);
    const wantRing = ep.mode === 'ring' && k < 4;
    if (wantCtl) {
      if (fe.closed) {
        ep.trace.push('ctl: closed');
        continue;
      }
      const m = ep.mode === 'scratch' && rng.bool(0.5) ? validMessage(rng, h) : hostileMessage(rng, h);
      ep.trace.push(`ctl ${m.bytes.toString('hex')} fds ${m.fds.length}`);
      h.coverage.ctl!++;
      try {
        fe.sendBytes(m.bytes, m.fds);
      } catch {
        // the back-end closed the connection (EPIPE): expected of a hostile message
      }
      await yieldLoop();
      continue;
    }
    if (wantRing) {
      const what = mutateRing(rng, h);
      if (!what.includes('q1') || what.startsWith('bytes')) rxTampered = true;
      ep.trace.push(what);
      h.coverage.ring!++;
      pq(h);
      continue;
    }
    const a = rng.int(5);
    if (a === 0 || a === 1) {
      const n = 1 + rng.int(4);
      const frames: Buffer[] = [];
      // To the socket port: super-frames (up to 1900 bytes: a 2 KiB buffer) with TSO or
      // partial-checksum headers, for native segmentation; only where the guest negotiated
      // HOST_TSO/CSUM would a real guest send them, but a hostile one sends what it likes.
      const toSock = cut && ep.mode !== 'clean' && rng.bool(0.3);
      for (let i = 0; i < n && fe.rings[TX]!.free.length > 0; i++) frames.push(toSock ? cutFrame(rng, 54 + rng.int(1846), MAC_SOCK) : cut && rng.bool(0.7) ? cutFrame(rng, 54 + rng.int(1460)) : frameOf(rng, 14 + rng.int(1500)));
      ep.trace.push(`tx${toSock ? ' sock' : ''} ${frames.map((f) => f.length).join(',')}`);
      try {
        const hdr = toSock ? segHdr(rng, frames[0]?.length ?? 54) : hostile && rng.bool(0.2) ? hostileHdr(rng) : undefined;
        fe.sendFrames(frames, { kick: rng.bool(), ...(hdr !== undefined ? { hdr } : {}) });
      } catch {
        // a hostile step emptied the free list some other way
      }
      sentTx.push(...frames);
      if (rng.bool()) pq(h);
    } else if (a === 2) {
      const post = Math.min(rng.int(6), fe.rings[RX]!.free.length);
      fe.postRx(post);
      const n = rng.int(5);
      const frames = Array.from({ length: n }, () => {
        const hdr = Buffer.alloc(10);
        if (hostile && rng.bool(0.3)) hostileHdr(rng).copy(hdr, 0, 0, 10);
        else if (rng.bool(0.3)) validOffloadHdr(rng).copy(hdr);
        // Clean episodes: frames that fit (1514 bytes, one 2 KiB buffer each); else any size.
        return Buffer.concat([hdr, frameOf(rng, 14 + rng.int(!hostile || rng.bool(0.9) ? 1501 : 70000))]);
      });
      ep.trace.push(`rx post ${post} write ${frames.map((f) => f.length).join(',')}`);
      const before = b.dev.stats();
      const got = b.dev.write(frames, n);
      check(Number.isInteger(got) && got >= 0 && got <= n, `write returned ${got} of ${n}`);
      if (!hostile) {
        // Clean: every frame fits a buffer. One with an offload the guest did not negotiate is
        // dropped (dropBadOffload); the rest are delivered in order while buffers last, then
        // dropped and counted (dropNoBuffers).
        const ok = frames.filter((f) => offloadOk(f, fe.features));
        const after = b.dev.stats();
        check(after.dropBadOffload === before.dropBadOffload + (n - ok.length), `write: ${n - ok.length} frames with offloads not negotiated, dropBadOffload +${after.dropBadOffload - before.dropBadOffload}`);
        check(got <= ok.length && after.dropNoBuffers === before.dropNoBuffers + (ok.length - got), `write: ${got} of ${ok.length} delivered, dropNoBuffers +${after.dropNoBuffers - before.dropNoBuffers}`);
        wroteRx.push(...ok.slice(0, got));
      }
      h.coverage.framesOut! += got;
    } else if (a === 3) {
      ep.trace.push('pq');
      pq(h);
    } else {
      ep.trace.push('reclaim');
      fe.reclaimTx();
      gotRx.push(...takeRx(fe, 'the guest', h.coverage, ep.mode === 'clean' || (ep.mode === 'ring' && !rxTampered)));
      if (rng.bool(0.3)) await yieldLoop();
    }
    if (rng.bool(0.3)) servicePeer(h);
    checkDevice(h, v0);
    if (b.dev.stats().state === 'broken') hostile = true;
  }
  // Drain: whatever was made available is taken within a few turns (the budget, never a stall).
  for (let i = 0; i < 64 && pq(h) > 0; i++) servicePeer(h);
  servicePeer(h);
  fe.reclaimTx();
  gotRx.push(...takeRx(fe, 'the guest', h.coverage, ep.mode === 'clean' || (ep.mode === 'ring' && !rxTampered)));
  checkDevice(h, v0);
  h.coverage.framesIn! += b.frames.length;
  const st = b.dev.stats().state;
  if (st === 'broken') h.coverage.broken!++;
  if (fe.closed) h.coverage.closedByBackend!++;
  h.coverage.toSocket = h.sock.datagrams;
  check(h.sock.oversize === 0, `${h.sock.oversize} datagrams larger than the socket port's 1514 bytes (segmentation)`);
  const ss = h.sock.dev.stats();
  check(ss.callbackErrors === 0, `socket port: callbackErrors ${ss.callbackErrors}`);
  // The peer is never hurt by what the fuzzed guest does.
  const ps = h.peer.b.dev.stats();
  check(ps.state === 'running' && ps.violations === 0 && ps.callbackErrors === 0, `the peer guest was hurt: ${ps.state} (${ps.detail}), ${ps.violations} violations`);
  h.coverage.cutThrough = (h.coverage.cutThrough ?? 0) + h.peer.got.length;
  if (!hostile && ep.mode === 'clean') {
    // Each frame sent went to JS or into the peer (or was dropped there for want of buffers),
    // in order on each path, unchanged.
    const peerDrops = ps.dropNoBuffers - peerDrops0;
    const toJs = b.frames.map((f) => f.subarray(10));
    check(toJs.length + h.peer.got.length + peerDrops === sentTx.length, `clean episode: ${sentTx.length} frames sent, ${toJs.length} to JS, ${h.peer.got.length} cut through, ${peerDrops} dropped at the peer`);
    let j = 0;
    let k = 0;
    for (const f of sentTx) {
      if (j < toJs.length && toJs[j]!.equals(f)) j++;
      else if (k < h.peer.got.length && h.peer.got[k]!.equals(f)) k++;
    }
    check(j === toJs.length && k === h.peer.got.length, `clean episode: a frame changed or out of order (${j}/${toJs.length} to JS, ${k}/${h.peer.got.length} to the peer matched)`);
    check(gotRx.length === wroteRx.length, `clean episode: ${wroteRx.length} frames written, ${gotRx.length} in the RX ring`);
    wroteRx.forEach((f, i) => check(gotRx[i]!.equals(f), `clean episode: RX frame ${i} changed`));
  }
  // Canaries: only where the memory table is ours (a fuzzed SET_MEM_TABLE may really announce
  // the region at another offset of the memfd, and the device may then write there).
  if ((ep.mode === 'clean' || ep.mode === 'ring') && !h.offeredCanary) {
    const wild = canaryIntact(h);
    check(wild === null, wild ?? '');
  }
  // Liveness, charged to this episode: whatever it did, the next QEMU is served.
  ep.trace.push('liveness');
  fe.opts.want = BASE;
  await freshStart(h, true);
  h.ready = true;
}

/** Runs one episode (replay): what went wrong, or null. */
export async function vhostOne(h: VhostHarness, seed: number, steps = EPISODE): Promise<{ where: string; error: string; input: string } | null> {
  const ep: Episode = { mode: 'clean', trace: [] };
  try {
    await runEpisode(h, seed, steps, ep);
    return null;
  } catch (e) {
    return { where: `${ep.mode} episode, step ${ep.trace.length}`, error: errorText(e), input: `episode ${seed}: ${ep.trace.slice(-12).join(' | ')}` };
  }
}

function openFdCount(): number {
  return readdirSync('/proc/self/fd').length;
}

export async function fuzzVhost(count: number, seed: number): Promise<FuzzReport> {
  const t0 = Date.now();
  const fds0 = openFdCount();
  let h = vhostHarness();
  const report: FuzzReport = { target: 'vhost', ran: 0, crashed: 0, crashes: [], ms: 0, coverage: h.coverage };
  try {
    for (let e = 0; report.ran < count; e++) {
      const steps = Math.min(EPISODE, count - report.ran);
      const s = inputSeed(seed, e);
      // Synchronous on a pipe or file: printed before a native crash could kill the run.
      if (TRACE) process.stderr.write(`vhost episode ${s}\n`);
      const c = await vhostOne(h, s, steps);
      report.ran += steps;
      if (c !== null) {
        report.crashed++;
        if (report.crashes.length < KEEP_CRASHES) report.crashes.push({ seed: s, ...c });
        // A device left unusable would fail every later episode: the next one starts afresh.
        const coverage = h.coverage;
        closeVhostHarness(h);
        h = vhostHarness();
        h.coverage = coverage;
      }
    }
  } finally {
    closeVhostHarness(h);
  }
  // Descriptors: everything the device was given, kept, refused or replaced is closed by now.
  const leaked = openFdCount() - fds0;
  if (leaked > 0) {
    report.crashed++;
    report.crashes.push({ seed, where: 'descriptors', error: `${leaked} more descriptors open after the run than before`, input: '' });
  }
  report.ms = Date.now() - t0;
  return report;
}

/** Replays a regression seed: one episode on a fresh device. */
export async function replayVhost(seed: number): Promise<string[]> {
  const h = vhostHarness();
  try {
    const c = await vhostOne(h, seed);
    return c === null ? [] : [`${c.where}: ${c.error}`];
  } finally {
    closeVhostHarness(h);
  }
}
