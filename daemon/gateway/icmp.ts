/**
 * ICMP at the gateway: echo replies for the gateway's own addresses (ICMPv4 RFC 792, ICMPv6
 * RFC 4443 §4) and ICMP errors for the router to send (destination unreachable, fragmentation
 * needed / packet too big, time exceeded), quoting the offending packet, with the "never send an
 * error about..." rules of RFC 1812 §4.3.2.7 and RFC 4443 §2.4(e), rate-limited by a token
 * bucket (RFC 4443 §2.4(f)).
 */
import type { EthernetHeader } from '../wire/ethernet.js';
import {
  icmpv4Quote,
  ICMPV4_UNREACH_ADMIN,
  ICMPV4_UNREACH_FRAG_NEEDED,
  ICMPV4_UNREACH_HOST,
  ICMPV4_UNREACH_NET,
  ICMPV4_UNREACH_PORT,
  ICMPV4_UNREACH_PROTOCOL,
  parseIcmpv4,
  type Icmpv4Init,
  type Icmpv4Message,
} from '../wire/icmpv4.js';
import type { Icmpv6Init, Icmpv6Message } from '../wire/icmpv6.js';
import { IPPROTO_ICMP, parseIpv4, type Ipv4Packet } from '../wire/ipv4.js';
import { IPV6_HEADER_LEN, IPV6_NH_ICMPV6, parseIpv6, type Ipv6Packet } from '../wire/ipv6.js';
import { isMulticastMac } from '../wire/mac.js';
import { ipv4IcmpFrame, ipv6IcmpFrame, isIpv6Unspecified } from './frames.js';
import { IPV4_BROADCAST, isGatewayIpv6, type GatewayNet } from './types.js';

/**
 * A token bucket on the caller's clock: `ratePerSecond` tokens accrue up to `burst`; `take`
 * spends one (or `n`) if available. Starts full.
 */
export class TokenBucket {
  private tokens: number;
  private last: number | undefined;

  constructor(
    readonly ratePerSecond: number,
    readonly burst: number,
  ) {
    this.tokens = burst;
  }

  take(now: number, n = 1): boolean {
    if (this.last !== undefined && now > this.last) {
      this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.ratePerSecond);
    }
    if (this.last === undefined || now > this.last) this.last = now;
    if (this.tokens < n) return false;
    this.tokens -= n;
    return true;
  }

  /** Tokens available now (for tests and stats). */
  available(now: number): number {
    if (this.last === undefined || now <= this.last) return this.tokens;
    return Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.ratePerSecond);
  }
}

export type Icmpv4ErrorKind =
  | 'net-unreachable'
  | 'host-unreachable'
  | 'protocol-unreachable'
  | 'port-unreachable'
  | 'admin-prohibited'
  /** Needs `mtu`. */
  | 'frag-needed'
  | 'ttl-exceeded';

export type Icmpv6ErrorKind =
  | 'no-route'
  | 'admin-prohibited'
  | 'address-unreachable'
  | 'port-unreachable'
  /** Needs `mtu`. */
  | 'packet-too-big'
  | 'hop-limit-exceeded';

export interface IcmpErrorOptions {
  /** Next-hop MTU for 'frag-needed' / 'packet-too-big'; default the network's MTU. */
  readonly mtu?: number | undefined;
  /** Source address of the error; default the gateway's (for IPv6: link-local or global by scope). */
  readonly src?: number | Uint8Array | undefined;
}

export interface IcmpOptions {
  /** Errors per second (default 100) and burst (default 50), per network. */
  readonly errorRate?: number | undefined;
  readonly errorBurst?: number | undefined;
}

export interface IcmpStats {
  echoRequests: number;
  echoReplies: number;
  errorsSent: number;
  /** Errors not sent because of the rules (about an error, to a group address, a fragment...). */
  errorsSuppressed: number;
  /** Errors not sent because the bucket was empty. */
  errorsRateLimited: number;
  ignored: number;
}

/** RFC 1812: the whole ICMPv4 error at most 576 bytes. */
const V4_ERROR_MAX = 576;
/** RFC 4443 §2.4(c): the error must not exceed the minimum IPv6 MTU. */
const V6_ERROR_MAX = 1280;

const V4_ERROR_TYPES = new Set([3, 4, 5, 11, 12]);

