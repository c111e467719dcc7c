/**
 * The userland TCP/UDP endpoint of one network: terminates VMs' flows to any destination and
 * hands each to the upstream the router's policy picks. Flows are keyed per VM and 4-tuple;
 * every table is bounded per VM. Time comes from the clock passed in.
 */
import type { Logger } from 'pino';
import type { Duplex } from 'node:stream';
import { TCP_ACK, TCP_RST, TCP_SYN, type TcpSegment } from '../wire/tcp.js';
import type { UdpDatagram } from '../wire/udp.js';
import { resetFor, type CloseReason, type Segment } from './tcp/index.js';
import { TcpFlow, type FlowOwner } from './tcp-flow.js';
import { TimerWheel, type Timed } from './timers.js';
import { flowKey, type FlowAddr, type IpAddr } from './addr.js';
import { tcpFrame, udpFrames, type L2 } from '../gateway/frames.js';
import { TcpCoalescer, type OffloadCounters } from './tcp-coalescer.js';
import type { DatagramChannel, TcpDecision, UdpDecision } from './upstream.js';
import { dataPathFault } from '../errors.js';

// Where bench/offload-path.ts (and older trees) look for it.
export { TcpCoalescer } from './tcp-coalescer.js';

export interface EndpointVm {
  readonly name: string;
  readonly l2: L2;
}

export interface EndpointPolicy {
  tcp(vm: EndpointVm, dst: IpAddr, port: number): TcpDecision;
  udp(vm: EndpointVm, dst: IpAddr, port: number): UdpDecision;
}

export interface EndpointLimits {
  tcpPerVm: number;
  udpPerVm: number;
  udpIdleMs: number;
}

export const DEFAULT_LIMITS: EndpointLimits = { tcpPerVm: 1024, udpPerVm: 256, udpIdleMs: 60_000 };

export interface EndpointOptions {
  log: Logger;
  clock: () => number;
  policy: EndpointPolicy;
  /** Frames to a VM (through the network). */
  send(frame: Buffer): void;
  /** ICMP errors are the router's: it knows the addresses and the rate limit. */
  prohibited(vm: EndpointVm, packet: Buffer, v: 4 | 6, reason: 'admin' | 'unreachable'): void;
  mss4: number;
  mss6: number;
  /** The network's MTU: UDP datagrams to a VM larger than this are fragmented. */
  mtu: number;
  /**
   * Whether frames to `vm` may be offload frames (its port has a virtio-net header and nothing
   * needs plain frames, e.g. a capture): TCP then goes as super-frames with NEEDS_CSUM.
   */
  offload?(vm: EndpointVm): boolean;
  /** A VM hit a per-VM table limit (for a rate-limited log line). */
  onLimit?(vm: EndpointVm, table: 'tcp' | 'udp', limit: number): void;
  limits?: Partial<EndpointLimits>;
}

export interface EndpointCounters extends OffloadCounters {
  tcpOpened: number;
  tcpRefused: number;
  tcpLimit: number;
  udpOpened: number;
  udpLimit: number;
  udpDropped: number;
  /** Segments from VMs longer than the connection's MSS (a VM's TSO super-frame taken whole). */
  tcpSuperIn: number;
}

class UdpFlow implements Timed {
  deadline: number | null = null;
  queued: number | null = null;
  channel: DatagramChannel | null = null;
  constructor(
    readonly vm: EndpointVm,
    readonly key: string,
    readonly addr: FlowAddr,
    readonly tag: string,
    private readonly expire: (f: UdpFlow) => void,
  ) {}
  fire(): void {
    this.expire(this);
  }
}

/** Per-VM counters, shown in `mvnet status`. */
export interface VmFlowCounters {
  tcpLimit: number;
  udpLimit: number;
  tcpRefused: number;
  udpDropped: number;
}

interface VmFlows {
  tcp: Map<string, TcpFlow>;
  udp: Map<string, UdpFlow>;
  counters: VmFlowCounters;
}

