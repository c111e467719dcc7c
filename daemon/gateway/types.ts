/**
 * What the per-network gateway services know about their network: one `GatewayNet`, built once
 * by `makeGatewayNet` from the network's spec and shared (read-only) by ARP, ICMP, DHCP, NDP and
 * DNS. IPv4 addresses are unsigned 32-bit numbers, MACs 48-bit numbers (daemon/wire/mac.ts),
 * IPv6 addresses 16-byte Buffers.
 */
import { parseIpv4Text, parseIpv6Text } from '../wire/ip-text.js';
import { isUnicastMac, type Mac } from '../wire/mac.js';

export interface Ipv4Subnet {
  /** Network number (host bits zero). */
  readonly network: number;
  /** Prefix length, 0..32. */
  readonly prefix: number;
}

export interface Ipv6PrefixSpec {
  /** 16 bytes; bits past `length` are ignored (cleared by makeGatewayNet). */
  readonly prefix: Uint8Array;
  /** Prefix length, 1..120. SLAAC (the A flag in RAs) needs 64. */
  readonly length: number;
}

export interface GatewayIpv6 {
  /** The prefix with host bits cleared. */
  readonly prefix: Buffer;
  readonly length: number;
  /** fe80::/64 with the EUI-64 interface id of the gateway MAC: the source of RAs and NAs. */
  readonly linkLocal: Buffer;
  /** prefix::1, the gateway's global address (advertised as the DNS server, RDNSS). */
  readonly global: Buffer;
}

export interface GatewayNet {
  /** The network's name ("lan"). */
  readonly name: string;
  readonly subnet: Ipv4Subnet;
  /** Netmask as a number, e.g. 0xffffff00 for /24. */
  readonly mask: number;
  /** Directed broadcast address of the subnet. */
  readonly broadcast: number;
  readonly gatewayIp: number;
  readonly gatewayMac: Mac;
  /** IP MTU of the network (the Ethernet payload size). */
  readonly mtu: number;
  readonly ipv6?: GatewayIpv6 | undefined;
  /** DNS domain of the network, without trailing dot: `${name}.mvnet` by default. */
  readonly domain: string;
  /** DHCP lease time in seconds. */
  readonly leaseTime: number;
}

export interface GatewayNetInit {
  readonly name: string;
  /** "10.1.0.0/24" or a structured subnet. Host bits must be zero. */
  readonly subnet: string | Ipv4Subnet;
  /** "10.1.0.1" or a number; must be a host address of the subnet. */
  readonly gatewayIp: string | number;
  readonly gatewayMac: Mac;
  /** Default 1500. */
  readonly mtu?: number | undefined;
  /** "fd00:1::/64" or a structured prefix. */
  readonly ipv6?: string | Ipv6PrefixSpec | undefined;
  /** Default `${name}.mvnet`. */
  readonly domain?: string | undefined;
  /** Seconds, default 3600. */
  readonly leaseTime?: number | undefined;
}

export const DEFAULT_MTU = 1500;
export const DEFAULT_LEASE_TIME = 3600;

/** Netmask of a prefix length (0..32) as an unsigned number. */
export function prefixMask(prefix: number): number {
  return prefix <= 0 ? 0 : (0xffffffff << (32 - Math.min(32, prefix))) >>> 0;
}

export function inSubnet(ip: number, subnet: Ipv4Subnet): boolean {
  return ((ip & prefixMask(subnet.prefix)) >>> 0) === subnet.network;
}

/** Limited broadcast 255.255.255.255. */
export const IPV4_BROADCAST = 0xffffffff;

/** fe80::/64 with the modified EUI-64 interface id of `mac` (RFC 4291 appendix A). */
export function eui64LinkLocal(mac: Mac): Buffer {
  const b = Buffer.alloc(16);
  b[0] = 0xfe;
  b[1] = 0x80;
  const hi = Math.floor(mac / 0x1_0000_0000);
  const lo = mac >>> 0;
  b[8] = ((hi >>> 8) & 0xff) ^ 0x02;
  b[9] = hi & 0xff;
  b[10] = lo >>> 24;
  b[11] = 0xff;
  b[12] = 0xfe;
  b[13] = (lo >>> 16) & 0xff;
  b[14] = (lo >>> 8) & 0xff;
  b[15] = lo & 0xff;
  return b;
}

/** Copy of `addr` with the bits past `length` cleared. */
export function maskIpv6(addr: Uint8Array, length: number): Buffer {
  const b = Buffer.alloc(16);
  for (let i = 0; i < 16; i++) {
    const bits = Math.max(0, Math.min(8, length - i * 8));
    b[i] = addr[i]! & ((0xff << (8 - bits)) & 0xff);
  }
  return b;
}

