/**
 * The sender's per-segment record of what is in flight (SND.UNA … SND.MAX): the scoreboard of
 * RFC 6675 kept per transmitted segment, as RACK (RFC 8985) needs, in the manner of Linux's
 * retransmission queue. Each record is one segment as sent (its sequence range, FIN included,
 * and the time of its latest transmission) with flags:
 *
 * - SACKED: the peer reported it (it left the network);
 * - LOST: its latest transmission is deemed lost (RACK, an RTO, or NewReno's fast retransmit);
 * - RETRANS: a retransmission of it is in flight (set when a LOST record is resent, or by a
 *   tail loss probe; cleared when the retransmission is deemed lost too);
 * - EVER: it was retransmitted at least once (its ACK is an ambiguous RTT sample).
 *
 * Byte counters follow the flags, so `inflight` is RFC 6675's `pipe` as Linux computes it:
 * outstanding − SACKed − lost + retransmissions in flight.
 */
import { seqDiff, seqGe, seqGt, seqLe, seqLt } from './seq.js';

export const SACKED = 1;
export const LOST = 2;
export const RETRANS = 4;
export const EVER = 8;

export interface TxRecord {
  start: number;
  /** Past the last sequence number (FIN included). */
  end: number;
  /** Time of the first transmission. */
  sentAt: number;
  /** Time of the latest transmission. */
  xmitAt: number;
  /** Order of the latest transmission among all (RACK's "sent after" without clock ties). */
  xmitSeq: number;
  flags: number;
}

/** Called for each record that newly left the network (SACKed, or cumulatively acknowledged: `cum`). */
export type DeliveredFn = (rec: TxRecord, cum: boolean) => void;

export class TxQueue {
  private recs: TxRecord[] = [];
  private head = 0;
  /** Bytes SACKed. */
  sacked = 0;
  /** Bytes marked lost (never SACKed ones: SACKing clears LOST). */
  lost = 0;
  /** Bytes of retransmissions in flight. */
  retransOut = 0;
  /** Bytes marked lost and not resent since: what loss recovery still has to send. */
  lostPending = 0;
  /** Transmissions so far (the last xmitSeq handed out). */
  private xmits = 0;
  // What the ACK being processed did (reset by beginAck):
  /** Bytes that left the network (newly SACKed, or acknowledged without having been SACKed). */
  delivered = 0;
  /** Send time of the oldest newly acknowledged segment sent once and not SACKed before; -1 if none. */
  ackedXmit = -1;
  /** Send time of the oldest newly SACKed segment sent once; -1 if none. */
  sackedXmit = -1;
  /** Latest (re)transmission time among the newly acknowledged segments sent more than once; -1 if none. */
  ackedRetransXmit = -1;

  beginAck(): void {
    this.delivered = 0;
    this.ackedXmit = -1;
    this.sackedXmit = -1;
    this.ackedRetransXmit = -1;
  }

  /** RTT clues of a record leaving the queue by cumulative ACK (Linux's first_ackt rules). */
  private noteAcked(r: TxRecord): void {
    if (r.flags & EVER) {
      if (r.xmitAt > this.ackedRetransXmit) this.ackedRetransXmit = r.xmitAt;
    } else if (!(r.flags & SACKED) && this.ackedXmit < 0) this.ackedXmit = r.xmitAt;
  }

  get length(): number {
    return this.recs.length - this.head;
  }

  get empty(): boolean {
    return this.head === this.recs.length;
  }

  at(i: number): TxRecord {
    return this.recs[this.head + i]!;
  }

  /** The last record (highest sequence), or null. */
  last(): TxRecord | null {
    return this.empty ? null : this.recs[this.recs.length - 1]!;
  }

  /** RFC 6675 pipe: what the network holds, given `outstanding` = SND.MAX − SND.UNA. */
  inflight(outstanding: number): number {
    return Math.max(0, outstanding - this.sacked - this.lost + this.retransOut);
  }

