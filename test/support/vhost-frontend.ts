/**
 * A fake vhost-user front-end: what QEMU does to a vhost-user-net back-end (QEMU's
 * docs/interop/vhost-user.rst), done from a test, plus the guest's side of the virtqueues.
 *
 * - Control: connects to the back-end's socket, negotiates (GET_FEATURES, protocol features,
 *   SET_OWNER, early SET_VRING_CALL/ERR), then at "DRIVER_OK" SET_FEATURES, SET_MEM_TABLE with
 *   memfds it maps itself (native.vhostTesting), SET_VRING_NUM/BASE/ADDR/KICK/CALL per ring and
 *   SET_VRING_ENABLE, in QEMU's order. Replies are read from the socket as events (the back-end
 *   may live in this same process: nothing here blocks the loop). `sync()` is a GET_FEATURES
 *   round trip: the back-end handles messages in order, so once it answers, everything sent
 *   before has been handled.
 * - Guest: split rings laid out in region 0 (queue 0 = guest RX, queue 1 = guest TX), each
 *   descriptor with its own buffer; `sendFrames` puts frames on the TX ring and kicks,
 *   `postRx` offers RX buffers, `receiveFrames` reads what the back-end put there (MRG_RXBUF
 *   num_buffers honoured).
 * - Hostile input: every piece is reachable raw (`send`/`sendBytes` with any fds, `ring(q)`
 *   with writeDesc/availPush/setAvailIdx, `regions` with their memfds, layout options), so tests
 *   and the fuzzer build what a broken or malicious guest would.
 *
 * `startBackend` makes a native.VhostDevice on a fresh socket and records its frames and
 * states; `breakGuestRing` connects to a back-end (e.g. a daemon's vhost-user port), brings the
 * rings up and feeds it a descriptor loop: the device must go `broken`.
 */
import { closeSync, mkdtempSync, rmSync } from 'node:fs';
import { setImmediate as yieldLoop } from 'node:timers/promises';
import { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadNative } from '../../plugins/native/index.js';
import type { NativeVhostDevice, NativeVhostTesting, VhostDeviceOptions, VhostState } from '../../plugins/native/types.js';

export const Req = {
  GET_FEATURES: 1,
  SET_FEATURES: 2,
  SET_OWNER: 3,
  RESET_OWNER: 4,
  SET_MEM_TABLE: 5,
  SET_LOG_BASE: 6,
  SET_LOG_FD: 7,
  SET_VRING_NUM: 8,
  SET_VRING_ADDR: 9,
  SET_VRING_BASE: 10,
  GET_VRING_BASE: 11,
  SET_VRING_KICK: 12,
  SET_VRING_CALL: 13,
  SET_VRING_ERR: 14,
  GET_PROTOCOL_FEATURES: 15,
  SET_PROTOCOL_FEATURES: 16,
  GET_QUEUE_NUM: 17,
  SET_VRING_ENABLE: 18,
  SEND_RARP: 19,
  NET_SET_MTU: 20,
  SET_SLAVE_REQ_FD: 21,
  GET_CONFIG: 24,
  SET_CONFIG: 25,
  GET_INFLIGHT_FD: 31,
  RESET_DEVICE: 34,
  GET_MAX_MEM_SLOTS: 36,
  ADD_MEM_REG: 37,
  REM_MEM_REG: 38,
  SET_STATUS: 39,
  GET_STATUS: 40,
} as const;

/** Virtio feature bits. */
export const F = {
  CSUM: 1n << 0n,
  GUEST_CSUM: 1n << 1n,
  GUEST_TSO4: 1n << 7n,
  GUEST_TSO6: 1n << 8n,
  HOST_TSO4: 1n << 11n,
  HOST_TSO6: 1n << 12n,
  MRG_RXBUF: 1n << 15n,
  INDIRECT_DESC: 1n << 28n,
  EVENT_IDX: 1n << 29n,
  PROTOCOL_FEATURES: 1n << 30n,
  VERSION_1: 1n << 32n,
} as const;

/** vhost-user protocol feature bits. */
export const PF = {
  MQ: 1n << 0n,
  LOG_SHMFD: 1n << 1n,
  RARP: 1n << 2n,
  REPLY_ACK: 1n << 3n,
  MTU: 1n << 4n,
  SLAVE_REQ: 1n << 5n,
  CONFIG: 1n << 9n,
} as const;

export const FLAG_VERSION = 1;
export const FLAG_REPLY = 1 << 2;
export const FLAG_NEED_REPLY = 1 << 3;
export const HEADER_LEN = 12;
export const VRING_NOFD = 0x100;

export const DESC_F_NEXT = 1;
export const DESC_F_WRITE = 2;
export const DESC_F_INDIRECT = 4;
export const AVAIL_F_NO_INTERRUPT = 1;
/** virtio-net header with VERSION_1 (num_buffers included). */
export const VNET_HDR_LEN = 12;
export const RX = 0;
export const TX = 1;

let testing: NativeVhostTesting | undefined;
export function vt(): NativeVhostTesting {
  testing ??= loadNative().vhostTesting;
  return testing;
}

