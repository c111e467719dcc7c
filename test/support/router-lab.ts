/**
 * The router without root, as daemon.ts addNetwork builds it: the real switch (Network),
 * NetRouter, endpoint and gateway services in-process, the VMs played through in-memory ports
 * (mem-port.ts), the outside by in-process upstreams injected as the router's egress, and time
 * by a fake clock. Shared by test/unit/router-mem.test.ts and the ingress fuzzer (test/fuzz).
 */
import { Duplex } from 'node:stream';
import { pino, type Logger } from 'pino';
import { Network, type Member } from '../../daemon/switch/network.js';
import { NetRouter, type RouterEgress, type RouterVm } from '../../daemon/router/net-router.js';
import { DIRECT_TAG } from '../../daemon/egress/direct.js';
import type { IpAddr } from '../../daemon/endpoint/addr.js';
import { UpstreamError, type DatagramUpstream, type StreamUpstream } from '../../daemon/endpoint/upstream.js';
import type { DnsAnswer, Resolver } from '../../daemon/gateway/dns.js';
import type { Route } from '../../daemon/routes/route.js';
import type { NetworkSpec } from '../../daemon/state/model.js';
import { DNS_CLASS_IN, DNS_TYPE_A, type DnsQuestion, type DnsRecord } from '../../daemon/wire/dns.js';
import { MemPort } from './mem-port.js';
import type { TorAccess } from '../../daemon/tor/access.js';

const silent = pino({ level: 'silent' });

/** Dotted quad → number (local, so the tests do not lean on the parsers under test). */
export function ip(s: string): number {
  const p = s.split('.').map(Number);
  if (p.length !== 4 || p.some((x) => !Number.isInteger(x) || x < 0 || x > 255)) throw new Error(`bad address ${s}`);
  return ((p[0]! << 24) | (p[1]! << 16) | (p[2]! << 8) | p[3]!) >>> 0;
}

export const SPEC: NetworkSpec = { name: 'lan', subnet: '10.1.0.0/24', gateway: '10.1.0.1', mtu: 1500 };
export const GW_MAC = 0x0200_00aa_0001;
export const GW = ip('10.1.0.1');
/** Outside addresses (TEST-NET-2/3). */
export const OUT = ip('198.51.100.10');
export const OUT2 = ip('203.0.113.20');
export const UPSTREAM_ANSWER = ip('203.0.113.7');

// --- the fake clock ------------------------------------------------------------------------

export class FakeClock {
  wallMs = 1_700_000_000_000;
  monoMs = 10_000;
  wall(): number {
    return this.wallMs;
  }
  mono(): number {
    return this.monoMs;
  }
  advance(ms: number): void {
    this.wallMs += ms;
    this.monoMs += ms;
  }
}

// --- the outside: in-process upstreams -----------------------------------------------------

/**
 * Two connected in-memory stream ends. Bytes written to one are read from the other; end()
 * is a FIN; destroying one end before both directions ended (an abort) destroys the other
 * with ECONNRESET, as a reset socket would.
 */
export function duplexPair(): [Duplex, Duplex] {
  const ends: Duplex[] = [];
  const make = (peer: () => Duplex): Duplex =>
    new Duplex({
      allowHalfOpen: true,
      read() {},
      write(chunk: Buffer, _enc, cb) {
        peer().push(Buffer.from(chunk));
        cb();
      },
      final(cb) {
        peer().push(null);
        cb();
      },
      destroy(err, cb) {
        const p = peer();
        const clean = this.readableEnded && this.writableFinished;
        if (!clean && !p.destroyed) p.destroy(Object.assign(new Error('ECONNRESET'), { code: 'ECONNRESET' }));
        cb(err);
      },
    });
  ends.push(make(() => ends[1]!), make(() => ends[0]!));
  return [ends[0]!, ends[1]!];
}

/** The far side of one direct TCP flow: the test decides when (and whether) it connects. */
export class FakeTcpUpstream {
  opened = false;
  signal: AbortSignal | null = null;
  /** The far end's socket once accepted. */
  server: ServerEnd | null = null;
  private settle: { resolve(d: Duplex): void; reject(e: Error): void } | null = null;
  readonly upstream: StreamUpstream;

