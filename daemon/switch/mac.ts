/** Switch-side MAC helpers; the MAC codec (numbers, text, bytes) is daemon/wire/mac.ts. */

/** Group (multicast/broadcast) bit of the MAC at `off`, read straight from the frame. */
export function isGroupMac(buf: Buffer, off: number): boolean {
  return (buf[off]! & 1) === 1;
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
