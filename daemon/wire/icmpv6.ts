/**
 * ICMPv6 (RFC 4443) and Neighbor Discovery (RFC 4861): echo, errors, router and neighbor
 * solicitation/advertisement with link-layer address, prefix information, MTU and RDNSS
 * (RFC 8106) options. The checksum covers the IPv6 pseudo-header, so it is verified only when
 * the caller passes the addresses.
 */
import { internetChecksum, onesSum, pseudoHeaderSum, type IpPseudo } from './checksum.js';
import { readMac, writeMac, type Mac } from './mac.js';
import { fail, ok, type Parsed } from './result.js';

export const ICMPV6_DEST_UNREACHABLE = 1;
export const ICMPV6_PACKET_TOO_BIG = 2;
export const ICMPV6_TIME_EXCEEDED = 3;
export const ICMPV6_PARAMETER_PROBLEM = 4;
export const ICMPV6_ECHO_REQUEST = 128;
export const ICMPV6_ECHO_REPLY = 129;
export const ICMPV6_ROUTER_SOLICITATION = 133;
export const ICMPV6_ROUTER_ADVERTISEMENT = 134;
export const ICMPV6_NEIGHBOR_SOLICITATION = 135;
export const ICMPV6_NEIGHBOR_ADVERTISEMENT = 136;

export const NDP_OPT_SOURCE_LL = 1;
export const NDP_OPT_TARGET_LL = 2;
export const NDP_OPT_PREFIX_INFO = 3;
export const NDP_OPT_MTU = 5;
export const NDP_OPT_RDNSS = 25;

const IPPROTO_ICMPV6 = 58;

export type NdpOption =
  /** Ethernet link-layer addresses (option length 1); other lengths come back as 'other'. */
  | { readonly kind: 'source-ll'; readonly mac: Mac }
  | { readonly kind: 'target-ll'; readonly mac: Mac }
  | {
      readonly kind: 'prefix';
      readonly prefixLength: number;
      readonly onLink: boolean;
      readonly autonomous: boolean;
      /** Seconds; 0xffffffff is infinity. */
      readonly validLifetime: number;
      readonly preferredLifetime: number;
      readonly prefix: Buffer;
    }
  | { readonly kind: 'mtu'; readonly mtu: number }
  | { readonly kind: 'rdnss'; readonly lifetime: number; readonly servers: readonly Buffer[] }
  /** Unknown or malformed-but-skippable options; `data` follows the type and length bytes. */
  | { readonly kind: 'other'; readonly type: number; readonly data: Buffer };

export type Icmpv6Message =
  | { readonly kind: 'echo-request' | 'echo-reply'; readonly id: number; readonly seq: number; readonly data: Buffer }
  | { readonly kind: 'dest-unreachable' | 'time-exceeded'; readonly code: number; readonly original: Buffer }
  | { readonly kind: 'packet-too-big'; readonly code: number; readonly mtu: number; readonly original: Buffer }
  | { readonly kind: 'parameter-problem'; readonly code: number; readonly pointer: number; readonly original: Buffer }
  | { readonly kind: 'router-solicitation'; readonly options: readonly NdpOption[] }
  | {
      readonly kind: 'router-advertisement';
      readonly curHopLimit: number;
      /** M flag. */
      readonly managed: boolean;
      /** O flag. */
      readonly otherConfig: boolean;
      /** The remaining six flag bits (H, Prf, P...), as in the byte with M and O cleared. */
      readonly flags: number;
      readonly routerLifetime: number;
      readonly reachableTime: number;
      readonly retransTimer: number;
      readonly options: readonly NdpOption[];
    }
  | { readonly kind: 'neighbor-solicitation'; readonly target: Buffer; readonly options: readonly NdpOption[] }
  | {
      readonly kind: 'neighbor-advertisement';
      readonly router: boolean;
      readonly solicited: boolean;
      readonly override: boolean;
      readonly target: Buffer;
      readonly options: readonly NdpOption[];
    }
  /** `body` follows the 4-byte type/code/checksum header. */
  | { readonly kind: 'other'; readonly type: number; readonly code: number; readonly body: Buffer };

