/**
 * The router of one network: the switch's gateway handler. Frames to the gateway MAC (and
 * broadcasts) arrive here; the gateway's own services answer what is theirs (ARP, DHCP, ICMP
 * echo, NDP, DNS) and every other flow is terminated by the userland endpoint and sent where
 * the VM's route says — or nowhere. Source addresses are checked before anything else.
 */
import type { Logger } from 'pino';
import type { Duplex } from 'node:stream';
import { GatewayServices } from '../gateway/services.js';
import { dissect } from '../gateway/dissect.js';
import { makeGatewayNet, inSubnet, inIpv6Prefix, isGatewayIpv6, type GatewayNet } from '../gateway/types.js';
import { LocalZone, NoneResolver } from '../gateway/dns-local.js';
import { LocalFirstResolver, RoutedResolver } from '../gateway/dns-route.js';
import type { Resolver } from '../gateway/dns.js';
import type { DhcpSnapshot } from '../gateway/dhcp.js';
import { IPPROTO_TCP, IPPROTO_UDP } from '../wire/ipv4.js';
import type { EthernetHeader } from '../wire/ethernet.js';
import type { GatewayHandler, Member, Network } from '../switch/network.js';
import { Endpoint, type EndpointLimits, type EndpointPolicy, type EndpointVm } from '../endpoint/endpoint.js';
import { ip4, ip6, ipString, type IpAddr } from '../endpoint/addr.js';
import type { TcpDecision, UdpDecision } from '../endpoint/upstream.js';
import { directTcp, directUdp, type DirectOptions } from '../egress/direct.js';
import { compileRoute, type CompiledRoute } from '../routes/policy.js';
import type { Route } from '../routes/route.js';
import type { NetworkSpec } from '../model.js';
import { localDnsTcp } from './local-dns.js';
import { isForbiddenDestination } from './forbidden.js';
import type { PingEgress } from '../egress/ping.js';
import { TokenBucket } from '../gateway/icmp.js';
import { ipv4IcmpFrame, ipv6IcmpFrame } from '../gateway/frames.js';
import { torTcp, type TorEgressDeps } from '../egress/tor.js';
import type { SocksAuth } from '../tor/socks-resolve.js';
import type { Automap } from '../tor/automap.js';

/** What the router needs of Tor: the SOCKS port while ready, per-VM credentials, the automap. */
export interface TorAccess extends TorEgressDeps {
  creds(vm: string): SocksAuth;
  automap: Automap;
  resolver: Resolver;
}

export interface RouterVm {
  name: string;
  /** The VM's fixed MAC, null until learned. */
  mac: number | null;
  /** Static address from `vm attach --ip`. */
  ip: number | null;
}

export interface RouterDeps {
  spec: NetworkSpec;
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
}

interface VmState {
  ev: EndpointVm;
  compiled: CompiledRoute;
  /** Source address learned when the VM has neither a static address nor a lease. */
  learned4: number | null;
}

export class NetRouter implements GatewayHandler {
  readonly gnet: GatewayNet;
  readonly services: GatewayServices;
  readonly endpoint: Endpoint;
  readonly zone: LocalZone;
  readonly counters: RouterCounters = { torRefused: 0, torDropped: 0, spoofed: 0, noRoute: 0, invalid: 0, viaDropped: 0, icmpDropped: 0 };
  private readonly vms = new Map<string, VmState>();
  private readonly pingBuckets = new Map<string, TokenBucket>();
  private readonly limitLogged = new Map<string, number>();
  private readonly out: Buffer[] = [];
  private flushQueued = false;
  private timer: NodeJS.Timeout | null = null;
  private readonly wall = (): number => Date.now();
  private readonly mono = (): number => performance.now();

