/**
 * `npm run fuzz`: every target with FUZZ_INPUTS inputs (default 10^6) from FUZZ_SEED (default:
 * a new one each run, printed, so a crash can be replayed). Prints inputs, crashes and
 * inputs/s per target; fails when anything crashed. FUZZ_TARGETS=wire,ingress picks targets.
 */
import { describe, expect, it, vi } from 'vitest';
import { fuzz, type Target } from './targets.js';
import { summary } from './report.js';

// Random requests must not open host devices: ports are in-memory (see sandbox-builtin.ts).
vi.mock('../../plugins/builtin.js', () => import('./sandbox-builtin.js'));

const INPUTS = Number(process.env.FUZZ_INPUTS ?? 1_000_000);
const SEED = process.env.FUZZ_SEED !== undefined ? Number(process.env.FUZZ_SEED) : (Date.now() ^ (process.pid << 16)) >>> 0;
const TARGETS = (process.env.FUZZ_TARGETS ?? 'wire,ingress,control,links,vhost').split(',') as Target[];

describe(`fuzz: ${INPUTS} inputs per target, seed ${SEED}`, () => {
  for (const t of TARGETS) {
    it(t, async () => {
      const r = await fuzz(t, INPUTS, SEED);
      console.log(`${summary(r)}\n  (FUZZ_SEED=${SEED} FUZZ_INPUTS=${INPUTS} FUZZ_TARGETS=${t} npm run fuzz replays this run)`);
      expect(r.ran).toBe(INPUTS);
      expect(r.crashed, summary(r)).toBe(0);
    });
  }
});
