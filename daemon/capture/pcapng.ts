/**
 * pcapng writer (draft-ietf-opsawg-pcapng): pure encoders that return or fill Buffers, and a small
 * stateful PcapngWriter that numbers interfaces. No I/O and no clock here: the caller writes the
 * Buffers wherever it likes (file, stdout, ring) and passes every timestamp in.
 *
 * Everything is written little-endian (the byte-order magic tells readers which order a section
 * uses, so one fixed order is as valid as the host's and keeps the output reproducible). Timestamps
 * are nanoseconds: every interface gets if_tsresol = 9.
 */

export const BLOCK_SHB = 0x0a0d0d0a;
export const BLOCK_IDB = 0x00000001;
export const BLOCK_ISB = 0x00000005;
export const BLOCK_EPB = 0x00000006;
export const BYTE_ORDER_MAGIC = 0x1a2b3c4d;

/** LINKTYPE_ETHERNET: a port's frames. */
export const LINKTYPE_ETHERNET = 1;
/** LINKTYPE_RAW: bare IPv4/IPv6 packets, e.g. what a TUN device carries. */
export const LINKTYPE_RAW = 101;

// Option codes (common, then per block type).
const OPT_ENDOFOPT = 0;
const OPT_COMMENT = 1;
const SHB_HARDWARE = 2;
const SHB_OS = 3;
const SHB_USERAPPL = 4;
const IF_NAME = 2;
const IF_DESCRIPTION = 3;
const IF_TSRESOL = 9;
const EPB_FLAGS = 2;
const ISB_STARTTIME = 2;
const ISB_ENDTIME = 3;
const ISB_IFRECV = 4;
const ISB_IFDROP = 5;
const ISB_FILTERACCEPT = 6;
const ISB_OSDROP = 7;

/** epb_flags bits 0-1 (inbound/outbound as seen from the capture point). */
export const EPB_DIRECTION_INBOUND = 1;
export const EPB_DIRECTION_OUTBOUND = 2;

export type Direction = 'in' | 'out';

/** Option values longer than this cannot be encoded (the length field is 16 bits). */
const MAX_OPTION_LEN = 0xffff;
const TWO_32 = 0x1_0000_0000;

function pad4(n: number): number {
  return (n + 3) & ~3;
}

/** Bytes an option with a value of `len` bytes takes, header and padding included. */
function optionSize(len: number): number {
  return 4 + pad4(len);
}

function stringOptionSize(s: string | undefined): number {
  if (s === undefined) return 0;
  const len = Buffer.byteLength(s, 'utf8');
  if (len > MAX_OPTION_LEN) throw new RangeError(`pcapng option longer than ${MAX_OPTION_LEN} bytes`);
  return optionSize(len);
}

/** Writes a UTF-8 string option with zeroed padding; returns the new offset. */
function writeStringOption(buf: Buffer, off: number, code: number, s: string, len: number): number {
  buf.writeUInt16LE(code, off);
  buf.writeUInt16LE(len, off + 2);
  buf.write(s, off + 4, len, 'utf8');
  const end = off + 4 + pad4(len);
  buf.fill(0, off + 4 + len, end);
  return end;
}

function writeU64Option(buf: Buffer, off: number, code: number, value: bigint | number): number {
  buf.writeUInt16LE(code, off);
  buf.writeUInt16LE(8, off + 2);
  writeU64(buf, off + 4, value);
  return off + 12;
}

function writeEndOfOpt(buf: Buffer, off: number): number {
  buf.writeUInt32LE(OPT_ENDOFOPT, off); // code 0, length 0
  return off + 4;
}

/** The high 32 bits of a 64-bit unsigned value, range-checked. Written as two scalar helpers
 *  (not a tuple) so that the number path allocates nothing per packet. */
function u64High(value: bigint | number, what: string): number {
  if (typeof value === 'bigint') {
    if (value < 0n || value >= 1n << 64n) throw new RangeError(`${what} out of range: ${value}`);
    return Number(value >> 32n);
  }
  // A number above 2^53 is still an exact integer; this division and the subtraction in u64Low
  // stay exact.
  if (!Number.isInteger(value) || value < 0 || value >= 2 ** 64) {
    throw new RangeError(`${what} must be a non-negative integer below 2^64: ${value}`);
  }
  return Math.floor(value / TWO_32);
}

/** The low 32 bits; call after u64High (which checked the range). */
function u64Low(value: bigint | number, hi: number): number {
  return typeof value === 'bigint' ? Number(value & 0xffff_ffffn) : value - hi * TWO_32;
}

