/**
 * The tee ring: a bounded single-producer single-consumer queue of captured frames in one
 * Buffer. The producer is either native code (device.cc's tee, for TAP/TUN/dgram/iface ports,
 * cut-through frames included) or JS (`write`, for ports without a native tee); the consumer is
 * the capture hub (`drain`). Producer and consumer run on the same thread, so no atomics.
 *
 * A full ring never slows the port: the copy is refused before anything is copied and counted
 * in `dropped`. The size is checked first, so a refused frame costs a few compares. Producers
 * keep no state of their own (head is re-read from `ctl` every time), so several ports, native
 * and JS, may write into one ring.
 *
 * The producer never waits for the consumer; drain often enough (a timer) or records are lost
 * (counted). `drain` empties the ring and starts it over at offset 0; `drain(fn, max)` leaves
 * the rest, and later records then wrap around.
 *
 * ## Layout (the one place it is written down; device.cc's TeeWrite follows it)
 *
 * `ctl` is a Uint32Array of CTL_WORDS words, host byte order:
 *   [0] head: byte offset where the producer writes the next record (producer only);
 *   [1] tail: byte offset of the oldest record not yet drained (consumer only);
 *   [2],[3] records written since creation, low and high 32 bits (producer);
 *   [4],[5] frames dropped because the ring was full, low and high 32 bits (producer);
 *   [6],[7] frames not copied because the capture's filter program rejected them (native
 *           producer with a program, see device.cc TeeWrite), low and high 32 bits.
 * head == tail means empty; a producer never fills the ring completely (that would look empty).
 *
 * `buffer` holds records, each starting at an 8-byte aligned offset (the buffer's size is a
 * multiple of 8). A record is REC_HDR bytes of header, little-endian, then the captured bytes,
 * padded to a multiple of 8:
 *   0  u32 recLen   header + data + padding; 0 is the wrap marker: the next record is at offset 0
 *   4  u32 capLen   captured bytes (origLen cut to the snaplen)
 *   8  u32 origLen  length as the frame crossed the port, without its virtio-net header
 *   12 u8  dir      TEE_IN or TEE_OUT
 *   13 u8  gsoType  virtio_net_hdr gso_type (0 when the frame had no header)
 *   14 u16 gsoSize  virtio_net_hdr gso_size
 *   16 u32 tsSec    CLOCK_REALTIME seconds
 *   20 u32 tsNsec   and nanoseconds
 * A record that does not fit between head and the end of the buffer goes to offset 0 (when
 * there is room before tail), with a wrap marker left at head; every record fits in one piece.
 */

export const TEE_IN = 1; // the port read it: what the VM sent
export const TEE_OUT = 2; // the port wrote it: what the VM was given

export interface TeeRecord {
  /** Captured bytes (cut to snaplen), any virtio-net header stripped. A view: valid only during the drain callback. */
  frame: Buffer;
  /** True length as it crossed the port, without vnet header (a TSO super-frame: its full size). */
  origLen: number;
  dir: 1 | 2;
  /** virtio_net_hdr gso_type when the frame carried one (0 = none, 1 tcpv4, 3 udp, 4 tcpv6; 0x80 ECN bit kept). */
  gsoType: number;
  gsoSize: number;
  /** CLOCK_REALTIME seconds. */
  tsSec: number;
  /** And nanoseconds. */
  tsNsec: number;
}

/** Words in `ctl`. */
export const CTL_WORDS = 8;
export const CTL_HEAD = 0;
export const CTL_TAIL = 1;
export const CTL_WRITTEN = 2;
export const CTL_DROPPED = 4;
export const CTL_FILTERED = 6;
/** Bytes of a record's header. */
export const REC_HDR = 24;
/** Bytes of a virtio_net_hdr: a skip at least this long carries gso_type at 1 and gso_size at 4. */
const VNET_HDR_LEN = 10;

const MIN_RING = 256;
const MAX_RING = 1 << 30;
const TWO32 = 4294967296;

/** CLOCK_REALTIME in JS: the wall clock re-read every second, the monotonic clock in between (sub-ms). */
class RealtimeClock {
  private anchorMs = Date.now();
  private anchorPerf = performance.now();
  private last = 0;
  sec = 0;
  nsec = 0;

  read(): void {
    const p = performance.now();
    if (p - this.anchorPerf > 1000) {
      this.anchorMs = Date.now();
      this.anchorPerf = p;
    }
    let t = this.anchorMs + (p - this.anchorPerf);
    if (t < this.last) t = this.last; // a re-anchor to the ms-resolution wall clock never goes back
    this.last = t;
    const sec = Math.floor(t / 1000);
    this.sec = sec;
    this.nsec = Math.min(999_999_999, Math.round((t - sec * 1000) * 1e6));
  }
}

export class TeeRing {
  /** Captured bytes per frame at most; 0 = whole frames. */
  readonly snaplen: number;
  /** @internal The records (see the layout above); handed to the native tee. */
  readonly buffer: Buffer;
  /** @internal head, tail, written, dropped, filtered (see the layout above); handed to the native tee. */
  readonly ctl: Uint32Array;
  /** The ring's size in bytes (a multiple of 8). */
  readonly size: number;
  private readonly clock = new RealtimeClock();
  private readonly rec: TeeRecord = { frame: Buffer.alloc(0), origLen: 0, dir: TEE_IN, gsoType: 0, gsoSize: 0, tsSec: 0, tsNsec: 0 };

