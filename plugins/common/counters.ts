import type { DropReason, PortStats } from '../types.js';

/** Mutable counters behind Port.stats(); plain fields so the hot path only adds. */
export class Counters {
  rxFrames = 0;
  rxBytes = 0;
  txFrames = 0;
  txBytes = 0;
  private readonly drops: Partial<Record<DropReason, number>> = {};

  drop(reason: DropReason, n = 1): void {
    this.drops[reason] = (this.drops[reason] ?? 0) + n;
  }

  snapshot(): PortStats {
    return {
      rxFrames: this.rxFrames,
      rxBytes: this.rxBytes,
      txFrames: this.txFrames,
      txBytes: this.txBytes,
      drops: { ...this.drops },
    };
  }
}
