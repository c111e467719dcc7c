/**
 * DHCPv4 (RFC 2131/2132): the BOOTP header, the magic cookie and the options a small server and
 * client need. Repeated options are concatenated (RFC 3396); option overload (52) is honoured
 * for reading options from `file`/`sname`; an option whose length runs past its area is an error;
 * a known option with an impossible length is ignored; unknown options are kept raw.
 */
import { readMac, writeMac, type Mac } from './mac.js';
import { fail, ok, type Parsed } from './result.js';

export const DHCP_MAGIC_COOKIE = 0x63825363;
export const DHCP_FIXED_LEN = 236;
export const DHCP_OPTIONS_OFFSET = 240;
/** BOOTP's minimum message size; emitted messages are zero-padded up to it. */
export const DHCP_MIN_LEN = 300;
export const DHCP_SERVER_PORT = 67;
export const DHCP_CLIENT_PORT = 68;

export const BOOTREQUEST = 1;
export const BOOTREPLY = 2;

export const DHCPDISCOVER = 1;
export const DHCPOFFER = 2;
export const DHCPREQUEST = 3;
export const DHCPDECLINE = 4;
export const DHCPACK = 5;
export const DHCPNAK = 6;
export const DHCPRELEASE = 7;
export const DHCPINFORM = 8;

export const DHCPOPT_PAD = 0;
export const DHCPOPT_SUBNET_MASK = 1;
export const DHCPOPT_ROUTER = 3;
export const DHCPOPT_DNS = 6;
export const DHCPOPT_HOSTNAME = 12;
export const DHCPOPT_DOMAIN_NAME = 15;
export const DHCPOPT_MTU = 26;
export const DHCPOPT_REQUESTED_IP = 50;
export const DHCPOPT_LEASE_TIME = 51;
export const DHCPOPT_OVERLOAD = 52;
export const DHCPOPT_MESSAGE_TYPE = 53;
export const DHCPOPT_SERVER_ID = 54;
export const DHCPOPT_PARAMETER_LIST = 55;
export const DHCPOPT_MAX_MESSAGE_SIZE = 57;
export const DHCPOPT_RENEWAL_TIME = 58;
export const DHCPOPT_REBINDING_TIME = 59;
export const DHCPOPT_CLIENT_ID = 61;
export const DHCPOPT_END = 255;

export interface DhcpRawOption {
  readonly code: number;
  readonly data: Buffer;
}

/** IPv4 addresses are unsigned 32-bit numbers, times are seconds. */
export interface Dhcpv4Options {
  readonly messageType?: number | undefined;
  readonly subnetMask?: number | undefined;
  readonly routers?: readonly number[] | undefined;
  readonly dnsServers?: readonly number[] | undefined;
  readonly hostname?: string | undefined;
  readonly domainName?: string | undefined;
  readonly interfaceMtu?: number | undefined;
  readonly requestedIp?: number | undefined;
  readonly leaseTime?: number | undefined;
  /** 1 file, 2 sname, 3 both. */
  readonly overload?: number | undefined;
  readonly serverId?: number | undefined;
  readonly parameterRequestList?: readonly number[] | undefined;
  readonly maxMessageSize?: number | undefined;
  readonly renewalTime?: number | undefined;
  readonly rebindingTime?: number | undefined;
  readonly clientId?: Uint8Array | undefined;
  /** Options not listed above, in order of first appearance. */
  readonly other?: readonly { readonly code: number; readonly data: Uint8Array }[] | undefined;
}