  /** `bytes`: the ring's size (rounded down to a multiple of 8); `snaplen` 0 = whole frames. */
  constructor(bytes: number, snaplen: number) {
    if (!Number.isInteger(bytes) || bytes < MIN_RING || bytes > MAX_RING) throw new RangeError(`tee ring size must be ${MIN_RING}..${MAX_RING} bytes`);
    if (!Number.isInteger(snaplen) || snaplen < 0 || snaplen > 0xffffffff) throw new RangeError('snaplen must be a non-negative integer');
    this.size = bytes - (bytes % 8);
    this.snaplen = snaplen;
    // Not from the Buffer pool: native code keeps a pointer to this memory.
    this.buffer = Buffer.alloc(this.size);
    this.ctl = new Uint32Array(CTL_WORDS);
  }

  /** Frames not copied because the ring was full (since creation). */
  get dropped(): number {
    return this.ctl[CTL_DROPPED]! + this.ctl[CTL_DROPPED + 1]! * TWO32;
  }

  /** Frames the producer's filter program rejected, so not copied (since creation). */
  get filtered(): number {
    return this.ctl[CTL_FILTERED]! + this.ctl[CTL_FILTERED + 1]! * TWO32;
  }

  /** Frames copied (since creation). */
  get written(): number {
    return this.ctl[CTL_WRITTEN]! + this.ctl[CTL_WRITTEN + 1]! * TWO32;
  }

  /** Bytes of records waiting to be drained (wrap gaps included). */
  get pending(): number {
    const head = this.ctl[CTL_HEAD]!;
    const tail = this.ctl[CTL_TAIL]!;
    return head >= tail ? head - tail : this.size - tail + head;
  }

  /** JS producer (ports without native tee): copies frame[skip..], returns false when it did not fit (counted). */
  write(frame: Buffer, skip: number, dir: 1 | 2): boolean {
    const orig = frame.length > skip ? frame.length - skip : 0;
    const cap = this.snaplen !== 0 && orig > this.snaplen ? this.snaplen : orig;
    const off = this.reserve(REC_HDR + ((cap + 7) & ~7));
    if (off < 0) {
      count(this.ctl, CTL_DROPPED);
      return false;
    }
    this.clock.read();
    const b = this.buffer;
    b.writeUInt32LE(REC_HDR + ((cap + 7) & ~7), off);
    b.writeUInt32LE(cap, off + 4);
    b.writeUInt32LE(orig, off + 8);
    b[off + 12] = dir;
    if (skip >= VNET_HDR_LEN && frame.length >= VNET_HDR_LEN) {
      b[off + 13] = frame[1]!;
      b[off + 14] = frame[4]!;
      b[off + 15] = frame[5]!;
    } else {
      b[off + 13] = 0;
      b[off + 14] = 0;
      b[off + 15] = 0;
    }
    b.writeUInt32LE(this.clock.sec >>> 0, off + 16);
    b.writeUInt32LE(this.clock.nsec, off + 20);
    if (cap > 0) frame.copy(b, off + REC_HDR, skip, skip + cap);
    count(this.ctl, CTL_WRITTEN);
    return true;
  }

  /**
   * Room for a record of `need` bytes (a multiple of 8): its offset, with head moved past it,
   * or -1. Native code (device.cc TeeReserve) does the same.
   */
  private reserve(need: number): number {
    const ctl = this.ctl;
    const size = this.size;
    const head = ctl[CTL_HEAD]!;
    const tail = ctl[CTL_TAIL]!;
    if (head >= tail) {
      const end = head + need;
      if (end < size || (end === size && tail !== 0)) {
        ctl[CTL_HEAD] = end === size ? 0 : end;
        return head;
      }
      if (need < tail) {
        this.buffer.writeUInt32LE(0, head); // wrap marker
        ctl[CTL_HEAD] = need;
        return 0;
      }
      return -1;
    }
    if (head + need < tail) {
      ctl[CTL_HEAD] = head + need;
      return head;
    }
    return -1;
  }

  /**
   * Consumer: hands over every record in order (at most `max`), frees their space; returns how
   * many. A callback that throws keeps the records after the one it threw on.
   */
  drain(fn: (r: TeeRecord) => void, max = Infinity): number {
    const ctl = this.ctl;
    const b = this.buffer;
    const size = this.size;
    const head = ctl[CTL_HEAD]!;
    let tail = ctl[CTL_TAIL]!;
    const r = this.rec;
    let n = 0;
    try {
      while (tail !== head && n < max) {
        const recLen = b.readUInt32LE(tail);
        if (recLen === 0) {
          tail = 0; // wrap marker
          continue;
        }
        const cap = b.readUInt32LE(tail + 4);
        r.frame = b.subarray(tail + REC_HDR, tail + REC_HDR + cap);
        r.origLen = b.readUInt32LE(tail + 8);
        r.dir = b[tail + 12] === TEE_OUT ? TEE_OUT : TEE_IN;
        r.gsoType = b[tail + 13]!;
        r.gsoSize = b[tail + 14]! | (b[tail + 15]! << 8);
        r.tsSec = b.readUInt32LE(tail + 16);
        r.tsNsec = b.readUInt32LE(tail + 20);
        tail += recLen;
        if (tail >= size) tail = 0;
        n++;
        fn(r);
      }
    } finally {
      // Empty again: start over at 0, so the next records have the whole ring in one piece.
      if (tail === ctl[CTL_HEAD]) {
        ctl[CTL_HEAD] = 0;
        ctl[CTL_TAIL] = 0;
      } else {
        ctl[CTL_TAIL] = tail;
      }
      r.frame = EMPTY;
    }
    return n;
  }
}

const EMPTY = Buffer.alloc(0);

/** Adds one to the 64-bit counter at ctl[i] (low), ctl[i + 1] (high). */
function count(ctl: Uint32Array, i: number): void {
  if (ctl[i] === 0xffffffff) {
    ctl[i] = 0;
    ctl[i + 1] = ctl[i + 1]! + 1;
  } else {
    ctl[i] = ctl[i]! + 1;
  }
}