// ---- message encoding -------------------------------------------------------------------

/** A message: the 12-byte header (request, flags, size) then the payload; `size` may lie. */
export function encodeMsg(request: number, payload: Buffer = Buffer.alloc(0), flags = FLAG_VERSION, size = payload.length): Buffer {
  const h = Buffer.alloc(HEADER_LEN);
  h.writeUInt32LE(request >>> 0, 0);
  h.writeUInt32LE(flags >>> 0, 4);
  h.writeUInt32LE(size >>> 0, 8);
  return Buffer.concat([h, payload]);
}

export function u64Payload(v: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt.asUintN(64, v));
  return b;
}

export function vringState(index: number, num: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(index >>> 0, 0);
  b.writeUInt32LE(num >>> 0, 4);
  return b;
}

export function vringAddr(index: number, desc: bigint, used: bigint, avail: bigint, flags = 0, log = 0n): Buffer {
  const b = Buffer.alloc(40);
  b.writeUInt32LE(index >>> 0, 0);
  b.writeUInt32LE(flags >>> 0, 4);
  b.writeBigUInt64LE(BigInt.asUintN(64, desc), 8);
  b.writeBigUInt64LE(BigInt.asUintN(64, used), 16);
  b.writeBigUInt64LE(BigInt.asUintN(64, avail), 24);
  b.writeBigUInt64LE(BigInt.asUintN(64, log), 32);
  return b;
}

export interface RegionDesc {
  gpa: bigint;
  size: bigint;
  uva: bigint;
  mmapOffset: bigint;
}

/** SET_MEM_TABLE's payload: nregions, padding, then 32 bytes per region. `nregions` may lie. */
export function memTablePayload(regions: readonly RegionDesc[], nregions = regions.length): Buffer {
  const b = Buffer.alloc(8 + 32 * regions.length);
  b.writeUInt32LE(nregions >>> 0, 0);
  regions.forEach((r, i) => {
    const o = 8 + 32 * i;
    b.writeBigUInt64LE(BigInt.asUintN(64, r.gpa), o);
    b.writeBigUInt64LE(BigInt.asUintN(64, r.size), o + 8);
    b.writeBigUInt64LE(BigInt.asUintN(64, r.uva), o + 16);
    b.writeBigUInt64LE(BigInt.asUintN(64, r.mmapOffset), o + 24);
  });
  return b;
}

/** One parsed message from the back-end. */
export interface Reply {
  request: number;
  flags: number;
  payload: Buffer;
}

// ---- guest memory -----------------------------------------------------------------------

export interface RegionSpec {
  /** Bytes announced (memory_size). */
  size: number;
  /** The memfd's own size; default mmapOffset + size. Smaller: a memfd shorter than announced. */
  fdSize?: number;
  mmapOffset?: number;
  /** Guest physical base; default right after the previous region. */
  gpa?: bigint;
  /** QEMU's user address of the region; default a distinct 4 GiB-aligned one per region. */
  uva?: bigint;
  /** F_SEAL_SHRINK|GROW|SEAL as QEMU's memory-backend-memfd; default true. */
  seals?: boolean;
  /** Announce this region with region k's memfd (QEMU splits one RAM block around holes so). */
  shareFdOf?: number;
}

export class Region {
  constructor(
    readonly fd: number,
    /** The whole memfd as mapped here. */
    readonly file: Buffer,
    readonly mapId: number,
    readonly gpa: bigint,
    readonly uva: bigint,
    readonly size: number,
    readonly mmapOffset: number,
    readonly ownsFd: boolean,
  ) {}

  /** The guest-visible bytes: [gpa, gpa + size). Shorter when the memfd is. */
  get mem(): Buffer {
    return this.file.subarray(Math.min(this.mmapOffset, this.file.length), Math.min(this.mmapOffset + this.size, this.file.length));
  }

  desc(): RegionDesc {
    return { gpa: this.gpa, size: BigInt(this.size), uva: this.uva, mmapOffset: BigInt(this.mmapOffset) };
  }
}

// ---- rings ------------------------------------------------------------------------------

export interface Desc {
  addr: bigint;
  len: number;
  flags: number;
  next: number;
}

/** The guest's side of one split virtqueue in region 0 (offsets are guest-memory offsets there). */
export class GuestRing {
  /** The guest's avail->idx (free-running). */
  availIdx = 0;
  /** used->idx the guest has consumed up to. */
  lastUsed = 0;
  readonly free: number[] = [];
  kickFd = -1;
  callFd = -1;
  errFd = -1;

  constructor(
    readonly index: number,
    readonly num: number,
    private readonly region: Region,
    readonly descOff: number,
    readonly availOff: number,
    readonly usedOff: number,
    readonly bufOff: number,
    readonly bufSize: number,
  ) {
    this.resetIndices();
  }

  private get m(): Buffer {
    return this.region.mem;
  }

