/**
 * IPv6 Neighbor Discovery at the gateway (RFC 4861), for networks with an IPv6 prefix:
 * - Neighbor Solicitations for the gateway's addresses (link-local and prefix::1) get a Neighbor
 *   Advertisement (Router flag set); a DAD probe (source ::) for one of them is defended with an
 *   NA to all-nodes. Solicitations and DAD probes for any other address (the VMs') are left to
 *   the VMs: never answered.
 * - Router Solicitations get a Router Advertisement (unicast to the solicitor, or multicast for
 *   a solicitor without an address, at most one multicast RA per MIN_DELAY_BETWEEN_RAS), and
 *   `poll(now)` sends unsolicited RAs: the first MAX_INITIAL_RTR_ADVERTISEMENTS at most 16 s
 *   apart, then every MinRtrAdvInterval..MaxRtrAdvInterval (200..600 s by default).
 * RAs carry source link-layer address, MTU, prefix information (on-link; autonomous for a /64),
 * RDNSS (RFC 8106) with the gateway's global address and DNSSL with the network's domain, and
 * a non-zero router lifetime: the gateway is the default router.
 */
import type { EthernetHeader } from '../wire/ethernet.js';
import { findNdpOption, type Icmpv6Message, type NdpOptionInit } from '../wire/icmpv6.js';
import { ipv6MulticastMac, ipv6SolicitedNode, type Ipv6Packet } from '../wire/ipv6.js';
import { dnsNameToLabels } from '../wire/dns.js';
import type { Mac } from '../wire/mac.js';
import { IPV6_ALL_NODES, IPV6_ALL_ROUTERS, ipv6IcmpFrame, isIpv6Unspecified } from './frames.js';
import { isGatewayIpv6, type GatewayIpv6, type GatewayNet } from './types.js';

export const NDP_HOP_LIMIT = 255;
/** RFC 4861 §10. */
export const MAX_INITIAL_RTR_ADVERT_INTERVAL_MS = 16_000;
export const MAX_INITIAL_RTR_ADVERTISEMENTS = 3;
export const MIN_DELAY_BETWEEN_RAS_MS = 3_000;
/** RFC 8106 option type for the DNS search list. */
export const NDP_OPT_DNSSL = 31;

export interface NdpOptions {
  /** Unsolicited RA interval bounds in ms; defaults 200 s and 600 s. */
  readonly minIntervalMs?: number | undefined;
  readonly maxIntervalMs?: number | undefined;
  /** Seconds; default 1800 (3 x MaxRtrAdvInterval). */
  readonly routerLifetime?: number | undefined;
  /** Prefix lifetimes in seconds; defaults 86400 and 14400. */
  readonly validLifetime?: number | undefined;
  readonly preferredLifetime?: number | undefined;
  /** RDNSS/DNSSL lifetime in seconds; default 1800. */
  readonly dnsLifetime?: number | undefined;
  /** Uniform [0, 1) source for the RA interval; default Math.random. */
  readonly random?: (() => number) | undefined;
}

export interface NdpStats {
  solicitations: number;
  advertisements: number;
  routerSolicitations: number;
  routerAdvertisements: number;
  /** DAD probes for a gateway address, answered. */
  dadDefended: number;
  /** Solicitations (incl. DAD) for addresses that are not the gateway's. */
  notForUs: number;
  /** Failed RFC 4861 validity checks (hop limit, source/option rules). */
  invalid: number;
  /** Multicast RAs deferred by MIN_DELAY_BETWEEN_RAS. */
  deferred: number;
}

function solicitedNodeEquals(dst: Uint8Array, target: Uint8Array): boolean {
  return ipv6SolicitedNode(target).equals(dst);
}

export class NdpService {
  readonly stats: NdpStats = {
    solicitations: 0,
    advertisements: 0,
    routerSolicitations: 0,
    routerAdvertisements: 0,
    dadDefended: 0,
    notForUs: 0,
    invalid: 0,
    deferred: 0,
  };
  private readonly v6: GatewayIpv6;
  private readonly minInterval: number;
  private readonly maxInterval: number;
  private readonly random: () => number;
  private nextRaAt = 0;
  private lastMulticastRa = -Infinity;
  private initialSent = 0;

  constructor(
    private readonly net: GatewayNet,
    private readonly opts: NdpOptions = {},
  ) {
    if (!net.ipv6) throw new RangeError(`network ${net.name} has no IPv6 prefix`);
    this.v6 = net.ipv6;
    this.maxInterval = opts.maxIntervalMs ?? 600_000;
    this.minInterval = Math.min(opts.minIntervalMs ?? 200_000, this.maxInterval);
    this.random = opts.random ?? Math.random;
  }

  /**
   * An ICMPv6 message received in `ip` (parsed with the pseudo-header, so its checksum and the
   * NDP code/option rules are verified). Returns the frames to send: an NA, an RA, or nothing.
   */
  handle(eth: EthernetHeader, ip: Ipv6Packet, msg: Icmpv6Message, now: number): Buffer[] {
    if (eth.vlan !== undefined) return [];
    if (msg.kind === 'neighbor-solicitation') return this.solicitation(eth, ip, msg.target, findNdpOption(msg.options, 'source-ll') !== undefined);
    if (msg.kind === 'router-solicitation') {
      this.stats.routerSolicitations++;
      const unspecified = isIpv6Unspecified(ip.src);
      const hasSll = findNdpOption(msg.options, 'source-ll') !== undefined;
      const dstOk = ip.dst.equals(IPV6_ALL_ROUTERS) || ip.dst.equals(this.v6.linkLocal);
      if (ip.hopLimit !== NDP_HOP_LIMIT || (unspecified && hasSll) || !dstOk || ip.src[0] === 0xff) {
        this.stats.invalid++;
        return [];
      }
      if (!unspecified) {
        this.stats.routerAdvertisements++;
        return [this.routerAdvertisement(ip.src, eth.src)];
      }
      return this.multicastRa(now, true);
    }
    return [];
  }