const MIN_LEN: Partial<Record<number, number>> = {
  [ICMPV6_ROUTER_SOLICITATION]: 8,
  [ICMPV6_ROUTER_ADVERTISEMENT]: 16,
  [ICMPV6_NEIGHBOR_SOLICITATION]: 24,
  [ICMPV6_NEIGHBOR_ADVERTISEMENT]: 24,
};

/** Parses NDP options in `buf[start, end)`. Bounded: each option consumes at least 8 bytes. */
export function parseNdpOptions(buf: Buffer, start: number, end: number): Parsed<NdpOption[]> {
  const out: NdpOption[] = [];
  let off = start;
  while (off < end) {
    if (off + 2 > end) return fail('icmpv6', 'truncated', `option header at ${off}`);
    const type = buf[off]!;
    const units = buf[off + 1]!;
    if (units === 0) return fail('icmpv6', 'bad-length', `option ${type} with length 0`);
    const len = units * 8;
    if (off + len > end) return fail('icmpv6', 'truncated', `option ${type} of ${len} bytes at ${off}`);
    if ((type === NDP_OPT_SOURCE_LL || type === NDP_OPT_TARGET_LL) && units === 1) {
      const mac = readMac(buf, off + 2);
      out.push(type === NDP_OPT_SOURCE_LL ? { kind: 'source-ll', mac } : { kind: 'target-ll', mac });
    } else if (type === NDP_OPT_PREFIX_INFO && units === 4) {
      out.push({
        kind: 'prefix',
        prefixLength: buf[off + 2]!,
        onLink: (buf[off + 3]! & 0x80) !== 0,
        autonomous: (buf[off + 3]! & 0x40) !== 0,
        validLifetime: buf.readUInt32BE(off + 4),
        preferredLifetime: buf.readUInt32BE(off + 8),
        prefix: buf.subarray(off + 16, off + 32),
      });
    } else if (type === NDP_OPT_MTU && units === 1) {
      out.push({ kind: 'mtu', mtu: buf.readUInt32BE(off + 4) });
    } else if (type === NDP_OPT_RDNSS && units >= 3 && units % 2 === 1) {
      const servers: Buffer[] = [];
      for (let p = off + 8; p + 16 <= off + len; p += 16) servers.push(buf.subarray(p, p + 16));
      out.push({ kind: 'rdnss', lifetime: buf.readUInt32BE(off + 4), servers });
    } else {
      out.push({ kind: 'other', type, data: buf.subarray(off + 2, off + len) });
    }
    off += len;
  }
  return ok(out);
}

/**
 * Parses an ICMPv6 message (the upper-layer payload of an IPv6 packet). With `pseudo` the
 * checksum is verified against the IPv6 pseudo-header. NDP messages with a non-zero code or a
 * malformed option are errors (RFC 4861 §6.1 and §7.1 say to discard them).
 */
