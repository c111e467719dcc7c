/**
 * The arithmetic the benches share (bench/run.ts, bench/stack.ts): medians with their min–max,
 * the interleaving order of repeated runs, ratios against the best peer and goal lines. Pure
 * functions, no side effects on import (bench/util.ts installs exit handlers; unit tests import
 * this module instead).
 */

/** Median and range of the finite samples of one cell; undefined when there are none. */
export interface Spread {
  median: number;
  min: number;
  max: number;
  n: number;
}

export function spread(xs: readonly (number | undefined)[]): Spread | undefined {
  const s = xs.filter((x): x is number => x !== undefined && Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return undefined;
  const m = Math.floor(s.length / 2);
  const median = s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
  return { median, min: s[0]!, max: s[s.length - 1]!, n: s.length };
}

/** "1.23 (1.10–1.40)"; a single sample is printed alone, since it has no range. */
export function fmtSpread(s: Spread | undefined, digits: number): string {
  if (s === undefined) return '-';
  const f = (x: number): string => x.toFixed(digits);
  return s.n > 1 ? `${f(s.median)} (${f(s.min)}–${f(s.max)})` : f(s.median);
}

/**
 * The order of the paths in repetition `rep` (1-based): rotated by one each repetition, so each
 * path goes first (right after a setup, or after the heaviest cell) equally often, and drift in
 * the machine's load over the run hits every path alike.
 */
export function interleave<T>(items: readonly T[], rep: number): T[] {
  if (items.length === 0) return [];
  const k = (rep - 1) % items.length;
  return [...items.slice(k), ...items.slice(0, k)];
}

/** The peer with the highest median (higher is better for every metric here). */
export function bestPeer<P extends string>(peers: readonly { path: P; value: number | undefined }[]): { path: P; value: number } | undefined {
  let best: { path: P; value: number } | undefined;
  for (const p of peers) {
    if (p.value === undefined || !Number.isFinite(p.value) || p.value <= 0) continue;
    if (best === undefined || p.value > best.value) best = { path: p.path, value: p.value };
  }
  return best;
}

export interface Goal {
  /** What is compared, e.g. "MTU 1500 down". */
  cell: string;
  /** The value over the yardstick; undefined when either side has no result. */
  ratio: number | undefined;
  /** The ratio the goal asks for (met when ratio >= target). */
  target: number;
  /** Names the yardstick and its value, e.g. "slirp4netns 2.40 Gbit/s". */
  against: string;
  /** The ratio within each repetition (both measured back to back), as a range. */
  perRun?: Spread;
}

export function goalMet(g: Goal): boolean | undefined {
  return g.ratio === undefined ? undefined : g.ratio >= g.target;
}

/** "goal MTU 1500 down: >= 1.00x slirp4netns 2.40 Gbit/s: 0.71x  NOT MET" */
export function goalLine(g: Goal): string {
  const met = goalMet(g);
  const verdict = met === undefined ? 'no result' : met ? 'met' : 'NOT MET';
  const runs = g.perRun !== undefined && g.perRun.n > 1 ? ` (per run ${g.perRun.min.toFixed(2)}–${g.perRun.max.toFixed(2)}x)` : '';
  return `goal ${g.cell}: >= ${g.target.toFixed(2)}x ${g.against}: ${g.ratio === undefined ? '-' : `${g.ratio.toFixed(2)}x`}${runs}  ${verdict}`;
}

/**
 * Ratios a/b of the samples taken in the same repetition (interleaved runs: the two were
 * measured minutes apart at most, under about the same load), as a spread; repetitions where
 * either has no result, or b is not positive, are left out.
 */
export function perRunRatios(a: readonly { rep: number; value: number | undefined }[], b: readonly { rep: number; value: number | undefined }[]): Spread | undefined {
  const ratios: number[] = [];
  for (const x of a) {
    const y = b.find((s) => s.rep === x.rep);
    if (x.value === undefined || y?.value === undefined || !(y.value > 0)) continue;
    ratios.push(x.value / y.value);
  }
  return spread(ratios);
}

/** a / b as "1.23x", "-" when either is missing. */
export function ratioText(a: number | undefined, b: number | undefined): string {
  return a === undefined || b === undefined || !Number.isFinite(a) || !Number.isFinite(b) || b === 0 ? '-' : `${(a / b).toFixed(2)}x`;
}
