/**
 * A JS tee for ports that have none: a bounded queue of copies, and a wrapper around send() and
 * onFrames(). Stands in for plugins/common/tee-ring.ts and tee-port.ts (withTee) where those are
 * not available.
 */
import type { FrameHandler, Port } from '../../plugins/types.js';
import type { CaptureRing, RingRecord } from './ring.js';

export class JsRing implements CaptureRing {
  private readonly q: RingRecord[] = [];
  private used = 0;
  dropped = 0;
  written = 0;
  constructor(
    private readonly bytes: number,
    readonly snaplen: number,
  ) {}

  write(frame: Buffer, skip: number, dir: 1 | 2): boolean {
    const len = frame.length - skip;
    const cap = this.snaplen > 0 && len > this.snaplen ? this.snaplen : len;
    if (this.used + cap + 32 > this.bytes) {
      this.dropped++;
      return false;
    }
    const ms = Date.now();
    const ns = Math.round((performance.timeOrigin + performance.now()) * 1e6) % 1e9;
    this.q.push({ frame: Buffer.from(frame.subarray(skip, skip + cap)), origLen: len, dir, gsoType: skip > 0 ? frame[skip - 10 + 1]! : 0, gsoSize: skip > 0 ? frame.readUInt16LE(skip - 10 + 4) : 0, tsSec: Math.floor(ms / 1000), tsNsec: ns });
    this.used += cap + 32;
    this.written++;
    return true;
  }

  drain(fn: (r: RingRecord) => void): number {
    const n = this.q.length;
    for (let i = 0; i < n; i++) fn(this.q[i]!);
    this.q.splice(0, n);
    this.used = 0;
    return n;
  }
}

export function jsTee(port: Port): Port & { tee(ring: CaptureRing | null, dirs: number): void } {
  let ring: JsRing | null = null;
  let dirs = 0;
  let handler: FrameHandler = () => {};
  port.onFrames((frames) => {
    const r = ring;
    if (r !== null && (dirs & 1) !== 0) for (const f of frames) r.write(f, port.vnetHdrLen, 1);
    handler(frames);
  });
  const w: Port & { tee(ring: CaptureRing | null, dirs: number): void } = {
    get kind() {
      return port.kind;
    },
    get name() {
      return port.name;
    },
    get layer() {
      return port.layer;
    },
    get vnetHdrLen() {
      return port.vnetHdrLen;
    },
    get maxFrame() {
      return port.maxFrame;
    },
    get owned() {
      return port.owned;
    },
    onFrames(h) {
      handler = h;
    },
    send(frames) {
      const r = ring;
      if (r !== null && (dirs & 2) !== 0) for (const f of frames) r.write(f, port.vnetHdrLen, 2);
      port.send(frames);
    },
    stats: () => port.stats(),
    status: () => port.status(),
    close: (o) => port.close(o),
    tee(r, d) {
      ring = r instanceof JsRing ? r : null;
      dirs = d;
    },
  };
  return w;
}
