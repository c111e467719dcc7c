/**
 * The router of one network: the switch's gateway handler. Frames to the gateway MAC (and
 * broadcasts) arrive here and take one path: parsed once (gateway/dissect.ts), the source
 * address checked, the gateway's own services offered the frame (ARP, DHCP, ICMP echo, NDP,
 * DNS), IPv4 fragments reassembled, and every other flow handed, with its parsed header, to the
 * userland endpoint. Where a flow may go is asked of the one route decision (routes/decide.ts);
 * this file turns the verdict into an upstream and does the counting.
 */
import type { Logger } from 'pino';
import type { Duplex } from 'node:stream';
import { GatewayServices } from '../gateway/services.js';
import { dissect } from '../gateway/dissect.js';
import { makeGatewayNet, inSubnet, inIpv6Prefix, isGatewayIpv6, type GatewayNet } from '../gateway/types.js';
import { LocalZone, NoneResolver, isHostLabel } from '../gateway/dns-local.js';
import { LocalFirstResolver, RoutedResolver } from '../gateway/dns-route.js';
import type { DnsAnswer, Resolver } from '../gateway/dns.js';
import { parseDhcpRange, type DhcpSnapshot } from '../gateway/dhcp.js';
import type { EthernetHeader } from '../wire/ethernet.js';
import { ETH_HEADER_LEN } from '../wire/ethernet.js';
import { Ipv4Reassembler, type ReassemblyLimits } from '../wire/ipv4-reassembly.js';
import type { GatewayHandler, Member, Network } from '../switch/network.js';
import { Endpoint, type EndpointLimits, type EndpointPolicy, type EndpointVm } from '../endpoint/endpoint.js';
import { ip4, ip6, ipString, type FlowAddr, type IpAddr } from '../endpoint/addr.js';
import type { DatagramUpstream, StreamUpstream, TcpDecision, UdpDecision } from '../endpoint/upstream.js';
import { directTcp, directUdp, type DirectOptions } from '../egress/direct.js';
import { compileRoute, type CompiledRoute } from '../routes/policy.js';
import { decide, verdictTag, type Flow, type PlaceView, type TorView, type Verdict } from '../routes/decide.js';
import type { Route } from '../routes/route.js';
import { localDnsTcp } from '../gateway/dns-stream.js';
import { isForbiddenDestination } from '../egress/forbidden.js';
import type { PingEgress } from '../egress/ping.js';
import { TokenBucket } from '../gateway/icmp.js';
import { ipv4IcmpFrame, ipv6IcmpFrame } from '../gateway/frames.js';
import { torTcp } from '../egress/tor.js';
import type { TorAccess } from '../tor/access.js';
import { dataPathFault } from '../errors.js';
import type { RouterTap } from '../capture/taps.js';
import { exitOf, verdictComment } from './verdict-text.js';
import { readMac } from '../wire/mac.js';

/** The network the router serves, as the daemon's state describes it. */
export interface RouterNetSpec {
  readonly name: string;
  /** IPv4 CIDR, host bits zero. */
  readonly subnet: string;
  readonly gateway: string;
  readonly ipv6?: string | undefined;
  readonly mtu: number;
  /** "FIRST-LAST": where DHCP hands out dynamic addresses (default: the whole subnet). */
  readonly dhcpRange?: string | undefined;
}

export interface RouterVm {
  name: string;
  /** The VM's fixed MAC, null until learned. */
  mac: number | null;
  /** Static address from `vm attach --ip`. */
  ip: number | null;
}

/** Where verdicts leave: host sockets and Tor streams (tests put in-process upstreams here). */
export interface RouterEgress {
  /** A host TCP connection to `dst`:`port` (`host` overrides the address, e.g. the host's loopback). */
  tcp(dst: IpAddr, port: number, host?: string): StreamUpstream;
  udp(dst: IpAddr, port: number, host?: string): DatagramUpstream;
}

export interface RouterDeps {
  spec: RouterNetSpec;
  network: Network;
  log: Logger;
  vm(name: string): RouterVm | undefined;
  vmByMac(mac: number): RouterVm | undefined;
  routeOf(name: string): Route;
  /** VMs whose route is `via` this one: a firewall VM forwards their packets with their source addresses. */
  viaClientsOf(name: string): RouterVm[];
  /** The shared upstream resolver for direct routes. */
  upstreamDns: Resolver;
  direct: DirectOptions;
  limits?: Partial<EndpointLimits>;
  /** ICMP echo for direct routes (one per daemon). */
  ping?: PingEgress;
  /** Tor access, when Tor is configured. */
  tor?: TorAccess;
  /** Leases changed: persist them. */
  onLeases(): void;
  /** Direct egress; default: host sockets with `direct`'s options. */
  egress?: RouterEgress;
  /** Wall clock (leases, rate limits) and monotonic clock (TCP, reassembly); default: the real ones. */
  clock?: { wall(): number; mono(): number };
  /** The host's loopback and own addresses (default: router/forbidden.ts). */
  forbidden?: (dst: IpAddr) => boolean;
  /** A flow refused or dropped by the VM's route, or a spoofed packet (for the log: events/policy-log.ts). */
  onPolicy?: (d: PolicyDecision) => void;
}