  constructor(private readonly d: RouterDeps) {
    const { spec, network } = d;
    this.gnet = makeGatewayNet({
      name: spec.name,
      subnet: spec.subnet,
      gatewayIp: spec.gateway,
      gatewayMac: network.gatewayMac,
      mtu: spec.mtu,
      ipv6: spec.ipv6,
    });
    this.zone = new LocalZone(this.gnet);
    const none = new NoneResolver(this.zone);
    const direct = new LocalFirstResolver(this.zone, d.upstreamDns);
    const torDns = d.tor !== undefined ? new LocalFirstResolver(this.zone, d.tor.resolver) : undefined;
    const resolver = new RoutedResolver((vm) => {
      const r = d.routeOf(vm);
      // Any Tor use resolves through Tor: a name looked up elsewhere would leak what the VM visits.
      if (r.kind === 'tor' || ('torPorts' in r && r.torPorts !== undefined)) return torDns ?? none;
      return r.kind === 'direct' ? direct : undefined;
    }, none);
    this.services = new GatewayServices(this.gnet, {
      resolver,
      dhcp: {
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
            if (e.type === 'bound' || e.type === 'renewed') this.zone.setHost(vm.name, { ipv4: e.lease.ip });
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
      onLimit: (vm, table, limit) => {
        const now = this.wall();
        const key = `${vm.name}|${table}`;
        if ((this.limitLogged.get(key) ?? -Infinity) > now - 60_000) return;
        this.limitLogged.set(key, now);
        d.log.warn({ vm: vm.name, table, limit }, `${table === 'tcp' ? 'TCP connection' : 'UDP flow'} limit reached: new ${table === 'tcp' ? 'connections get RST' : 'flows are dropped'}`);
      },
      mss4: spec.mtu - 40,
      mss6: spec.mtu - 60,
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
      s = { ev: { name, l2: { vmMac: vm.mac, gwMac: this.gnet.gatewayMac } }, compiled: compileRoute(this.d.routeOf(name)), learned4: null };
      this.vms.set(name, s);
    }
    return s;
  }

  /** The VM's route changed: recompile and reset the flows it no longer allows. */
  routeChanged(name: string): number {
    const s = this.vms.get(name);
    if (s === undefined) return 0;
    s.compiled = compileRoute(this.d.routeOf(name));
    return this.endpoint.recheck(s.ev);
  }

  vmAttached(name: string, staticIp: number | null): void {
    this.vms.delete(name);
    if (staticIp !== null) this.zone.setHost(name, { ipv4: staticIp });
  }

  vmDetached(name: string, mac: number | null): void {
    this.endpoint.dropVm(name);
    this.pingBuckets.delete(name);
    this.vms.delete(name);
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

  // --- frames -----------------------------------------------------------------------------

  input(frames: readonly Buffer[], from: Member): void {
    const now = this.wall();
    for (const f of frames) this.frame(f, from, now);
    this.flush();
  }

  private frame(f: Buffer, from: Member, now: number): void {
    const d = dissect(f);
    if (d.kind === 'invalid') {
      this.counters.invalid++;
      return;
    }
    if (d.kind === 'other') return;
    const sv = this.services;
    if (d.kind === 'arp') {
      if (d.arp.op === 1) this.push(sv.arp.handle(d.eth, d.arp, now));
      return;
    }
    const vm = this.d.vm(from.vm);
    const s = this.stateOf(from.vm);
    if (vm === undefined || s === undefined) return;
    if (d.kind === 'ipv4') {
      const { eth, ip, udp, icmp } = d;
      // DHCP comes from 0.0.0.0 before the VM has an address.
      if (udp !== undefined && udp.dstPort === 67) {
        this.push(sv.dhcp.handle(eth, ip, udp, now));
        return;
      }
      if (!this.sourceOk4(vm, s, ip.src)) {
        this.counters.spoofed++;
        return;
      }
      if (ip.dst === this.gnet.gatewayIp) {
        if (icmp !== undefined) {
          if (icmp.kind === 'echo-request') this.push(sv.icmp.echoV4(eth, ip, icmp));
          return;
        }
        if (udp !== undefined && udp.dstPort === 53) {
          this.later(sv.dns.handleUdp4(eth, ip, udp, from.vm, now));
          return;
        }
      }
      if (ip.dst === 0xffffffff || ip.dst === this.gnet.broadcast || ip.dst >>> 28 === 0xe) return;
      if (ip.moreFragments || ip.fragmentOffset !== 0) {
        this.counters.invalid++;
        return;
      }
      if (inSubnet(ip.dst, this.gnet.subnet) && ip.dst !== this.gnet.gatewayIp) {
        // Another VM's address sent to the gateway MAC: the VM should use the switch.
        this.counters.noRoute++;
        return;
      }
      const src = ip4(ip.src);
      const dst = ip4(ip.dst);
      const packet = eth.payload.subarray(0, ip.totalLength);
      if (ip.protocol === IPPROTO_TCP) this.endpoint.tcpInput(s.ev, src, dst, ip.payload, packet);
      else if (ip.protocol === IPPROTO_UDP) this.endpoint.udpInput(s.ev, src, dst, ip.payload, packet);
      else if (icmp?.kind === 'echo-request' && this.pingOut(s, vm, dst, icmp.id, icmp.seq, icmp.data)) return;
      else {
        // ICMP beyond the gateway's echo (and other protocols) does not leave.
        this.counters.icmpDropped++;
        if (ip.dst === this.gnet.gatewayIp && icmp === undefined) this.push(sv.icmp.errorV4(eth, packet, 'protocol-unreachable', now));
      }
      return;
    }
    // IPv6
    const { eth, ip, udp, icmp } = d;
    const g6 = this.gnet.ipv6;
    if (g6 === undefined) return;
    if (icmp !== undefined && (icmp.kind === 'neighbor-solicitation' || icmp.kind === 'router-solicitation')) {
      this.pushAll(sv.ndp?.handle(eth, ip, icmp, now) ?? []);
      return;
    }
    const linkLocal = ip.src[0] === 0xfe && (ip.src[1]! & 0xc0) === 0x80;
    if (!linkLocal && !inIpv6Prefix(ip.src, g6.prefix, g6.length)) {
      this.counters.spoofed++;
      return;
    }
    if (isGatewayIpv6(this.gnet, ip.src)) {
      this.counters.spoofed++;
      return;
    }
    if (isGatewayIpv6(this.gnet, ip.dst)) {
      if (icmp !== undefined) {
        if (icmp.kind === 'echo-request') this.push(sv.icmp.echoV6(eth, ip, icmp));
        return;
      }
      if (udp !== undefined && udp.dstPort === 53) {
        this.later(sv.dns.handleUdp6(eth, ip, udp, from.vm, now));
        return;
      }
    }
    if (ip.dst[0] === 0xff || ip.fragment !== undefined) return;
    if (linkLocal) return; // link-local sources cannot be routed
    if (inIpv6Prefix(ip.dst, g6.prefix, g6.length) && !isGatewayIpv6(this.gnet, ip.dst)) {
      this.counters.noRoute++;
      return;
    }
    const src = ip6(ip.src);
    const dst = ip6(ip.dst);
    const packet = eth.payload.subarray(0, 40 + ip.payloadLength);
    if (ip.protocol === IPPROTO_TCP) this.endpoint.tcpInput(s.ev, src, dst, ip.payload, packet);
    else if (ip.protocol === IPPROTO_UDP) this.endpoint.udpInput(s.ev, src, dst, ip.payload, packet);
    else if (icmp?.kind === 'echo-request' && this.pingOut(s, vm, dst, icmp.id, icmp.seq, icmp.data, src)) return;
    else this.counters.icmpDropped++;
  }

  /**
   * A direct-routed VM's echo request leaves through an unprivileged ping socket (where the
   * host allows them); the reply comes back as from the destination. Rate-limited per VM.
   */
  private pingOut(s: VmState, vm: RouterVm, dst: IpAddr, id: number, seq: number, data: Uint8Array, src6?: IpAddr): boolean {
    const ping = this.d.ping;
    const route = s.compiled;
    if (ping === undefined || route.route.kind !== 'direct' || isForbiddenDestination(dst)) return false;
    if ((dst.v === 4 ? route.egress4(dst.n, 0) : route.egress6(dst.b, 0)) !== 'direct') return false;
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
    s.learned4 = src;
    return true;
  }

  // --- policy -----------------------------------------------------------------------------

  private isGateway(dst: IpAddr): boolean {
    return dst.v === 4 ? dst.n === this.gnet.gatewayIp : isGatewayIpv6(this.gnet, dst.b);
  }

  /** `direct.hostLoopback`: a direct-routed VM reaches the host's loopback at the gateway address. */
  private hostLoopback(vm: EndpointVm): boolean {
    return this.d.direct.hostLoopback === true && this.vms.get(vm.name)?.compiled.route.kind === 'direct';
  }

  private tcpPolicy(vm: EndpointVm, dst: IpAddr, port: number): TcpDecision {
    if (this.isGateway(dst)) {
      if (port === 53) return { kind: 'open', upstream: localDnsTcp(this.services.dns, vm.name, this.wall) };
      if (this.hostLoopback(vm)) return { kind: 'open', upstream: directTcp(dst, port, this.d.direct, dst.v === 4 ? '127.0.0.1' : '::1') };
      return { kind: 'reset', reason: 'closed port on the gateway' };
    }
    const s = this.vms.get(vm.name);
    const route = s?.compiled ?? compileRoute({ kind: 'none' });
    const r = route.route;
    if (r.kind === 'tor' || ('torPorts' in r && r.torPorts?.includes(port) === true)) return this.torPolicy(vm, dst, port);
    if (isForbiddenDestination(dst)) return { kind: 'prohibited', reason: 'host-local or special address' };
    switch (r.kind) {
      case 'none':
        return { kind: 'prohibited', reason: 'route none' };
      case 'via':
        this.counters.viaDropped++;
        return { kind: 'drop', reason: 'routed via another VM' };
      case 'direct': {
        const ok = dst.v === 4 ? route.egress4(dst.n, port) : route.egress6(dst.b, port);
        if (ok !== 'direct') return { kind: 'prohibited', reason: 'not in the allow-list' };
        return { kind: 'open', upstream: directTcp(dst, port, this.d.direct) };
      }
    }
  }

  /** Through Tor, or reset: never any other way (fail closed). */
  private torPolicy(vm: EndpointVm, dst: IpAddr, port: number): TcpDecision {
    const tor = this.d.tor;
    if (tor === undefined) return { kind: 'reset', reason: 'Tor is not configured' };
    if (tor.socks() === null) {
      this.counters.torRefused++;
      return { kind: 'reset', reason: 'Tor is not ready' };
    }
    let host: string;
    if (dst.v === 4 && tor.automap.contains(dst.n)) {
      const name = tor.automap.lookup(dst.n);
      if (name === undefined) return { kind: 'reset', reason: 'unmapped automap address' };
      host = name;
    } else {
      // Tor by IP; never towards this host's own or special addresses.
      if (isForbiddenDestination(dst)) return { kind: 'reset', reason: 'host-local or special address' };
      host = ipString(dst);
    }
    return { kind: 'open', upstream: torTcp(tor, tor.creds(vm.name), host, port) };
  }

  private udpPolicy(vm: EndpointVm, dst: IpAddr, port: number): UdpDecision {
    if (this.isGateway(dst)) {
      if (this.hostLoopback(vm)) return { kind: 'open', upstream: directUdp(dst, port, this.d.direct, dst.v === 4 ? '127.0.0.1' : '::1') };
      return { kind: 'drop', reason: 'closed port on the gateway' };
    }
    if (isForbiddenDestination(dst)) return { kind: 'prohibited', reason: 'host-local or special address' };
    const s = this.vms.get(vm.name);
    const route = s?.compiled ?? compileRoute({ kind: 'none' });
    if (route.route.kind === 'direct') {
      const ok = dst.v === 4 ? route.egress4(dst.n, port) : route.egress6(dst.b, port);
      if (ok === 'direct') return { kind: 'open', upstream: directUdp(dst, port, this.d.direct) };
      return { kind: 'prohibited', reason: 'not in the allow-list' };
    }
    if (route.route.kind === 'via') {
      this.counters.viaDropped++;
      return { kind: 'drop', reason: 'routed via another VM' };
    }
    if (route.route.kind === 'tor') {
      this.counters.torDropped++;
      return { kind: 'drop', reason: 'UDP does not go through Tor' };
    }
    return { kind: 'prohibited', reason: 'route none' };
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

  private pushAll(fs: Buffer[]): void {
    for (const f of fs) this.out.push(f);
  }

  private later(p: Promise<Buffer | null>): void {
    p.then(
      (f) => {
        if (f !== null) this.send(f);
      },
      (e: Error) => this.d.log.warn({ err: e.message }, 'DNS answer failed'),
    );
  }

  /** Frames produced outside an input batch (host sockets, timers) go out at the end of the tick. */
  private send(f: Buffer): void {
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
    this.d.network.fromGateway(batch);
  }

  /** Periodic gateway work (router advertisements, lease expiry). */
  private schedule(): void {
    const next = this.services.nextDeadline();
    if (this.timer !== null) clearTimeout(this.timer);
    const delay = next === undefined ? 60_000 : Math.max(0, Math.min(60_000, next - this.wall()));
    this.timer = setTimeout(() => {
      this.pushAll(this.services.poll(this.wall()));
      this.flush();
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

  leases(): DhcpSnapshot {
    return this.services.dhcp.snapshot();
  }

  restoreLeases(snap: unknown): void {
    this.services.dhcp.restore(snap, this.wall());
    for (const l of this.services.dhcp.leases()) {
      const vm = this.d.vmByMac(l.mac);
      if (vm !== undefined && l.state === 'bound') this.zone.setHost(vm.name, { ipv4: l.ip });
    }
  }

  close(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.endpoint.close();
  }
}
