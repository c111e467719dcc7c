/**
 * Makes an L3 port (TUN: bare IP packets) a member of an L2 network. The adapter owns a MAC
 * of its own, answers ARP for the TUN's IPv4 address, resolves neighbours by ARP and wraps or
 * unwraps Ethernet. It is a wrapper around the port, so the switch only ever sees Ethernet.
 */
import type { FrameHandler, Port, PortStats, PortStatus } from '../../plugins/types.js';
import { ARP_LEN, ARP_REPLY, ARP_REQUEST, emitArp, parseArp } from '../wire/arp.js';
import { readMac, writeMac } from '../wire/mac.js';

const ETH_IPV4 = 0x0800;
const ETH_ARP = 0x0806;
const ETH_IPV6 = 0x86dd;
const BROADCAST = 0xffffffffffff;
const MAX_PENDING_IPS = 64;
const MAX_PENDING_PER_IP = 4;
const PENDING_MS = 3000;

export interface L3AdapterOptions {
  mac: number;
  /** The TUN side's IPv4 address, or null to learn it from the first packet it sends. */
  ip: number | null;
  subnet: { network: number; prefix: number };
  gatewayIp: number;
  gatewayMac: number;
  clock: () => number;
}

export class L3Adapter implements Port {
  readonly layer = 2 as const;
  readonly vnetHdrLen = 0;
  readonly kind;
  readonly name;
  readonly maxFrame;
  private handler: FrameHandler = () => {};
  private readonly neighbours = new Map<number, number>();
  private readonly neighbours6 = new Map<string, number>();
  private readonly pending = new Map<number, { since: number; packets: Buffer[] }>();
  private ip: number | null;
  private readonly mask: number;
  private readonly injected: Buffer[] = [];
  private readonly toInner: Buffer[] = [];
  private readonly fromInner: Buffer[] = [];

  constructor(
    private readonly inner: Port,
    private readonly opts: L3AdapterOptions,
  ) {
    this.kind = inner.kind;
    this.name = inner.name;
    this.maxFrame = inner.maxFrame + 14;
    this.ip = opts.ip;
    this.mask = opts.subnet.prefix === 0 ? 0 : (0xffffffff << (32 - opts.subnet.prefix)) >>> 0;
    inner.onFrames((packets) => this.fromTun(packets));
  }

  get mac(): number {
    return this.opts.mac;
  }

  onFrames(handler: FrameHandler): void {
    this.handler = handler;
  }

  private onLink(ip: number): boolean {
    return ((ip & this.mask) >>> 0) === this.opts.subnet.network;
  }

  private fromTun(packets: readonly Buffer[]): void {
    const out = this.fromInner;
    out.length = 0;
    for (const p of packets) {
      const v = p[0]! >> 4;
      let dmac: number;
      let type: number;
      if (v === 4 && p.length >= 20) {
        type = ETH_IPV4;
        const src = p.readUInt32BE(12);
        if (this.ip === null && this.onLink(src)) this.ip = src;
        const dst = p.readUInt32BE(16);
        if (dst === 0xffffffff || (dst | this.mask) >>> 0 === 0xffffffff && this.onLink(dst)) dmac = BROADCAST;
        else if (dst >>> 28 === 0xe) dmac = 0x01005e000000 + (dst & 0x7fffff);
        else if (!this.onLink(dst) || dst === this.opts.gatewayIp) dmac = this.opts.gatewayMac;
        else {
          const m = this.neighbours.get(dst);
          if (m === undefined) {
            this.resolve(dst, p);
            continue;
          }
          dmac = m;
        }
      } else if (v === 6 && p.length >= 40) {
        type = ETH_IPV6;
        if (p[24] === 0xff) dmac = 0x333300000000 + p.readUInt32BE(36);
        else dmac = this.neighbours6.get(p.toString('hex', 24, 40)) ?? this.opts.gatewayMac;
      } else {
        this.innerDrop();
        continue;
      }
      out.push(this.wrap(dmac, type, p));
    }
    if (out.length > 0) this.handler(out);
    out.length = 0;
  }

