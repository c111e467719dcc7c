/**
 * An in-memory port, as gVisor's link/channel endpoint: the test plays the VM's device.
 *
 * - `inject(...frames)` is one read burst: the frames go to the network's handler as one batch,
 *   as views into a receive buffer the port reuses (and scribbles over once the handler
 *   returns), with an array it reuses too, so anything that keeps a view past the call, as the
 *   Port contract forbids, sees garbage instead of passing by luck.
 * - Frames the network sends are copied into a queue. `next(predicate)` takes the first queued
 *   frame that matches, or waits for one (resolved from `send`, never by polling);
 *   `take(predicate)` takes every queued match now.
 *
 * Layer 2, no virtio-net header. Like a real port it never throws on the data path: frames
 * that do not fit the bounded queue are dropped and counted ('queue-full').
 */
import type { DropReason, FrameHandler, Port, PortStats, PortStatus } from '../../plugins/types.js';
import { maxFrameFor } from '../../plugins/types.js';

export type FramePredicate = (frame: Buffer) => boolean;

export interface MemPortOptions {
  /** The network's MTU (frames up to mtu + 18 bytes are accepted); default 1500. */
  mtu?: number;
  /** Frames held for the test before `send` drops; default 4096. */
  queueLimit?: number;
  /** Overwrite the receive buffer after each batch (default true). */
  poison?: boolean;
}

interface Waiter {
  readonly predicate: FramePredicate;
  resolve(f: Buffer): void;
  reject(e: Error): void;
  timer: NodeJS.Timeout;
}

/** Filled into the receive buffer after every batch. */
const POISON = 0xa5;

export class MemPort implements Port {
  readonly kind = 'fd' as const;
  readonly layer = 2 as const;
  readonly vnetHdrLen = 0;
  readonly maxFrame: number;
  /** Every frame the network sent, in order (copies), whether taken or not. */
  readonly sent: Buffer[] = [];
  private readonly queue: Buffer[] = [];
  private readonly waiters: Waiter[] = [];
  private handler: FrameHandler = () => {};
  private rx = Buffer.alloc(0);
  private readonly batch: Buffer[] = [];
  private readonly queueLimit: number;
  private readonly poison: boolean;
  private closed = false;
  private readonly counts: PortStats = { rxFrames: 0, rxBytes: 0, txFrames: 0, txBytes: 0, drops: {} };

  constructor(
    readonly name: string,
    opts: MemPortOptions = {},
  ) {
    this.maxFrame = maxFrameFor(opts.mtu ?? 1500);
    this.queueLimit = opts.queueLimit ?? 4096;
    this.poison = opts.poison ?? true;
  }

  onFrames(handler: FrameHandler): void {
    this.handler = handler;
  }

  /**
   * One batch from the VM. Frames longer than `maxFrame` are dropped here ('oversize'), as a
   * device read would never deliver them.
   */
  inject(...frames: Buffer[]): void {
    if (this.closed || frames.length === 0) return;
    let total = 0;
    for (const f of frames) total += f.length;
    if (this.rx.length < total) this.rx = Buffer.alloc(total);
    const batch = this.batch;
    batch.length = 0;
    let off = 0;
    for (const f of frames) {
      if (f.length > this.maxFrame) {
        this.drop('oversize');
        continue;
      }
      f.copy(this.rx, off);
      batch.push(this.rx.subarray(off, off + f.length));
      off += f.length;
      this.counts.rxFrames++;
      this.counts.rxBytes += f.length;
    }
    try {
      if (batch.length > 0) this.handler(batch);
    } finally {
      batch.length = 0;
      if (this.poison) this.rx.fill(POISON, 0, off);
    }
  }

  /** Each frame its own batch (a VM whose frames trickle in one read at a time). */
  injectEach(...frames: Buffer[]): void {
    for (const f of frames) this.inject(f);
  }

  send(frames: readonly Buffer[]): void {
    for (const f of frames) {
      if (this.closed) {
        this.drop('no-peer');
        continue;
      }
      const copy = Buffer.from(f);
      this.counts.txFrames++;
      this.counts.txBytes += copy.length;
      this.sent.push(copy);
      const i = this.waiters.findIndex((w) => w.predicate(copy));
      if (i >= 0) {
        const [w] = this.waiters.splice(i, 1);
        clearTimeout(w!.timer);
        w!.resolve(copy);
        continue;
      }
      if (this.queue.length >= this.queueLimit) {
        this.drop('queue-full');
        continue;
      }
      this.queue.push(copy);
    }
  }

  /**
   * The first sent frame matching `predicate` that no one has taken yet: at once if one is
   * queued, else as soon as the network sends one. Rejects after `timeoutMs` (a guard against
   * a hung test, not a way to wait: the answer comes from `send`).
   */
  next(predicate: FramePredicate = () => true, timeoutMs = 2000): Promise<Buffer> {
    const i = this.queue.findIndex(predicate);
    if (i >= 0) return Promise.resolve(this.queue.splice(i, 1)[0]!);
    if (this.closed) return Promise.reject(new Error(`${this.name}: closed`));
    return new Promise<Buffer>((resolve, reject) => {
      const w: Waiter = {
        predicate,
        resolve,
        reject,
        timer: setTimeout(() => {
          const j = this.waiters.indexOf(w);
          if (j >= 0) this.waiters.splice(j, 1);
          reject(new Error(`${this.name}: no matching frame within ${timeoutMs} ms (${this.queue.length} other frames queued)`));
        }, timeoutMs),
      };
      this.waiters.push(w);
    });
  }

  /** Takes every queued frame matching `predicate` (all of them by default). */
  take(predicate: FramePredicate = () => true): Buffer[] {
    const out: Buffer[] = [];
    for (let i = 0; i < this.queue.length; ) {
      if (predicate(this.queue[i]!)) out.push(...this.queue.splice(i, 1));
      else i++;
    }
    return out;
  }

  /** Queued (sent, not taken) frames. */
  get pending(): readonly Buffer[] {
    return this.queue;
  }

  stats(): PortStats {
    return { ...this.counts, drops: { ...this.counts.drops } };
  }

  status(): PortStatus {
    return this.closed ? { state: 'down', detail: 'closed' } : { state: 'up', detail: 'in memory' };
  }

  async close(): Promise<void> {
    this.closed = true;
    this.handler = () => {};
    for (const w of this.waiters.splice(0)) {
      clearTimeout(w.timer);
      w.reject(new Error(`${this.name}: closed`));
    }
  }

  private drop(r: DropReason): void {
    this.counts.drops[r] = (this.counts.drops[r] ?? 0) + 1;
  }
}
