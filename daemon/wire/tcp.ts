/**
 * TCP segments (RFC 9293) with the options a stack needs: MSS, window scale, SACK-permitted,
 * SACK blocks and timestamps (RFC 7323, RFC 2018). Unknown options are skipped; a known option
 * with a wrong length is skipped too (as Linux does); an option running past the header is an
 * error.
 */
import { finishChecksum, onesSum, pseudoHeaderSum, type IpPseudo } from './checksum.js';
import { fail, ok, type Parsed } from './result.js';

export const TCP_MIN_HEADER_LEN = 20;
export const TCP_MAX_HEADER_LEN = 60;
const IPPROTO_TCP = 6;

export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_PSH = 0x08;
export const TCP_ACK = 0x10;
export const TCP_URG = 0x20;
export const TCP_ECE = 0x40;
export const TCP_CWR = 0x80;
/** ECN nonce (RFC 3540, historic): the low bit of byte 12. */
export const TCP_NS = 0x100;

export const TCPOPT_EOL = 0;
export const TCPOPT_NOP = 1;
export const TCPOPT_MSS = 2;
export const TCPOPT_WINDOW_SCALE = 3;
export const TCPOPT_SACK_PERMITTED = 4;
export const TCPOPT_SACK = 5;
export const TCPOPT_TIMESTAMP = 8;

export interface SackBlock {
  readonly left: number;
  readonly right: number;
}

export interface TcpTimestamp {
  readonly value: number;
  readonly echo: number;
}

export interface TcpOptions {
  readonly mss?: number | undefined;
  /** Shift count as sent (not clamped to 14; the stack does that). */
  readonly windowScale?: number | undefined;
  readonly sackPermitted?: boolean | undefined;
  readonly sack?: readonly SackBlock[] | undefined;
  readonly timestamp?: TcpTimestamp | undefined;
}

export interface TcpSegment {
  readonly srcPort: number;
  readonly dstPort: number;
  readonly seq: number;
  readonly ack: number;
  /** TCP_FIN | TCP_SYN | ... (9 bits including NS). */
  readonly flags: number;
  /** Unscaled window field. */
  readonly window: number;
  readonly checksum: number;
  readonly urgent: number;
  readonly headerLength: number;
  readonly options: TcpOptions;
  /** View of the data after the header. */
  readonly payload: Buffer;
}

/** Parses options in `buf[start, end)`. Bounded by the 40 bytes an option area can have. */
export function parseTcpOptions(buf: Buffer, start: number, end: number): Parsed<TcpOptions> {
  let mss: number | undefined;
  let windowScale: number | undefined;
  let sackPermitted: boolean | undefined;
  let sack: SackBlock[] | undefined;
  let timestamp: TcpTimestamp | undefined;
  let off = start;
  while (off < end) {
    const kind = buf[off]!;
    if (kind === TCPOPT_EOL) break;
    if (kind === TCPOPT_NOP) {
      off++;
      continue;
    }
    if (off + 2 > end) return fail('tcp', 'truncated', `option ${kind} at ${off - start} has no length`);
    const len = buf[off + 1]!;
    if (len < 2) return fail('tcp', 'bad-length', `option ${kind} with length ${len}`);
    if (off + len > end) return fail('tcp', 'truncated', `option ${kind} of ${len} bytes past the header`);
    switch (kind) {
      case TCPOPT_MSS:
        if (len === 4) mss = (buf[off + 2]! << 8) | buf[off + 3]!;
        break;
      case TCPOPT_WINDOW_SCALE:
        if (len === 3) windowScale = buf[off + 2]!;
        break;
      case TCPOPT_SACK_PERMITTED:
        if (len === 2) sackPermitted = true;
        break;
      case TCPOPT_SACK:
        if ((len - 2) % 8 === 0 && len > 2) {
          sack = [];
          for (let p = off + 2; p < off + len; p += 8) sack.push({ left: buf.readUInt32BE(p), right: buf.readUInt32BE(p + 4) });
        }
        break;
      case TCPOPT_TIMESTAMP:
        if (len === 10) timestamp = { value: buf.readUInt32BE(off + 2), echo: buf.readUInt32BE(off + 6) };
        break;
      default:
        break;
    }
    off += len;
  }
  const o: { -readonly [K in keyof TcpOptions]: TcpOptions[K] } = {};
  if (mss !== undefined) o.mss = mss;
  if (windowScale !== undefined) o.windowScale = windowScale;
  if (sackPermitted) o.sackPermitted = true;
  if (sack) o.sack = sack;
  if (timestamp) o.timestamp = timestamp;
  return ok(o);
}