  resetIndices(): void {
    this.availIdx = 0;
    this.lastUsed = 0;
    this.free.length = 0;
    for (let i = 0; i < this.num; i++) this.free.push(i);
  }

  gpa(off: number): bigint {
    return this.region.gpa + BigInt(off);
  }

  uva(off: number): bigint {
    return this.region.uva + BigInt(off);
  }

  /** Guest-physical address of descriptor i's own buffer. */
  bufGpa(i: number): bigint {
    return this.gpa(this.bufOff + i * this.bufSize);
  }

  buf(i: number): Buffer {
    return this.m.subarray(this.bufOff + i * this.bufSize, this.bufOff + (i + 1) * this.bufSize);
  }

  writeDesc(i: number, d: Desc): void {
    const o = this.descOff + 16 * i;
    this.m.writeBigUInt64LE(BigInt.asUintN(64, d.addr), o);
    this.m.writeUInt32LE(d.len >>> 0, o + 8);
    this.m.writeUInt16LE(d.flags & 0xffff, o + 12);
    this.m.writeUInt16LE(d.next & 0xffff, o + 14);
  }

  readDesc(i: number): Desc {
    const o = this.descOff + 16 * i;
    return { addr: this.m.readBigUInt64LE(o), len: this.m.readUInt32LE(o + 8), flags: this.m.readUInt16LE(o + 12), next: this.m.readUInt16LE(o + 14) };
  }

  /** Puts `head` in the avail ring and publishes it (avail->idx + 1). */
  availPush(head: number): void {
    this.m.writeUInt16LE(head & 0xffff, this.availOff + 4 + 2 * (this.availIdx % this.num));
    this.availIdx = (this.availIdx + 1) & 0xffff;
    this.m.writeUInt16LE(this.availIdx, this.availOff + 2);
  }

  /** Writes avail->idx raw (a guest lying about how much it made available). */
  setAvailIdx(v: number): void {
    this.availIdx = v & 0xffff;
    this.m.writeUInt16LE(this.availIdx, this.availOff + 2);
  }

  setAvailRingEntry(slot: number, head: number): void {
    this.m.writeUInt16LE(head & 0xffff, this.availOff + 4 + 2 * slot);
  }

  setAvailFlags(flags: number): void {
    this.m.writeUInt16LE(flags & 0xffff, this.availOff);
  }

  usedIdx(): number {
    return this.m.readUInt16LE(this.usedOff + 2);
  }

  usedFlags(): number {
    return this.m.readUInt16LE(this.usedOff);
  }

  usedElem(slot: number): { id: number; len: number } {
    const o = this.usedOff + 4 + 8 * (slot % this.num);
    return { id: this.m.readUInt32LE(o), len: this.m.readUInt32LE(o + 4) };
  }

  /** Used elements not yet consumed by the guest, consumed now (their descriptors freed when `reclaim`). */
  takeUsed(reclaim = true): { id: number; len: number }[] {
    const out: { id: number; len: number }[] = [];
    const idx = this.usedIdx();
    while (this.lastUsed !== idx) {
      const e = this.usedElem(this.lastUsed);
      out.push(e);
      this.lastUsed = (this.lastUsed + 1) & 0xffff;
      if (reclaim && e.id < this.num) this.releaseChain(e.id);
    }
    return out;
  }

  /** Frees descriptor `head` and those chained from it (bounded by num). */
  releaseChain(head: number): void {
    let i = head;
    for (let n = 0; n < this.num && i < this.num; n++) {
      const d = this.readDesc(i);
      if (!this.free.includes(i)) this.free.push(i);
      if ((d.flags & DESC_F_NEXT) === 0) break;
      i = d.next;
    }
  }

  alloc(): number {
    const i = this.free.shift();
    if (i === undefined) throw new Error(`guest ring ${this.index}: no free descriptor`);
    return i;
  }

  kick(): void {
    if (this.kickFd >= 0) vt().eventfdWrite(this.kickFd, 1);
  }

  /** Interrupts the back-end signalled since the last call (0: none). */
  calls(): number {
    return this.callFd >= 0 ? vt().eventfdRead(this.callFd) : 0;
  }
}

// ---- the front-end ----------------------------------------------------------------------

export interface FrontendOptions {
  /** Guest memory regions (region 0 holds the rings and buffers); default one region of `memSize`. */
  regions?: RegionSpec[];
  /** Region 0's size when `regions` is not given; default 4 MiB (grown to fit the rings). */
  memSize?: number;
  /** Ring size per queue; default 256. */
  num?: number;
  /** Bytes of the buffer each descriptor owns; default 4096. */
  bufSize?: number;
  /** Features to accept of the back-end's offer (SET_FEATURES = offer & want); default VERSION_1|MRG_RXBUF|PROTOCOL_FEATURES. */
  want?: bigint;
  /** Protocol features to accept; default REPLY_ACK|MQ. */
  wantProtocol?: bigint;
  /** With REPLY_ACK negotiated, set NEED_REPLY on SET_* messages and wait for the ack (QEMU does on SET_MEM_TABLE). */
  needReply?: boolean;
  /** ms to wait for a reply before failing; default 3000. */
  replyTimeoutMs?: number;
  /**
   * Send each message in pieces of this many bytes, one sendmsg each, its descriptors on the
   * first (a stream socket may deliver any message so); default whole.
   */
  chunk?: number;
}