/** One policy decision against a VM's traffic, as the log tells it. */
export interface PolicyDecision {
  vm: string;
  /** ip: a packet the router dropped (spoofed source); frame: one the switch dropped (its destination is a MAC). */
  proto: 'tcp' | 'udp' | 'ping' | 'ip' | 'frame';
  /** Destination, ADDR:PORT (IPv6 as [ADDR]:PORT), ADDR, or a MAC. */
  dst: string;
  /** The decision's reason (routes/decide.ts Reason), or routed-via-another-vm, udp-not-through-tor, spoofed-source; the switch's spoofed-mac, guard-<reason>. */
  reason: string;
  /** refused: the VM was told (RST, ICMP prohibited); dropped: silently. */
  action: 'refused' | 'dropped';
  /** A spoofed packet's source. */
  src?: string;
}

export interface RouterCounters {
  /** Tor-routed connections refused because Tor was not ready. */
  torRefused: number;
  /** Tor-routed VMs' UDP and other traffic that cannot go through Tor. */
  torDropped: number;
  spoofed: number;
  noRoute: number;
  invalid: number;
  viaDropped: number;
  icmpDropped: number;
  /** IPv4 datagrams put back together from fragments. */
  reassembled: number;
  /**
   * Fragments dropped: overlapping, oversize, over the per-VM memory bound, or IPv6 fragments;
   * and incomplete datagrams given up (evicted by the per-VM bound, or timed out), one each.
   */
  fragDropped: number;
}

/** Per VM: at most this much fragment data is held, so a VM cannot exhaust the daemon's memory. */
const REASSEMBLY_LIMITS: Partial<ReassemblyLimits> = { maxDatagrams: 16, maxBytes: 256 * 1024, maxFragments: 64, timeoutMs: 30_000 };

interface VmState {
  ev: EndpointVm;
  compiled: CompiledRoute;
  /** Source address learned when the VM has neither a static address nor a lease. */
  learned4: number | null;
  reassembler: Ipv4Reassembler | null;
  /** IPv6 sources bound to this VM (keys of NetRouter.bound6), oldest first; at most MAX_SOURCES6. */
  sources6: string[];
}

/** IPv6 source addresses one VM may hold at once (SLAAC, privacy addresses, link-local). */
const MAX_SOURCES6 = 32;

/** Answers every question with SERVFAIL: the resolver of a Tor-routed VM while Tor is not ready. */
const SERVFAIL: Resolver = { resolve: (): Promise<DnsAnswer> => Promise.resolve({ kind: 'servfail' }) };

export class NetRouter implements GatewayHandler {
  readonly gnet: GatewayNet;
  readonly services: GatewayServices;
  readonly endpoint: Endpoint;
  readonly zone: LocalZone;
  readonly counters: RouterCounters = { torRefused: 0, torDropped: 0, spoofed: 0, noRoute: 0, invalid: 0, viaDropped: 0, icmpDropped: 0, reassembled: 0, fragDropped: 0 };
  /** Set by the capture hub while a capture needs the route exits or the drops; else null. */
  capture: RouterTap | null = null;
  private readonly vms = new Map<string, VmState>();
  /** Static addresses of attached VMs (`vm attach --ip`), also of those not heard from yet. */
  private readonly statics = new Map<string, number>();
  /**
   * IPv6 sources in use, first come first served (the idea of RFC 6620): address (hex) → the VM
   * that used it first. Held until that VM detaches or binds MAX_SOURCES6 newer ones.
   */
  private readonly bound6 = new Map<string, string>();
  private readonly pingBuckets = new Map<string, TokenBucket>();
  private readonly limitLogged = new Map<string, number>();
  private readonly out: Buffer[] = [];
  private flushQueued = false;
  private timer: NodeJS.Timeout | null = null;
  private readonly wall: () => number;
  private readonly mono: () => number;
  private readonly egress: RouterEgress;
  private readonly place: PlaceView;
  private readonly torView: TorView;

