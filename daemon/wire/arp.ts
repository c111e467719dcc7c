/** ARP for Ethernet and IPv4 only (RFC 826): htype 1, ptype 0x0800, hlen 6, plen 4. */
import { readMac, writeMac, type Mac } from './mac.js';
import { fail, ok, type Parsed } from './result.js';

export const ARP_LEN = 28;
export const ARP_REQUEST = 1;
export const ARP_REPLY = 2;

export interface ArpPacket {
  /** 1 request, 2 reply; other values are passed through. */
  readonly op: number;
  readonly senderMac: Mac;
  /** IPv4 addresses as unsigned 32-bit numbers. */
  readonly senderIp: number;
  readonly targetMac: Mac;
  readonly targetIp: number;
}

/** Parses the ARP payload of an Ethernet frame (trailing padding ignored). */
export function parseArp(buf: Buffer): Parsed<ArpPacket> {
  if (buf.length < ARP_LEN) return fail('arp', 'truncated', `${buf.length} bytes < 28`);
  const htype = (buf[0]! << 8) | buf[1]!;
  const ptype = (buf[2]! << 8) | buf[3]!;
  if (htype !== 1 || ptype !== 0x0800 || buf[4] !== 6 || buf[5] !== 4) {
    return fail('arp', 'unsupported', `htype ${htype} ptype 0x${ptype.toString(16)} hlen ${buf[4]} plen ${buf[5]}`);
  }
  return ok({
    op: (buf[6]! << 8) | buf[7]!,
    senderMac: readMac(buf, 8),
    senderIp: buf.readUInt32BE(14),
    targetMac: readMac(buf, 18),
    targetIp: buf.readUInt32BE(24),
  });
}

/** Writes the 28-byte packet at `off`; returns 28. */
export function emitArp(p: ArpPacket, buf: Buffer, off = 0): number {
  buf.writeUInt32BE(0x0001_0800, off);
  buf[off + 4] = 6;
  buf[off + 5] = 4;
  buf.writeUInt16BE(p.op & 0xffff, off + 6);
  writeMac(buf, off + 8, p.senderMac);
  buf.writeUInt32BE(p.senderIp >>> 0, off + 14);
  writeMac(buf, off + 18, p.targetMac);
  buf.writeUInt32BE(p.targetIp >>> 0, off + 24);
  return ARP_LEN;
}

export function encodeArp(p: ArpPacket): Buffer {
  const buf = Buffer.allocUnsafe(ARP_LEN);
  emitArp(p, buf, 0);
  return buf;
}
