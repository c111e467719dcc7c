/**
 * A 10^4-input slice of each fuzzer (test/fuzz; `npm run fuzz` runs 10^6), from a fixed seed,
 * and every regression seed in test/fuzz/seeds.json: inputs that once crashed must not again.
 */
import { describe, expect, it, vi } from 'vitest';
import { fuzz, regressionSeeds, replay, type Target } from '../fuzz/targets.js';
import { summary } from '../fuzz/report.js';

// Random requests must not open host devices: ports are in-memory (see sandbox-builtin.ts).
vi.mock('../../plugins/builtin.js', () => import('../fuzz/sandbox-builtin.js'));

const SLICE = 10_000;

describe('fuzz slice: 10^4 inputs per target, none crashes', () => {
  it.each(['wire', 'ingress', 'control', 'links', 'vhost'] satisfies Target[])('%s', async (t) => {
    const r = await fuzz(t, SLICE, 1);
    expect(r.ran).toBe(SLICE);
    expect(r.crashed, summary(r)).toBe(0);
  }, 120_000);
});

describe('fuzz regression seeds (test/fuzz/seeds.json)', () => {
  it.each(regressionSeeds().map((s) => [`${s.target} ${s.seed}`, s] as const))('%s', async (_name, s) => {
    expect(await replay(s), s.found).toEqual([]);
  });
});