export function inIpv6Prefix(addr: Uint8Array, prefix: Uint8Array, length: number): boolean {
  return maskIpv6(addr, length).equals(maskIpv6(prefix, length));
}

const DOMAIN_RE = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;

/** True for a DNS domain the gateway can serve (lower case, no trailing dot). */
export function isDnsDomain(domain: string): boolean {
  return DOMAIN_RE.test(domain);
}

function parseCidr4(text: string): Ipv4Subnet {
  const [addr, len, extra] = text.split('/');
  const p = parseIpv4Text(addr ?? '');
  const prefix = Number(len);
  if (!p.ok || extra !== undefined || !/^\d{1,2}$/.test(len ?? '') || prefix > 32) throw new RangeError(`bad IPv4 subnet "${text}"`);
  return { network: p.value, prefix };
}

function parseCidr6(text: string): Ipv6PrefixSpec {
  const [addr, len, extra] = text.split('/');
  const p = parseIpv6Text(addr ?? '');
  const length = Number(len);
  if (!p.ok || extra !== undefined || !/^\d{1,3}$/.test(len ?? '')) throw new RangeError(`bad IPv6 prefix "${text}"`);
  return { prefix: p.value, length };
}

/** Validates and completes a network description. Throws RangeError for impossible values. */
export function makeGatewayNet(init: GatewayNetInit): GatewayNet {
  const subnet = typeof init.subnet === 'string' ? parseCidr4(init.subnet) : init.subnet;
  if (!Number.isInteger(subnet.prefix) || subnet.prefix < 0 || subnet.prefix > 32) throw new RangeError(`bad prefix length ${subnet.prefix}`);
  const mask = prefixMask(subnet.prefix);
  if (((subnet.network & mask) >>> 0) !== subnet.network >>> 0) throw new RangeError('subnet has host bits set');
  let gatewayIp: number;
  if (typeof init.gatewayIp === 'string') {
    const g = parseIpv4Text(init.gatewayIp);
    if (!g.ok) throw new RangeError(`bad gateway address "${init.gatewayIp}"`);
    gatewayIp = g.value;
  } else {
    gatewayIp = init.gatewayIp >>> 0;
  }
  const broadcast = (subnet.network | ~mask) >>> 0;
  if (!inSubnet(gatewayIp, subnet)) throw new RangeError('gateway address outside the subnet');
  if (subnet.prefix <= 30 && (gatewayIp === subnet.network || gatewayIp === broadcast)) {
    throw new RangeError('gateway address is the network or broadcast address');
  }
  if (!isUnicastMac(init.gatewayMac)) throw new RangeError('gateway MAC must be unicast');
  const mtu = init.mtu ?? DEFAULT_MTU;
  if (!Number.isInteger(mtu) || mtu < 576 || mtu > 65535) throw new RangeError(`bad MTU ${mtu}`);
  const domain = (init.domain ?? `${init.name}.mvnet`).toLowerCase().replace(/\.$/, '');
  if (!DOMAIN_RE.test(domain)) throw new RangeError(`bad DNS domain "${domain}"`);
  const leaseTime = init.leaseTime ?? DEFAULT_LEASE_TIME;
  if (!Number.isInteger(leaseTime) || leaseTime < 60 || leaseTime > 0x7fffffff) throw new RangeError(`bad lease time ${leaseTime}`);
  let ipv6: GatewayIpv6 | undefined;
  if (init.ipv6 !== undefined) {
    const spec = typeof init.ipv6 === 'string' ? parseCidr6(init.ipv6) : init.ipv6;
    if (!Number.isInteger(spec.length) || spec.length < 1 || spec.length > 120 || spec.prefix.length !== 16) {
      throw new RangeError(`bad IPv6 prefix length ${spec.length}`);
    }
    const prefix = maskIpv6(spec.prefix, spec.length);
    const global = Buffer.from(prefix);
    global[15] = global[15]! | 1;
    ipv6 = { prefix, length: spec.length, linkLocal: eui64LinkLocal(init.gatewayMac), global };
  }
  return {
    name: init.name,
    subnet: { network: subnet.network >>> 0, prefix: subnet.prefix },
    mask,
    broadcast,
    gatewayIp,
    gatewayMac: init.gatewayMac,
    mtu,
    ipv6,
    domain,
    leaseTime,
  };
}

/** True when `addr` is one of the gateway's IPv6 addresses (link-local or global). */
export function isGatewayIpv6(net: GatewayNet, addr: Uint8Array): boolean {
  const v6 = net.ipv6;
  if (!v6 || addr.length < 16) return false;
  return v6.linkLocal.equals(addr.subarray(0, 16)) || v6.global.equals(addr.subarray(0, 16));
}