  constructor(private readonly d: RouterDeps) {
    const { spec, network } = d;
    this.wall = d.clock !== undefined ? () => d.clock!.wall() : () => Date.now();
    this.mono = d.clock !== undefined ? () => d.clock!.mono() : () => performance.now();
    this.gnet = makeGatewayNet({
      name: spec.name,
      subnet: spec.subnet,
      gatewayIp: spec.gateway,
      gatewayMac: network.gatewayMac,
      mtu: spec.mtu,
      ipv6: spec.ipv6,
    });
    // The switch keeps VMs from claiming these in ARP and neighbour discovery.
    network.setGatewayAddresses({ ip4: this.gnet.gatewayIp, ip6: this.gnet.ipv6 === undefined ? [] : [this.gnet.ipv6.linkLocal, this.gnet.ipv6.global] });
    this.egress = d.egress ?? { tcp: (dst, port, host) => directTcp(dst, port, d.direct, host), udp: (dst, port, host) => directUdp(dst, port, d.direct, host) };
    this.place = { forbidden: d.forbidden ?? isForbiddenDestination, isGateway: (dst) => this.isGateway(dst), hostLoopback: (port) => this.hostLoopbackPort(port) };
    const tor = d.tor;
    this.torView = {
      configured: tor !== undefined,
      get ready() {
        return tor !== undefined && tor.socks() !== null;
      },
      onionAt: (dst) => (tor === undefined || dst.v !== 4 || !tor.automap.contains(dst.n) ? undefined : (tor.automap.lookup(dst.n) ?? null)),
    };
    this.zone = new LocalZone(this.gnet);
    const none = new NoneResolver(this.zone);
    const direct = new LocalFirstResolver(this.zone, d.upstreamDns);
    const torDns = tor !== undefined ? new LocalFirstResolver(this.zone, tor.resolver) : none;
    const servfail = new LocalFirstResolver(this.zone, SERVFAIL);
    const resolver = new RoutedResolver((vm) => {
      const v = this.decide(vm, { proto: 'dns' });
      if (v.kind === 'direct') return direct;
      if (v.kind === 'tor') return torDns;
      return v.kind === 'refuse' && v.answer === 'servfail' ? servfail : none;
    }, none);
    // Validated with the spec (state/validate.ts); a range that does not parse here is a bug.
    const range = spec.dhcpRange !== undefined ? parseDhcpRange(spec.dhcpRange) : undefined;
    if (spec.dhcpRange !== undefined && range === undefined) throw new Error(`network ${spec.name}: unreadable DHCP range ${spec.dhcpRange}`);
    this.services = new GatewayServices(this.gnet, {
      resolver,
      dhcp: {
        range,
        routerFor: (mac) => {
          const vm = d.vmByMac(mac);
          if (vm === undefined) return undefined;
          const r = d.routeOf(vm.name);
          if (r.kind !== 'via') return undefined;
          return d.vm(r.vm)?.ip ?? undefined;
        },
        onLease: (e) => {
          const vm = d.vmByMac(e.lease.mac);
          if (vm !== undefined) {
            if (e.type === 'bound' || e.type === 'renewed') this.nameHost(vm.name, e.lease.ip);
            else this.zone.deleteHost(vm.name);
          }
          d.onLeases();
        },
      },
    });
    const policy: EndpointPolicy = { tcp: (vm, dst, port) => this.tcpPolicy(vm, dst, port), udp: (vm, dst, port) => this.udpPolicy(vm, dst, port) };
    this.endpoint = new Endpoint({
      log: d.log,
      clock: this.mono,
      policy,
      send: (f) => this.send(f),
      prohibited: (vm, packet, v, reason) => this.icmpError(vm, packet, v, reason),
      // Offload frames (TSO super-frames) only while no capture needs plain ones.
      offload: (vm) => this.capture === null && d.network.offloadsTo(vm.l2.vmMac),
      onLimit: (vm, table, limit) => {
        const now = this.wall();
        const key = `${vm.name}|${table}`;
        if ((this.limitLogged.get(key) ?? -Infinity) > now - 60_000) return;
        this.limitLogged.set(key, now);
        d.log.warn({ vm: vm.name, table, limit }, `${table === 'tcp' ? 'TCP connection' : 'UDP flow'} limit reached: new ${table === 'tcp' ? 'connections get RST' : 'flows are dropped'}`);
      },
      mss4: spec.mtu - 40,
      mss6: spec.mtu - 60,
      mtu: spec.mtu,
      limits: d.limits,
    });
    this.schedule();
  }

  // --- VMs --------------------------------------------------------------------------------

  private stateOf(name: string): VmState | undefined {
    let s = this.vms.get(name);
    if (s === undefined) {
      const vm = this.d.vm(name);
      if (vm === undefined || vm.mac === null) return undefined;
      s = { ev: { name, l2: { vmMac: vm.mac, gwMac: this.gnet.gatewayMac } }, compiled: compileRoute(this.d.routeOf(name)), learned4: null, reassembler: null, sources6: [] };
      this.vms.set(name, s);
    }
    return s;
  }

  /** The one route decision for `vm`'s flow, with the route compiled for it (pure: counts nothing). */
  decide(vm: string, flow: Flow): Verdict {
    const compiled = this.vms.get(vm)?.compiled ?? compileRoute(this.d.routeOf(vm));
    return decide(vm, compiled, this.torView, this.place, flow);
  }

  /** The VM's route changed: recompile and reset the flows it no longer allows. Counts no drops. */
  routeChanged(name: string): number {
    const s = this.vms.get(name);
    if (s === undefined) return 0;
    s.compiled = compileRoute(this.d.routeOf(name));
    return this.endpoint.recheck(name, (proto: 'tcp' | 'udp', a: FlowAddr, tag: string) => verdictTag(this.decide(name, { proto, dst: a.remoteIp, port: a.remotePort })) === tag);
  }

  /**
   * `<vm>.<domain>` for the VM's address. VM names may hold '_' or '.', which a DNS label may
   * not: such a VM has no name in the zone (its address and everything else still work).
   */
  private nameHost(name: string, ipv4: number): void {
    if (isHostLabel(name)) this.zone.setHost(name, { ipv4 });
  }

  vmAttached(name: string, staticIp: number | null): void {
    this.vms.delete(name);
    this.unbind6(name);
    if (staticIp !== null) {
      this.statics.set(name, staticIp);
      this.nameHost(name, staticIp);
    } else this.statics.delete(name);
  }

  vmDetached(name: string, mac: number | null): void {
    this.endpoint.dropVm(name);
    this.pingBuckets.delete(name);
    this.vms.delete(name);
    this.unbind6(name);
    this.statics.delete(name);
    this.zone.deleteHost(name);
    if (mac !== null) this.services.dhcp.forget(mac);
  }