function v4IsGroupOrSpecial(net: GatewayNet, a: number): boolean {
  const top = a >>> 28;
  return a === IPV4_BROADCAST || (net.subnet.prefix <= 30 && a === net.broadcast) || top === 0xe || top === 0xf;
}

function v4IsBadSource(net: GatewayNet, a: number): boolean {
  return a === 0 || a >>> 24 === 127 || v4IsGroupOrSpecial(net, a);
}

function isLinkLocal6(a: Uint8Array): boolean {
  return a[0] === 0xfe && (a[1]! & 0xc0) === 0x80;
}

export class IcmpService {
  readonly stats: IcmpStats = { echoRequests: 0, echoReplies: 0, errorsSent: 0, errorsSuppressed: 0, errorsRateLimited: 0, ignored: 0 };
  readonly bucket: TokenBucket;

  constructor(
    private readonly net: GatewayNet,
    opts: IcmpOptions = {},
  ) {
    this.bucket = new TokenBucket(opts.errorRate ?? 100, opts.errorBurst ?? 50);
  }

  /**
   * An IPv4 packet addressed to the gateway with protocol 1. `msg` is the parsed ICMP message
   * (parsed here from `ip.payload` when omitted). Returns the echo reply or null.
   */
  echoV4(eth: EthernetHeader, ip: Ipv4Packet, msg?: Icmpv4Message): Buffer | null {
    const net = this.net;
    if (eth.vlan !== undefined || ip.protocol !== IPPROTO_ICMP || ip.dst !== net.gatewayIp || ip.moreFragments || ip.fragmentOffset !== 0) {
      this.stats.ignored++;
      return null;
    }
    let m = msg;
    if (m === undefined) {
      const r = parseIcmpv4(ip.payload);
      if (!r.ok) {
        this.stats.ignored++;
        return null;
      }
      m = r.value;
    }
    if (m.kind !== 'echo-request') {
      this.stats.ignored++;
      return null;
    }
    this.stats.echoRequests++;
    if (v4IsBadSource(net, ip.src) || 20 + 8 + m.data.length > net.mtu) {
      this.stats.ignored++;
      return null;
    }
    this.stats.echoReplies++;
    return ipv4IcmpFrame(
      { srcMac: net.gatewayMac, dstMac: eth.src, src: net.gatewayIp, dst: ip.src },
      { kind: 'echo-reply', id: m.id, seq: m.seq, data: m.data },
    );
  }

  /** An ICMPv6 message in `ip` (parsed and checksum-verified by the caller). */
  echoV6(eth: EthernetHeader, ip: Ipv6Packet, msg: Icmpv6Message): Buffer | null {
    const net = this.net;
    if (eth.vlan !== undefined || msg.kind !== 'echo-request' || !isGatewayIpv6(net, ip.dst) || ip.fragment !== undefined) {
      this.stats.ignored++;
      return null;
    }
    this.stats.echoRequests++;
    if (ip.src[0] === 0xff || isIpv6Unspecified(ip.src) || IPV6_HEADER_LEN + 8 + msg.data.length > net.mtu) {
      this.stats.ignored++;
      return null;
    }
    this.stats.echoReplies++;
    return ipv6IcmpFrame(
      { srcMac: net.gatewayMac, dstMac: eth.src, src: ip.dst, dst: ip.src },
      { kind: 'echo-reply', id: msg.id, seq: msg.seq, data: msg.data },
    );
  }