export function parseIcmpv6(buf: Buffer, pseudo?: IpPseudo): Parsed<Icmpv6Message> {
  if (buf.length < 4) return fail('icmpv6', 'truncated', `${buf.length} bytes < 4`);
  if (pseudo && onesSum(buf, 0, buf.length, pseudoHeaderSum(pseudo, IPPROTO_ICMPV6, buf.length)) !== 0xffff) {
    return fail('icmpv6', 'bad-checksum', 'message checksum');
  }
  const type = buf[0]!;
  const code = buf[1]!;
  let min = 4;
  if ((type >= 1 && type <= 4) || type === ICMPV6_ECHO_REQUEST || type === ICMPV6_ECHO_REPLY) min = 8;
  const ndpMin = MIN_LEN[type];
  if (ndpMin !== undefined) min = ndpMin;
  if (buf.length < min) return fail('icmpv6', 'truncated', `type ${type} of ${buf.length} bytes < ${min}`);
  if (ndpMin !== undefined && code !== 0) return fail('icmpv6', 'bad-value', `NDP type ${type} with code ${code}`);
  switch (type) {
    case ICMPV6_ECHO_REQUEST:
    case ICMPV6_ECHO_REPLY:
      return ok({
        kind: type === ICMPV6_ECHO_REQUEST ? 'echo-request' : 'echo-reply',
        id: (buf[4]! << 8) | buf[5]!,
        seq: (buf[6]! << 8) | buf[7]!,
        data: buf.subarray(8),
      });
    case ICMPV6_DEST_UNREACHABLE:
    case ICMPV6_TIME_EXCEEDED:
      return ok({ kind: type === ICMPV6_DEST_UNREACHABLE ? 'dest-unreachable' : 'time-exceeded', code, original: buf.subarray(8) });
    case ICMPV6_PACKET_TOO_BIG:
      return ok({ kind: 'packet-too-big', code, mtu: buf.readUInt32BE(4), original: buf.subarray(8) });
    case ICMPV6_PARAMETER_PROBLEM:
      return ok({ kind: 'parameter-problem', code, pointer: buf.readUInt32BE(4), original: buf.subarray(8) });
    case ICMPV6_ROUTER_SOLICITATION: {
      const options = parseNdpOptions(buf, 8, buf.length);
      return options.ok ? ok({ kind: 'router-solicitation', options: options.value }) : options;
    }
    case ICMPV6_ROUTER_ADVERTISEMENT: {
      const options = parseNdpOptions(buf, 16, buf.length);
      if (!options.ok) return options;
      const f = buf[5]!;
      return ok({
        kind: 'router-advertisement',
        curHopLimit: buf[4]!,
        managed: (f & 0x80) !== 0,
        otherConfig: (f & 0x40) !== 0,
        flags: f & 0x3f,
        routerLifetime: (buf[6]! << 8) | buf[7]!,
        reachableTime: buf.readUInt32BE(8),
        retransTimer: buf.readUInt32BE(12),
        options: options.value,
      });
    }
    case ICMPV6_NEIGHBOR_SOLICITATION: {
      const options = parseNdpOptions(buf, 24, buf.length);
      return options.ok ? ok({ kind: 'neighbor-solicitation', target: buf.subarray(8, 24), options: options.value }) : options;
    }
    case ICMPV6_NEIGHBOR_ADVERTISEMENT: {
      const options = parseNdpOptions(buf, 24, buf.length);
      if (!options.ok) return options;
      const f = buf[4]!;
      return ok({
        kind: 'neighbor-advertisement',
        router: (f & 0x80) !== 0,
        solicited: (f & 0x40) !== 0,
        override: (f & 0x20) !== 0,
        target: buf.subarray(8, 24),
        options: options.value,
      });
    }
    default:
      return ok({ kind: 'other', type, code, body: buf.subarray(4) });
  }
}

// Emitting.

/** Options and messages to emit: the parsed shapes, with any byte container for addresses. */
export type NdpOptionInit =
  | { readonly kind: 'source-ll'; readonly mac: Mac }
  | { readonly kind: 'target-ll'; readonly mac: Mac }
  | {
      readonly kind: 'prefix';
      readonly prefixLength: number;
      readonly onLink: boolean;
      readonly autonomous: boolean;
      readonly validLifetime: number;
      readonly preferredLifetime: number;
      readonly prefix: Uint8Array;
    }
  | { readonly kind: 'mtu'; readonly mtu: number }
  | { readonly kind: 'rdnss'; readonly lifetime: number; readonly servers: readonly Uint8Array[] }
  | { readonly kind: 'other'; readonly type: number; readonly data: Uint8Array };