  /** Static leases from `vm attach --ip`, by MAC (the whole set: it replaces the previous one). */
  refreshReservations(reservations: Map<number, number>): void {
    const rejected = this.services.dhcp.setReservations(reservations);
    if (rejected.length > 0) this.d.log.warn({ network: this.gnet.name, rejected }, 'static leases outside the pool were ignored');
  }

  /** The address the VM may send from: static, else its lease, else the first it used. */
  private ownIp4(vm: RouterVm, s: VmState): number | null {
    if (vm.ip !== null) return vm.ip;
    if (vm.mac !== null) {
      const l = this.services.dhcp.leaseFor(vm.mac, this.wall());
      if (l !== undefined && l.state === 'bound') return l.ip;
    }
    return s.learned4;
  }

  /**
   * A port forward's host connection, opened into the VM at `port` from the gateway address.
   * Throws a plain Error when the VM cannot be reached (no address yet, table full).
   */
  openInto(name: string, port: number, sock: Duplex): void {
    const vm = this.d.vm(name);
    const s = this.stateOf(name);
    if (vm === undefined || s === undefined) throw new Error(`${name} has not sent a frame yet (MAC unknown)`);
    const ip = this.ownIp4(vm, s);
    if (ip === null) throw new Error(`${name} has no IPv4 address yet (no static address, lease or traffic)`);
    if (!this.endpoint.openInto(s.ev, ip4(ip), port, ip4(this.gnet.gatewayIp), sock, 'forward')) throw new Error(`${name}'s connection table is full`);
  }

  // --- frames: the one ingress path -------------------------------------------------------

  input(frames: readonly Buffer[], from: Member): void {
    const now = this.wall();
    for (const f of frames) {
      try {
        this.frame(f, from, now);
      } catch (e) {
        // A bug: this frame is lost, the rest of the batch and the daemon go on.
        dataPathFault('router input', e, { network: this.gnet.name, vm: from.vm, length: f.length, head: f.subarray(0, 64).toString('hex') });
      }
    }
    this.flush();
  }

  private frame(f: Buffer, from: Member, now: number): void {
    const d = dissect(f);
    // The gateway speaks untagged Ethernet only: a VLAN tag would be read past, not honoured.
    if (d.kind === 'invalid' || d.eth.vlan !== undefined) {
      this.counters.invalid++;
      if (this.capture !== null) this.capture.dropped(f, d.kind === 'invalid' ? 'dropped: invalid frame' : 'dropped: VLAN-tagged frame to the gateway', from.vm);
      return;
    }
    if (d.kind === 'other') return;
    const sv = this.services;
    const vm = this.d.vm(from.vm);
    const s = this.stateOf(from.vm);
    if (d.kind !== 'arp' && (vm === undefined || s === undefined)) return;
    // ARP, DHCP and NDP solicitations come before the VM has an address; everything else must
    // come from the VM's own.
    if (d.kind !== 'arp' && !sv.unaddressed(d) && !(d.kind === 'ipv4' ? this.sourceOk4(vm!, s!, d.ip.src) : this.sourceOk6(vm!, s!, d.ip.src))) {
      this.counters.spoofed++;
      if (this.capture !== null) this.capture.dropped(f, 'dropped: spoofed source address', from.vm);
      if (this.d.onPolicy !== undefined) {
        const [src, dst] = d.kind === 'ipv4' ? [ip4(d.ip.src), ip4(d.ip.dst)] : [ip6(d.ip.src), ip6(d.ip.dst)];
        this.d.onPolicy({ vm: from.vm, proto: 'ip', dst: ipString(dst), src: ipString(src), reason: 'spoofed-source', action: 'dropped' });
      }
      return;
    }
    // Every VM ARPs before it talks: an address set inside the VM by hand (no --ip, no lease)
    // is learned from its ARP by the rules its first IP packet would meet (sourceOk4), so status
    // shows it; an ARP that fails them is still answered as before, and binds nothing.
    if (d.kind === 'arp' && vm !== undefined && s !== undefined && s.learned4 === null && d.arp.senderIp !== 0) this.sourceOk4(vm, s, d.arp.senderIp);
    const r = sv.dispatch(d, from.vm, now);
    if (r.handled) {
      for (const x of r.replies) this.out.push(x);
      if (r.later !== undefined) this.later(r.later);
      return;
    }
    if (d.kind === 'arp' || vm === undefined || s === undefined) return;
    if (d.kind === 'ipv4') {
      const { eth, ip, icmp } = d;
      if (ip.dst === 0xffffffff || ip.dst === this.gnet.broadcast || ip.dst >>> 28 === 0xe) return;
      if (ip.moreFragments || ip.fragmentOffset !== 0) {
        this.reassemble(f, d.ip, from, s, now);
        return;
      }
      if (inSubnet(ip.dst, this.gnet.subnet) && ip.dst !== this.gnet.gatewayIp) {
        // Another VM's address sent to the gateway MAC: the VM should use the switch.
        this.counters.noRoute++;
        if (this.capture !== null) this.capture.dropped(f, "dropped: no route (another VM's address sent to the gateway)", from.vm);
        return;
      }
      const packet = eth.payload.subarray(0, ip.totalLength);
      const tapped = this.capture !== null && this.tapOut(vm.name, f, packet, d.tcp, d.udp, icmp?.kind === 'echo-request', ip4(ip.dst));
      if (d.tcp !== undefined) this.endpoint.tcpInput(s.ev, ip4(ip.src), ip4(ip.dst), d.tcp, packet);
      else if (d.udp !== undefined) this.endpoint.udpInput(s.ev, ip4(ip.src), ip4(ip.dst), d.udp, packet);
      else if (icmp?.kind === 'echo-request' && this.pingOut(s, vm, ip4(ip.dst), icmp.id, icmp.seq, icmp.data)) return;
      else {
        // ICMP beyond the gateway's echo (and other protocols) does not leave.
        this.counters.icmpDropped++;
        if (this.capture !== null && !tapped) this.capture.dropped(f, icmp?.kind === 'echo-request' ? 'dropped: echo not sent (no ping socket, or the rate limit)' : 'dropped: ICMP other than echo, or another protocol, does not leave the gateway', from.vm);
        if (ip.dst === this.gnet.gatewayIp && icmp === undefined) this.push(sv.icmp.errorV4(eth, packet, 'protocol-unreachable', now));
      }
      return;
    }
    // IPv6
    const { ip, icmp } = d;
    const g6 = this.gnet.ipv6;
    if (g6 === undefined || ip.dst[0] === 0xff) return;
    if (ip.fragment !== undefined) {
      this.counters.fragDropped++;
      if (this.capture !== null) this.capture.dropped(f, 'dropped: IPv6 fragment', from.vm);
      return;
    }
    if (isLinkLocal6(ip.src)) return; // link-local sources cannot be routed
    if (inIpv6Prefix(ip.dst, g6.prefix, g6.length) && !isGatewayIpv6(this.gnet, ip.dst)) {
      this.counters.noRoute++;
      if (this.capture !== null) this.capture.dropped(f, "dropped: no route (another VM's address sent to the gateway)", from.vm);
      return;
    }
    const src = ip6(ip.src);
    const dst = ip6(ip.dst);
    const packet = d.eth.payload.subarray(0, 40 + ip.payloadLength);
    const tapped = this.capture !== null && this.tapOut(vm.name, f, packet, d.tcp, d.udp, icmp?.kind === 'echo-request', dst);
    if (d.tcp !== undefined) this.endpoint.tcpInput(s.ev, src, dst, d.tcp, packet);
    else if (d.udp !== undefined) this.endpoint.udpInput(s.ev, src, dst, d.udp, packet);
    else if (icmp?.kind === 'echo-request' && this.pingOut(s, vm, dst, icmp.id, icmp.seq, icmp.data, src)) return;
    else {
      this.counters.icmpDropped++;
      if (this.capture !== null && !tapped) this.capture.dropped(f, icmp?.kind === 'echo-request' ? 'dropped: echo not sent (no ping socket, or the rate limit)' : 'dropped: ICMPv6 other than echo, or another protocol, does not leave the gateway', from.vm);
    }
  }