  /**
   * An ICMPv4 error about `packet` (the offending IPv4 packet, e.g. `eth.payload` of the frame
   * it arrived in, with the header as received) to be sent back to its sender at `eth.src`.
   * Returns null when the rules forbid an error or the rate limit is hit.
   */
  errorV4(eth: EthernetHeader, packet: Buffer, kind: Icmpv4ErrorKind, now: number, opts: IcmpErrorOptions = {}): Buffer | null {
    const net = this.net;
    const r = parseIpv4(packet, { verifyChecksum: false });
    if (!r.ok) return this.suppress();
    const ip = r.value;
    if (isMulticastMac(eth.dst) || v4IsGroupOrSpecial(net, ip.dst) || v4IsBadSource(net, ip.src) || ip.fragmentOffset !== 0) {
      return this.suppress();
    }
    if (ip.protocol === IPPROTO_ICMP && ip.payload.length >= 1 && V4_ERROR_TYPES.has(ip.payload[0]!)) return this.suppress();
    if (!this.bucket.take(now)) {
      this.stats.errorsRateLimited++;
      return null;
    }
    const original = icmpv4Quote(packet.subarray(0, ip.totalLength), V4_ERROR_MAX - 20 - 8);
    let m: Icmpv4Init;
    const unreachable = (code: number, mtu = 0): Icmpv4Init => ({ kind: 'dest-unreachable', code, mtu, original });
    switch (kind) {
      case 'net-unreachable':
        m = unreachable(ICMPV4_UNREACH_NET);
        break;
      case 'host-unreachable':
        m = unreachable(ICMPV4_UNREACH_HOST);
        break;
      case 'protocol-unreachable':
        m = unreachable(ICMPV4_UNREACH_PROTOCOL);
        break;
      case 'port-unreachable':
        m = unreachable(ICMPV4_UNREACH_PORT);
        break;
      case 'admin-prohibited':
        m = unreachable(ICMPV4_UNREACH_ADMIN);
        break;
      case 'frag-needed':
        m = unreachable(ICMPV4_UNREACH_FRAG_NEEDED, opts.mtu ?? net.mtu);
        break;
      case 'ttl-exceeded':
        m = { kind: 'time-exceeded', code: 0, original };
        break;
    }
    const src = typeof opts.src === 'number' ? opts.src : net.gatewayIp;
    this.stats.errorsSent++;
    return ipv4IcmpFrame({ srcMac: net.gatewayMac, dstMac: eth.src, src, dst: ip.src }, m);
  }

  /** The ICMPv6 counterpart of `errorV4`: `packet` is the offending IPv6 packet. */
  errorV6(eth: EthernetHeader, packet: Buffer, kind: Icmpv6ErrorKind, now: number, opts: IcmpErrorOptions = {}): Buffer | null {
    const net = this.net;
    const v6 = net.ipv6;
    if (!v6) return this.suppress();
    const r = parseIpv6(packet);
    if (!r.ok) return this.suppress();
    const ip = r.value;
    // RFC 4443 §2.4(e): Packet Too Big may go to a multicast destination; nothing else.
    const groupOk = kind === 'packet-too-big';
    if (!groupOk && (isMulticastMac(eth.dst) || ip.dst[0] === 0xff)) return this.suppress();
    if (ip.src[0] === 0xff || isIpv6Unspecified(ip.src)) return this.suppress();
    // Never about an ICMPv6 error (a non-first fragment has no ICMPv6 header to look at).
    const firstFragment = ip.fragment === undefined || ip.fragment.offset === 0;
    if (ip.protocol === IPV6_NH_ICMPV6 && firstFragment && ip.payload.length >= 1 && ip.payload[0]! < 128) return this.suppress();
    if (!this.bucket.take(now)) {
      this.stats.errorsRateLimited++;
      return null;
    }
    const original = packet.subarray(0, Math.min(IPV6_HEADER_LEN + ip.payloadLength, V6_ERROR_MAX - IPV6_HEADER_LEN - 8));
    let m: Icmpv6Init;
    switch (kind) {
      case 'no-route':
        m = { kind: 'dest-unreachable', code: 0, original };
        break;
      case 'admin-prohibited':
        m = { kind: 'dest-unreachable', code: 1, original };
        break;
      case 'address-unreachable':
        m = { kind: 'dest-unreachable', code: 3, original };
        break;
      case 'port-unreachable':
        m = { kind: 'dest-unreachable', code: 4, original };
        break;
      case 'packet-too-big':
        m = { kind: 'packet-too-big', code: 0, mtu: opts.mtu ?? net.mtu, original };
        break;
      case 'hop-limit-exceeded':
        m = { kind: 'time-exceeded', code: 0, original };
        break;
    }
    const src = opts.src instanceof Uint8Array ? opts.src : isLinkLocal6(ip.src) ? v6.linkLocal : v6.global;
    this.stats.errorsSent++;
    return ipv6IcmpFrame({ srcMac: net.gatewayMac, dstMac: eth.src, src, dst: ip.src }, m);
  }

  private suppress(): null {
    this.stats.errorsSuppressed++;
    return null;
  }
}