  private solicitation(eth: EthernetHeader, ip: Ipv6Packet, target: Buffer, hasSll: boolean): Buffer[] {
    this.stats.solicitations++;
    const unspecified = isIpv6Unspecified(ip.src);
    if (ip.hopLimit !== NDP_HOP_LIMIT || target[0] === 0xff || ip.src[0] === 0xff) {
      this.stats.invalid++;
      return [];
    }
    if (unspecified && (hasSll || !solicitedNodeEquals(ip.dst, target))) {
      this.stats.invalid++;
      return [];
    }
    if (!isGatewayIpv6(this.net, target)) {
      // VMs' addresses, including their DAD probes: they answer (or not) themselves.
      this.stats.notForUs++;
      return [];
    }
    if (!ip.dst.equals(target) && !solicitedNodeEquals(ip.dst, target)) {
      this.stats.invalid++;
      return [];
    }
    const options: NdpOptionInit[] = [{ kind: 'target-ll', mac: this.net.gatewayMac }];
    this.stats.advertisements++;
    if (unspecified) {
      // Someone is probing our address: defend it (RFC 4861 §7.2.4: S=0, to all-nodes).
      this.stats.dadDefended++;
      return [
        ipv6IcmpFrame(
          { srcMac: this.net.gatewayMac, dstMac: ipv6MulticastMac(IPV6_ALL_NODES), src: target, dst: IPV6_ALL_NODES, hopLimit: NDP_HOP_LIMIT },
          { kind: 'neighbor-advertisement', router: true, solicited: false, override: true, target, options },
        ),
      ];
    }
    return [
      ipv6IcmpFrame(
        { srcMac: this.net.gatewayMac, dstMac: eth.src, src: target, dst: ip.src, hopLimit: NDP_HOP_LIMIT },
        { kind: 'neighbor-advertisement', router: true, solicited: true, override: true, target, options },
      ),
    ];
  }

  /** A multicast RA now, or (when one went out less than 3 s ago) moved up to the earliest allowed time. */
  private multicastRa(now: number, solicited: boolean): Buffer[] {
    if (now - this.lastMulticastRa < MIN_DELAY_BETWEEN_RAS_MS) {
      if (solicited) {
        this.stats.deferred++;
        this.nextRaAt = Math.min(this.nextRaAt, this.lastMulticastRa + MIN_DELAY_BETWEEN_RAS_MS);
      }
      return [];
    }
    this.lastMulticastRa = now;
    this.initialSent++;
    let interval = this.minInterval + this.random() * (this.maxInterval - this.minInterval);
    if (this.initialSent <= MAX_INITIAL_RTR_ADVERTISEMENTS) interval = Math.min(interval, MAX_INITIAL_RTR_ADVERT_INTERVAL_MS);
    this.nextRaAt = now + Math.round(interval);
    this.stats.routerAdvertisements++;
    return [this.routerAdvertisement(IPV6_ALL_NODES, ipv6MulticastMac(IPV6_ALL_NODES))];
  }

  /** Unsolicited RAs due at `now` (the first call sends one straight away). */
  poll(now: number): Buffer[] {
    if (now < this.nextRaAt) return [];
    return this.multicastRa(now, false);
  }

  /** When `poll` next has something to send (0 before the first poll). */
  nextDeadline(): number {
    return this.nextRaAt;
  }

  /** The RA frame the gateway sends, to `dst` (default all-nodes) at `dstMac`. */
  routerAdvertisement(dst: Uint8Array = IPV6_ALL_NODES, dstMac: Mac = ipv6MulticastMac(IPV6_ALL_NODES)): Buffer {
    const net = this.net;
    const v6 = this.v6;
    const o = this.opts;
    const dnsLifetime = o.dnsLifetime ?? 1800;
    const options: NdpOptionInit[] = [
      { kind: 'source-ll', mac: net.gatewayMac },
      { kind: 'mtu', mtu: net.mtu },
      {
        kind: 'prefix',
        prefixLength: v6.length,
        onLink: true,
        autonomous: v6.length === 64,
        validLifetime: o.validLifetime ?? 86_400,
        preferredLifetime: o.preferredLifetime ?? 14_400,
        prefix: v6.prefix,
      },
      { kind: 'rdnss', lifetime: dnsLifetime, servers: [v6.global] },
      { kind: 'other', type: NDP_OPT_DNSSL, data: dnsslData(net.domain, dnsLifetime) },
    ];
    return ipv6IcmpFrame(
      { srcMac: net.gatewayMac, dstMac, src: v6.linkLocal, dst, hopLimit: NDP_HOP_LIMIT },
      {
        kind: 'router-advertisement',
        curHopLimit: 64,
        managed: false,
        otherConfig: false,
        flags: 0,
        routerLifetime: o.routerLifetime ?? 1800,
        reachableTime: 0,
        retransTimer: 0,
        options,
      },
    );
  }
}

/** DNSSL option body after type and length: reserved (2), lifetime (4), names in wire form. */
export function dnsslData(domain: string, lifetime: number): Buffer {
  const labels = dnsNameToLabels(domain);
  const parts: Buffer[] = [Buffer.alloc(6)];
  parts[0]!.writeUInt32BE(lifetime >>> 0, 2);
  for (const l of labels) parts.push(Buffer.from([l.length]), l);
  parts.push(Buffer.from([0]));
  return Buffer.concat(parts);
}