  /**
   * An IPv4 fragment: held (bounded per VM) until its datagram is whole, which then takes the
   * ingress path as if it had come in one frame.
   */
  private reassemble(f: Buffer, ip: Parameters<Ipv4Reassembler['push']>[0], from: Member, s: VmState, now: number): void {
    s.reassembler ??= new Ipv4Reassembler(REASSEMBLY_LIMITS);
    // Datagrams given up to make room (the per-VM bound) or timed out are drops too.
    const st = s.reassembler.stats;
    const given = st.evicted + st.timedOut;
    const r = s.reassembler.push(ip, this.mono());
    this.counters.fragDropped += st.evicted + st.timedOut - given;
    if (r.status === 'dropped') {
      this.counters.fragDropped++;
      if (this.capture !== null) this.capture.dropped(f, 'dropped: fragment (overlapping, oversize or over the per-VM limit)', from.vm);
    }
    if (r.status !== 'complete') return;
    this.counters.reassembled++;
    const whole = Buffer.allocUnsafe(ETH_HEADER_LEN + r.packet.length);
    f.copy(whole, 0, 0, ETH_HEADER_LEN);
    r.packet.copy(whole, ETH_HEADER_LEN);
    this.frame(whole, from, now);
  }

  /**
   * A direct-routed VM's echo request leaves through an unprivileged ping socket (where the
   * host allows them); the reply comes back as from the destination. Rate-limited per VM.
   */
  private pingOut(s: VmState, vm: RouterVm, dst: IpAddr, id: number, seq: number, data: Uint8Array, src6?: IpAddr): boolean {
    const ping = this.d.ping;
    if (ping === undefined) return false;
    const v = this.decide(vm.name, { proto: 'ping', dst });
    if (v.kind === 'refuse' || v.kind === 'drop') this.policy(vm.name, 'ping', dst, null, v.reason, v.kind === 'refuse' ? 'refused' : 'dropped');
    if (v.kind !== 'direct') return false;
    if (!ping.available(dst.v)) return false;
    let bucket = this.pingBuckets.get(vm.name);
    if (bucket === undefined) {
      bucket = new TokenBucket(20, 20);
      this.pingBuckets.set(vm.name, bucket);
    }
    if (!bucket.take(this.wall())) return false;
    const vmMac = s.ev.l2.vmMac;
    const gw = this.gnet.gatewayMac;
    if (dst.v === 4) {
      const own = this.ownIp4(vm, s);
      if (own === null) return false;
      return ping.echo(dst, id, seq, data, (reply) => {
        this.send(ipv4IcmpFrame({ srcMac: gw, dstMac: vmMac, src: dst.n, dst: own }, { kind: 'echo-reply', id, seq, data: Buffer.from(reply) }));
      });
    }
    const to = src6;
    if (to === undefined || to.v !== 6) return false;
    return ping.echo(dst, id, seq, data, (reply) => {
      this.send(ipv6IcmpFrame({ srcMac: gw, dstMac: vmMac, src: dst.b, dst: to.b }, { kind: 'echo-reply', id, seq, data: Buffer.from(reply) }));
    });
  }

