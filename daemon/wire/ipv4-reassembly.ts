/**
 * IPv4 fragment reassembly (RFC 791, RFC 815) with hard limits, for traffic from untrusted VMs.
 *
 * - At most `maxDatagrams` partial datagrams; a new one beyond that evicts the oldest.
 * - At most `maxBytes` of buffered fragment data overall; older datagrams are evicted to make
 *   room, and a datagram that cannot fit even alone is dropped.
 * - At most `maxFragments` fragments per datagram.
 * - A datagram older than `timeoutMs` (time passed in as `now`, any monotonic millisecond clock)
 *   is discarded by `expire(now)`, which `push` also runs.
 * - Overlapping fragments discard the whole datagram (as RFC 5722 mandates for IPv6; it defeats
 *   overlap-based evasion). An exact duplicate (same offset and length) is ignored.
 * - A datagram that would exceed 65535 bytes is discarded.
 *
 * Fragment data is copied (the caller's buffers are views it reuses); a completed datagram is a
 * new Buffer holding the first fragment's header (with options) marked unfragmented.
 */
import { emitIpv4Header, encodeIpv4, IPV4_MAX_TOTAL_LEN, type Ipv4Packet } from './ipv4.js';

export interface ReassemblyLimits {
  readonly maxDatagrams: number;
  readonly maxBytes: number;
  readonly maxFragments: number;
  readonly timeoutMs: number;
}

export const DEFAULT_REASSEMBLY_LIMITS: ReassemblyLimits = Object.freeze({
  maxDatagrams: 64,
  maxBytes: 1 << 20,
  maxFragments: 64,
  timeoutMs: 30_000,
});

export type ReassemblyDropReason =
  | 'bad-fragment' // empty, or a non-final fragment whose length is not a multiple of 8
  | 'overlap'
  | 'too-big' // beyond 65535 bytes, or past the end set by the last fragment
  | 'inconsistent' // two different ends, or data past a newly learned end
  | 'too-many-fragments'
  | 'over-limit'; // maxBytes cannot hold it

export type ReassemblyResult =
  | { readonly status: 'complete'; readonly packet: Buffer }
  | { readonly status: 'pending' }
  | { readonly status: 'duplicate' }
  | { readonly status: 'dropped'; readonly reason: ReassemblyDropReason };

export interface ReassemblyStats {
  completed: number;
  timedOut: number;
  evicted: number;
  duplicates: number;
  dropped: Record<ReassemblyDropReason, number>;
}

interface Fragment {
  readonly offset: number;
  readonly data: Buffer;
}

interface PartialDatagram {
  readonly key: string;
  readonly created: number;
  /** Sorted by offset, non-overlapping. */
  readonly fragments: Fragment[];
  received: number;
  /** Payload length once the last fragment (MF=0) arrived, else -1. */
  total: number;
  /** The offset-0 fragment's parsed header (its options are copied). */
  first: Ipv4Packet | undefined;
}

const PENDING: ReassemblyResult = Object.freeze({ status: 'pending' });
const DUPLICATE: ReassemblyResult = Object.freeze({ status: 'duplicate' });

export class Ipv4Reassembler {
  readonly limits: ReassemblyLimits;
  readonly stats: ReassemblyStats = {
    completed: 0,
    timedOut: 0,
    evicted: 0,
    duplicates: 0,
    dropped: { 'bad-fragment': 0, overlap: 0, 'too-big': 0, inconsistent: 0, 'too-many-fragments': 0, 'over-limit': 0 },
  };
  /** Insertion order is creation order, so the first entry is the oldest. */
  private readonly partials = new Map<string, PartialDatagram>();
  private bufferedBytes = 0;

  constructor(limits?: Partial<ReassemblyLimits>) {
    this.limits = { ...DEFAULT_REASSEMBLY_LIMITS, ...limits };
  }

  /** Partial datagrams held. */
  get datagrams(): number {
    return this.partials.size;
  }

  /** Fragment bytes held. */
  get bytes(): number {
    return this.bufferedBytes;
  }

