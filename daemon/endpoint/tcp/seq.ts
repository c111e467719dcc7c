/**
 * Modular 32-bit sequence-number arithmetic (RFC 9293 §3.4). Sequence numbers are plain
 * numbers in [0, 2^32); comparisons are valid while the two values are less than 2^31 apart,
 * which the window sizes (at most 2^30) guarantee.
 */

/** `a + n` modulo 2^32 (n may be negative). */
export function seqAdd(a: number, n: number): number {
  return (a + n) >>> 0;
}

/** `a - b` as a signed 32-bit distance. */
export function seqDiff(a: number, b: number): number {
  return (a - b) | 0;
}

export function seqLt(a: number, b: number): boolean {
  return ((a - b) | 0) < 0;
}

export function seqLe(a: number, b: number): boolean {
  return ((a - b) | 0) <= 0;
}

export function seqGt(a: number, b: number): boolean {
  return ((a - b) | 0) > 0;
}

export function seqGe(a: number, b: number): boolean {
  return ((a - b) | 0) >= 0;
}

export function seqMax(a: number, b: number): number {
  return ((a - b) | 0) >= 0 ? a : b;
}

export function seqMin(a: number, b: number): number {
  return ((a - b) | 0) <= 0 ? a : b;
}

/** `lo <= x < lo + len` in sequence space (len in [0, 2^32)). */
export function seqInWindow(x: number, lo: number, len: number): boolean {
  return ((x - lo) >>> 0) < len;
}