export class Endpoint implements FlowOwner {
  private readonly vms = new Map<string, VmFlows>();
  private readonly wheel: TimerWheel;
  private limits: EndpointLimits;
  readonly counters: EndpointCounters = { tcpOpened: 0, tcpRefused: 0, tcpLimit: 0, udpOpened: 0, udpLimit: 0, udpDropped: 0, tcpSuperOut: 0, tcpOffloadSegments: 0, tcpOffloadFrames: 0, tcpSuperIn: 0 };
  private readonly coalescer: TcpCoalescer;
  private readonly vmOf = new WeakMap<TcpFlow, EndpointVm>();

  constructor(private readonly opts: EndpointOptions) {
    this.wheel = new TimerWheel(opts.clock);
    this.limits = { ...DEFAULT_LIMITS, ...opts.limits };
    this.coalescer = new TcpCoalescer((f) => opts.send(f), this.counters);
  }

  now(): number {
    return this.opts.clock();
  }

  /** New limits for new flows (config reload); flows already open stay. */
  setLimits(limits: Partial<EndpointLimits>): void {
    this.limits = { ...this.limits, ...limits };
  }

  private flowsOf(vm: string): VmFlows {
    let f = this.vms.get(vm);
    if (f === undefined) {
      f = { tcp: new Map(), udp: new Map(), counters: { tcpLimit: 0, udpLimit: 0, tcpRefused: 0, udpDropped: 0 } };
      this.vms.set(vm, f);
    }
    return f;
  }

  // --- TCP -------------------------------------------------------------------------------

  /**
   * A TCP segment from `vm`, already parsed and checksum-verified by the router. `packet` is
   * the whole IP packet (for ICMP quotes); both are valid only during the call.
   */
  tcpInput(vm: EndpointVm, src: IpAddr, dst: IpAddr, t: TcpSegment, packet: Buffer): void {
    const addr: FlowAddr = { vmIp: src, vmPort: t.srcPort, remoteIp: dst, remotePort: t.dstPort };
    const key = flowKey(6, addr);
    const seg = toSegment(t);
    if (t.payload.length > (src.v === 4 ? this.opts.mss4 : this.opts.mss6)) this.counters.tcpSuperIn++;
    const flows = this.flowsOf(vm.name);
    const existing = flows.tcp.get(key);
    if (existing !== undefined) {
      if (existing.input(seg, this.now())) return;
      // A SYN reopening a TIME-WAIT 4-tuple: the old flow closed, a new one starts below.
      flows.tcp.delete(key);
    }
    if ((t.flags & (TCP_SYN | TCP_ACK | TCP_RST)) !== TCP_SYN) {
      // No connection: a closed port's answer (never to a RST).
      const r = resetFor(seg);
      if (r !== null) this.emitFor(vm, addr, r);
      return;
    }
    if (flows.tcp.size >= this.limits.tcpPerVm) {
      this.counters.tcpLimit++;
      flows.counters.tcpLimit++;
      this.opts.onLimit?.(vm, 'tcp', this.limits.tcpPerVm);
      this.emitFor(vm, addr, resetFor(seg)!);
      return;
    }
    const d = this.opts.policy.tcp(vm, dst, t.dstPort);
    if (d.kind !== 'open') {
      this.counters.tcpRefused++;
      flows.counters.tcpRefused++;
      if (d.kind === 'reset') this.emitFor(vm, addr, resetFor(seg)!);
      else if (d.kind === 'prohibited') this.opts.prohibited(vm, packet, src.v, 'admin');
      return;
    }
    this.counters.tcpOpened++;
    const flow = new TcpFlow(this, vm.name, key, addr, d.upstream, { syn: seg }, this.connOptions(src.v));
    this.vmOf.set(flow, vm);
    flows.tcp.set(key, flow);
    this.reschedule(flow);
  }