  private sourceOk4(vm: RouterVm, s: VmState, src: number): boolean {
    const own = this.ownIp4(vm, s);
    if (own !== null && src === own) return true;
    for (const c of this.d.viaClientsOf(vm.name)) {
      const cs = this.stateOf(c.name);
      if (cs !== undefined && this.ownIp4(c, cs) === src) return true;
    }
    if (own !== null) return false;
    // No static address and no lease: accept the first plausible source, then hold to it.
    if (!inSubnet(src, this.gnet.subnet) || src === this.gnet.gatewayIp || src === this.gnet.broadcast || src === this.gnet.subnet.network) return false;
    for (const [name, other] of this.vms) if (name !== vm.name && other.learned4 === src) return false;
    // Nor another VM's static address or DHCP lease (or offer), whether or not it has spoken yet.
    for (const [name, ip] of this.statics) if (name !== vm.name && ip === src) return false;
    const now = this.wall();
    for (const l of this.services.dhcp.leases()) if (l.ip === src && l.mac !== vm.mac && l.state !== 'expired' && l.expiresAt > now) return false;
    s.learned4 = src;
    return true;
  }

  /**
   * An IPv6 source must be link-local or in the network's prefix, never the gateway's, and not
   * one another VM uses (bound6) or will form by SLAAC from its MAC (EUI-64), unless that VM
   * routes via this one (a firewall VM forwards its clients' packets).
   */
  private sourceOk6(vm: RouterVm, s: VmState, src: Uint8Array): boolean {
    const g6 = this.gnet.ipv6;
    if (g6 === undefined) return true; // nothing IPv6 is served: the frame goes nowhere anyway
    if (!isLinkLocal6(src) && !inIpv6Prefix(src, g6.prefix, g6.length)) return false;
    if (isGatewayIpv6(this.gnet, src)) return false;
    const key = Buffer.from(src.buffer, src.byteOffset, 16).toString('hex');
    const owner = this.bound6.get(key);
    if (owner === vm.name) return true;
    const isClient = (name: string): boolean => this.d.viaClientsOf(vm.name).some((c) => c.name === name);
    if (owner !== undefined) return isClient(owner);
    const euiOwner = eui64Mac(src);
    const other = euiOwner === null ? undefined : this.d.vmByMac(euiOwner);
    if (other !== undefined && other.name !== vm.name) return isClient(other.name);
    this.bound6.set(key, vm.name);
    s.sources6.push(key);
    if (s.sources6.length > MAX_SOURCES6) {
      const old = s.sources6.shift()!;
      if (this.bound6.get(old) === vm.name) this.bound6.delete(old);
    }
    return true;
  }

  private unbind6(name: string): void {
    for (const [k, v] of this.bound6) if (v === name) this.bound6.delete(k);
  }

  // --- verdicts into upstreams ------------------------------------------------------------

  /**
   * A listed `direct.hostLoopbackPorts` port, and never the port Tor's SOCKS listens on now (the
   * config refuses the known ones at load; an "auto" port is known only once Tor runs).
   */
  private hostLoopbackPort(port: number): boolean {
    const o = this.d.direct;
    if (o.hostLoopback !== true || !(o.hostLoopbackPorts ?? []).some(([lo, hi]) => port >= lo && port <= hi)) return false;
    const socks = this.d.tor?.socks() ?? null;
    return socks === null || !('port' in socks) || socks.port !== port;
  }

  private isGateway(dst: IpAddr): boolean {
    return dst.v === 4 ? dst.n === this.gnet.gatewayIp : isGatewayIpv6(this.gnet, dst.b);
  }

  /** Tells onPolicy about a refused or dropped flow (only those: an allowed flow costs nothing here). */
  private policy(vm: string, proto: PolicyDecision['proto'], dst: IpAddr, port: number | null, reason: string, action: PolicyDecision['action']): void {
    if (this.d.onPolicy === undefined) return;
    const a = ipString(dst);
    this.d.onPolicy({ vm, proto, dst: port === null ? a : dst.v === 6 ? `[${a}]:${port}` : `${a}:${port}`, reason, action });
  }