const DEFAULT_WANT = F.VERSION_1 | F.MRG_RXBUF | F.PROTOCOL_FEATURES;

function align(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

/** Bytes one split ring of `num` entries takes in this layout (desc, avail, used; 4 KiB-aligned). */
export function ringBytes(num: number): number {
  return align(align(16 * num + 6 + 2 * num, 4) + 6 + 8 * num, 4096);
}

interface Pending {
  request: number;
  resolve(r: Reply): void;
  reject(e: Error): void;
  timer: NodeJS.Timeout;
}

export class VhostFrontend {
  readonly regions: Region[] = [];
  readonly rings: GuestRing[] = [];
  features = 0n;
  offered = 0n;
  protocolOffered = 0n;
  protocol = 0n;
  /** Bytes from the back-end that are not a whole message yet. */
  private inbuf = Buffer.alloc(0);
  private readonly unexpected: Reply[] = [];
  private readonly pending: Pending[] = [];
  private sock: Socket | undefined;
  private fd = -1;
  private isClosed = false;
  private closedWaiters: (() => void)[] = [];
  readonly opts: Required<Omit<FrontendOptions, 'regions' | 'memSize'>>;

  private constructor(opts: FrontendOptions) {
    this.opts = {
      num: opts.num ?? 256,
      bufSize: opts.bufSize ?? 4096,
      want: opts.want ?? DEFAULT_WANT,
      wantProtocol: opts.wantProtocol ?? PF.REPLY_ACK | PF.MQ,
      needReply: opts.needReply ?? false,
      replyTimeoutMs: opts.replyTimeoutMs ?? 3000,
      chunk: opts.chunk ?? 0,
    };
    const num = this.opts.num;
    const ringArea = 2 * ringBytes(num);
    const need = ringArea + 2 * num * this.opts.bufSize;
    const specs = opts.regions ?? [{ size: Math.max(opts.memSize ?? 4 << 20, need) }];
    let nextGpa = 0n;
    specs.forEach((s, k) => {
      const mmapOffset = s.mmapOffset ?? 0;
      const gpa = s.gpa ?? nextGpa;
      const uva = s.uva ?? 0x7f00_0000_0000n + BigInt(k) * 0x1_0000_0000n;
      let r: Region;
      if (s.shareFdOf !== undefined) {
        const o = this.regions[s.shareFdOf];
        if (o === undefined) throw new Error(`region ${k}: shareFdOf ${s.shareFdOf} is not an earlier region`);
        r = new Region(o.fd, o.file, o.mapId, gpa, uva, s.size, mmapOffset, false);
      } else {
        const m = vt().memfdMap(s.fdSize ?? mmapOffset + s.size, s.seals ?? true);
        r = new Region(m.fd, m.mem, m.id, gpa, uva, s.size, mmapOffset, true);
      }
      this.regions.push(r);
      nextGpa = gpa + BigInt(s.size);
    });
    const r0 = this.regions[0]!;
    let cursor = 0;
    const bufBase = ringArea;
    for (let q = 0; q < 2; q++) {
      const descOff = cursor;
      const availOff = descOff + 16 * num;
      const usedOff = align(availOff + 6 + 2 * num, 4);
      cursor += ringBytes(num);
      this.rings.push(new GuestRing(q, num, r0, descOff, availOff, usedOff, bufBase + q * num * this.opts.bufSize, this.opts.bufSize));
    }
  }

  /** Connects to `path` (nothing sent yet). */
  static connect(path: string, opts: FrontendOptions = {}): VhostFrontend {
    const fe = new VhostFrontend(opts);
    fe.attach(vt().unixConnect(path));
    return fe;
  }

  /** A new connection to `path` with the same memory and rings (QEMU reconnecting after a back-end restart). */
  reconnect(path: string): void {
    this.disconnect();
    this.isClosed = false;
    this.inbuf = Buffer.alloc(0);
    this.unexpected.length = 0;
    this.attach(vt().unixConnect(path));
  }

  private attach(fd: number): void {
    this.fd = fd;
    const sock = new Socket({ fd, readable: true, writable: false });
    this.sock = sock;
    sock.on('data', (chunk: Buffer) => {
      if (this.sock !== sock) return;
      this.inbuf = Buffer.concat([this.inbuf, chunk]);
      this.parse();
    });
    sock.on('error', () => {});
    sock.on('close', () => {
      if (this.sock !== sock) return;
      this.markClosed(new Error('vhost-user: the back-end closed the connection'));
    });
  }

  private markClosed(e: Error): void {
    this.isClosed = true;
    for (const p of this.pending.splice(0)) {
      clearTimeout(p.timer);
      p.reject(e);
    }
    for (const w of this.closedWaiters.splice(0)) w();
  }

  private parse(): void {
    while (this.inbuf.length >= HEADER_LEN) {
      const size = this.inbuf.readUInt32LE(8);
      if (this.inbuf.length < HEADER_LEN + size) return;
      const r: Reply = { request: this.inbuf.readUInt32LE(0), flags: this.inbuf.readUInt32LE(4), payload: Buffer.from(this.inbuf.subarray(HEADER_LEN, HEADER_LEN + size)) };
      this.inbuf = this.inbuf.subarray(HEADER_LEN + size);
      const p = this.pending[0];
      if (p !== undefined && p.request === r.request) {
        this.pending.shift();
        clearTimeout(p.timer);
        // The spec: a reply carries version 1 and the REPLY flag, and nothing else.
        if ((r.flags & ~FLAG_REPLY) !== FLAG_VERSION || (r.flags & FLAG_REPLY) === 0) p.reject(new Error(`vhost-user: reply to request ${r.request} with flags 0x${r.flags.toString(16)}`));
        else p.resolve(r);
      } else if (this.unexpected.length < 256) {
        // Replies to messages sent without waiting (the fuzzer's): kept for a look, bounded.
        this.unexpected.push(r);
      }
    }
  }

  /** Stops reading the socket (a front-end that never reads its replies); resumeReading() undoes it. */
  pauseReading(): void {
    this.sock?.pause();
  }

  resumeReading(): void {
    this.sock?.resume();
  }

  /** Messages from the back-end that answered nothing we waited for. */
  get strayReplies(): readonly Reply[] {
    return this.unexpected;
  }

  get closed(): boolean {
    return this.isClosed;
  }

  /** Resolves when the back-end has closed the connection (or it was closed here). */
  waitClosed(timeoutMs = 3000): Promise<void> {
    if (this.isClosed) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`vhost-user: the back-end did not close the connection within ${timeoutMs} ms`)), timeoutMs);
      this.closedWaiters.push(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  /**
   * Raw bytes with descriptors, as one sendmsg (or `chunk`-byte pieces, descriptors on the
   * first). Throws when the connection is gone or the socket is full (EAGAIN): the back-end,
   * in this process, reads only when the loop turns; sendBytesAsync waits for that.
   */
  sendBytes(bytes: Buffer, fds: readonly number[] = []): void {
    if (this.fd < 0 || this.isClosed) throw new Error('vhost-user: not connected');
    for (const [piece, pfds] of this.pieces(bytes, fds)) {
      let sent = vt().sendWithFds(this.fd, piece, pfds);
      while (sent < piece.length) sent += vt().sendWithFds(this.fd, piece.subarray(sent), []);
    }
  }

  /** As sendBytes, yielding to the loop (so the back-end reads) while the socket is full. */
  async sendBytesAsync(bytes: Buffer, fds: readonly number[] = []): Promise<void> {
    for (const [piece, pfds] of this.pieces(bytes, fds)) {
      let sent = 0;
      let first = true;
      for (let spins = 0; sent < piece.length || first; spins++) {
        if (this.fd < 0 || this.isClosed) throw new Error('vhost-user: not connected');
        try {
          sent += vt().sendWithFds(this.fd, piece.subarray(sent), first ? pfds : []);
          first = false;
        } catch (e) {
          if ((e as { code?: string }).code !== 'EAGAIN' || spins > 100_000) throw e;
          await yieldLoop();
        }
      }
    }
  }

  private pieces(bytes: Buffer, fds: readonly number[]): [Buffer, readonly number[]][] {
    const chunk = this.opts.chunk > 0 ? this.opts.chunk : Math.max(1, bytes.length);
    const out: [Buffer, readonly number[]][] = [];
    for (let o = 0; o < bytes.length || o === 0; o += chunk) out.push([bytes.subarray(o, o + chunk), o === 0 ? fds : []]);
    return out;
  }

  /** One message, waiting (yielding to the loop) while the socket is full. */
  post(request: number, payload: Buffer = Buffer.alloc(0), fds: readonly number[] = [], flags = FLAG_VERSION): Promise<void> {
    return this.sendBytesAsync(encodeMsg(request, payload, flags), fds);
  }

  /** One message (no reply awaited). */
  send(request: number, payload: Buffer = Buffer.alloc(0), fds: readonly number[] = [], flags = FLAG_VERSION): void {
    this.sendBytes(encodeMsg(request, payload, flags), fds);
  }

  /** Sends a message and waits for the back-end's reply to it. */
  request(request: number, payload: Buffer = Buffer.alloc(0), fds: readonly number[] = [], flags = FLAG_VERSION): Promise<Reply> {
    const p = new Promise<Reply>((resolve, reject) => {
      if (this.isClosed) {
        reject(new Error('vhost-user: not connected'));
        return;
      }
      const timer = setTimeout(() => {
        const i = this.pending.findIndex((x) => x.timer === timer);
        if (i >= 0) this.pending.splice(i, 1);
        reject(new Error(`vhost-user: no reply to request ${request} within ${this.opts.replyTimeoutMs} ms`));
      }, this.opts.replyTimeoutMs);
      this.pending.push({ request, resolve, reject, timer });
    });
    this.sendBytesAsync(encodeMsg(request, payload, flags), fds).catch((e: unknown) => {
      const i = this.pending.findIndex((x) => x.request === request);
      const [lost] = i >= 0 ? this.pending.splice(i, 1) : [];
      if (lost !== undefined) {
        clearTimeout(lost.timer);
        lost.reject(e instanceof Error ? e : new Error(String(e)));
      }
    });
    return p;
  }

  /** A SET_* message; with REPLY_ACK negotiated and `needReply`, waits for the ack (0 = success). */
  async set(request: number, payload: Buffer = Buffer.alloc(0), fds: readonly number[] = []): Promise<void> {
    if (this.opts.needReply && (this.protocol & PF.REPLY_ACK) !== 0n) {
      const r = await this.request(request, payload, fds, FLAG_VERSION | FLAG_NEED_REPLY);
      const v = r.payload.length >= 8 ? r.payload.readBigUInt64LE(0) : -1n;
      if (v !== 0n) throw new Error(`vhost-user: request ${request} refused (ack ${v})`);
      return;
    }
    await this.post(request, payload, fds);
  }

  async getU64(request: number): Promise<bigint> {
    const r = await this.request(request);
    if (r.payload.length !== 8) throw new Error(`vhost-user: reply to ${request} has ${r.payload.length} bytes, not 8`);
    return r.payload.readBigUInt64LE(0);
  }

  /** GET_FEATURES round trip: the liveness check, and the barrier for everything sent before. */
  async sync(): Promise<bigint> {
    return this.getU64(Req.GET_FEATURES);
  }

  /** What QEMU does at start: features, protocol features, owner, early call/err fds. */
  async handshake(): Promise<void> {
    this.offered = await this.getU64(Req.GET_FEATURES);
    if ((this.offered & F.PROTOCOL_FEATURES) !== 0n) {
      this.protocolOffered = await this.getU64(Req.GET_PROTOCOL_FEATURES);
      this.protocol = this.protocolOffered & this.opts.wantProtocol;
      await this.post(Req.SET_PROTOCOL_FEATURES, u64Payload(this.protocol));
      if ((this.protocol & PF.MQ) !== 0n) await this.getU64(Req.GET_QUEUE_NUM);
    }
    await this.post(Req.SET_OWNER);
    for (const r of this.rings) {
      if (r.callFd < 0) r.callFd = vt().eventfd();
      if (r.errFd < 0) r.errFd = vt().eventfd();
      await this.post(Req.SET_VRING_CALL, u64Payload(BigInt(r.index)), [r.callFd]);
      await this.post(Req.SET_VRING_ERR, u64Payload(BigInt(r.index)), [r.errFd]);
    }
  }

  /** SET_MEM_TABLE with every region (or the ones given), one fd per region. */
  async setMemTable(regions: readonly Region[] = this.regions): Promise<void> {
    await this.set(Req.SET_MEM_TABLE, memTablePayload(regions.map((r) => r.desc())), regions.map((r) => r.fd));
  }

  /** Ring q's SET_VRING_NUM/BASE/ADDR/KICK/CALL, as QEMU sends them when the device starts. */
  async setupRing(q: number, base = 0): Promise<void> {
    const r = this.rings[q]!;
    await this.set(Req.SET_VRING_NUM, vringState(q, r.num));
    await this.set(Req.SET_VRING_BASE, vringState(q, base));
    await this.set(Req.SET_VRING_ADDR, vringAddr(q, r.uva(r.descOff), r.uva(r.usedOff), r.uva(r.availOff)));
    if (r.kickFd < 0) r.kickFd = vt().eventfd();
    await this.post(Req.SET_VRING_KICK, u64Payload(BigInt(q)), [r.kickFd]);
    if (r.callFd < 0) r.callFd = vt().eventfd();
    await this.post(Req.SET_VRING_CALL, u64Payload(BigInt(q)), [r.callFd]);
  }

  /** What QEMU does at DRIVER_OK: features, memory table, both rings, enable. Ends with sync(). */
  async driverOk(base: readonly number[] = [0, 0]): Promise<void> {
    this.features = this.offered & this.opts.want;
    await this.set(Req.SET_FEATURES, u64Payload(this.features));
    await this.setMemTable();
    for (let q = 0; q < 2; q++) await this.setupRing(q, base[q] ?? 0);
    if ((this.features & F.PROTOCOL_FEATURES) !== 0n) {
      for (let q = 0; q < 2; q++) await this.set(Req.SET_VRING_ENABLE, vringState(q, 1));
    }
    await this.sync();
  }

  /** handshake() then driverOk(): the back-end should be `running`. */
  async start(base?: readonly number[]): Promise<void> {
    await this.handshake();
    await this.driverOk(base);
  }

  async getVringBase(q: number): Promise<number> {
    const r = await this.request(Req.GET_VRING_BASE, vringState(q, 0));
    if (r.payload.length !== 8) throw new Error(`vhost-user: GET_VRING_BASE reply of ${r.payload.length} bytes`);
    return r.payload.readUInt32LE(4);
  }

  get mrg(): boolean {
    return (this.features & F.MRG_RXBUF) !== 0n;
  }

  /** Bytes of virtio-net header the negotiated features make (12 with VERSION_1 or MRG_RXBUF). */
  get hdrLen(): number {
    return (this.features & (F.VERSION_1 | F.MRG_RXBUF)) !== 0n ? 12 : 10;
  }

  /**
   * Puts frames on the TX ring (queue 1), each a virtio-net header (zero unless `hdr`) and the
   * frame in one descriptor, or two (`split`: header, then frame, chained). Kicks unless `kick: false`.
   */
  sendFrames(frames: readonly Buffer[], opts: { hdr?: Buffer; split?: boolean; kick?: boolean } = {}): void {
    const r = this.rings[TX]!;
    const hdr = opts.hdr ?? Buffer.alloc(this.hdrLen);
    for (const f of frames) {
      if (hdr.length + f.length > r.bufSize) throw new Error(`frame of ${f.length} bytes does not fit a ${r.bufSize}-byte buffer`);
      const head = r.alloc();
      if (opts.split === true) {
        const d2 = r.alloc();
        hdr.copy(r.buf(head));
        f.copy(r.buf(d2));
        r.writeDesc(head, { addr: r.bufGpa(head), len: hdr.length, flags: DESC_F_NEXT, next: d2 });
        r.writeDesc(d2, { addr: r.bufGpa(d2), len: f.length, flags: 0, next: 0 });
      } else {
        hdr.copy(r.buf(head));
        f.copy(r.buf(head), hdr.length);
        r.writeDesc(head, { addr: r.bufGpa(head), len: hdr.length + f.length, flags: 0, next: 0 });
      }
      r.availPush(head);
    }
    if (opts.kick !== false) r.kick();
  }

  /** Offers `n` RX buffers (one device-writable descriptor each, `len` bytes, default bufSize). */
  postRx(n: number, len?: number): void {
    const r = this.rings[RX]!;
    for (let k = 0; k < n; k++) {
      const i = r.alloc();
      r.buf(i).fill(0);
      r.writeDesc(i, { addr: r.bufGpa(i), len: len ?? r.bufSize, flags: DESC_F_WRITE, next: 0 });
      r.availPush(i);
    }
  }

  /**
   * Frames the back-end put into the RX ring since the last call: header and frame split.
   * With MRG_RXBUF a frame spans num_buffers used elements (their bytes concatenated).
   */
  receiveFrames(): { hdr: Buffer; frame: Buffer }[] {
    const r = this.rings[RX]!;
    const used = r.takeUsed(false);
    const out: { hdr: Buffer; frame: Buffer }[] = [];
    const hl = this.hdrLen;
    for (let k = 0; k < used.length; ) {
      const first = used[k]!;
      const firstBytes = Buffer.from(r.buf(first.id).subarray(0, Math.min(first.len, r.bufSize)));
      const nb = this.mrg && firstBytes.length >= 12 ? Math.max(1, firstBytes.readUInt16LE(10)) : 1;
      const parts = [firstBytes];
      for (let j = 1; j < nb && k + j < used.length; j++) {
        const e = used[k + j]!;
        parts.push(Buffer.from(r.buf(e.id).subarray(0, Math.min(e.len, r.bufSize))));
      }
      for (let j = 0; j < nb && k + j < used.length; j++) r.releaseChain(used[k + j]!.id);
      const all = Buffer.concat(parts);
      out.push({ hdr: all.subarray(0, hl), frame: all.subarray(hl) });
      k += nb;
    }
    return out;
  }

  /**
   * The guest's side as new (QEMU with a freshly booted guest): rings and buffers zeroed, indices
   * back to 0, every descriptor free. Memory and eventfds are kept (cheaper than new ones).
   */
  resetGuest(): void {
    for (const r of this.rings) {
      r.resetIndices();
      this.regions[0]!.mem.fill(0, r.descOff, r.descOff + ringBytes(r.num));
      this.regions[0]!.mem.fill(0, r.bufOff, Math.min(this.regions[0]!.mem.length, r.bufOff + r.num * r.bufSize));
    }
    for (const r of this.rings) for (const fd of [r.kickFd, r.callFd]) if (fd >= 0) vt().eventfdRead(fd);
  }

  /** TX chains the back-end has given back (used), descriptors freed. */
  reclaimTx(): number {
    return this.rings[TX]!.takeUsed(true).length;
  }

  /** Closes the connection (memory and eventfds stay, for reconnect()). */
  disconnect(): void {
    const s = this.sock;
    this.sock = undefined;
    this.fd = -1;
    if (s !== undefined) s.destroy();
    this.markClosed(new Error('vhost-user: disconnected'));
  }

  /** Everything: the connection, the eventfds, the memfds and their mappings. */
  close(): void {
    this.disconnect();
    for (const r of this.rings) {
      for (const fd of [r.kickFd, r.callFd, r.errFd]) if (fd >= 0) closeSync(fd);
      r.kickFd = r.callFd = r.errFd = -1;
    }
    for (const g of this.regions) {
      if (!g.ownsFd) continue;
      vt().memfdUnmap(g.mapId);
      closeSync(g.fd);
    }
    this.regions.length = 0;
  }
}