  /**
   * Buffers sized to the MTU: the receive window is only credit (bytes go straight on to the
   * upstream socket), and the send buffer fills only while the VM is slower than the upstream,
   * so 32 segments (at least 1 MiB) cost nothing until used and keep jumbo-MTU links busy.
   */
  private connOptions(v: 4 | 6): { mss: number; defaultPeerMss: number; rcvBuf: number; sndBuf: number } {
    const mss = v === 4 ? this.opts.mss4 : this.opts.mss6;
    const buf = Math.max(1 << 20, 32 * mss);
    return { mss, defaultPeerMss: v === 4 ? 536 : 1220, rcvBuf: buf, sndBuf: buf };
  }

  private emitFor(vm: EndpointVm, a: FlowAddr, seg: Segment): void {
    if (this.opts.offload?.(vm) === true) this.coalescer.push(vm.l2, a, seg);
    else {
      // Frames keep their order to the VM: what is being coalesced goes first.
      this.coalescer.flush();
      this.opts.send(tcpFrame(vm.l2, a.remoteIp, a.remotePort, a.vmIp, a.vmPort, seg));
    }
  }

  emit(f: TcpFlow, seg: Segment): void {
    const vm = this.vmOf.get(f);
    if (vm !== undefined) this.emitFor(vm, f.addr, seg);
  }

  reschedule(f: TcpFlow): void {
    this.wheel.schedule(f, f.conn.closed ? null : f.conn.nextDeadline());
  }

  closed(f: TcpFlow, _reason: CloseReason): void {
    const flows = this.vms.get(f.vm);
    if (flows?.tcp.get(f.key) === f) flows.tcp.delete(f.key);
    this.wheel.schedule(f, null);
  }

  unreachable(f: TcpFlow): void {
    const vm = this.vmOf.get(f);
    if (vm === undefined) return;
    // Quote a minimal header of the VM's SYN so its stack can match the error.
    this.opts.prohibited(vm, Buffer.alloc(0), f.addr.vmIp.v, 'unreachable');
  }

  /**
   * Opens a connection into the VM (port forwards): from `src`:ephemeral to the VM's
   * `vmIp`:`port`, bridged to the already connected host socket. Returns false when the VM's
   * flow table is full.
   */
  openInto(vm: EndpointVm, vmIp: IpAddr, port: number, src: IpAddr, sock: Duplex, tag: string): boolean {
    const flows = this.flowsOf(vm.name);
    if (flows.tcp.size >= this.limits.tcpPerVm) {
      this.counters.tcpLimit++;
      return false;
    }
    let addr: FlowAddr | null = null;
    let key = '';
    for (let i = 0; i < 64; i++) {
      const eph = 32768 + Math.floor(Math.random() * 28232);
      const a: FlowAddr = { vmIp, vmPort: port, remoteIp: src, remotePort: eph };
      key = flowKey(6, a);
      if (!flows.tcp.has(key)) {
        addr = a;
        break;
      }
    }
    if (addr === null) return false;
    const upstream = { tag, open: () => Promise.reject(new Error('already connected')) };
    const flow = new TcpFlow(this, vm.name, key, addr, upstream, { connected: sock }, this.connOptions(vmIp.v));
    this.vmOf.set(flow, vm);
    flows.tcp.set(key, flow);
    this.reschedule(flow);
    return true;
  }

  // --- UDP -------------------------------------------------------------------------------

