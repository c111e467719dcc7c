/**
 * MAC addresses as 48-bit numbers (exact in a double): cheap to compare, hash and keep in Maps.
 * Octet 0 is the most significant byte, so `0x0200_0000_0001` is "02:00:00:00:00:01".
 */
import { fail, ok, type Parsed } from './result.js';

export type Mac = number;

export const MAC_BROADCAST: Mac = 0xffff_ffff_ffff;
export const MAC_ZERO: Mac = 0;

const TWO32 = 0x1_0000_0000;

/** Reads 6 bytes at `off`. The caller guarantees `off + 6 <= buf.length`. */
export function readMac(buf: Buffer, off: number): Mac {
  return ((buf[off]! << 8) | buf[off + 1]!) * TWO32 + ((buf[off + 2]! << 24) >>> 0) + ((buf[off + 3]! << 16) | (buf[off + 4]! << 8) | buf[off + 5]!);
}

/** Writes 6 bytes at `off`. The caller guarantees `off + 6 <= buf.length`. */
export function writeMac(buf: Buffer, off: number, mac: Mac): void {
  const hi = Math.floor(mac / TWO32);
  const lo = mac >>> 0;
  buf[off] = (hi >>> 8) & 0xff;
  buf[off + 1] = hi & 0xff;
  buf[off + 2] = lo >>> 24;
  buf[off + 3] = (lo >>> 16) & 0xff;
  buf[off + 4] = (lo >>> 8) & 0xff;
  buf[off + 5] = lo & 0xff;
}

/** True for an integer in [0, 2^48). */
export function isMac(value: number): boolean {
  return Number.isInteger(value) && value >= 0 && value <= MAC_BROADCAST;
}

/** Group bit (I/G, least significant bit of the first octet); includes broadcast. */
export function isMulticastMac(mac: Mac): boolean {
  return (Math.floor(mac / 0x100_0000_0000) & 1) === 1;
}

export function isBroadcastMac(mac: Mac): boolean {
  return mac === MAC_BROADCAST;
}

/** Unicast and not all-zero: acceptable as a station's own address. */
export function isUnicastMac(mac: Mac): boolean {
  return mac !== 0 && !isMulticastMac(mac);
}

/** U/L bit (second least significant bit of the first octet). */
export function isLocalMac(mac: Mac): boolean {
  return (Math.floor(mac / 0x100_0000_0000) & 2) === 2;
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

/** "aa:bb:cc:dd:ee:ff", lower case. */
export function macToString(mac: Mac): string {
  const hi = Math.floor(mac / TWO32) & 0xffff;
  const lo = mac >>> 0;
  return `${HEX[hi >>> 8]}:${HEX[hi & 0xff]}:${HEX[lo >>> 24]}:${HEX[(lo >>> 16) & 0xff]}:${HEX[(lo >>> 8) & 0xff]}:${HEX[lo & 0xff]}`;
}

const MAC_RE = /^([0-9a-fA-F]{2})([:-])([0-9a-fA-F]{2})\2([0-9a-fA-F]{2})\2([0-9a-fA-F]{2})\2([0-9a-fA-F]{2})\2([0-9a-fA-F]{2})$/;

/** Accepts "aa:bb:cc:dd:ee:ff" or "aa-bb-cc-dd-ee-ff" (either case, one separator throughout). */
export function parseMacString(text: string): Parsed<Mac> {
  if (text.length !== 17) return fail('mac', 'bad-length', `"${text.slice(0, 40)}" is not 17 characters`);
  const m = MAC_RE.exec(text);
  if (!m) return fail('mac', 'bad-value', `"${text}" is not six hex octets`);
  let mac = 0;
  for (const i of [1, 3, 4, 5, 6, 7]) mac = mac * 256 + parseInt(m[i]!, 16);
  return ok(mac);
}

export function isMacString(text: string): boolean {
  return parseMacString(text).ok;
}

/** The MAC `text` names, or null when it names none (for text checked before, or optional). */
export function parseMacOrNull(text: string): Mac | null {
  const r = parseMacString(text);
  return r.ok ? r.value : null;
}

/** 6-byte Buffer copy of the address. */
export function macToBuffer(mac: Mac): Buffer {
  const b = Buffer.allocUnsafe(6);
  writeMac(b, 0, mac);
  return b;
}