  /** A segment of new data [start, end) went out at `now`. */
  push(start: number, end: number, now: number): void {
    const last = this.last();
    if (last !== null && last.end !== start) {
      // Never expected (new data follows the last record); keep the queue contiguous anyway.
      if (seqLt(start, last.end)) return;
    }
    this.recs.push({ start, end, sentAt: now, xmitAt: now, xmitSeq: ++this.xmits, flags: 0 });
  }

  /** Record `r` was sent again at `now`. */
  resent(r: TxRecord, now: number): void {
    r.xmitAt = now;
    r.xmitSeq = ++this.xmits;
  }

  private account(r: TxRecord, sign: number): void {
    const n = sign * seqDiff(r.end, r.start);
    const f = r.flags;
    if (f & SACKED) this.sacked += n;
    if (f & LOST) this.lost += n;
    if (f & RETRANS) this.retransOut += n;
    if ((f & (LOST | RETRANS | SACKED)) === LOST) this.lostPending += n;
  }

  setFlags(r: TxRecord, flags: number): void {
    this.account(r, -1);
    r.flags = flags;
    this.account(r, 1);
  }

  /** Cumulative ACK up to `una`: drops what it covers, reporting what was not SACKed before. */
  ack(una: number, delivered: DeliveredFn): void {
    const recs = this.recs;
    while (this.head < recs.length) {
      const r = recs[this.head]!;
      if (seqLe(r.end, una)) {
        this.noteAcked(r);
        this.account(r, -1);
        if (!(r.flags & SACKED)) {
          this.delivered += seqDiff(r.end, r.start);
          delivered(r, true);
        }
        this.head++;
        continue;
      }
      if (seqLt(r.start, una)) {
        // Partly acknowledged (the peer took part of a segment): trim it.
        this.noteAcked(r);
        this.account(r, -1);
        if (!(r.flags & SACKED)) this.delivered += seqDiff(una, r.start);
        r.start = una;
        this.account(r, 1);
      }
      break;
    }
    if (this.head > 64 && this.head * 2 > recs.length) {
      this.recs = recs.slice(this.head);
      this.head = 0;
    }
  }