  /** A UDP datagram from `vm`, parsed and verified by the router (valid only during the call). */
  udpInput(vm: EndpointVm, src: IpAddr, dst: IpAddr, u: UdpDatagram, packet: Buffer): void {
    const addr: FlowAddr = { vmIp: src, vmPort: u.srcPort, remoteIp: dst, remotePort: u.dstPort };
    const key = flowKey(17, addr);
    const flows = this.flowsOf(vm.name);
    let flow = flows.udp.get(key);
    if (flow === undefined) {
      if (flows.udp.size >= this.limits.udpPerVm) {
        this.counters.udpLimit++;
        flows.counters.udpLimit++;
        this.opts.onLimit?.(vm, 'udp', this.limits.udpPerVm);
        return;
      }
      const d = this.opts.policy.udp(vm, dst, u.dstPort);
      if (d.kind !== 'open') {
        this.counters.udpDropped++;
        flows.counters.udpDropped++;
        if (d.kind === 'prohibited') this.opts.prohibited(vm, packet, src.v, 'admin');
        return;
      }
      const f = new UdpFlow(vm, key, addr, d.upstream.tag, (x) => this.closeUdp(x));
      f.channel = d.upstream.open(
        (payload) => {
          try {
            this.coalescer.flush();
            for (const f of udpFrames(vm.l2, addr.remoteIp, addr.remotePort, addr.vmIp, addr.vmPort, payload, this.opts.mtu)) this.opts.send(f);
            this.wheel.schedule(f, this.now() + this.limits.udpIdleMs);
          } catch (e) {
            dataPathFault('udp upstream datagram', e, { vm: vm.name, tag: f.tag });
          }
        },
        () => {
          try {
            this.closeUdp(f);
          } catch (e) {
            dataPathFault('udp upstream error', e, { vm: vm.name, tag: f.tag });
          }
        },
      );
      flows.udp.set(key, f);
      this.counters.udpOpened++;
      flow = f;
    }
    this.wheel.schedule(flow, this.now() + this.limits.udpIdleMs);
    flow.channel?.send(Buffer.from(u.payload));
  }

  private closeUdp(f: UdpFlow): void {
    const flows = this.vms.get(f.vm.name);
    if (flows?.udp.get(f.key) === f) flows.udp.delete(f.key);
    this.wheel.schedule(f, null);
    f.channel?.close();
    f.channel = null;
  }

  // --- management ------------------------------------------------------------------------

  /**
   * After a route change: every flow of `vm` that `keep` (the router's decision, asked again)
   * no longer gives the same upstream is reset (TCP) or closed (UDP). Returns how many.
   */
  recheck(vm: string, keep: (proto: 'tcp' | 'udp', addr: FlowAddr, tag: string) => boolean): number {
    const flows = this.vms.get(vm);
    if (flows === undefined) return 0;
    let n = 0;
    for (const f of [...flows.tcp.values()]) {
      if (!keep('tcp', f.addr, f.tag)) {
        f.reset();
        n++;
      }
    }
    for (const f of [...flows.udp.values()]) {
      if (!keep('udp', f.addr, f.tag)) {
        this.closeUdp(f);
        n++;
      }
    }
    return n;
  }

  /** Resets every TCP flow whose upstream has `tag` (e.g. Tor went down). Returns how many. */
  resetTag(tag: string): number {
    let n = 0;
    for (const flows of this.vms.values()) {
      for (const f of [...flows.tcp.values()]) {
        if (f.tag === tag) {
          f.reset();
          n++;
        }
      }
    }
    return n;
  }

  /** The VM left: everything of it is reset and forgotten. */
  dropVm(vm: string): void {
    const flows = this.vms.get(vm);
    if (flows === undefined) return;
    for (const f of [...flows.tcp.values()]) f.reset();
    for (const f of [...flows.udp.values()]) this.closeUdp(f);
    this.vms.delete(vm);
  }

  flowCount(vm: string): { tcp: number; udp: number } & VmFlowCounters {
    const f = this.vms.get(vm);
    const c = f?.counters ?? { tcpLimit: 0, udpLimit: 0, tcpRefused: 0, udpDropped: 0 };
    return { tcp: f?.tcp.size ?? 0, udp: f?.udp.size ?? 0, ...c };
  }

  close(): void {
    for (const vm of [...this.vms.keys()]) this.dropVm(vm);
    this.coalescer.flush();
    this.wheel.close();
  }
}

function toSegment(t: TcpSegment): Segment {
  const o = t.options;
  return {
    seq: t.seq,
    ack: t.ack,
    flags: t.flags & 0x1f,
    window: t.window,
    options: {
      mss: o.mss,
      wscale: o.windowScale,
      sackPermitted: o.sackPermitted,
      sack: o.sack?.map((b) => [b.left, b.right] as const),
      ts: o.timestamp !== undefined ? [o.timestamp.value, o.timestamp.echo] : undefined,
    },
    payload: t.payload,
  };
}