const NO_OPTIONS: TcpOptions = Object.freeze({});

/** Parses the IP payload of protocol 6; with `pseudo` the checksum is verified. */
export function parseTcp(buf: Buffer, pseudo?: IpPseudo): Parsed<TcpSegment> {
  if (buf.length < TCP_MIN_HEADER_LEN) return fail('tcp', 'truncated', `${buf.length} bytes < 20`);
  const headerLength = (buf[12]! >>> 4) * 4;
  if (headerLength < TCP_MIN_HEADER_LEN) return fail('tcp', 'bad-length', `data offset ${headerLength / 4} < 5`);
  if (headerLength > buf.length) return fail('tcp', 'truncated', `header ${headerLength} > ${buf.length}`);
  if (pseudo && onesSum(buf, 0, buf.length, pseudoHeaderSum(pseudo, IPPROTO_TCP, buf.length)) !== 0xffff) {
    return fail('tcp', 'bad-checksum', 'segment checksum');
  }
  let options = NO_OPTIONS;
  if (headerLength > TCP_MIN_HEADER_LEN) {
    const parsed = parseTcpOptions(buf, TCP_MIN_HEADER_LEN, headerLength);
    if (!parsed.ok) return parsed;
    options = parsed.value;
  }
  return ok({
    srcPort: (buf[0]! << 8) | buf[1]!,
    dstPort: (buf[2]! << 8) | buf[3]!,
    seq: buf.readUInt32BE(4),
    ack: buf.readUInt32BE(8),
    flags: ((buf[12]! & 1) << 8) | buf[13]!,
    window: (buf[14]! << 8) | buf[15]!,
    checksum: (buf[16]! << 8) | buf[17]!,
    urgent: (buf[18]! << 8) | buf[19]!,
    headerLength,
    options,
    payload: buf.subarray(headerLength),
  });
}

// Emitting.

export interface TcpHeaderInit {
  readonly srcPort: number;
  readonly dstPort: number;
  readonly seq: number;
  readonly ack: number;
  readonly flags: number;
  readonly window: number;
  readonly urgent?: number | undefined;
  readonly options?: TcpOptions | undefined;
}

export interface TcpInit extends TcpHeaderInit {
  readonly payload: Uint8Array;
}

function fixedOptionsLength(o: TcpOptions): number {
  let n = 0;
  if (o.mss !== undefined) n += 4;
  if (o.timestamp) n += 12; // SACK-permitted shares the two padding bytes when both are present
  else if (o.sackPermitted) n += 4;
  if (o.windowScale !== undefined) n += 4;
  return n;
}

/** How many SACK blocks fit after the other options (at most 4, fewer when space is short). */
function sackBlocksThatFit(o: TcpOptions, fixed: number): number {
  const n = o.sack ? o.sack.length : 0;
  if (n === 0) return 0;
  return Math.max(0, Math.min(n, Math.floor((40 - fixed - 4) / 8)));
}

/** Bytes the options take, a multiple of 4. SACK blocks that do not fit are dropped. */
export function tcpOptionsLength(o: TcpOptions | undefined): number {
  if (!o) return 0;
  const fixed = fixedOptionsLength(o);
  const k = sackBlocksThatFit(o, fixed);
  return fixed + (k > 0 ? 4 + 8 * k : 0);
}

function emitOptions(o: TcpOptions, buf: Buffer, off: number): number {
  let p = off;
  if (o.mss !== undefined) {
    buf[p] = TCPOPT_MSS;
    buf[p + 1] = 4;
    buf.writeUInt16BE(o.mss & 0xffff, p + 2);
    p += 4;
  }
  if (o.timestamp) {
    if (o.sackPermitted) {
      buf[p] = TCPOPT_SACK_PERMITTED;
      buf[p + 1] = 2;
    } else {
      buf[p] = TCPOPT_NOP;
      buf[p + 1] = TCPOPT_NOP;
    }
    buf[p + 2] = TCPOPT_TIMESTAMP;
    buf[p + 3] = 10;
    buf.writeUInt32BE(o.timestamp.value >>> 0, p + 4);
    buf.writeUInt32BE(o.timestamp.echo >>> 0, p + 8);
    p += 12;
  } else if (o.sackPermitted) {
    buf[p] = TCPOPT_NOP;
    buf[p + 1] = TCPOPT_NOP;
    buf[p + 2] = TCPOPT_SACK_PERMITTED;
    buf[p + 3] = 2;
    p += 4;
  }
  if (o.windowScale !== undefined) {
    buf[p] = TCPOPT_NOP;
    buf[p + 1] = TCPOPT_WINDOW_SCALE;
    buf[p + 2] = 3;
    buf[p + 3] = o.windowScale & 0xff;
    p += 4;
  }
  const k = sackBlocksThatFit(o, p - off);
  if (k > 0 && o.sack) {
    buf[p] = TCPOPT_NOP;
    buf[p + 1] = TCPOPT_NOP;
    buf[p + 2] = TCPOPT_SACK;
    buf[p + 3] = 2 + 8 * k;
    p += 4;
    for (let i = 0; i < k; i++) {
      buf.writeUInt32BE(o.sack[i]!.left >>> 0, p);
      buf.writeUInt32BE(o.sack[i]!.right >>> 0, p + 4);
      p += 8;
    }
  }
  return p - off;
}