  constructor(
    readonly dst: IpAddr,
    readonly port: number,
    readonly host: string | undefined,
  ) {
    this.upstream = {
      tag: DIRECT_TAG,
      open: (signal) => {
        this.opened = true;
        this.signal = signal;
        return new Promise<Duplex>((resolve, reject) => {
          this.settle = { resolve, reject };
        });
      },
    };
  }

  /** The host connect succeeds: the endpoint gets one end, the test the other. */
  accept(): ServerEnd {
    const [ours, theirs] = duplexPair();
    this.server = new ServerEnd(theirs);
    this.settle!.resolve(ours);
    return this.server;
  }

  refuse(): void {
    this.settle!.reject(new UpstreamError('refused', 'connection refused'));
  }
}

/** The far end's socket, with what it has read so far. */
export class ServerEnd {
  private readonly chunks: Buffer[] = [];
  private bytes = 0;
  private waiters: { n: number; resolve(b: Buffer): void }[] = [];
  ended = false;
  readonly closed: Promise<unknown>;

  constructor(readonly sock: Duplex) {
    sock.on('data', (d: Buffer) => {
      this.chunks.push(d);
      this.bytes += d.length;
      this.check();
    });
    sock.on('end', () => {
      this.ended = true;
    });
    sock.on('error', () => {});
    // (not events.once: that rejects on the 'error' a reset brings)
    this.closed = new Promise((resolve) => sock.once('close', resolve));
  }

  private check(): void {
    const ready = this.waiters.filter((w) => w.n <= this.bytes);
    this.waiters = this.waiters.filter((w) => w.n > this.bytes);
    for (const w of ready) w.resolve(Buffer.concat(this.chunks));
  }

  /** Resolves with everything received once at least `n` bytes have arrived. */
  received(n: number): Promise<Buffer> {
    return new Promise((resolve) => {
      this.waiters.push({ n, resolve });
      this.check();
    });
  }

