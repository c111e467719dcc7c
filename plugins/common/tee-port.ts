/**
 * Capture for ports without a native tee (the unix stream and fd ports): a wrapper that copies
 * the frames the port delivers (TEE_IN) and the frames handed to its send() (TEE_OUT) into a
 * TeeRing. Ports with their own tee (DevicePort: cut-through frames never reach JS) are returned
 * as they are, so the switch still sees them as cut-through ports.
 *
 * A filter program passed to tee() is ignored: it is a prefilter, and the capture applies its
 * own filter to every record it drains, so the result is the same (only the copy is not saved).
 *
 * While no tee is set the wrapper costs one null check per send() and nothing on receive: the
 * port's handler is the network's own, swapped for a copying one only while a tee runs.
 */
import type { FrameHandler, Port, PortKind, PortStats, PortStatus, DeviceRecord } from '../types.js';
import { TEE_IN, TEE_OUT, type TeeRing } from './tee-ring.js';

/** `port` itself when it has `tee`, else `port` wrapped with a JS tee. */
export function withTee(port: Port): Port {
  if (typeof port.tee === 'function') return port;
  return new TeePort(port);
}

class TeePort implements Port {
  private handler: FrameHandler = () => {};
  private ring: TeeRing | null = null;
  private outRing: TeeRing | null = null;

  constructor(private readonly inner: Port) {}

  get kind(): PortKind {
    return this.inner.kind;
  }
  get name(): string {
    return this.inner.name;
  }
  get layer(): 2 | 3 {
    return this.inner.layer;
  }
  get vnetHdrLen(): number {
    return this.inner.vnetHdrLen;
  }
  get maxFrame(): number {
    return this.inner.maxFrame;
  }
  get owned(): DeviceRecord | undefined {
    return this.inner.owned;
  }

  onFrames(handler: FrameHandler): void {
    this.handler = handler;
    this.install();
  }

  send(frames: readonly Buffer[]): void {
    const ring = this.outRing;
    if (ring !== null) {
      const skip = this.inner.vnetHdrLen;
      for (let i = 0; i < frames.length; i++) ring.write(frames[i]!, skip, TEE_OUT);
    }
    this.inner.send(frames);
  }

  tee(ring: TeeRing | null, dirs: number): void {
    this.outRing = ring !== null && (dirs & TEE_OUT) !== 0 ? ring : null;
    this.ring = ring !== null && (dirs & TEE_IN) !== 0 ? ring : null;
    this.install();
  }

  /** The inner port's handler: the network's own, or a copying one while a TEE_IN tee runs. */
  private install(): void {
    const ring = this.ring;
    const handler = this.handler;
    if (ring === null) {
      this.inner.onFrames(handler);
      return;
    }
    const skip = this.inner.vnetHdrLen;
    this.inner.onFrames((frames) => {
      for (let i = 0; i < frames.length; i++) ring.write(frames[i]!, skip, TEE_IN);
      handler(frames);
    });
  }

  stats(): PortStats {
    return this.inner.stats();
  }

  status(): PortStatus {
    return this.inner.status();
  }

  close(opts?: { remove?: boolean }): Promise<void> {
    this.ring = null;
    this.outRing = null;
    return this.inner.close(opts);
  }
}