/** An 8-byte unsigned value in the section's (little-endian) order. */
function writeU64(buf: Buffer, off: number, value: bigint | number): void {
  const hi = u64High(value, 'counter');
  buf.writeUInt32LE(u64Low(value, hi), off);
  buf.writeUInt32LE(hi, off + 4);
}

/** Timestamp fields: upper 32 bits first, then lower, each in the section's order. */
function writeTimestamp(buf: Buffer, off: number, ns: bigint | number): void {
  const hi = u64High(ns, 'timestamp');
  buf.writeUInt32LE(hi, off);
  buf.writeUInt32LE(u64Low(ns, hi), off + 4);
}

function startBlock(buf: Buffer, type: number, total: number): void {
  buf.writeUInt32LE(type, 0);
  buf.writeUInt32LE(total, 4);
  buf.writeUInt32LE(total, total - 4);
}

// ---------------------------------------------------------------------------------------------
// Section Header Block

export interface SectionOptions {
  /** shb_userappl, e.g. "mvnet 0.4.0". */
  readonly userappl: string;
  /** shb_os, e.g. "Linux 6.1.0". */
  readonly os?: string | undefined;
  /** shb_hardware. */
  readonly hardware?: string | undefined;
}

/** A Section Header Block: version 1.0, section length -1 (unknown: the file is a stream). */
export function encodeShb(o: SectionOptions): Buffer {
  const opts = stringOptionSize(o.hardware) + stringOptionSize(o.os) + stringOptionSize(o.userappl) + 4;
  const total = 8 + 16 + opts + 4;
  const buf = Buffer.alloc(total);
  startBlock(buf, BLOCK_SHB, total);
  buf.writeUInt32LE(BYTE_ORDER_MAGIC, 8);
  buf.writeUInt16LE(1, 12); // major
  buf.writeUInt16LE(0, 14); // minor
  buf.writeInt32LE(-1, 16); // section length -1 as a 64-bit value: all ones
  buf.writeInt32LE(-1, 20);
  let off = 24;
  if (o.hardware !== undefined) off = writeStringOption(buf, off, SHB_HARDWARE, o.hardware, Buffer.byteLength(o.hardware));
  if (o.os !== undefined) off = writeStringOption(buf, off, SHB_OS, o.os, Buffer.byteLength(o.os));
  off = writeStringOption(buf, off, SHB_USERAPPL, o.userappl, Buffer.byteLength(o.userappl));
  writeEndOfOpt(buf, off);
  return buf;
}

// ---------------------------------------------------------------------------------------------
// Interface Description Block

export interface InterfaceOptions {
  /** LINKTYPE_ETHERNET (1) or LINKTYPE_RAW (101). Others pass through unchecked. */
  readonly linkType: number;
  /** Bytes kept of each packet; 0 means no limit (the spec's meaning). */
  readonly snaplen: number;
  /** if_name, e.g. "vm1" or "tun1". */
  readonly name?: string | undefined;
  /** if_description, e.g. "port vm1 (what the VM sent and was given)". */
  readonly description?: string | undefined;
}

/** An Interface Description Block with if_tsresol = 9 (nanosecond timestamps). */
export function encodeIdb(o: InterfaceOptions): Buffer {
  if (!Number.isInteger(o.linkType) || o.linkType < 0 || o.linkType > 0xffff) {
    throw new RangeError(`bad link type ${o.linkType}`);
  }
  checkSnaplen(o.snaplen);
  const opts = stringOptionSize(o.name) + stringOptionSize(o.description) + optionSize(1) + 4;
  const total = 8 + 8 + opts + 4;
  const buf = Buffer.alloc(total);
  startBlock(buf, BLOCK_IDB, total);
  buf.writeUInt16LE(o.linkType, 8);
  buf.writeUInt16LE(0, 10); // reserved
  buf.writeUInt32LE(o.snaplen, 12);
  let off = 16;
  if (o.name !== undefined) off = writeStringOption(buf, off, IF_NAME, o.name, Buffer.byteLength(o.name));
  if (o.description !== undefined) {
    off = writeStringOption(buf, off, IF_DESCRIPTION, o.description, Buffer.byteLength(o.description));
  }
  buf.writeUInt16LE(IF_TSRESOL, off);
  buf.writeUInt16LE(1, off + 2);
  buf[off + 4] = 9; // 10^-9 s; the three padding bytes are already zero
  writeEndOfOpt(buf, off + 8);
  return buf;
}

