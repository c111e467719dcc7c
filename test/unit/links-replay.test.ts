/**
 * The replay window against a reference model: a Set of every counter accepted and the window
 * rule (accept a counter not seen before and at most WINDOW behind the highest accepted),
 * 10^5 operations with out-of-order delivery, duplicates, jumps and stale counters.
 */
import { describe, expect, it } from 'vitest';
import { REJECT_AFTER_MESSAGES, ReplayWindow, WINDOW } from '../../daemon/links/replay.js';
import { Rng } from '../fuzz/rng.js';

class Reference {
  private readonly seen = new Set<bigint>();
  private max = -1n;
  accept(c: bigint): boolean {
    if (c >= REJECT_AFTER_MESSAGES) return false;
    if (c + BigInt(WINDOW) < this.max) return false;
    if (this.seen.has(c)) return false;
    this.seen.add(c);
    if (c > this.max) this.max = c;
    return true;
  }
}

describe('links: replay window', () => {
  it('tracks at least 2048 packets exactly', () => {
    expect(WINDOW).toBeGreaterThanOrEqual(2048);
  });

  it.each([1, 2, 3])('agrees with the reference model on 10^5 operations (seed %i)', (seed) => {
    const rng = new Rng(seed);
    const w = new ReplayWindow();
    const ref = new Reference();
    let next = 0n;
    const recent: bigint[] = [];
    let accepted = 0;
    for (let i = 0; i < 100_000; i++) {
      let c: bigint;
      const k = rng.int(100);
      if (k < 50) c = next++; // in order
      else if (k < 75 && recent.length > 0) c = rng.pick(recent); // a duplicate or late arrival
      else if (k < 90) c = next + BigInt(rng.int(64)) - 32n; // reordered around the front
      else if (k < 96) c = next - BigInt(WINDOW) + BigInt(rng.int(64)) - 32n; // at the window's edge
      else if (k < 99) c = next += BigInt(rng.int(20_000)); // a jump (lost packets)
      else c = BigInt(rng.int(1000)); // ancient
      if (c < 0n) c = 0n;
      if (recent.length < 512) recent.push(c);
      else recent[rng.int(512)] = c;
      const want = ref.accept(c);
      // expect() per operation would cost more than the window: compare, and report the first difference.
      if ((want && !w.check(c)) || w.update(c) !== want) {
        expect.fail(`counter ${c} at operation ${i}: the reference says ${want ? 'accept' : 'refuse'}`);
      }
      if (want) accepted++;
    }
    expect(accepted).toBeGreaterThan(30_000);
  });

  it('handles counters near 2^64: the last valid one is accepted, REJECT_AFTER_MESSAGES never', () => {
    const w = new ReplayWindow();
    expect(w.update(REJECT_AFTER_MESSAGES - 2n)).toBe(true);
    expect(w.update(REJECT_AFTER_MESSAGES - 1n)).toBe(true);
    expect(w.update(REJECT_AFTER_MESSAGES)).toBe(false);
    expect(w.update(2n ** 64n - 1n)).toBe(false);
    expect(w.update(REJECT_AFTER_MESSAGES - 2n)).toBe(false);
    expect(w.update(REJECT_AFTER_MESSAGES - 1n - BigInt(WINDOW))).toBe(true);
    expect(w.update(REJECT_AFTER_MESSAGES - 2n - BigInt(WINDOW))).toBe(false);
  });

  it('check() changes nothing', () => {
    const w = new ReplayWindow();
    expect(w.check(5n)).toBe(true);
    expect(w.check(5n)).toBe(true);
    expect(w.update(5n)).toBe(true);
    expect(w.check(5n)).toBe(false);
    expect(w.highest()).toBe(5n);
  });
});