  /**
   * Takes one parsed IPv4 packet. A packet that is not a fragment comes back at once as
   * 'complete' (re-encoded); callers normally check `moreFragments || fragmentOffset` first.
   */
  push(pkt: Ipv4Packet, now: number): ReassemblyResult {
    if (!pkt.moreFragments && pkt.fragmentOffset === 0) return { status: 'complete', packet: encodeIpv4(pkt) };
    this.expire(now);
    const len = pkt.payload.length;
    const offset = pkt.fragmentOffset;
    const end = offset + len;
    if (len === 0 || (pkt.moreFragments && len % 8 !== 0)) return this.drop('bad-fragment');
    if (pkt.headerLength + end > IPV4_MAX_TOTAL_LEN) {
      this.discard(this.keyOf(pkt));
      return this.drop('too-big');
    }

    const key = this.keyOf(pkt);
    let p = this.partials.get(key);
    if (!p) {
      while (this.partials.size >= this.limits.maxDatagrams && this.evictOldest(undefined)) {
        /* evicted one */
      }
      p = { key, created: now, fragments: [], received: 0, total: -1, first: undefined };
      this.partials.set(key, p);
    }

    // Where the new fragment goes, and whether it collides with a neighbour.
    const frags = p.fragments;
    let i = 0;
    while (i < frags.length && frags[i]!.offset < offset) i++;
    const next = frags[i];
    const prev = i > 0 ? frags[i - 1] : undefined;
    if (next && next.offset === offset && next.data.length === len) {
      this.stats.duplicates++;
      return DUPLICATE;
    }
    if ((prev && prev.offset + prev.data.length > offset) || (next && next.offset < end)) {
      this.discard(key);
      return this.drop('overlap');
    }
    if (p.total >= 0 && end > p.total) {
      this.discard(key);
      return this.drop('too-big');
    }
    if (!pkt.moreFragments) {
      const last = frags[frags.length - 1];
      if ((p.total >= 0 && p.total !== end) || (last && last.offset + last.data.length > end)) {
        this.discard(key);
        return this.drop('inconsistent');
      }
    }
    if (frags.length >= this.limits.maxFragments) {
      this.discard(key);
      return this.drop('too-many-fragments');
    }
    if (len > this.limits.maxBytes) {
      this.discard(key);
      return this.drop('over-limit');
    }
    while (this.bufferedBytes + len > this.limits.maxBytes) {
      if (!this.evictOldest(key)) {
        this.discard(key);
        return this.drop('over-limit');
      }
    }

    frags.splice(i, 0, { offset, data: Buffer.from(pkt.payload) });
    p.received += len;
    this.bufferedBytes += len;
    if (!pkt.moreFragments) p.total = end;
    if (offset === 0) p.first = { ...pkt, options: Buffer.from(pkt.options), payload: Buffer.alloc(0) };

    if (p.total < 0 || p.received !== p.total || !p.first) return PENDING;
    // Non-overlapping pieces inside [0, total) adding up to total cover it exactly.
    const first = p.first;
    const packet = Buffer.allocUnsafe(first.headerLength + p.total);
    const hl = emitIpv4Header({ ...first, moreFragments: false, fragmentOffset: 0 }, p.total, packet, 0);
    for (const f of frags) f.data.copy(packet, hl + f.offset);
    this.discard(key);
    this.stats.completed++;
    return { status: 'complete', packet: packet.subarray(0, hl + p.total) };
  }

  /** Drops datagrams older than the timeout; returns how many. */
  expire(now: number): number {
    let n = 0;
    for (const p of this.partials.values()) {
      if (now - p.created >= this.limits.timeoutMs) {
        this.discard(p.key);
        n++;
      }
    }
    this.stats.timedOut += n;
    return n;
  }

  clear(): void {
    this.partials.clear();
    this.bufferedBytes = 0;
  }

  private keyOf(pkt: Ipv4Packet): string {
    return `${pkt.src}/${pkt.dst}/${pkt.protocol}/${pkt.id}`;
  }

  private drop(reason: ReassemblyDropReason): ReassemblyResult {
    this.stats.dropped[reason]++;
    return { status: 'dropped', reason };
  }

  private discard(key: string): void {
    const p = this.partials.get(key);
    if (!p) return;
    for (const f of p.fragments) this.bufferedBytes -= f.data.length;
    this.partials.delete(key);
  }

  /** Evicts the oldest datagram other than `keep`; false when there is none. */
  private evictOldest(keep: string | undefined): boolean {
    for (const k of this.partials.keys()) {
      if (k === keep) continue;
      this.discard(k);
      this.stats.evicted++;
      return true;
    }
    return false;
  }
}
