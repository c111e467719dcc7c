/**
 * The per-flow check: may this VM's flow to (address, port) leave, and how. Compiled once per
 * route change so the per-flow test is a few integer comparisons.
 */
import { Address4, Address6 } from 'ip-address';
import type { Route } from './route.js';
import { parseIpv6String } from '../wire/ipv6.js';

export type Egress = 'drop' | 'direct';

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
  /** Decides for an IPv4 destination (a number) or IPv6 (16-byte view). */
  egress4(dst: number, port: number): Egress;
  egress6(dst: Uint8Array, port: number): Egress;
}

function portOk(ports: [number, number][] | null, port: number): boolean {
  if (ports === null) return true;
  for (const [a, b] of ports) if (port >= a && port <= b) return true;
  return false;
}

export function compileRoute(route: Route): CompiledRoute {
  if (route.kind !== 'direct') {
    // none, via and tor never leave directly (tor's streams are decided by the router).
    return { route, egress4: () => 'drop', egress6: () => 'drop' };
  }
  if (route.allow === undefined) {
    return { route, egress4: () => 'direct', egress6: () => 'direct' };
  }
  const r4: Rule4[] = [];
  const r6: Rule6[] = [];
  for (const r of route.allow) {
    const ports = r.ports ?? null;
    if (r.cidr.includes(':')) {
      const a = new Address6(r.cidr);
      const bytes = parseIpv6String(a.startAddress().correctForm());
      if (!bytes.ok) continue;
      r6.push({ prefix: bytes.value, bits: a.subnetMask, ports });
    } else {
      const a = new Address4(r.cidr);
      const mask = a.subnetMask === 0 ? 0 : (0xffffffff << (32 - a.subnetMask)) >>> 0;
      r4.push({ net: Number(a.startAddress().bigInt()) >>> 0, mask, ports });
    }
  }
  return {
    route,
    egress4(dst, port) {
      for (const r of r4) if (((dst & r.mask) >>> 0) === r.net && portOk(r.ports, port)) return 'direct';
      return 'drop';
    },
    egress6(dst, port) {
      for (const r of r6) if (prefixMatch(dst, r.prefix, r.bits) && portOk(r.ports, port)) return 'direct';
      return 'drop';
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
