/**
 * Bounded out-of-order receive queue. Holds copies of data that arrived beyond RCV.NXT, as
 * disjoint pieces sorted by sequence number; overlapping retransmissions only add what is
 * missing. The byte total is bounded by the receive window (the connection only offers data
 * inside it); the piece count is bounded here, so tiny segments cannot blow up overhead.
 * It also remembers an out-of-order FIN and produces SACK blocks (RFC 2018).
 */
import type { SackRange } from './segment.js';
import { seqAdd, seqDiff, seqGt, seqLe, seqLt } from './seq.js';

export class Reassembly {
  private readonly seqs: number[] = [];
  private readonly bufs: Buffer[] = [];
  private held = 0;
  /** Sequence number of a FIN seen out of order, or -1. */
  finAt = -1;
  /** Start of the most recently received piece, for the first SACK block. */
  private latest = -1;

  constructor(private readonly maxPieces: number) {}

  get empty(): boolean {
    return this.seqs.length === 0;
  }

  /** Bytes held. */
  get bytes(): number {
    return this.held;
  }

  get pieces(): number {
    return this.seqs.length;
  }

  /**
   * Stores what is new in `data` (which starts at `seq`, beyond RCV.NXT). Returns false when
   * something was left out because the piece limit was reached.
   */
  insert(seq: number, data: Buffer): boolean {
    if (data.length === 0) return true;
    const seqs = this.seqs;
    const bufs = this.bufs;
    const e = seqAdd(seq, data.length);
    this.latest = seq;
    // First piece whose end is past `seq` (pieces are disjoint and sorted, so ends are too).
    let lo = 0;
    let hi = seqs.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (seqLe(seqAdd(seqs[mid]!, bufs[mid]!.length), seq)) lo = mid + 1;
      else hi = mid;
    }
    let i = lo;
    let s = seq;
    while (seqLt(s, e)) {
      if (i < seqs.length && seqLe(seqs[i]!, s)) {
        s = seqAdd(seqs[i]!, bufs[i]!.length);
        i++;
        continue;
      }
      if (seqs.length >= this.maxPieces) return false;
      const stop = i < seqs.length && seqLt(seqs[i]!, e) ? seqs[i]! : e;
      const piece = Buffer.from(data.subarray(seqDiff(s, seq), seqDiff(stop, seq)));
      seqs.splice(i, 0, s);
      bufs.splice(i, 0, piece);
      this.held += piece.length;
      i++;
      s = stop;
    }
    return true;
  }

  /**
   * Removes and returns the next in-order bytes at `rcvNxt` (a view of a held piece), or null
   * when the first piece starts beyond it. Pieces entirely below `rcvNxt` are discarded.
   */
  shift(rcvNxt: number): Buffer | null {
    while (this.seqs.length > 0) {
      const s = this.seqs[0]!;
      if (seqGt(s, rcvNxt)) return null;
      const b = this.bufs[0]!;
      this.seqs.shift();
      this.bufs.shift();
      this.held -= b.length;
      const skip = seqDiff(rcvNxt, s);
      if (skip < b.length) return skip === 0 ? b : b.subarray(skip);
    }
    return null;
  }

  /**
   * Up to `max` SACK blocks: the one holding the latest arrival first (RFC 2018 §4), then the
   * others in ascending order.
   */
  sackBlocks(max: number): SackRange[] {
    const out: SackRange[] = [];
    const n = this.seqs.length;
    if (n === 0 || max <= 0) return out;
    let first = -1;
    let i = 0;
    while (i < n) {
      const start = this.seqs[i]!;
      let end = seqAdd(start, this.bufs[i]!.length);
      let hasLatest = this.latest === start;
      i++;
      while (i < n && this.seqs[i] === end) {
        if (this.seqs[i] === this.latest) hasLatest = true;
        end = seqAdd(end, this.bufs[i]!.length);
        i++;
      }
      if (hasLatest && first < 0) {
        first = out.length;
      }
      out.push([start, end]);
    }
    if (first > 0) {
      const b = out[first]!;
      out.splice(first, 1);
      out.unshift(b);
    }
    if (out.length > max) out.length = max;
    return out;
  }

  /** Does the queue hold every byte of [seq, seq + len)? */
  holds(seq: number, len: number): boolean {
    let s = seq;
    const e = seqAdd(seq, len);
    for (let i = 0; i < this.seqs.length && seqLt(s, e); i++) {
      const start = this.seqs[i]!;
      const end = seqAdd(start, this.bufs[i]!.length);
      if (seqLe(end, s)) continue;
      if (seqGt(start, s)) return false;
      s = end;
    }
    return !seqLt(s, e);
  }

  clear(): void {
    this.seqs.length = 0;
    this.bufs.length = 0;
    this.held = 0;
    this.finAt = -1;
    this.latest = -1;
  }
}