  private tcpPolicy(vm: EndpointVm, dst: IpAddr, port: number): TcpDecision {
    const v = this.decide(vm.name, { proto: 'tcp', dst, port });
    if (v.kind === 'refuse') this.policy(vm.name, 'tcp', dst, port, v.reason, 'refused');
    else if (v.kind === 'drop') this.policy(vm.name, 'tcp', dst, port, v.reason, 'dropped');
    else if (v.kind === 'via') this.policy(vm.name, 'tcp', dst, port, 'routed-via-another-vm', 'dropped');
    switch (v.kind) {
      case 'local':
        if (v.service === 'dns') return { kind: 'open', upstream: localDnsTcp(this.services.dns, vm.name, this.wall) };
        return { kind: 'open', upstream: this.egress.tcp(dst, port, dst.v === 4 ? '127.0.0.1' : '::1') };
      case 'direct':
        return { kind: 'open', upstream: this.egress.tcp(dst, port) };
      case 'tor': {
        const tor = this.d.tor!;
        return { kind: 'open', upstream: torTcp(tor, tor.creds(v.identity), v.host, port) };
      }
      case 'via':
        this.counters.viaDropped++;
        return { kind: 'drop', reason: 'routed via another VM' };
      case 'refuse':
        if (v.reason === 'tor-not-ready') this.counters.torRefused++;
        return v.answer === 'prohibited' ? { kind: 'prohibited', reason: v.reason } : { kind: 'reset', reason: v.reason };
      case 'drop':
        return { kind: 'drop', reason: v.reason };
    }
  }

  private udpPolicy(vm: EndpointVm, dst: IpAddr, port: number): UdpDecision {
    const v = this.decide(vm.name, { proto: 'udp', dst, port });
    if (v.kind === 'refuse') this.policy(vm.name, 'udp', dst, port, v.reason, v.answer === 'prohibited' ? 'refused' : 'dropped');
    else if (v.kind === 'drop') this.policy(vm.name, 'udp', dst, port, v.reason, 'dropped');
    else if (v.kind === 'via') this.policy(vm.name, 'udp', dst, port, 'routed-via-another-vm', 'dropped');
    else if (v.kind === 'tor') this.policy(vm.name, 'udp', dst, port, 'udp-not-through-tor', 'dropped');
    switch (v.kind) {
      case 'local':
        return v.service === 'host-loopback' ? { kind: 'open', upstream: this.egress.udp(dst, port, dst.v === 4 ? '127.0.0.1' : '::1') } : { kind: 'drop', reason: 'no UDP service' };
      case 'direct':
        return { kind: 'open', upstream: this.egress.udp(dst, port) };
      case 'via':
        this.counters.viaDropped++;
        return { kind: 'drop', reason: 'routed via another VM' };
      case 'refuse':
        return v.answer === 'prohibited' ? { kind: 'prohibited', reason: v.reason } : { kind: 'drop', reason: v.reason };
      case 'drop':
        if (v.reason === 'not-through-tor') this.counters.torDropped++;
        return { kind: 'drop', reason: v.reason };
      case 'tor':
        return { kind: 'drop', reason: 'UDP does not go through Tor' };
    }
  }

  private icmpError(vm: EndpointVm, packet: Buffer, v: 4 | 6, reason: 'admin' | 'unreachable'): void {
    if (packet.length === 0) return;
    const eth: EthernetHeader = { dst: this.gnet.gatewayMac, src: vm.l2.vmMac, etherType: v === 4 ? 0x0800 : 0x86dd };
    const now = this.wall();
    const f =
      v === 4
        ? this.services.icmp.errorV4(eth, packet, reason === 'admin' ? 'admin-prohibited' : 'host-unreachable', now)
        : this.services.icmp.errorV6(eth, packet, reason === 'admin' ? 'admin-prohibited' : 'address-unreachable', now);
    this.push(f);
    this.flushSoon();
  }

  // --- output -----------------------------------------------------------------------------

  private push(f: Buffer | null): void {
    if (f !== null) this.out.push(f);
  }

  private later(p: Promise<Buffer | null>): void {
    p.then(
      (f) => {
        try {
          if (f !== null) this.send(f);
        } catch (e) {
          dataPathFault('router DNS answer', e, { network: this.gnet.name });
        }
      },
      (e: Error) => this.d.log.warn({ err: e.message }, 'DNS answer failed'),
    );
  }

  // --- capture: route exits (only while the hub set this.capture) ----------------------------

  /** `vm1/3`: the Tor isolation identity and the generation of its SOCKS credentials (tor newnym moves it on). */
  private readonly circuit = (identity: string): string => {
    const user = this.d.tor?.creds(identity).user;
    const gen = user !== undefined ? /-(\d+)$/.exec(user)?.[1] : undefined;
    return gen !== undefined ? `${identity}/${gen}` : identity;
  };

  /**
   * A VM's packet handed to the endpoint or the ping egress: its flow's decision, at its exit.
   * Returns whether it was reported as a drop (refused or dropped by the decision).
   */
  private tapOut(vm: string, f: Buffer, packet: Buffer, tcp: { dstPort: number } | undefined, udp: { dstPort: number } | undefined, echo: boolean, dst: IpAddr): boolean {
    const flow: Flow | null = tcp !== undefined ? { proto: 'tcp', dst, port: tcp.dstPort } : udp !== undefined ? { proto: 'udp', dst, port: udp.dstPort } : echo ? { proto: 'ping', dst } : null;
    if (flow === null) return false;
    const tap = this.capture!;
    const v = this.decide(vm, flow);
    const text = verdictComment(v, this.circuit);
    if (tap.exits) tap.exit(exitOf(v, this.d.routeOf(vm)), packet, 'out', text);
    if (v.kind === 'via') {
      // The mvnet gateway does not carry it: the VM should have sent it to its gateway VM.
      tap.dropped(f, `dropped: routed via ${v.vm}, not through the gateway`, vm);
      return true;
    }
    if (v.kind !== 'refuse' && v.kind !== 'drop') return false;
    tap.dropped(f, text, vm);
    return true;
  }