  /** Index (from 0) of the first record whose end is past `seq`. */
  private find(seq: number): number {
    let lo = this.head;
    let hi = this.recs.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (seqLe(this.recs[mid]!.end, seq)) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Splits the record at absolute index `i` at `seq` (inside it); both halves keep its state. */
  private split(i: number, seq: number): void {
    const r = this.recs[i]!;
    const tail: TxRecord = { start: seq, end: r.end, sentAt: r.sentAt, xmitAt: r.xmitAt, xmitSeq: r.xmitSeq, flags: r.flags };
    r.end = seq;
    this.recs.splice(i + 1, 0, tail);
  }

  /** Splits the record holding `seq` so that a record starts there (no-op at a boundary). */
  splitAt(seq: number): void {
    const i = this.find(seq);
    if (i < this.recs.length && seqLt(this.recs[i]!.start, seq)) this.split(i, seq);
  }

  /** The record holding `seq`, or null. */
  recordAt(seq: number): TxRecord | null {
    const i = this.find(seq);
    return i < this.recs.length && seqLe(this.recs[i]!.start, seq) ? this.recs[i]! : null;
  }

  /** Marks [s, e) SACKed, splitting records at its edges; reports the newly SACKed ones. */
  sack(s: number, e: number, delivered: DeliveredFn): void {
    let i = this.find(s);
    const recs = this.recs;
    if (i < recs.length && seqLt(recs[i]!.start, s)) {
      if (recs[i]!.flags & SACKED) i++;
      else {
        this.split(i, s);
        i++;
      }
    }
    for (; i < recs.length; i++) {
      const r = recs[i]!;
      if (seqGe(r.start, e)) break;
      if (r.flags & SACKED) continue;
      if (seqGt(r.end, e)) this.split(i, e);
      this.setFlags(r, (r.flags | SACKED) & ~(LOST | RETRANS));
      this.delivered += seqDiff(r.end, r.start);
      if (!(r.flags & EVER) && (this.sackedXmit < 0 || r.xmitAt < this.sackedXmit)) this.sackedXmit = r.xmitAt;
      delivered(r, false);
    }
  }

  /** Does some record in [s, e) carry `flag`? */
  anyIn(s: number, e: number, flag: number): boolean {
    for (let i = this.find(s); i < this.recs.length; i++) {
      const r = this.recs[i]!;
      if (seqGe(r.start, e)) break;
      if (r.flags & flag) return true;
    }
    return false;
  }

  /** Is all of [s, e) SACKed (or below the queue)? */
  allSacked(s: number, e: number): boolean {
    for (let i = this.find(s); i < this.recs.length; i++) {
      const r = this.recs[i]!;
      if (seqGe(r.start, e)) break;
      if (!(r.flags & SACKED)) return false;
    }
    return true;
  }

  /**
   * Deems the latest transmission of `r` lost (Linux's tcp_mark_skb_lost): a record already
   * LOST whose retransmission was in flight has lost that retransmission too.
   */
  markLost(r: TxRecord): void {
    const f = r.flags;
    if (f & SACKED) return;
    if (f & LOST) {
      if (f & RETRANS) this.setFlags(r, f & ~RETRANS);
    } else this.setFlags(r, (f | LOST) & ~RETRANS);
  }

  /** Retransmission timeout: everything not SACKed is lost, no retransmission is in flight. */
  markAllLost(forgetSacks: boolean): void {
    for (let i = this.head; i < this.recs.length; i++) {
      const r = this.recs[i]!;
      if (r.flags & SACKED && !forgetSacks) continue;
      this.setFlags(r, (r.flags | LOST) & ~(RETRANS | SACKED));
    }
  }

  /** Undo of a spurious loss episode: nothing is lost any more (retransmissions stay counted). */
  unmarkLost(): void {
    if (this.lost === 0) return;
    for (let i = this.head; i < this.recs.length; i++) {
      const r = this.recs[i]!;
      if (r.flags & LOST) this.setFlags(r, r.flags & ~LOST);
    }
  }

  /** The first record that is LOST and not yet resent, or null. */
  firstPending(): TxRecord | null {
    if (this.lostPending === 0) return null;
    for (let i = this.head; i < this.recs.length; i++) {
      const r = this.recs[i]!;
      if ((r.flags & (LOST | RETRANS | SACKED)) === LOST) return r;
    }
    return null;
  }


  clear(): void {
    this.recs.length = 0;
    this.head = 0;
    this.sacked = 0;
    this.lost = 0;
    this.retransOut = 0;
    this.lostPending = 0;
  }

  /** Recounts from the records; for tests: throws when a counter disagrees. */
  check(una: number, sndMax: number): void {
    let sacked = 0;
    let lost = 0;
    let retrans = 0;
    let pending = 0;
    let expect = una;
    for (let i = this.head; i < this.recs.length; i++) {
      const r = this.recs[i]!;
      if (r.start !== expect) throw new Error(`tx queue: gap/overlap at ${r.start} (expected ${expect})`);
      if (!seqLt(r.start, r.end)) throw new Error(`tx queue: empty record at ${r.start}`);
      const n = seqDiff(r.end, r.start);
      if (r.flags & SACKED) sacked += n;
      if (r.flags & LOST) lost += n;
      if (r.flags & RETRANS) retrans += n;
      if ((r.flags & (LOST | RETRANS | SACKED)) === LOST) pending += n;
      expect = r.end;
    }
    if (!this.empty && expect !== sndMax) throw new Error(`tx queue ends at ${expect}, SND.MAX ${sndMax}`);
    if (sacked !== this.sacked || lost !== this.lost || retrans !== this.retransOut || pending !== this.lostPending) {
      throw new Error(
        `tx queue counters ${this.sacked}/${this.lost}/${this.retransOut}/${this.lostPending} ≠ ${sacked}/${lost}/${retrans}/${pending}`,
      );
    }
  }
}