  get all(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

/** The far side of one direct UDP flow. */
export class FakeUdpFlow {
  readonly received: Buffer[] = [];
  closed = false;
  /** Sends a datagram back to the VM, as from the far end. */
  deliver: ((payload: Buffer) => void) | null = null;
  readonly upstream: DatagramUpstream;

  constructor(
    readonly dst: IpAddr,
    readonly port: number,
  ) {
    this.upstream = {
      tag: DIRECT_TAG,
      open: (deliver) => {
        this.deliver = deliver;
        return {
          send: (payload) => {
            this.received.push(Buffer.from(payload));
          },
          close: () => {
            this.closed = true;
          },
        };
      },
    };
  }
}

export class FakeEgress implements RouterEgress {
  readonly tcps: FakeTcpUpstream[] = [];
  readonly udps: FakeUdpFlow[] = [];
  private tcpWaiters: ((u: FakeTcpUpstream) => void)[] = [];

  tcp(dst: IpAddr, port: number, host?: string): StreamUpstream {
    const u = new FakeTcpUpstream(dst, port, host);
    this.tcps.push(u);
    this.tcpWaiters.shift()?.(u);
    return u.upstream;
  }

  udp(dst: IpAddr, port: number): DatagramUpstream {
    const u = new FakeUdpFlow(dst, port);
    this.udps.push(u);
    return u.upstream;
  }

  /** The next TCP upstream the router asks for (call before the SYN that makes it). */
  nextTcp(): Promise<FakeTcpUpstream> {
    return new Promise((resolve) => this.tcpWaiters.push(resolve));
  }
}

/** The direct route's upstream resolver: every A question is 203.0.113.7. */
export class FakeResolver implements Resolver {
  readonly asked: { vm: string; q: DnsQuestion }[] = [];
  resolve(vm: string, q: DnsQuestion): Promise<DnsAnswer> {
    this.asked.push({ vm, q });
    const answers: DnsRecord<Uint8Array>[] = q.type === DNS_TYPE_A ? [{ name: q.name, type: DNS_TYPE_A, class: DNS_CLASS_IN, ttl: 30, data: { kind: 'a', address: UPSTREAM_ANSWER } }] : [];
    return Promise.resolve({ kind: 'records', answers });
  }
}

// --- the lab: switch + router as daemon.ts addNetwork builds them --------------------------

export interface LabVm {
  readonly name: string;
  readonly port: MemPort;
  readonly member: Member;
  /** Static address (`vm attach --ip`). */
  readonly staticIp: number | null;
}

export interface RouterLabOptions {
  /** The router's logger (default: silent). */
  log?: Logger;
  /** The network (default SPEC). */
  spec?: NetworkSpec;
  /** The router's way out (default: the lab's FakeEgress, which keeps what it is sent). */
  egress?: RouterEgress;
  /** Tor access (default: none configured). */
  tor?: TorAccess;
}

export class RouterLab {
  readonly clock = new FakeClock();
  readonly egress = new FakeEgress();
  readonly spec: NetworkSpec;
  readonly dns = new FakeResolver();
  readonly routes = new Map<string, Route>();
  readonly vms = new Map<string, LabVm>();
  readonly sw: Network;
  readonly router: NetRouter;
  leaseSaves = 0;

  constructor(opts: RouterLabOptions = {}) {
    this.spec = opts.spec ?? SPEC;
    this.sw = new Network({
      name: this.spec.name,
      mtu: this.spec.mtu,
      gatewayMac: GW_MAC,
      clock: () => this.clock.mono(),
      onMacLearned: () => this.router.refreshReservations(this.reservations()),
    });
    this.router = new NetRouter({
      spec: this.spec,
      network: this.sw,
      log: opts.log ?? silent,
      vm: (name) => this.routerVm(name),
      vmByMac: (mac) => {
        for (const v of this.vms.values()) if (v.member.mac === mac) return this.routerVm(v.name);
        return undefined;
      },
      routeOf: (vm) => this.routes.get(vm) ?? { kind: 'none' },
      viaClientsOf: (name) => {
        const out: RouterVm[] = [];
        for (const [vm, r] of this.routes) {
          if (r.kind !== 'via' || r.vm !== name) continue;
          const rv = this.routerVm(vm);
          if (rv !== undefined) out.push(rv);
        }
        return out;
      },
      upstreamDns: this.dns,
      direct: { connectTimeoutMs: 5000 },
      onLeases: () => {
        this.leaseSaves++;
      },
      egress: opts.egress ?? this.egress,
      ...(opts.tor !== undefined ? { tor: opts.tor } : {}),
      clock: { wall: () => this.clock.wall(), mono: () => this.clock.mono() },
      forbidden: () => false,
    });
    this.sw.setGateway(this.router);
  }

  private routerVm(name: string): RouterVm | undefined {
    const v = this.vms.get(name);
    return v === undefined ? undefined : { name, mac: v.member.mac, ip: v.staticIp };
  }

  private reservations(): Map<number, number> {
    const m = new Map<number, number>();
    for (const v of this.vms.values()) if (v.staticIp !== null && v.member.mac !== null) m.set(v.member.mac, v.staticIp);
    return m;
  }

  /** `vm attach`: a port on the switch, the router told, reservations refreshed. */
  attachPort(name: string, o: { mac: number; fixedMac?: boolean; ip?: string; route?: Route }): LabVm {
    const port = new MemPort(`mem:${name}`, { mtu: this.spec.mtu });
    const member = this.sw.attach(name, port, o.fixedMac === false ? null : o.mac);
    const staticIp = o.ip !== undefined ? ip(o.ip) : null;
    this.vms.set(name, { name, port, member, staticIp });
    if (o.route !== undefined) this.routes.set(name, o.route);
    this.router.vmAttached(name, staticIp);
    this.router.refreshReservations(this.reservations());
    return this.vms.get(name)!;
  }

  setRoute(vm: string, r: Route): number {
    this.routes.set(vm, r);
    return this.router.routeChanged(vm);
  }

  close(): void {
    this.router.close();
    this.sw.close();
    for (const v of this.vms.values()) void v.port.close();
  }
}