// ---- a back-end under test --------------------------------------------------------------

export interface Backend {
  dev: NativeVhostDevice;
  path: string;
  /** Frames the device handed to JS (onRead), copies: 10-byte virtio_net_hdr then the frame. */
  frames: Buffer[];
  /** Every onState, in order. */
  states: { state: VhostState; detail: string }[];
  /** Resolves when the device reports `state` (among states[since..], now or later), with its detail. */
  waitState(state: VhostState | readonly VhostState[], timeoutMs?: number, since?: number): Promise<string>;
  /** Resolves once `n` frames in total have been read. */
  waitFrames(n: number, timeoutMs?: number): Promise<Buffer[]>;
  close(): void;
}

/** A native VhostDevice listening on a fresh socket in a temp directory, recording what it does. */
export function startBackend(opts: Partial<Omit<VhostDeviceOptions, 'listenFd' | 'onRead' | 'onState'>> = {}): Backend {
  const native = loadNative();
  const dir = mkdtempSync(join(tmpdir(), 'mvnet-vhost-'));
  const path = join(dir, 'vhost.sock');
  const { fd } = native.openUnixListener({ path });
  const frames: Buffer[] = [];
  const states: { state: VhostState; detail: string }[] = [];
  const waiters: (() => void)[] = [];
  const wake = (): void => {
    for (const w of waiters.splice(0)) w();
  };
  const dev: NativeVhostDevice = new native.VhostDevice({
    listenFd: fd,
    maxFrame: opts.maxFrame ?? 1514,
    batch: opts.batch ?? 64,
    offloads: opts.offloads ?? false,
    onRead: (count, start) => {
      for (let i = start; i < count; i++) {
        const len = dev.lengths[i]!;
        frames.push(Buffer.from(dev.buffer.subarray(i * dev.slotSize, i * dev.slotSize + Math.min(len, dev.slotSize))));
      }
      wake();
    },
    onState: (state, detail) => {
      states.push({ state, detail });
      wake();
    },
  });
  dev.start();
  const waitFor = <T>(what: string, check: () => T | undefined, timeoutMs: number): Promise<T> =>
    new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`vhost back-end: ${what} within ${timeoutMs} ms (states: ${JSON.stringify(states)})`)), timeoutMs);
      const test = (): void => {
        const v = check();
        if (v !== undefined) {
          clearTimeout(t);
          resolve(v);
        } else {
          waiters.push(test);
        }
      };
      test();
    });
  let closed = false;
  return {
    dev,
    path,
    frames,
    states,
    waitState: (state, timeoutMs = 3000, since = 0) =>
      waitFor(`no state ${String(state)}`, () => {
        const want: readonly VhostState[] = typeof state === 'string' ? [state] : state;
        const s = states.slice(since).find((x) => want.includes(x.state));
        return s?.detail;
      }, timeoutMs),
    waitFrames: (n, timeoutMs = 3000) => waitFor(`fewer than ${n} frames`, () => (frames.length >= n ? frames : undefined), timeoutMs),
    close: () => {
      if (closed) return;
      closed = true;
      dev.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Connects to a vhost-user back-end at `path` (a daemon's `--vhost-user` socket), brings the
 * rings up as QEMU would (resolves once the back-end has answered the whole sequence), then
 * makes the guest's TX ring hostile and kicks: a descriptor loop (`loop`), avail->idx moved by
 * more than the ring size (`avail-jump`) or a buffer outside guest memory (`outside`). A
 * correct back-end marks the device broken (a ring violation stops the rings; it need not
 * close the connection): wait for that where the device's state shows (`vm list`, events).
 * Returns the front-end; close() it when done (the back-end then listens again).
 */
export async function breakGuestRing(path: string, how: 'loop' | 'avail-jump' | 'outside' = 'loop'): Promise<VhostFrontend> {
  const fe = VhostFrontend.connect(path, { memSize: 1 << 20, num: 64, bufSize: 2048 });
  try {
    await fe.start();
    const r = fe.rings[TX]!;
    if (how === 'loop') {
      r.writeDesc(0, { addr: r.bufGpa(0), len: 64, flags: DESC_F_NEXT, next: 1 });
      r.writeDesc(1, { addr: r.bufGpa(1), len: 64, flags: DESC_F_NEXT, next: 0 });
      r.availPush(0);
    } else if (how === 'avail-jump') {
      r.setAvailIdx(r.num + 1);
    } else {
      r.writeDesc(0, { addr: 0xffff_ffff_0000n, len: 64, flags: 0, next: 0 });
      r.availPush(0);
    }
    r.kick();
    return fe;
  } catch (e) {
    fe.close();
    throw e;
  }
}
