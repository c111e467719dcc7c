/**
 * WireGuard's handshake rate limiter (ratelimiter.c): under load, a source that proved it
 * receives at its address (a valid mac2) may still make the responder do at most
 * PACKETS_PER_SECOND handshakes a second, after a burst of PACKETS_BURSTABLE. Without it, one
 * sender holding a cookie could make the responder spend a DH per message as fast as it sends.
 * The table is bounded: past MAX_ENTRIES sources, entries idle long enough to be full again are
 * dropped, and if none are, a new source is refused (as WireGuard's table refuses when full).
 */
export const PACKETS_PER_SECOND = 20;
export const PACKETS_BURSTABLE = 5;
export const MAX_ENTRIES = 8192;

/** Time (ms) for an empty bucket to fill up again: an entry idle this long is as good as new. */
const REFILL_MS = (PACKETS_BURSTABLE * 1000) / PACKETS_PER_SECOND;

interface Bucket {
  tokens: number;
  last: number;
}

export class SourceRateLimiter {
  private readonly buckets = new Map<string, Bucket>();
  private lastSweep = -Infinity;

  /** Whether a handshake from `key` may be processed at `now` (ms); takes a token when it may. */
  allow(key: string, now: number): boolean {
    let b = this.buckets.get(key);
    if (b === undefined) {
      if (this.buckets.size >= MAX_ENTRIES && !this.sweep(now)) return false;
      b = { tokens: PACKETS_BURSTABLE, last: now };
      this.buckets.set(key, b);
    } else {
      b.tokens = Math.min(PACKETS_BURSTABLE, b.tokens + (Math.max(0, now - b.last) * PACKETS_PER_SECOND) / 1000);
      b.last = now;
    }
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  /** Drops full (idle) buckets, at most once a second; whether there is room now. */
  private sweep(now: number): boolean {
    if (now - this.lastSweep >= 1000) {
      this.lastSweep = now;
      for (const [k, b] of this.buckets) if (now - b.last >= REFILL_MS) this.buckets.delete(k);
    }
    return this.buckets.size < MAX_ENTRIES;
  }

  get size(): number {
    return this.buckets.size;
  }
}
