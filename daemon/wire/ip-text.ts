/**
 * IP address text: the one place that reads and writes IPv4 and IPv6 addresses and CIDR
 * prefixes as text. In packets, IPv4 addresses are unsigned 32-bit numbers and IPv6 addresses
 * 16 bytes (see ipv4.ts and ipv6.ts, whose `parseIpv4`/`parseIpv6` read packet Buffers, not text).
 *
 * `parse…Text` return `Parsed<T>` and never throw; `ipv4TextToNumber` throws, for text that was
 * checked before (specs from validate.ts).
 */
import { Address6 } from 'ip-address';
import { fail, ok, type Parsed } from './result.js';

// IPv4.

/** Dotted quad of an unsigned 32-bit address. */
export function formatIpv4(addr: number): string {
  return `${addr >>> 24}.${(addr >>> 16) & 0xff}.${(addr >>> 8) & 0xff}.${addr & 0xff}`;
}

const DOTTED_QUAD = /^(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})\.(0|[1-9]\d{0,2})$/;

/** Strict dotted quad: four decimal octets, no leading zeros. */
export function parseIpv4Text(text: string): Parsed<number> {
  const m = text.length <= 15 ? DOTTED_QUAD.exec(text) : null;
  if (!m) return fail('ipv4', 'bad-value', `"${text.slice(0, 40)}" is not a dotted quad`);
  let addr = 0;
  for (let i = 1; i <= 4; i++) {
    const octet = Number(m[i]);
    if (octet > 255) return fail('ipv4', 'bad-value', `"${text}" has an octet > 255`);
    addr = addr * 256 + octet;
  }
  return ok(addr);
}

/** The address of a dotted quad already known to be valid; throws on anything else. */
export function ipv4TextToNumber(text: string): number {
  const r = parseIpv4Text(text);
  if (!r.ok) throw new Error(`not an IPv4 address: ${JSON.stringify(text)}`);
  return r.value;
}

/** Netmask of a prefix length 0..32, as an unsigned 32-bit number. */
export function ipv4Mask(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

export interface Ipv4Cidr {
  /** The address as written (host bits may be set). */
  readonly addr: number;
  /** The address with the host bits cleared. */
  readonly network: number;
  /** Prefix length, 0..32. */
  readonly prefix: number;
}

/** "a.b.c.d/n": a strict dotted quad and a prefix length of one or two digits, 0..32. */
export function parseIpv4CidrText(text: string): Parsed<Ipv4Cidr> {
  const slash = text.indexOf('/');
  const bits = slash < 0 ? '' : text.slice(slash + 1);
  if (!/^\d{1,2}$/.test(bits)) return fail('ipv4', 'bad-value', `"${text.slice(0, 40)}" is not an IPv4 CIDR`);
  const prefix = Number(bits);
  if (prefix > 32) return fail('ipv4', 'bad-value', `"${text}": prefix length ${prefix} > 32`);
  const a = parseIpv4Text(text.slice(0, slash));
  if (!a.ok) return a;
  return ok({ addr: a.value, network: (a.value & ipv4Mask(prefix)) >>> 0, prefix });
}

// IPv6 (RFC 4291 §2.2 in, RFC 5952 out).

/** Canonical text: lower case, longest run (>= 2) of zero groups as "::", first on ties. */
export function formatIpv6(addr: Uint8Array, off = 0): string {
  const groups: number[] = [];
  for (let i = 0; i < 8; i++) groups.push((addr[off + 2 * i]! << 8) | addr[off + 2 * i + 1]!);
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (g: number): string => g.toString(16);
  if (bestLen < 2) return groups.map(hex).join(':');
  const head = groups.slice(0, bestStart).map(hex).join(':');
  const tail = groups.slice(bestStart + bestLen).map(hex).join(':');
  return `${head}::${tail}`;
}

const HEX_GROUP = /^[0-9a-fA-F]{1,4}$/;

/** Parses textual IPv6 (with "::" and an optional dotted-quad tail); zone ids are rejected. */
export function parseIpv6Text(text: string): Parsed<Buffer> {
  const bad = (why: string) => fail('ipv6', 'bad-value', `"${text.slice(0, 60)}": ${why}`);
  if (text.length < 2 || text.length > 45) return bad('wrong length');
  const halves = text.split('::');
  if (halves.length > 2) return bad('more than one "::"');
  const parseHalf = (s: string, allowV4Tail: boolean): number[] | undefined => {
    if (s === '') return [];
    const parts = s.split(':');
    const out: number[] = [];
    for (let i = 0; i < parts.length; i++) {
      const p = parts[i]!;
      if (allowV4Tail && i === parts.length - 1 && p.includes('.')) {
        const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(p);
        if (!m) return undefined;
        const o = [m[1], m[2], m[3], m[4]].map(Number);
        if (o.some((x) => x > 255)) return undefined;
        out.push((o[0]! << 8) | o[1]!, (o[2]! << 8) | o[3]!);
      } else {
        if (!HEX_GROUP.test(p)) return undefined;
        out.push(parseInt(p, 16));
      }
    }
    return out;
  };
  const left = parseHalf(halves[0]!, halves.length === 1);
  const right = halves.length === 2 ? parseHalf(halves[1]!, true) : [];
  if (!left || !right) return bad('bad group');
  let groups: number[];
  if (halves.length === 2) {
    if (left.length + right.length > 7) return bad('too many groups');
    groups = [...left, ...new Array<number>(8 - left.length - right.length).fill(0), ...right];
  } else {
    if (left.length !== 8) return bad('not 8 groups');
    groups = left;
  }
  const b = Buffer.alloc(16);
  for (let i = 0; i < 8; i++) b.writeUInt16BE(groups[i]!, 2 * i);
  return ok(b);
}

export interface Ipv6Cidr {
  /** The network (host bits cleared) in canonical text. */
  readonly network: string;
  /** Prefix length, 0..128 (128 when the text has none). */
  readonly prefix: number;
}

/**
 * "addr/n" or a bare address (as /128), in the forms the ip-address package reads: the control
 * API's IPv6 prefixes and allow rules have always been read this way.
 */
export function parseIpv6CidrText(text: string): Parsed<Ipv6Cidr> {
  let a: Address6;
  try {
    a = new Address6(text);
  } catch {
    return fail('ipv6', 'bad-value', `"${text.slice(0, 60)}" is not an IPv6 CIDR`);
  }
  return ok({ network: a.startAddress().correctForm(), prefix: a.subnetMask });
}