export type Icmpv6Init =
  | { readonly kind: 'echo-request' | 'echo-reply'; readonly id: number; readonly seq: number; readonly data: Uint8Array }
  | { readonly kind: 'dest-unreachable' | 'time-exceeded'; readonly code: number; readonly original: Uint8Array }
  | { readonly kind: 'packet-too-big'; readonly code: number; readonly mtu: number; readonly original: Uint8Array }
  | { readonly kind: 'parameter-problem'; readonly code: number; readonly pointer: number; readonly original: Uint8Array }
  | { readonly kind: 'router-solicitation'; readonly options: readonly NdpOptionInit[] }
  | {
      readonly kind: 'router-advertisement';
      readonly curHopLimit: number;
      readonly managed: boolean;
      readonly otherConfig: boolean;
      readonly flags: number;
      readonly routerLifetime: number;
      readonly reachableTime: number;
      readonly retransTimer: number;
      readonly options: readonly NdpOptionInit[];
    }
  | { readonly kind: 'neighbor-solicitation'; readonly target: Uint8Array; readonly options: readonly NdpOptionInit[] }
  | {
      readonly kind: 'neighbor-advertisement';
      readonly router: boolean;
      readonly solicited: boolean;
      readonly override: boolean;
      readonly target: Uint8Array;
      readonly options: readonly NdpOptionInit[];
    }
  | { readonly kind: 'other'; readonly type: number; readonly code: number; readonly body: Uint8Array };

export function ndpOptionLength(o: NdpOptionInit): number {
  switch (o.kind) {
    case 'source-ll':
    case 'target-ll':
    case 'mtu':
      return 8;
    case 'prefix':
      return 32;
    case 'rdnss':
      return 8 + 16 * o.servers.length;
    case 'other':
      return (o.data.length + 2 + 7) & ~7;
  }
}

/** Writes one option at `off`; returns its length (a multiple of 8). */
export function emitNdpOption(o: NdpOptionInit, buf: Buffer, off: number): number {
  const len = ndpOptionLength(o);
  if (len > 255 * 8) throw new RangeError(`NDP option of ${len} bytes`);
  buf.fill(0, off, off + len);
  buf[off + 1] = len / 8;
  switch (o.kind) {
    case 'source-ll':
    case 'target-ll':
      buf[off] = o.kind === 'source-ll' ? NDP_OPT_SOURCE_LL : NDP_OPT_TARGET_LL;
      writeMac(buf, off + 2, o.mac);
      break;
    case 'prefix':
      buf[off] = NDP_OPT_PREFIX_INFO;
      buf[off + 2] = o.prefixLength & 0xff;
      buf[off + 3] = (o.onLink ? 0x80 : 0) | (o.autonomous ? 0x40 : 0);
      buf.writeUInt32BE(o.validLifetime >>> 0, off + 4);
      buf.writeUInt32BE(o.preferredLifetime >>> 0, off + 8);
      buf.set(o.prefix.subarray(0, 16), off + 16);
      break;
    case 'mtu':
      buf[off] = NDP_OPT_MTU;
      buf.writeUInt32BE(o.mtu >>> 0, off + 4);
      break;
    case 'rdnss':
      buf[off] = NDP_OPT_RDNSS;
      buf.writeUInt32BE(o.lifetime >>> 0, off + 4);
      o.servers.forEach((s, i) => buf.set(s.subarray(0, 16), off + 8 + 16 * i));
      break;
    case 'other':
      buf[off] = o.type & 0xff;
      buf.set(o.data, off + 2);
      break;
  }
  return len;
}

function optionsLength(options: readonly NdpOptionInit[]): number {
  let n = 0;
  for (const o of options) n += ndpOptionLength(o);
  return n;
}

export function icmpv6Length(m: Icmpv6Init): number {
  switch (m.kind) {
    case 'echo-request':
    case 'echo-reply':
      return 8 + m.data.length;
    case 'dest-unreachable':
    case 'time-exceeded':
    case 'packet-too-big':
    case 'parameter-problem':
      return 8 + m.original.length;
    case 'router-solicitation':
      return 8 + optionsLength(m.options);
    case 'router-advertisement':
      return 16 + optionsLength(m.options);
    case 'neighbor-solicitation':
    case 'neighbor-advertisement':
      return 24 + optionsLength(m.options);
    case 'other':
      return 4 + m.body.length;
  }
}

