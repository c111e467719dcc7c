/** MAC helpers for the switch's hot path: a MAC is a 48-bit number read straight from a frame. */
export function readMac(buf: Buffer, off: number): number {
  return buf.readUInt16BE(off) * 0x100000000 + buf.readUInt32BE(off + 2);
}

export function isGroupMac(buf: Buffer, off: number): boolean {
  return (buf[off]! & 1) === 1;
}

export function writeMac(buf: Buffer, off: number, mac: number): void {
  buf.writeUInt16BE(Math.floor(mac / 0x100000000), off);
  buf.writeUInt32BE(mac % 0x100000000, off + 2);
}

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;

export function parseMacString(s: string): number | null {
  if (!MAC_RE.test(s)) return null;
  return parseInt(s.replace(/:/g, ''), 16);
}

export function macToString(mac: number): string {
  return mac.toString(16).padStart(12, '0').replace(/(..)(?!$)/g, '$1:');
}

export function isUnicastMacNumber(mac: number): boolean {
  return Math.floor(mac / 0x10000000000) % 2 === 0;
}

/** A stable locally administered unicast MAC derived from a name (gateway, TUN members). */
export function derivedMac(seed: string): number {
  let h = 0x811c9dc5;
  let h2 = 0x01000193;
  for (let i = 0; i < seed.length; i++) {
    h = Math.imul(h ^ seed.charCodeAt(i), 0x01000193) >>> 0;
    h2 = Math.imul(h2 ^ seed.charCodeAt(i), 0x85ebca6b) >>> 0;
  }
  // 0x02 first octet: locally administered, unicast.
  return 0x02 * 0x10000000000 + (h2 & 0xff) * 0x100000000 + h;
}
