/**
 * The sender's record of what the peer has SACKed above SND.UNA (RFC 2018, a subset of the
 * RFC 6675 scoreboard): disjoint sorted ranges, bounded in number. Used during fast recovery
 * to retransmit the holes, and not trusted across a retransmission timeout (cleared then).
 */
import type { SackRange } from './segment.js';
import { seqDiff, seqGt, seqLe, seqLt, seqMax, seqMin } from './seq.js';

const MAX_RANGES = 32;

export class SackScoreboard {
  private readonly starts: number[] = [];
  private readonly ends: number[] = [];

  get empty(): boolean {
    return this.starts.length === 0;
  }

  get ranges(): number {
    return this.starts.length;
  }

  /** Adds the blocks that lie within (una, sndMax]; invalid blocks are ignored. */
  add(blocks: readonly SackRange[], una: number, sndMax: number): void {
    for (const [s0, e0] of blocks) {
      if (!seqLt(s0, e0) || seqLe(e0, una) || seqGt(e0, sndMax)) continue;
      this.addRange(seqMax(s0, una), e0);
    }
  }

  private addRange(s: number, e: number): void {
    const starts = this.starts;
    const ends = this.ends;
    let i = 0;
    while (i < starts.length && seqLt(ends[i]!, s)) i++;
    // Merge every range that touches [s, e).
    let j = i;
    while (j < starts.length && seqLe(starts[j]!, e)) {
      s = seqMin(s, starts[j]!);
      e = seqMax(e, ends[j]!);
      j++;
    }
    if (j > i) {
      starts.splice(i, j - i, s);
      ends.splice(i, j - i, e);
    } else {
      if (starts.length >= MAX_RANGES) return;
      starts.splice(i, 0, s);
      ends.splice(i, 0, e);
    }
  }

  /** Forgets everything at or below `una`. */
  advance(una: number): void {
    const starts = this.starts;
    const ends = this.ends;
    let k = 0;
    while (k < starts.length && seqLe(ends[k]!, una)) k++;
    if (k > 0) {
      starts.splice(0, k);
      ends.splice(0, k);
    }
    if (starts.length > 0 && seqLt(starts[0]!, una)) starts[0] = una;
  }

  /**
   * The first un-SACKed range at or after `from` that lies below some SACKed data (a hole the
   * peer reported), as `[start, end)`; null if there is none.
   */
  nextHole(from: number): SackRange | null {
    const starts = this.starts;
    const ends = this.ends;
    for (let i = 0; i < starts.length; i++) {
      if (seqLe(ends[i]!, from)) continue;
      if (seqLt(from, starts[i]!)) return [from, starts[i]!];
      from = ends[i]!;
    }
    return null;
  }

  /** End of the highest SACKed range, or `una` when there is none. */
  highest(una: number): number {
    const n = this.ends.length;
    return n === 0 ? una : this.ends[n - 1]!;
  }

  /** SACKed bytes below `seq`. */
  sackedBelow(seq: number): number {
    let sum = 0;
    for (let i = 0; i < this.starts.length; i++) {
      const s = this.starts[i]!;
      if (!seqLt(s, seq)) break;
      sum += seqDiff(seqMin(this.ends[i]!, seq), s);
    }
    return sum;
  }

  /** The end of the SACKed range that holds `seq`, or `seq` itself when none does. */
  coveredTo(seq: number): number {
    for (let i = 0; i < this.starts.length; i++) {
      if (seqLe(this.starts[i]!, seq) && seqLt(seq, this.ends[i]!)) return this.ends[i]!;
    }
    return seq;
  }

  /** Is `seq` inside a SACKed range? */
  covers(seq: number): boolean {
    for (let i = 0; i < this.starts.length; i++) {
      if (seqLe(this.starts[i]!, seq) && seqLt(seq, this.ends[i]!)) return true;
    }
    return false;
  }

  clear(): void {
    this.starts.length = 0;
    this.ends.length = 0;
  }
}
