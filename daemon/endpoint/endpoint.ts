/**
 * The userland TCP/UDP endpoint of one network: terminates VMs' flows to any destination and
 * hands each to the upstream the router's policy picks. Flows are keyed per VM and 4-tuple;
 * every table is bounded per VM. Time comes from the clock passed in.
 */
import type { Logger } from 'pino';
import type { Duplex } from 'node:stream';
import { TCP_ACK, TCP_RST, TCP_SYN, type TcpSegment } from '../wire/tcp.js';
import { VNET_HDR_LEN } from '../wire/vnet.js';
import { MAX_GSO_SEGMENTS } from '../wire/gso.js';
import type { UdpDatagram } from '../wire/udp.js';
import { ACK, FIN, PSH, resetFor, type CloseReason, type Segment } from './tcp/index.js';
import { TcpFlow, type FlowOwner } from './tcp-flow.js';
import { TimerWheel, type Timed } from './timers.js';
import { flowKey, type FlowAddr, type IpAddr } from './addr.js';
import { maxOffloadPayload, offloadTcpFrame, offloadTcpHeadroom, reserveFrame, shrinkFrame, tcpFrame, udpFrames, type L2, type TcpHead } from '../gateway/frames.js';
import type { DatagramChannel, TcpDecision, UdpDecision } from './upstream.js';
import { dataPathFault } from '../errors.js';

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

export interface EndpointCounters {
  tcpOpened: number;
  tcpRefused: number;
  tcpLimit: number;
  udpOpened: number;
  udpLimit: number;
  udpDropped: number;
  /** Offload frames sent to VMs carrying more than one segment (GSO). */
  tcpSuperOut: number;
  /** Segments of the offload frames sent (tcpSuperOut's and single ones). */
  tcpOffloadSegments: number;
  /** Offload frames sent (each one write to the VM's port). */
  tcpOffloadFrames: number;
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

/**
 * Turns the MSS-sized segments a connection emits back to back into one offload frame for a
 * VM with a virtio-net header: up to 64 KiB of TCP payload with NEEDS_CSUM and GSO TCPV4/TCPV6
 * (gso_size = the first segment's length), as passt does. The connections keep sending
 * segments (loss recovery stays per segment); only the frames are merged. A segment joins the
 * frame being built when it is of the same flow, starts where the frame ends, has the same
 * ack, window and options, only ACK (and PSH or FIN, which close the frame) for flags, and every
 * segment before it was full size; anything else sends the frame first. Each payload is copied
 * once, straight into its place in the frame (Segments are valid only during emit); the frame
 * goes out at the end of the current task (a microtask), or earlier when something else must
 * go out after it.
 */
export class TcpCoalescer {
  private buf: Buffer | null = null;
  /** Where the payload starts in `buf` (headers and the vnet header before it). */
  private headroom = 0;
  private l2: L2 | null = null;
  private addr: FlowAddr | null = null;
  private head: TcpHead | null = null;
  private nextSeq = 0;
  private payloadLen = 0;
  private gsoSize = 0;
  private lastLen = 0;
  private cap = 0;
  private segments = 0;
  private closed = false;
  private queued = false;
  private readonly flushNow = (): void => {
    this.queued = false;
    this.flush();
  };

  constructor(
    private readonly send: (frame: Buffer) => void,
    private readonly counters: Pick<EndpointCounters, 'tcpSuperOut' | 'tcpOffloadSegments' | 'tcpOffloadFrames'>,
  ) {}

  /** A segment of the flow `a` to the VM behind `l2` (whose port has a vnet header). */
  push(l2: L2, a: FlowAddr, seg: Segment): void {
    const len = seg.payload.length;
    if (this.buf !== null && this.joins(a, seg, len)) {
      seg.payload.copy(this.buf, this.headroom + this.payloadLen);
      this.payloadLen += len;
      this.lastLen = len;
      this.nextSeq = (this.nextSeq + len) >>> 0;
      this.segments++;
      if ((seg.flags & (PSH | FIN)) !== 0) {
        this.head = { ...this.head!, flags: seg.flags };
        this.closed = true;
      }
      if (this.closed || this.payloadLen + this.gsoSize > this.cap) this.flush();
      return;
    }
    this.flush();
    const v = a.vmIp.v;
    const headroom = offloadTcpHeadroom(v, seg);
    // Only plain data segments may grow into a super-frame; the rest go as they are.
    const data = len > 0 && (seg.flags & ~(PSH | FIN)) === ACK && seg.options.sack === undefined && seg.options.mss === undefined;
    const cap = data ? maxOffloadPayload(v, seg) : len;
    const buf = reserveFrame(headroom + Math.max(cap, len, 64));
    seg.payload.copy(buf, headroom);
    this.buf = buf;
    this.headroom = headroom;
    this.l2 = l2;
    this.addr = a;
    this.head = { seq: seg.seq, ack: seg.ack, flags: seg.flags, window: seg.window, options: seg.options };
    this.nextSeq = (seg.seq + len) >>> 0;
    this.payloadLen = len;
    this.gsoSize = len;
    this.lastLen = len;
    this.cap = cap;
    this.segments = 1;
    this.closed = !data || (seg.flags & (PSH | FIN)) !== 0 || len * 2 > cap;
    if (this.closed) this.flush();
    else if (!this.queued) {
      this.queued = true;
      queueMicrotask(this.flushNow);
    }
  }

  private joins(a: FlowAddr, seg: Segment, len: number): boolean {
    const h = this.head!;
    if (this.closed || a !== this.addr || seg.seq !== this.nextSeq || seg.ack !== h.ack || seg.window !== h.window) return false;
    if ((seg.flags & ~(PSH | FIN)) !== ACK || len === 0 || len > this.gsoSize || this.lastLen !== this.gsoSize) return false;
    // A tiny MSS must not make a frame of more segments than a port without offloads would cut.
    if (this.payloadLen + len > this.cap || this.segments >= MAX_GSO_SEGMENTS) return false;
    const o = seg.options;
    const p = h.options;
    if (o.sack !== undefined || o.mss !== undefined || o.wscale !== undefined || o.sackPermitted !== undefined) return false;
    if ((o.ts === undefined) !== (p.ts === undefined)) return false;
    return o.ts === undefined || (o.ts[0] === p.ts![0] && o.ts[1] === p.ts![1]);
  }

  /** Sends the frame being built, if any. */
  flush(): void {
    const buf = this.buf;
    if (buf === null) return;
    this.buf = null;
    const a = this.addr!;
    const frame = offloadTcpFrame(buf, this.l2!, a.remoteIp, a.remotePort, a.vmIp, a.vmPort, this.head!, this.payloadLen, this.gsoSize);
    shrinkFrame(buf, VNET_HDR_LEN + frame.length);
    this.counters.tcpOffloadFrames++;
    this.counters.tcpOffloadSegments += this.segments;
    if (this.segments > 1) this.counters.tcpSuperOut++;
    this.addr = null;
    this.l2 = null;
    this.head = null;
    this.send(frame);
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
