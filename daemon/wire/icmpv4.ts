/** ICMPv4 (RFC 792): echo, destination unreachable, time exceeded; everything else kept raw. */
import { internetChecksum, onesSum } from './checksum.js';
import { fail, ok, type Parsed } from './result.js';

export const ICMPV4_ECHO_REPLY = 0;
export const ICMPV4_DEST_UNREACHABLE = 3;
export const ICMPV4_ECHO_REQUEST = 8;
export const ICMPV4_TIME_EXCEEDED = 11;

/** Destination-unreachable codes we generate. */
export const ICMPV4_UNREACH_NET = 0;
export const ICMPV4_UNREACH_HOST = 1;
export const ICMPV4_UNREACH_PROTOCOL = 2;
export const ICMPV4_UNREACH_PORT = 3;
export const ICMPV4_UNREACH_FRAG_NEEDED = 4;
export const ICMPV4_UNREACH_ADMIN = 13;

export const ICMPV4_HEADER_LEN = 8;

export type Icmpv4Message =
  | { readonly kind: 'echo-request' | 'echo-reply'; readonly id: number; readonly seq: number; readonly data: Buffer }
  | {
      readonly kind: 'dest-unreachable';
      readonly code: number;
      /** Next-hop MTU (RFC 1191), meaningful for code 4; 0 otherwise. */
      readonly mtu: number;
      /** The invoking datagram's header and leading bytes. */
      readonly original: Buffer;
    }
  | { readonly kind: 'time-exceeded'; readonly code: number; readonly original: Buffer }
  | {
      readonly kind: 'other';
      readonly type: number;
      readonly code: number;
      /** The second 32-bit word of the header. */
      readonly rest: number;
      readonly body: Buffer;
    };

/** What emitters accept: the same shapes with any byte container. */
export type Icmpv4Init =
  | { readonly kind: 'echo-request' | 'echo-reply'; readonly id: number; readonly seq: number; readonly data: Uint8Array }
  | { readonly kind: 'dest-unreachable'; readonly code: number; readonly mtu: number; readonly original: Uint8Array }
  | { readonly kind: 'time-exceeded'; readonly code: number; readonly original: Uint8Array }
  | { readonly kind: 'other'; readonly type: number; readonly code: number; readonly rest: number; readonly body: Uint8Array };

export interface Icmpv4ParseOptions {
  /** Default true. */
  readonly verifyChecksum?: boolean;
}

/** Parses the IPv4 payload of protocol 1. */
export function parseIcmpv4(buf: Buffer, opts?: Icmpv4ParseOptions): Parsed<Icmpv4Message> {
  if (buf.length < ICMPV4_HEADER_LEN) return fail('icmpv4', 'truncated', `${buf.length} bytes < 8`);
  if (opts?.verifyChecksum !== false && onesSum(buf, 0, buf.length) !== 0xffff) return fail('icmpv4', 'bad-checksum', 'message checksum');
  const type = buf[0]!;
  const code = buf[1]!;
  const body = buf.subarray(8);
  switch (type) {
    case ICMPV4_ECHO_REQUEST:
    case ICMPV4_ECHO_REPLY:
      return ok({
        kind: type === ICMPV4_ECHO_REQUEST ? 'echo-request' : 'echo-reply',
        id: (buf[4]! << 8) | buf[5]!,
        seq: (buf[6]! << 8) | buf[7]!,
        data: body,
      });
    case ICMPV4_DEST_UNREACHABLE:
      return ok({ kind: 'dest-unreachable', code, mtu: (buf[6]! << 8) | buf[7]!, original: body });
    case ICMPV4_TIME_EXCEEDED:
      return ok({ kind: 'time-exceeded', code, original: body });
    default:
      return ok({ kind: 'other', type, code, rest: buf.readUInt32BE(4), body });
  }
}

function bodyOf(m: Icmpv4Init): Uint8Array {
  switch (m.kind) {
    case 'echo-request':
    case 'echo-reply':
      return m.data;
    case 'dest-unreachable':
    case 'time-exceeded':
      return m.original;
    case 'other':
      return m.body;
  }
}

export function icmpv4Length(m: Icmpv4Init): number {
  return ICMPV4_HEADER_LEN + bodyOf(m).length;
}

/** Writes the message with its checksum at `off`; returns the length. */
export function emitIcmpv4(m: Icmpv4Init, buf: Buffer, off = 0): number {
  let type: number;
  let code: number;
  let rest: number;
  switch (m.kind) {
    case 'echo-request':
    case 'echo-reply':
      type = m.kind === 'echo-request' ? ICMPV4_ECHO_REQUEST : ICMPV4_ECHO_REPLY;
      code = 0;
      rest = (((m.id & 0xffff) << 16) | (m.seq & 0xffff)) >>> 0;
      break;
    case 'dest-unreachable':
      type = ICMPV4_DEST_UNREACHABLE;
      code = m.code;
      rest = m.mtu & 0xffff;
      break;
    case 'time-exceeded':
      type = ICMPV4_TIME_EXCEEDED;
      code = m.code;
      rest = 0;
      break;
    case 'other':
      type = m.type;
      code = m.code;
      rest = m.rest >>> 0;
      break;
  }
  const body = bodyOf(m);
  buf[off] = type & 0xff;
  buf[off + 1] = code & 0xff;
  buf[off + 2] = 0;
  buf[off + 3] = 0;
  buf.writeUInt32BE(rest, off + 4);
  buf.set(body, off + 8);
  const end = off + 8 + body.length;
  buf.writeUInt16BE(internetChecksum(buf, off, end), off + 2);
  return end - off;
}

export function encodeIcmpv4(m: Icmpv4Init): Buffer {
  const buf = Buffer.allocUnsafe(icmpv4Length(m));
  emitIcmpv4(m, buf, 0);
  return buf;
}

/**
 * The part of an offending IPv4 packet to quote in an ICMP error: its header plus 8 bytes
 * (RFC 792), or more up to `max` bytes (RFC 1812 allows up to 576 bytes for the whole error).
 */
export function icmpv4Quote(ipPacket: Buffer, max = 548): Buffer {
  if (ipPacket.length < 1) return ipPacket.subarray(0, 0);
  const hl = (ipPacket[0]! & 0x0f) * 4;
  return ipPacket.subarray(0, Math.min(ipPacket.length, Math.max(hl + 8, max)));
}