  /** A frame the endpoint or the ping egress hands back to a VM: the reply from its flow's exit. */
  private tapIn(f: Buffer): void {
    const d = dissect(f);
    if (d.kind !== 'ipv4' && d.kind !== 'ipv6') return;
    const vm = this.d.vmByMac(readMac(f, 0));
    if (vm === undefined) return;
    const src = d.kind === 'ipv4' ? ip4(d.ip.src) : ip6(d.ip.src);
    const flow: Flow | null =
      d.tcp !== undefined ? { proto: 'tcp', dst: src, port: d.tcp.srcPort } : d.udp !== undefined ? { proto: 'udp', dst: src, port: d.udp.srcPort } : d.icmp?.kind === 'echo-reply' ? { proto: 'ping', dst: src } : null;
    if (flow === null) return;
    // The gateway's own DNS answers over UDP did not come from an exit (host-loopback UDP did).
    if (flow.proto === 'udp' && flow.port === 53 && this.isGateway(src)) return;
    const v = this.decide(vm.name, flow);
    // RSTs and ICMP errors for refused flows are the gateway's, not an exit's.
    if (v.kind === 'refuse' || v.kind === 'drop') return;
    const len = d.kind === 'ipv4' ? d.ip.totalLength : 40 + d.ip.payloadLength;
    this.capture!.exit(exitOf(v, this.d.routeOf(vm.name)), d.eth.payload.subarray(0, len), 'in', verdictComment(v, this.circuit));
  }

  /** Frames produced outside an input batch (host sockets, timers) go out at the end of the tick. */
  private send(f: Buffer): void {
    if (this.capture !== null && this.capture.exits) this.tapIn(f);
    this.out.push(f);
    this.flushSoon();
  }

  private flushSoon(): void {
    if (this.flushQueued) return;
    this.flushQueued = true;
    queueMicrotask(() => this.flush());
  }

  private flush(): void {
    this.flushQueued = false;
    if (this.out.length === 0) return;
    const batch = this.out.splice(0);
    try {
      this.d.network.fromGateway(batch);
    } catch (e) {
      dataPathFault('router output', e, { network: this.gnet.name, frames: batch.length });
    }
  }

  /** Periodic gateway work (router advertisements, lease expiry). */
  private schedule(): void {
    const next = this.services.nextDeadline();
    if (this.timer !== null) clearTimeout(this.timer);
    const delay = next === undefined ? 60_000 : Math.max(0, Math.min(60_000, next - this.wall()));
    this.timer = setTimeout(() => {
      try {
        for (const f of this.services.poll(this.wall())) this.out.push(f);
        this.flush();
      } catch (e) {
        dataPathFault('router timer', e, { network: this.gnet.name });
      }
      this.schedule();
    }, delay);
    this.timer.unref();
  }

  /** What `mvnet status` shows of a VM: its address, flows and router-level drops. */
  vmStatus(name: string): { ip: string | null; flows: ReturnType<Endpoint['flowCount']> } {
    const vm = this.d.vm(name);
    const s = this.vms.get(name);
    const ip = vm !== undefined && s !== undefined ? this.ownIp4(vm, s) : (vm?.ip ?? null);
    return { ip: ip !== null ? ipString(ip4(ip)) : null, flows: this.endpoint.flowCount(name) };
  }

  /**
   * Whether a VM holds `ip`: a static address, a live DHCP lease or offer, or the address a VM
   * without either was seen using. For choosing a free address (`vm attach --ip auto`).
   */
  holds(ip: number): boolean {
    for (const a of this.statics.values()) if (a === ip) return true;
    const now = this.wall();
    for (const l of this.services.dhcp.leases()) if (l.ip === ip && l.state !== 'expired' && l.expiresAt > now) return true;
    for (const s of this.vms.values()) if (s.learned4 === ip) return true;
    return false;
  }

  leases(): DhcpSnapshot {
    return this.services.dhcp.snapshot();
  }

  restoreLeases(snap: unknown): void {
    this.services.dhcp.restore(snap, this.wall());
    for (const l of this.services.dhcp.leases()) {
      const vm = this.d.vmByMac(l.mac);
      if (vm !== undefined && l.state === 'bound') this.nameHost(vm.name, l.ip);
    }
  }

  close(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.endpoint.close();
  }
}

/** The MAC an EUI-64 interface identifier (…:xxff:fexx:…) was formed from, or null. */
function eui64Mac(a: Uint8Array): number | null {
  if (a[11] !== 0xff || a[12] !== 0xfe) return null;
  const low = ((a[10]! << 24) | (a[13]! << 16) | (a[14]! << 8) | a[15]!) >>> 0;
  return (a[8]! ^ 0x02) * 2 ** 40 + a[9]! * 2 ** 32 + low;
}

function isLinkLocal6(a: Uint8Array): boolean {
  return a[0] === 0xfe && (a[1]! & 0xc0) === 0x80;
}
