/** The fuzz targets by name, and the replay of a regression seed (test/fuzz/seeds.json). */
import { readFileSync } from 'node:fs';
import { controlHarness, controlInput, controlOne, fuzzControl } from './control.js';
import { fuzzIngress, replayIngress } from './ingress.js';
import type { FuzzReport } from './report.js';
import { fuzzWire, wireOne } from './wire.js';
import { fuzzLinks, linksHarness, linksOne } from './links.js';
import { fuzzVhost, replayVhost } from './vhost.js';

export type Target = 'wire' | 'ingress' | 'control' | 'links' | 'vhost';

export interface RegressionSeed {
  target: Target;
  seed: number;
  /** The input itself, as the crash report printed it: it outlives changes to the generators. */
  input?: string;
  found: string;
}

export function regressionSeeds(): RegressionSeed[] {
  const f = JSON.parse(readFileSync(new URL('./seeds.json', import.meta.url), 'utf8')) as { seeds: RegressionSeed[] };
  return f.seeds;
}

/** Runs `count` inputs of `target` from `seed`. The control target needs sandbox-builtin.ts mocked in. */
export function fuzz(target: Target, count: number, seed: number): Promise<FuzzReport> {
  switch (target) {
    case 'wire':
      return Promise.resolve(fuzzWire(count, seed));
    case 'ingress':
      return fuzzIngress(count, seed);
    case 'control':
      return fuzzControl(count, seed);
    case 'links':
      return Promise.resolve(fuzzLinks(count, seed));
    case 'vhost':
      return fuzzVhost(count, seed);
  }
}

/** Replays one input; returns what went wrong (empty: nothing). */
export async function replay(s: RegressionSeed): Promise<string[]> {
  switch (s.target) {
    case 'wire': {
      const c = wireOne(s.seed, s.input !== undefined ? Buffer.from(s.input, 'hex') : undefined);
      return c === null ? [] : [`${c.where}: ${c.error}`];
    }
    case 'ingress':
      return replayIngress(s.seed, s.input);
    case 'control': {
      const h = await controlHarness();
      try {
        const c = await controlOne(h, s.input ?? controlInput(s.seed));
        return c === null ? [] : [`${c.where}: ${c.error}`];
      } finally {
        await h.close();
      }
    }
    case 'links': {
      const c = linksOne(linksHarness(), s.seed, s.input !== undefined ? Buffer.from(s.input, 'hex') : undefined);
      return c === null ? [] : [`${c.where}: ${c.error}`];
    }
    case 'vhost':
      return replayVhost(s.seed);
  }
}
