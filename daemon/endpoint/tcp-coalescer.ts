/**
 * TCP offload frames to VMs with a virtio-net header: the endpoint's connections emit
 * MSS-sized segments; this merges the ones sent back to back into GSO super-frames.
 */
import { VNET_HDR_LEN } from '../wire/vnet.js';
import { MAX_GSO_SEGMENTS, MIN_GSO_SIZE } from '../wire/gso.js';
import { ACK, FIN, PSH, type Segment } from './tcp/index.js';
import type { FlowAddr } from './addr.js';
import { maxOffloadPayload, offloadTcpFrame, offloadTcpHeadroom, reserveFrame, shrinkFrame, type L2, type TcpHead } from '../gateway/frames.js';

/** The endpoint's counters of offload frames (part of EndpointCounters). */
export interface OffloadCounters {
  /** Offload frames sent to VMs carrying more than one segment (GSO). */
  tcpSuperOut: number;
  /** Segments of the offload frames sent (tcpSuperOut's and single ones). */
  tcpOffloadSegments: number;
  /** Offload frames sent (each one write to the VM's port). */
  tcpOffloadFrames: number;
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
    private readonly counters: OffloadCounters,
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
    // Segments under MIN_GSO_SIZE (a peer's tiny MSS) too: normalizeOffload would refuse the frame.
    const data = len >= MIN_GSO_SIZE && (seg.flags & ~(PSH | FIN)) === ACK && seg.options.sack === undefined && seg.options.mss === undefined;
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
