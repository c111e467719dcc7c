/**
 * The gateway's own services for one network and the one dispatcher in front of them: the
 * router parses a frame once (dissect.ts) and `dispatch` says whether a local service consumed
 * it (ARP requests, DHCP, ICMP echo and NDP for the gateway, DNS over UDP to the gateway);
 * anything else (`handled: false`) is the router's to forward. DNS over TCP goes through the
 * router's TCP endpoint and a `DnsTcpSession` (see dns.ts).
 */
import { DHCP_SERVER_PORT } from '../wire/dhcpv4.js';
import { DNS_PORT } from '../wire/dns.js';
import { ArpResponder } from './arp.js';
import { DhcpServer, type DhcpServerOptions } from './dhcp.js';
import { dissect, type Dissected } from './dissect.js';
import { DnsServer, type DnsServerOptions, type Resolver } from './dns.js';
import { IcmpService, type IcmpOptions } from './icmp.js';
import { NdpService, type NdpOptions } from './ndp.js';
import { IPV4_BROADCAST, isGatewayIpv6, type GatewayNet } from './types.js';

export interface GatewayServicesOptions {
  readonly resolver: Resolver;
  readonly dhcp?: DhcpServerOptions | undefined;
  readonly icmp?: IcmpOptions | undefined;
  readonly ndp?: NdpOptions | undefined;
  readonly dns?: DnsServerOptions | undefined;
}

export interface GatewayInputResult {
  /** A local service consumed the frame (even if it had nothing to answer). */
  readonly handled: boolean;
  /** Frames to send into the network now. */
  readonly replies: readonly Buffer[];
  /** A DNS response still being resolved; send it when it settles (null: nothing to send). */
  readonly later?: Promise<Buffer | null> | undefined;
}

/** One shared answer for the common case (every data frame), so dispatching allocates nothing. */
const NOT_MINE: GatewayInputResult = Object.freeze({ handled: false, replies: Object.freeze([]) });

function notMine(): GatewayInputResult {
  return NOT_MINE;
}

export class GatewayServices {
  readonly arp: ArpResponder;
  readonly icmp: IcmpService;
  readonly dhcp: DhcpServer;
  readonly ndp: NdpService | undefined;
  readonly dns: DnsServer;

  constructor(
    readonly net: GatewayNet,
    opts: GatewayServicesOptions,
  ) {
    this.arp = new ArpResponder(net);
    this.icmp = new IcmpService(net, opts.icmp);
    this.dhcp = new DhcpServer(net, opts.dhcp);
    this.ndp = net.ipv6 ? new NdpService(net, opts.ndp) : undefined;
    this.dns = new DnsServer(net, opts.resolver, opts.dns);
  }

  /** One frame from member `vm` (valid only during the call). */
  input(frame: Buffer, vm: string, now: number): GatewayInputResult {
    return this.dispatch(dissect(frame), vm, now);
  }

  /**
   * Messages a service takes before the VM has an address of its own, so they skip the
   * router's source-address check: ARP, DHCP client messages to the server, NDP solicitations.
   */
  unaddressed(d: Dissected): boolean {
    switch (d.kind) {
      case 'arp':
        return true;
      case 'ipv4':
        return this.dhcpToServer(d.ip.dst, d.udp);
      case 'ipv6':
        return d.icmp !== undefined && (d.icmp.kind === 'neighbor-solicitation' || d.icmp.kind === 'router-solicitation');
      default:
        return false;
    }
  }

  private dhcpToServer(dst: number, udp: { dstPort: number } | undefined): boolean {
    const net = this.net;
    return udp !== undefined && udp.dstPort === DHCP_SERVER_PORT && (dst === IPV4_BROADCAST || dst === net.gatewayIp || dst === net.broadcast);
  }

  /** One parsed frame from member `vm` (its views valid only during the call). */
  dispatch(d: Dissected, vm: string, now: number): GatewayInputResult {
    const net = this.net;
    switch (d.kind) {
      case 'arp': {
        if (d.arp.op !== 1) return notMine();
        const r = this.arp.handle(d.eth, d.arp, now);
        return { handled: true, replies: r ? [r] : [] };
      }
      case 'ipv4': {
        const { eth, ip, udp, icmp } = d;
        if (udp && this.dhcpToServer(ip.dst, udp)) {
          const r = this.dhcp.handle(eth, ip, udp, now);
          return { handled: true, replies: r ? [r] : [] };
        }
        if (ip.dst !== net.gatewayIp) return notMine();
        if (icmp) {
          if (icmp.kind !== 'echo-request') return notMine();
          const r = this.icmp.echoV4(eth, ip, icmp);
          return { handled: true, replies: r ? [r] : [] };
        }
        if (udp && udp.dstPort === DNS_PORT) return { handled: true, replies: [], later: this.dns.handleUdp4(eth, ip, udp, vm, now) };
        return notMine();
      }
      case 'ipv6': {
        const { eth, ip, udp, icmp } = d;
        if (icmp && this.ndp && (icmp.kind === 'neighbor-solicitation' || icmp.kind === 'router-solicitation')) {
          const replies = this.ndp.handle(eth, ip, icmp, now);
          return { handled: replies.length > 0 || icmp.kind === 'router-solicitation', replies };
        }
        if (!isGatewayIpv6(net, ip.dst)) return notMine();
        if (icmp) {
          if (icmp.kind !== 'echo-request') return notMine();
          const r = this.icmp.echoV6(eth, ip, icmp);
          return { handled: true, replies: r ? [r] : [] };
        }
        if (udp && udp.dstPort === DNS_PORT) return { handled: true, replies: [], later: this.dns.handleUdp6(eth, ip, udp, vm, now) };
        return notMine();
      }
      default:
        return notMine();
    }
  }

  /** Periodic work due at `now`: unsolicited RAs, lease expiry. */
  poll(now: number): Buffer[] {
    this.dhcp.expire(now);
    return this.ndp ? this.ndp.poll(now) : [];
  }

  /** The earliest time `poll` has work, or undefined. */
  nextDeadline(): number | undefined {
    const a = this.dhcp.nextDeadline();
    const b = this.ndp?.nextDeadline();
    if (a === undefined) return b;
    if (b === undefined) return a;
    return Math.min(a, b);
  }
}
