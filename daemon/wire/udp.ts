/** UDP (RFC 768). The checksum is verified when the caller passes the pseudo-header addresses. */
import { finishChecksum, onesSum, pseudoHeaderSum, type IpPseudo } from './checksum.js';
import { fail, ok, type Parsed } from './result.js';

export const UDP_HEADER_LEN = 8;
const IPPROTO_UDP = 17;

export interface UdpDatagram {
  readonly srcPort: number;
  readonly dstPort: number;
  /** The UDP length field (header + payload). */
  readonly length: number;
  /** As on the wire; 0 means "no checksum" (IPv4 only). */
  readonly checksum: number;
  /** View of bytes [8, length): anything after the UDP length is ignored. */
  readonly payload: Buffer;
}

/**
 * Parses the IP payload of protocol 17. With `pseudo` the checksum is verified; a zero checksum
 * is accepted over IPv4 and rejected over IPv6 (RFC 8200 §8.1).
 */
export function parseUdp(buf: Buffer, pseudo?: IpPseudo): Parsed<UdpDatagram> {
  if (buf.length < UDP_HEADER_LEN) return fail('udp', 'truncated', `${buf.length} bytes < 8`);
  const length = (buf[4]! << 8) | buf[5]!;
  if (length < UDP_HEADER_LEN) return fail('udp', 'bad-length', `length field ${length} < 8`);
  if (length > buf.length) return fail('udp', 'truncated', `length field ${length} > ${buf.length}`);
  const checksum = (buf[6]! << 8) | buf[7]!;
  if (pseudo) {
    if (checksum === 0) {
      if (pseudo.version === 6) return fail('udp', 'bad-checksum', 'zero checksum over IPv6');
    } else if (onesSum(buf, 0, length, pseudoHeaderSum(pseudo, IPPROTO_UDP, length)) !== 0xffff) {
      return fail('udp', 'bad-checksum', 'datagram checksum');
    }
  }
  return ok({
    srcPort: (buf[0]! << 8) | buf[1]!,
    dstPort: (buf[2]! << 8) | buf[3]!,
    length,
    checksum,
    payload: buf.subarray(UDP_HEADER_LEN, length),
  });
}

/** Writes the 8-byte header with a zero checksum; call `finishUdpChecksum` once the payload is in. */
export function emitUdpHeader(srcPort: number, dstPort: number, payloadLength: number, buf: Buffer, off = 0): number {
  const length = UDP_HEADER_LEN + payloadLength;
  if (length > 0xffff) throw new RangeError(`UDP length ${length} > 65535`);
  buf.writeUInt16BE(srcPort & 0xffff, off);
  buf.writeUInt16BE(dstPort & 0xffff, off + 2);
  buf.writeUInt16BE(length, off + 4);
  buf[off + 6] = 0;
  buf[off + 7] = 0;
  return UDP_HEADER_LEN;
}

/** Computes and stores the checksum of the datagram at `buf[off, off+length)`; 0 is sent as 0xffff. */
export function finishUdpChecksum(buf: Buffer, off: number, length: number, pseudo: IpPseudo): void {
  buf[off + 6] = 0;
  buf[off + 7] = 0;
  const c = finishChecksum(onesSum(buf, off, off + length, pseudoHeaderSum(pseudo, IPPROTO_UDP, length)));
  buf.writeUInt16BE(c === 0 ? 0xffff : c, off + 6);
}

export interface UdpInit {
  readonly srcPort: number;
  readonly dstPort: number;
  readonly payload: Uint8Array;
}

/**
 * Header and a copy of the payload at `off`; returns the length. Without `pseudo` the checksum
 * is left 0 (only valid over IPv4).
 */
export function emitUdp(d: UdpInit, pseudo: IpPseudo | undefined, buf: Buffer, off = 0): number {
  const length = emitUdpHeader(d.srcPort, d.dstPort, d.payload.length, buf, off) + d.payload.length;
  buf.set(d.payload, off + UDP_HEADER_LEN);
  if (pseudo) finishUdpChecksum(buf, off, length, pseudo);
  return length;
}

export function encodeUdp(d: UdpInit, pseudo?: IpPseudo): Buffer {
  const buf = Buffer.allocUnsafe(UDP_HEADER_LEN + d.payload.length);
  emitUdp(d, pseudo, buf, 0);
  return buf;
}

// Hot-path accessors (8 bytes at `off` checked by the caller).

export function udpSrcPort(buf: Buffer, off = 0): number {
  return (buf[off]! << 8) | buf[off + 1]!;
}

export function udpDstPort(buf: Buffer, off = 0): number {
  return (buf[off + 2]! << 8) | buf[off + 3]!;
}