const TYPE_OF: Record<Icmpv6Init['kind'], number> = {
  'echo-request': ICMPV6_ECHO_REQUEST,
  'echo-reply': ICMPV6_ECHO_REPLY,
  'dest-unreachable': ICMPV6_DEST_UNREACHABLE,
  'time-exceeded': ICMPV6_TIME_EXCEEDED,
  'packet-too-big': ICMPV6_PACKET_TOO_BIG,
  'parameter-problem': ICMPV6_PARAMETER_PROBLEM,
  'router-solicitation': ICMPV6_ROUTER_SOLICITATION,
  'router-advertisement': ICMPV6_ROUTER_ADVERTISEMENT,
  'neighbor-solicitation': ICMPV6_NEIGHBOR_SOLICITATION,
  'neighbor-advertisement': ICMPV6_NEIGHBOR_ADVERTISEMENT,
  other: -1,
};

/** Writes the message at `off` with its checksum over the pseudo-header; returns the length. */
export function emitIcmpv6(m: Icmpv6Init, pseudo: IpPseudo, buf: Buffer, off = 0): number {
  const len = icmpv6Length(m);
  buf.fill(0, off, off + Math.min(len, 24));
  buf[off] = m.kind === 'other' ? m.type & 0xff : TYPE_OF[m.kind];
  let pos = off + 8;
  switch (m.kind) {
    case 'echo-request':
    case 'echo-reply':
      buf.writeUInt16BE(m.id & 0xffff, off + 4);
      buf.writeUInt16BE(m.seq & 0xffff, off + 6);
      buf.set(m.data, pos);
      break;
    case 'dest-unreachable':
    case 'time-exceeded':
      buf[off + 1] = m.code & 0xff;
      buf.set(m.original, pos);
      break;
    case 'packet-too-big':
      buf[off + 1] = m.code & 0xff;
      buf.writeUInt32BE(m.mtu >>> 0, off + 4);
      buf.set(m.original, pos);
      break;
    case 'parameter-problem':
      buf[off + 1] = m.code & 0xff;
      buf.writeUInt32BE(m.pointer >>> 0, off + 4);
      buf.set(m.original, pos);
      break;
    case 'router-solicitation':
      for (const o of m.options) pos += emitNdpOption(o, buf, pos);
      break;
    case 'router-advertisement':
      buf[off + 4] = m.curHopLimit & 0xff;
      buf[off + 5] = (m.managed ? 0x80 : 0) | (m.otherConfig ? 0x40 : 0) | (m.flags & 0x3f);
      buf.writeUInt16BE(m.routerLifetime & 0xffff, off + 6);
      buf.writeUInt32BE(m.reachableTime >>> 0, off + 8);
      buf.writeUInt32BE(m.retransTimer >>> 0, off + 12);
      pos = off + 16;
      for (const o of m.options) pos += emitNdpOption(o, buf, pos);
      break;
    case 'neighbor-solicitation':
    case 'neighbor-advertisement':
      if (m.kind === 'neighbor-advertisement') {
        buf[off + 4] = (m.router ? 0x80 : 0) | (m.solicited ? 0x40 : 0) | (m.override ? 0x20 : 0);
      }
      buf.set(m.target.subarray(0, 16), off + 8);
      pos = off + 24;
      for (const o of m.options) pos += emitNdpOption(o, buf, pos);
      break;
    case 'other':
      buf[off + 1] = m.code & 0xff;
      buf.set(m.body, off + 4);
      break;
  }
  buf.writeUInt16BE(internetChecksum(buf, off, off + len, pseudoHeaderSum(pseudo, IPPROTO_ICMPV6, len)), off + 2);
  return len;
}

export function encodeIcmpv6(m: Icmpv6Init, pseudo: IpPseudo): Buffer {
  const buf = Buffer.allocUnsafe(icmpv6Length(m));
  emitIcmpv6(m, pseudo, buf, 0);
  return buf;
}

/** Finds the first option of a kind, e.g. `findNdpOption(ns.options, 'source-ll')?.mac`. */
export function findNdpOption<K extends NdpOption['kind']>(
  options: readonly NdpOption[],
  kind: K,
): Extract<NdpOption, { kind: K }> | undefined {
  for (const o of options) if (o.kind === kind) return o as Extract<NdpOption, { kind: K }>;
  return undefined;
}