  private dropped = 0;
  private innerDrop(): void {
    this.dropped++;
  }

  private wrap(dmac: number, type: number, p: Buffer): Buffer {
    const f = Buffer.allocUnsafe(14 + p.length);
    writeMac(f, 0, dmac);
    writeMac(f, 6, this.opts.mac);
    f.writeUInt16BE(type, 12);
    p.copy(f, 14);
    return f;
  }

  /** Queues the packet (bounded) and asks the network who has `dst`. */
  private resolve(dst: number, p: Buffer): void {
    const now = this.opts.clock();
    let e = this.pending.get(dst);
    if (e !== undefined && now - e.since > PENDING_MS) {
      this.pending.delete(dst);
      e = undefined;
    }
    if (e === undefined) {
      if (this.pending.size >= MAX_PENDING_IPS) {
        this.dropped++;
        return;
      }
      e = { since: now, packets: [] };
      this.pending.set(dst, e);
    }
    if (e.packets.length < MAX_PENDING_PER_IP) e.packets.push(Buffer.from(p));
    else this.dropped++;
    if (this.ip !== null) this.inject(this.arp(ARP_REQUEST, BROADCAST, 0, dst));
  }

  private arp(op: number, dmac: number, tmac: number, tip: number): Buffer {
    const f = Buffer.alloc(14 + ARP_LEN);
    writeMac(f, 0, dmac);
    writeMac(f, 6, this.opts.mac);
    f.writeUInt16BE(ETH_ARP, 12);
    emitArp({ op, senderMac: this.opts.mac, senderIp: this.ip ?? 0, targetMac: tmac, targetIp: tip }, f, 14);
    return f;
  }

  /** Frames the adapter originates go into the switch after the current batch (no re-entry). */
  private inject(f: Buffer): void {
    if (this.injected.push(f) === 1) {
      queueMicrotask(() => {
        const batch = this.injected.splice(0);
        this.handler(batch);
      });
    }
  }

  /** Frames from the switch towards the TUN. */
  send(frames: readonly Buffer[]): void {
    const out = this.toInner;
    out.length = 0;
    for (const f of frames) {
      if (f.length < 14) continue;
      const type = f.readUInt16BE(12);
      if (type === ETH_IPV4 && f.length >= 34) {
        const src = f.readUInt32BE(26);
        if (this.onLink(src) && src !== this.opts.gatewayIp) this.neighbours.set(src, readMac(f, 6));
        out.push(f.subarray(14));
      } else if (type === ETH_IPV6 && f.length >= 54) {
        this.neighbours6.set(f.toString('hex', 22, 38), readMac(f, 6));
        out.push(f.subarray(14));
      } else if (type === ETH_ARP && f.length >= 14 + ARP_LEN) {
        this.onArp(f);
      } else {
        this.dropped++;
      }
    }
    if (out.length > 0) this.inner.send(out);
    out.length = 0;
  }

  private onArp(f: Buffer): void {
    const arp = parseArp(f.subarray(14));
    if (!arp.ok) return;
    const { op, senderMac: smac, senderIp: sip, targetIp: tip } = arp.value;
    if (sip !== 0 && this.onLink(sip)) {
      this.neighbours.set(sip, smac);
      const e = this.pending.get(sip);
      if (e !== undefined) {
        this.pending.delete(sip);
        const out = e.packets.map((p) => this.wrap(smac, ETH_IPV4, p));
        queueMicrotask(() => this.handler(out));
      }
    }
    if (op === ARP_REQUEST && this.ip !== null && tip === this.ip && sip !== tip) {
      this.inject(this.arp(ARP_REPLY, smac, smac, sip));
    }
  }

  stats(): PortStats {
    const s = this.inner.stats();
    if (this.dropped > 0) s.drops['not-ip'] = (s.drops['not-ip'] ?? 0) + this.dropped;
    return s;
  }

  status(): PortStatus {
    return this.inner.status();
  }

  close(opts?: { remove?: boolean }): Promise<void> {
    return this.inner.close(opts);
  }
}
