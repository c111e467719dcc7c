/**
 * Destinations no route may reach by itself: the host's loopback, unspecified, link-local and
 * multicast ranges. (The host's own interface addresses are refused too: a VM reaches host
 * services only through an explicit port forward.)
 */
import os from 'node:os';
import type { IpAddr } from '../endpoint/addr.js';
import { parseIpv4Text, parseIpv6Text } from '../wire/ip-text.js';

let hostAddrs: { at: number; v4: Set<number>; v6: Set<string> } | null = null;

function hostAddresses(): { v4: Set<number>; v6: Set<string> } {
  const now = Date.now();
  if (hostAddrs !== null && now - hostAddrs.at < 5000) return hostAddrs;
  const v4 = new Set<number>();
  const v6 = new Set<string>();
  for (const list of Object.values(os.networkInterfaces())) {
    for (const a of list ?? []) {
      if (a.family === 'IPv4') {
        const p = parseIpv4Text(a.address);
        if (p.ok) v4.add(p.value);
      } else {
        const p = parseIpv6Text(a.address.split('%')[0]!);
        if (p.ok) v6.add(p.value.toString('hex'));
      }
    }
  }
  hostAddrs = { at: now, v4, v6 };
  return hostAddrs;
}

export function isForbiddenDestination(a: IpAddr): boolean {
  if (a.v === 4) {
    const top = a.n >>> 24;
    if (top === 0 || top === 127 || a.n >>> 28 >= 0xe) return true; // this-network, loopback, multicast, reserved
    if (a.n >>> 16 === 0xa9fe) return true; // 169.254/16 link-local
    return hostAddresses().v4.has(a.n);
  }
  const b = a.b;
  let zero = true;
  for (let i = 0; i < 15; i++) if (b[i] !== 0) zero = false;
  if (zero && (b[15] === 0 || b[15] === 1)) return true; // :: and ::1
  if (b[0] === 0xff) return true; // multicast
  if (b[0] === 0xfe && (b[1]! & 0xc0) === 0x80) return true; // link-local
  // IPv4-mapped addresses would reach IPv4 space around the IPv4 checks.
  if (b.subarray(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff) return true;
  return hostAddresses().v6.has(b.toString('hex'));
}