function checkSnaplen(snaplen: number): void {
  if (!Number.isInteger(snaplen) || snaplen < 0 || snaplen > 0xffff_ffff) {
    throw new RangeError(`bad snaplen ${snaplen}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Enhanced Packet Block

export interface PacketOptions {
  /** Direction relative to the capture point; omitted: no epb_flags. */
  readonly direction?: Direction | undefined;
  /** opt_comment (UTF-8), e.g. a drop reason or route decision. */
  readonly comment?: string | undefined;
  /** The packet's true length when `data` is not all of it; default data.length. A TSO
   *  super-frame passes its full size here. Must be at least the captured length. */
  readonly originalLength?: number | undefined;
}

/** Captured length: the packet cut to the snaplen (0 = no limit). */
export function capturedLength(dataLength: number, snaplen: number): number {
  return snaplen > 0 && dataLength > snaplen ? snaplen : dataLength;
}

/** Bytes the block for a packet takes: what to allocate before encodeEpbInto. */
export function epbLength(capLen: number, o?: PacketOptions): number {
  let opts = 0;
  if (o?.direction !== undefined) opts += optionSize(4);
  if (o?.comment !== undefined) opts += stringOptionSize(o.comment);
  if (opts > 0) opts += 4; // opt_endofopt
  return 28 + pad4(capLen) + opts + 4;
}

/**
 * Writes an Enhanced Packet Block for `data` (cut to `snaplen`) at `buf[off]`; returns the bytes
 * written (= epbLength). Allocates nothing when the timestamp is a number: the comment is encoded
 * straight into `buf` (a bigint timestamp costs the bigint arithmetic's temporaries).
 */
export function encodeEpbInto(
  buf: Buffer,
  off: number,
  interfaceId: number,
  timestampNs: bigint | number,
  data: Buffer,
  snaplen: number,
  o?: PacketOptions,
): number {
  const capLen = capturedLength(data.length, snaplen);
  const origLen = o?.originalLength ?? data.length;
  if (!Number.isInteger(origLen) || origLen < capLen || origLen > 0xffff_ffff) {
    throw new RangeError(`original length ${origLen} below captured length ${capLen} or out of range`);
  }
  const total = epbLength(capLen, o);
  if (off < 0 || off + total > buf.length) throw new RangeError(`EPB of ${total} bytes does not fit at ${off}`);
  buf.writeUInt32LE(BLOCK_EPB, off);
  buf.writeUInt32LE(total, off + 4);
  buf.writeUInt32LE(interfaceId, off + 8);
  writeTimestamp(buf, off + 12, timestampNs);
  buf.writeUInt32LE(capLen, off + 20);
  buf.writeUInt32LE(origLen, off + 24);
  data.copy(buf, off + 28, 0, capLen); // no view object, unlike subarray
  let p = off + 28 + capLen;
  const dataEnd = off + 28 + pad4(capLen);
  buf.fill(0, p, dataEnd);
  p = dataEnd;
  const hasOpts = o?.direction !== undefined || o?.comment !== undefined;
  if (o?.direction !== undefined) {
    buf.writeUInt16LE(EPB_FLAGS, p);
    buf.writeUInt16LE(4, p + 2);
    buf.writeUInt32LE(o.direction === 'in' ? EPB_DIRECTION_INBOUND : EPB_DIRECTION_OUTBOUND, p + 4);
    p += 8;
  }
  if (o?.comment !== undefined) p = writeStringOption(buf, p, OPT_COMMENT, o.comment, Buffer.byteLength(o.comment));
  if (hasOpts) p = writeEndOfOpt(buf, p);
  buf.writeUInt32LE(total, p);
  return total;
}

/** One Enhanced Packet Block in a Buffer of its own (the only allocation). */
export function encodeEpb(
  interfaceId: number,
  timestampNs: bigint | number,
  data: Buffer,
  snaplen: number,
  o?: PacketOptions,
): Buffer {
  // allocUnsafe: encodeEpbInto writes every byte, padding included.
  const buf = Buffer.allocUnsafe(epbLength(capturedLength(data.length, snaplen), o));
  encodeEpbInto(buf, 0, interfaceId, timestampNs, data, snaplen, o);
  return buf;
}

// ---------------------------------------------------------------------------------------------
// Interface Statistics Block

export interface InterfaceStats {
  /** isb_starttime / isb_endtime: when counting began and ended (ns). */
  readonly startNs?: bigint | number | undefined;
  readonly endNs?: bigint | number | undefined;
  /** isb_ifrecv: packets seen at the capture point. */
  readonly ifRecv?: bigint | number | undefined;
  /** isb_ifdrop: packets the capture lost (e.g. its queue was full). */
  readonly ifDrop?: bigint | number | undefined;
  /** isb_filteraccept: packets the filter accepted. */
  readonly filterAccept?: bigint | number | undefined;
  /** isb_osdrop: packets dropped before the capture saw them. */
  readonly osDrop?: bigint | number | undefined;
  readonly comment?: string | undefined;
}

/** An Interface Statistics Block taken at `timestampNs`. */
export function encodeIsb(interfaceId: number, timestampNs: bigint | number, s: InterfaceStats): Buffer {
  const u64s: [number, bigint | number | undefined][] = [
    [ISB_STARTTIME, s.startNs],
    [ISB_ENDTIME, s.endNs],
    [ISB_IFRECV, s.ifRecv],
    [ISB_IFDROP, s.ifDrop],
    [ISB_FILTERACCEPT, s.filterAccept],
    [ISB_OSDROP, s.osDrop],
  ];
  let opts = stringOptionSize(s.comment);
  for (const [, v] of u64s) if (v !== undefined) opts += 12;
  if (opts > 0) opts += 4;
  const total = 8 + 12 + opts + 4;
  const buf = Buffer.alloc(total);
  startBlock(buf, BLOCK_ISB, total);
  buf.writeUInt32LE(interfaceId, 8);
  writeTimestamp(buf, 12, timestampNs);
  let off = 20;
  if (s.comment !== undefined) off = writeStringOption(buf, off, OPT_COMMENT, s.comment, Buffer.byteLength(s.comment));
  for (const [code, v] of u64s) {
    if (v === undefined) continue;
    // start/end times are timestamps (high word first); the counters are plain u64s.
    if (code === ISB_STARTTIME || code === ISB_ENDTIME) {
      buf.writeUInt16LE(code, off);
      buf.writeUInt16LE(8, off + 2);
      writeTimestamp(buf, off + 4, v);
      off += 12;
    } else {
      off = writeU64Option(buf, off, code, v);
    }
  }
  if (opts > 0) writeEndOfOpt(buf, off);
  return buf;
}

// ---------------------------------------------------------------------------------------------
// Writer

export interface CaptureInterface {
  readonly id: number;
  readonly linkType: number;
  readonly snaplen: number;
  readonly name: string | undefined;
}

/**
 * Numbers interfaces and remembers their snaplens so that packets are cut consistently. Produces
 * Buffers in the order they must be written: header() first, then each addInterface() block
 * (they may come between packets), then packet()/stats() blocks. preamble() gives the section
 * header and every interface again, for a new ring file or a reader that joins late.
 */
export class PcapngWriter {
  readonly #section: SectionOptions;
  readonly #interfaces: CaptureInterface[] = [];
  readonly #idbs: Buffer[] = [];

  constructor(section: SectionOptions) {
    this.#section = section;
  }

  /** The Section Header Block. */
  header(): Buffer {
    return encodeShb(this.#section);
  }

  /** Adds a capture point; returns its interface id and the block to write before its packets. */
  addInterface(o: InterfaceOptions): { id: number; block: Buffer } {
    const block = encodeIdb(o);
    const id = this.#interfaces.length;
    this.#interfaces.push({ id, linkType: o.linkType, snaplen: o.snaplen, name: o.name });
    this.#idbs.push(block);
    return { id, block };
  }

  get interfaces(): readonly CaptureInterface[] {
    return this.#interfaces;
  }

  /** Section header plus every interface so far, as one Buffer. */
  preamble(): Buffer {
    return Buffer.concat([this.header(), ...this.#idbs]);
  }

  /** Bytes packet() would return, for callers that fill their own buffer with packetInto(). */
  packetLength(interfaceId: number, dataLength: number, o?: PacketOptions): number {
    return epbLength(capturedLength(dataLength, this.#iface(interfaceId).snaplen), o);
  }

  packet(interfaceId: number, timestampNs: bigint | number, data: Buffer, o?: PacketOptions): Buffer {
    return encodeEpb(interfaceId, timestampNs, data, this.#iface(interfaceId).snaplen, o);
  }

  packetInto(
    buf: Buffer,
    off: number,
    interfaceId: number,
    timestampNs: bigint | number,
    data: Buffer,
    o?: PacketOptions,
  ): number {
    return encodeEpbInto(buf, off, interfaceId, timestampNs, data, this.#iface(interfaceId).snaplen, o);
  }

  stats(interfaceId: number, timestampNs: bigint | number, s: InterfaceStats): Buffer {
    this.#iface(interfaceId);
    return encodeIsb(interfaceId, timestampNs, s);
  }

  #iface(id: number): CaptureInterface {
    const i = this.#interfaces[id];
    if (!i) throw new RangeError(`no pcapng interface ${id}`);
    return i;
  }
}