/** Writes the header with options and a zero checksum at `off`; returns the header length. */
export function emitTcpHeader(h: TcpHeaderInit, buf: Buffer, off = 0): number {
  const hl = TCP_MIN_HEADER_LEN + tcpOptionsLength(h.options);
  buf.writeUInt16BE(h.srcPort & 0xffff, off);
  buf.writeUInt16BE(h.dstPort & 0xffff, off + 2);
  buf.writeUInt32BE(h.seq >>> 0, off + 4);
  buf.writeUInt32BE(h.ack >>> 0, off + 8);
  buf[off + 12] = ((hl >>> 2) << 4) | ((h.flags >>> 8) & 1);
  buf[off + 13] = h.flags & 0xff;
  buf.writeUInt16BE(h.window & 0xffff, off + 14);
  buf[off + 16] = 0;
  buf[off + 17] = 0;
  buf.writeUInt16BE((h.urgent ?? 0) & 0xffff, off + 18);
  if (h.options) emitOptions(h.options, buf, off + TCP_MIN_HEADER_LEN);
  return hl;
}

/** Computes and stores the checksum of the segment at `buf[off, off+length)`. */
export function finishTcpChecksum(buf: Buffer, off: number, length: number, pseudo: IpPseudo): void {
  buf[off + 16] = 0;
  buf[off + 17] = 0;
  buf.writeUInt16BE(finishChecksum(onesSum(buf, off, off + length, pseudoHeaderSum(pseudo, IPPROTO_TCP, length))), off + 16);
}

export function tcpLength(s: TcpInit): number {
  return TCP_MIN_HEADER_LEN + tcpOptionsLength(s.options) + s.payload.length;
}

/** Header, options and a copy of the payload at `off`, checksummed; returns the length. */
export function emitTcp(s: TcpInit, pseudo: IpPseudo, buf: Buffer, off = 0): number {
  const hl = emitTcpHeader(s, buf, off);
  buf.set(s.payload, off + hl);
  const length = hl + s.payload.length;
  finishTcpChecksum(buf, off, length, pseudo);
  return length;
}

export function encodeTcp(s: TcpInit, pseudo: IpPseudo): Buffer {
  const buf = Buffer.allocUnsafe(tcpLength(s));
  emitTcp(s, pseudo, buf, 0);
  return buf;
}

// Hot-path accessors (20 bytes at `off` checked by the caller).

export function tcpSrcPort(buf: Buffer, off = 0): number {
  return (buf[off]! << 8) | buf[off + 1]!;
}

export function tcpDstPort(buf: Buffer, off = 0): number {
  return (buf[off + 2]! << 8) | buf[off + 3]!;
}

export function tcpSeq(buf: Buffer, off = 0): number {
  return ((buf[off + 4]! << 24) | (buf[off + 5]! << 16) | (buf[off + 6]! << 8) | buf[off + 7]!) >>> 0;
}

export function tcpAck(buf: Buffer, off = 0): number {
  return ((buf[off + 8]! << 24) | (buf[off + 9]! << 16) | (buf[off + 10]! << 8) | buf[off + 11]!) >>> 0;
}

export function tcpHeaderLen(buf: Buffer, off = 0): number {
  return (buf[off + 12]! >>> 4) * 4;
}

export function tcpFlags(buf: Buffer, off = 0): number {
  return ((buf[off + 12]! & 1) << 8) | buf[off + 13]!;
}

export function tcpWindow(buf: Buffer, off = 0): number {
  return (buf[off + 14]! << 8) | buf[off + 15]!;
}