export interface Dhcpv4Message {
  readonly op: number;
  readonly htype: number;
  readonly hlen: number;
  readonly hops: number;
  readonly xid: number;
  readonly secs: number;
  readonly broadcast: boolean;
  readonly ciaddr: number;
  readonly yiaddr: number;
  readonly siaddr: number;
  readonly giaddr: number;
  /** View of the 16-byte chaddr field. */
  readonly chaddr: Buffer;
  /** First six bytes of chaddr (the client's MAC for htype 1, hlen 6). */
  readonly clientMac: Mac;
  /** Views of the 64-byte server name and 128-byte boot file fields. */
  readonly sname: Buffer;
  readonly file: Buffer;
  readonly options: Dhcpv4Options;
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

interface OptionAccumulator {
  readonly order: number[];
  readonly parts: Map<number, Buffer[]>;
}

/** Scans one option area; returns an error text, or the overload value seen (0 when none). */
function scanArea(buf: Buffer, start: number, end: number, acc: OptionAccumulator, area: string): string | number {
  let overload = 0;
  let off = start;
  while (off < end) {
    const code = buf[off]!;
    if (code === DHCPOPT_PAD) {
      off++;
      continue;
    }
    if (code === DHCPOPT_END) break;
    if (off + 2 > end) return `option ${code} in ${area} has no length`;
    const len = buf[off + 1]!;
    if (off + 2 + len > end) return `option ${code} of ${len} bytes runs past ${area}`;
    const data = buf.subarray(off + 2, off + 2 + len);
    if (code === DHCPOPT_OVERLOAD) {
      if (area === 'options' && len === 1) overload = data[0]!;
    } else {
      let list = acc.parts.get(code);
      if (!list) {
        list = [];
        acc.parts.set(code, list);
        acc.order.push(code);
      }
      list.push(data);
    }
    off += 2 + len;
  }
  return overload;
}

function addrList(d: Buffer): number[] | undefined {
  if (d.length < 4 || d.length % 4 !== 0) return undefined;
  const out: number[] = [];
  for (let i = 0; i < d.length; i += 4) out.push(d.readUInt32BE(i));
  return out;
}

function text(d: Buffer): string | undefined {
  let end = d.length;
  while (end > 0 && d[end - 1] === 0) end--;
  return end > 0 ? d.toString('latin1', 0, end) : undefined;
}

function decodeOptions(acc: OptionAccumulator, overload: number): Dhcpv4Options {
  const o: Mutable<Dhcpv4Options> = {};
  const other: DhcpRawOption[] = [];
  if (overload) o.overload = overload;
  for (const code of acc.order) {
    const parts = acc.parts.get(code)!;
    const d = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
    const u32 = d.length === 4 ? d.readUInt32BE(0) : undefined;
    const u16 = d.length === 2 ? d.readUInt16BE(0) : undefined;
    switch (code) {
      case DHCPOPT_MESSAGE_TYPE:
        if (d.length >= 1) o.messageType = d[0]!;
        break;
      case DHCPOPT_SUBNET_MASK:
        o.subnetMask = u32;
        break;
      case DHCPOPT_ROUTER:
        o.routers = addrList(d);
        break;
      case DHCPOPT_DNS:
        o.dnsServers = addrList(d);
        break;
      case DHCPOPT_HOSTNAME:
        o.hostname = text(d);
        break;
      case DHCPOPT_DOMAIN_NAME:
        o.domainName = text(d);
        break;
      case DHCPOPT_MTU:
        o.interfaceMtu = u16;
        break;
      case DHCPOPT_REQUESTED_IP:
        o.requestedIp = u32;
        break;
      case DHCPOPT_LEASE_TIME:
        o.leaseTime = u32;
        break;
      case DHCPOPT_SERVER_ID:
        o.serverId = u32;
        break;
      case DHCPOPT_PARAMETER_LIST:
        o.parameterRequestList = Array.from(d);
        break;
      case DHCPOPT_MAX_MESSAGE_SIZE:
        o.maxMessageSize = u16;
        break;
      case DHCPOPT_RENEWAL_TIME:
        o.renewalTime = u32;
        break;
      case DHCPOPT_REBINDING_TIME:
        o.rebindingTime = u32;
        break;
      case DHCPOPT_CLIENT_ID:
        if (d.length > 0) o.clientId = d;
        break;
      default:
        other.push({ code, data: d });
    }
  }
  for (const k of Object.keys(o) as (keyof Dhcpv4Options)[]) if (o[k] === undefined) delete o[k];
  if (other.length > 0) o.other = other;
  return o;
}

/** Parses a DHCP message (the UDP payload). */
export function parseDhcpv4(buf: Buffer): Parsed<Dhcpv4Message> {
  if (buf.length < DHCP_OPTIONS_OFFSET) return fail('dhcpv4', 'truncated', `${buf.length} bytes < 240`);
  if (buf.readUInt32BE(DHCP_FIXED_LEN) !== DHCP_MAGIC_COOKIE) return fail('dhcpv4', 'bad-version', 'no magic cookie');
  const acc: OptionAccumulator = { order: [], parts: new Map() };
  const overload = scanArea(buf, DHCP_OPTIONS_OFFSET, buf.length, acc, 'options');
  if (typeof overload === 'string') return fail('dhcpv4', 'truncated', overload);
  // RFC 2131 §4.1: the 'file' field is read before 'sname'.
  if (overload & 1) {
    const r = scanArea(buf, 108, 236, acc, 'file');
    if (typeof r === 'string') return fail('dhcpv4', 'truncated', r);
  }
  if (overload & 2) {
    const r = scanArea(buf, 44, 108, acc, 'sname');
    if (typeof r === 'string') return fail('dhcpv4', 'truncated', r);
  }
  return ok({
    op: buf[0]!,
    htype: buf[1]!,
    hlen: buf[2]!,
    hops: buf[3]!,
    xid: buf.readUInt32BE(4),
    secs: buf.readUInt16BE(8),
    broadcast: (buf[10]! & 0x80) !== 0,
    ciaddr: buf.readUInt32BE(12),
    yiaddr: buf.readUInt32BE(16),
    siaddr: buf.readUInt32BE(20),
    giaddr: buf.readUInt32BE(24),
    chaddr: buf.subarray(28, 44),
    clientMac: readMac(buf, 28),
    sname: buf.subarray(44, 108),
    file: buf.subarray(108, 236),
    options: decodeOptions(acc, overload),
  });
}

// Emitting.

export interface Dhcpv4Init {
  readonly op: number;
  readonly xid: number;
  readonly clientMac: Mac;
  /** Default 1 (Ethernet) and 6. */
  readonly htype?: number | undefined;
  readonly hlen?: number | undefined;
  readonly hops?: number | undefined;
  readonly secs?: number | undefined;
  readonly broadcast?: boolean | undefined;
  readonly ciaddr?: number | undefined;
  readonly yiaddr?: number | undefined;
  readonly siaddr?: number | undefined;
  readonly giaddr?: number | undefined;
  /** Up to 16 bytes; when given it replaces `clientMac` in chaddr. */
  readonly chaddr?: Uint8Array | undefined;
  readonly sname?: Uint8Array | undefined;
  readonly file?: Uint8Array | undefined;
  readonly options: Dhcpv4Options;
}

function u32(v: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(v >>> 0, 0);
  return b;
}

function u16(v: number): Buffer {
  const b = Buffer.allocUnsafe(2);
  b.writeUInt16BE(v & 0xffff, 0);
  return b;
}

function addrs(list: readonly number[]): Buffer {
  const b = Buffer.allocUnsafe(list.length * 4);
  list.forEach((a, i) => b.writeUInt32BE(a >>> 0, i * 4));
  return b;
}

/** The options in emission order (message type first), as code/data pairs. */
function optionList(o: Dhcpv4Options): { code: number; data: Uint8Array }[] {
  const out: { code: number; data: Uint8Array }[] = [];
  const add = (code: number, data: Uint8Array | undefined): void => {
    if (data !== undefined) out.push({ code, data });
  };
  add(DHCPOPT_MESSAGE_TYPE, o.messageType === undefined ? undefined : Buffer.from([o.messageType & 0xff]));
  add(DHCPOPT_CLIENT_ID, o.clientId);
  add(DHCPOPT_REQUESTED_IP, o.requestedIp === undefined ? undefined : u32(o.requestedIp));
  add(DHCPOPT_SERVER_ID, o.serverId === undefined ? undefined : u32(o.serverId));
  add(DHCPOPT_LEASE_TIME, o.leaseTime === undefined ? undefined : u32(o.leaseTime));
  add(DHCPOPT_RENEWAL_TIME, o.renewalTime === undefined ? undefined : u32(o.renewalTime));
  add(DHCPOPT_REBINDING_TIME, o.rebindingTime === undefined ? undefined : u32(o.rebindingTime));
  add(DHCPOPT_SUBNET_MASK, o.subnetMask === undefined ? undefined : u32(o.subnetMask));
  add(DHCPOPT_ROUTER, o.routers && o.routers.length > 0 ? addrs(o.routers) : undefined);
  add(DHCPOPT_DNS, o.dnsServers && o.dnsServers.length > 0 ? addrs(o.dnsServers) : undefined);
  add(DHCPOPT_DOMAIN_NAME, o.domainName ? Buffer.from(o.domainName, 'latin1') : undefined);
  add(DHCPOPT_HOSTNAME, o.hostname ? Buffer.from(o.hostname, 'latin1') : undefined);
  add(DHCPOPT_MTU, o.interfaceMtu === undefined ? undefined : u16(o.interfaceMtu));
  add(DHCPOPT_MAX_MESSAGE_SIZE, o.maxMessageSize === undefined ? undefined : u16(o.maxMessageSize));
  add(DHCPOPT_PARAMETER_LIST, o.parameterRequestList ? Buffer.from(o.parameterRequestList.map((c) => c & 0xff)) : undefined);
  add(DHCPOPT_OVERLOAD, o.overload === undefined ? undefined : Buffer.from([o.overload & 0xff]));
  for (const x of o.other ?? []) {
    if (x.code !== DHCPOPT_PAD && x.code !== DHCPOPT_END) add(x.code, x.data);
  }
  return out;
}

function encodedOptionLength(data: Uint8Array): number {
  // Split into 255-byte pieces (RFC 3396); an empty option is one header.
  const pieces = Math.max(1, Math.ceil(data.length / 255));
  return pieces * 2 + data.length;
}

export function dhcpv4Length(m: Dhcpv4Init): number {
  let n = DHCP_OPTIONS_OFFSET + 1; // + END
  for (const o of optionList(m.options)) n += encodedOptionLength(o.data);
  return Math.max(n, DHCP_MIN_LEN);
}

/** Writes the message at `off` (zero-padded to 300 bytes); returns its length. */
export function emitDhcpv4(m: Dhcpv4Init, buf: Buffer, off = 0): number {
  const len = dhcpv4Length(m);
  buf.fill(0, off, off + len);
  buf[off] = m.op & 0xff;
  buf[off + 1] = (m.htype ?? 1) & 0xff;
  buf[off + 2] = (m.hlen ?? 6) & 0xff;
  buf[off + 3] = (m.hops ?? 0) & 0xff;
  buf.writeUInt32BE(m.xid >>> 0, off + 4);
  buf.writeUInt16BE((m.secs ?? 0) & 0xffff, off + 8);
  buf[off + 10] = m.broadcast ? 0x80 : 0;
  buf.writeUInt32BE((m.ciaddr ?? 0) >>> 0, off + 12);
  buf.writeUInt32BE((m.yiaddr ?? 0) >>> 0, off + 16);
  buf.writeUInt32BE((m.siaddr ?? 0) >>> 0, off + 20);
  buf.writeUInt32BE((m.giaddr ?? 0) >>> 0, off + 24);
  if (m.chaddr) buf.set(m.chaddr.subarray(0, 16), off + 28);
  else writeMac(buf, off + 28, m.clientMac);
  if (m.sname) buf.set(m.sname.subarray(0, 64), off + 44);
  if (m.file) buf.set(m.file.subarray(0, 128), off + 108);
  buf.writeUInt32BE(DHCP_MAGIC_COOKIE, off + DHCP_FIXED_LEN);
  let p = off + DHCP_OPTIONS_OFFSET;
  for (const o of optionList(m.options)) {
    let start = 0;
    do {
      const n = Math.min(255, o.data.length - start);
      buf[p] = o.code;
      buf[p + 1] = n;
      buf.set(o.data.subarray(start, start + n), p + 2);
      p += 2 + n;
      start += n;
    } while (start < o.data.length);
  }
  buf[p] = DHCPOPT_END;
  return len;
}

export function encodeDhcpv4(m: Dhcpv4Init): Buffer {
  const buf = Buffer.allocUnsafe(dhcpv4Length(m));
  emitDhcpv4(m, buf, 0);
  return buf;
}
