/**
 * Ethernet II frames with at most one 802.1Q tag. A frame whose inner EtherType is another tag
 * (QinQ) is returned with `etherType` 0x8100/0x88a8 and the rest as payload.
 */
import { readMac, writeMac, type Mac } from './mac.js';
import { fail, ok, type Parsed } from './result.js';

export const ETH_HEADER_LEN = 14;
export const ETH_VLAN_HEADER_LEN = 18;
export const ETHERTYPE_IPV4 = 0x0800;
export const ETHERTYPE_ARP = 0x0806;
export const ETHERTYPE_VLAN = 0x8100;
export const ETHERTYPE_QINQ = 0x88a8;
export const ETHERTYPE_IPV6 = 0x86dd;

export interface VlanTag {
  /** Priority code point, 0..7. */
  readonly pcp: number;
  /** Drop eligible indicator. */
  readonly dei: boolean;
  /** VLAN id, 0..4095. */
  readonly vid: number;
}

export interface EthernetHeader {
  readonly dst: Mac;
  readonly src: Mac;
  readonly vlan?: VlanTag | undefined;
  /** The EtherType after the tag, if any. Values below 0x0600 are 802.3 lengths, passed through. */
  readonly etherType: number;
}

export interface EthernetFrame extends EthernetHeader {
  /** 14 or 18. */
  readonly headerLength: number;
  /** View of the bytes after the header (including any trailing padding). */
  readonly payload: Buffer;
}

export function parseEthernet(buf: Buffer): Parsed<EthernetFrame> {
  if (buf.length < ETH_HEADER_LEN) return fail('ethernet', 'truncated', `${buf.length} bytes < 14`);
  const dst = readMac(buf, 0);
  const src = readMac(buf, 6);
  const outer = (buf[12]! << 8) | buf[13]!;
  if (outer !== ETHERTYPE_VLAN) {
    return ok({ dst, src, etherType: outer, headerLength: ETH_HEADER_LEN, payload: buf.subarray(ETH_HEADER_LEN) });
  }
  if (buf.length < ETH_VLAN_HEADER_LEN) return fail('ethernet', 'truncated', `tagged frame of ${buf.length} bytes < 18`);
  const tci = (buf[14]! << 8) | buf[15]!;
  return ok({
    dst,
    src,
    vlan: { pcp: tci >>> 13, dei: (tci & 0x1000) !== 0, vid: tci & 0x0fff },
    etherType: (buf[16]! << 8) | buf[17]!,
    headerLength: ETH_VLAN_HEADER_LEN,
    payload: buf.subarray(ETH_VLAN_HEADER_LEN),
  });
}

export function ethernetHeaderLength(h: EthernetHeader): number {
  return h.vlan ? ETH_VLAN_HEADER_LEN : ETH_HEADER_LEN;
}

/** Writes the 14- or 18-byte header at `off` and returns its length. */
export function emitEthernetHeader(h: EthernetHeader, buf: Buffer, off = 0): number {
  writeMac(buf, off, h.dst);
  writeMac(buf, off + 6, h.src);
  if (h.vlan) {
    buf.writeUInt16BE(ETHERTYPE_VLAN, off + 12);
    buf.writeUInt16BE(((h.vlan.pcp & 7) << 13) | (h.vlan.dei ? 0x1000 : 0) | (h.vlan.vid & 0x0fff), off + 14);
    buf.writeUInt16BE(h.etherType & 0xffff, off + 16);
    return ETH_VLAN_HEADER_LEN;
  }
  buf.writeUInt16BE(h.etherType & 0xffff, off + 12);
  return ETH_HEADER_LEN;
}

/** Header plus a copy of `payload`, written at `off`; returns the frame length. */
export function emitEthernet(frame: EthernetHeader & { readonly payload: Uint8Array }, buf: Buffer, off = 0): number {
  const hl = emitEthernetHeader(frame, buf, off);
  buf.set(frame.payload, off + hl);
  return hl + frame.payload.length;
}

export function encodeEthernet(frame: EthernetHeader & { readonly payload: Uint8Array }): Buffer {
  const buf = Buffer.allocUnsafe(ethernetHeaderLength(frame) + frame.payload.length);
  emitEthernet(frame, buf, 0);
  return buf;
}

// Hot-path accessors. Callers check `buf.length >= 14` (18 for the tagged variants) first;
// out-of-range reads yield garbage numbers, never exceptions.

export function ethDst(buf: Buffer): Mac {
  return readMac(buf, 0);
}

export function ethSrc(buf: Buffer): Mac {
  return readMac(buf, 6);
}

/** The outer EtherType (0x8100 for a tagged frame). */
export function ethType(buf: Buffer): number {
  return (buf[12]! << 8) | buf[13]!;
}

/** The EtherType after a single 802.1Q tag, if any. */
export function ethInnerType(buf: Buffer): number {
  const t = (buf[12]! << 8) | buf[13]!;
  return t === ETHERTYPE_VLAN ? (buf[16]! << 8) | buf[17]! : t;
}

/** 18 for a single-tagged frame, else 14. */
export function ethHeaderLen(buf: Buffer): number {
  return buf[12] === 0x81 && buf[13] === 0x00 ? ETH_VLAN_HEADER_LEN : ETH_HEADER_LEN;
}

/** VLAN id of a tagged frame, or -1 when untagged. */
export function ethVlanId(buf: Buffer): number {
  return buf[12] === 0x81 && buf[13] === 0x00 ? ((buf[14]! << 8) | buf[15]!) & 0x0fff : -1;
}

export function setEthDst(buf: Buffer, mac: Mac): void {
  writeMac(buf, 0, mac);
}

export function setEthSrc(buf: Buffer, mac: Mac): void {
  writeMac(buf, 6, mac);
}
