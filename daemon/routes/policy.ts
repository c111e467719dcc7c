/**
 * A route compiled for the per-flow check: the direct route's allow-list as integer and prefix
 * comparisons, built once per route change. Where a flow goes is decided in decide.ts.
 */
import type { Route } from './route.js';
import type { IpAddr } from '../endpoint/addr.js';
import { ipv4Mask, parseIpv4CidrText, parseIpv6CidrText, parseIpv6Text } from '../wire/ip-text.js';

interface Rule4 {
  net: number;
  mask: number;
  ports: [number, number][] | null;
}
interface Rule6 {
  prefix: Buffer;
  bits: number;
  ports: [number, number][] | null;
}

export interface CompiledRoute {
  readonly route: Route;
  /** The direct route lets this destination through (no allow-list: everything; other routes: nothing). */
  allows(dst: IpAddr, port: number): boolean;
}

function portOk(ports: [number, number][] | null, port: number): boolean {
  if (ports === null) return true;
  for (const [a, b] of ports) if (port >= a && port <= b) return true;
  return false;
}

export function compileRoute(route: Route): CompiledRoute {
  if (route.kind !== 'direct') return { route, allows: () => false };
  if (route.allow === undefined) return { route, allows: () => true };
  const r4: Rule4[] = [];
  const r6: Rule6[] = [];
  for (const r of route.allow) {
    const ports = r.ports ?? null;
    if (r.cidr.includes(':')) {
      const c = parseIpv6CidrText(r.cidr);
      const bytes = c.ok ? parseIpv6Text(c.value.network) : c;
      if (!c.ok || !bytes.ok) continue; // rules are checked when set: unreachable
      r6.push({ prefix: bytes.value, bits: c.value.prefix, ports });
    } else {
      const c = parseIpv4CidrText(r.cidr.includes('/') ? r.cidr : `${r.cidr}/32`);
      if (!c.ok) continue;
      r4.push({ net: c.value.network, mask: ipv4Mask(c.value.prefix), ports });
    }
  }
  return {
    route,
    allows(dst, port) {
      if (dst.v === 4) {
        for (const r of r4) if (((dst.n & r.mask) >>> 0) === r.net && portOk(r.ports, port)) return true;
        return false;
      }
      for (const r of r6) if (prefixMatch(dst.b, r.prefix, r.bits) && portOk(r.ports, port)) return true;
      return false;
    },
  };
}

function prefixMatch(a: Uint8Array, p: Uint8Array, bits: number): boolean {
  let i = 0;
  for (; bits >= 8; bits -= 8, i++) if (a[i] !== p[i]) return false;
  if (bits === 0) return true;
  const m = (0xff << (8 - bits)) & 0xff;
  return (a[i]! & m) === (p[i]! & m);
}
