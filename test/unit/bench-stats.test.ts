import { describe, expect, it } from 'vitest';
import { bestPeer, fmtSpread, goalLine, goalMet, interleave, perRunRatios, ratioText, spread } from '../../bench/stats.js';

describe('bench stats', () => {
  it('spread: median, min and max of the finite samples', () => {
    expect(spread([3, 1, 2])).toEqual({ median: 2, min: 1, max: 3, n: 3 });
    expect(spread([4, 1, 3, 2])).toEqual({ median: 2.5, min: 1, max: 4, n: 4 });
    // A failed run (undefined) or a NaN is no sample, not a zero.
    expect(spread([5, undefined, Number.NaN, 1])).toEqual({ median: 3, min: 1, max: 5, n: 2 });
    expect(spread([])).toBeUndefined();
    expect(spread([undefined])).toBeUndefined();
  });

  it('fmtSpread: median (min–max), a single run without a range', () => {
    expect(fmtSpread(spread([1.234, 1.1, 1.5]), 2)).toBe('1.23 (1.10–1.50)');
    expect(fmtSpread(spread([7]), 1)).toBe('7.0');
    expect(fmtSpread(undefined, 2)).toBe('-');
  });

  it('interleave: each item goes first once in every len repetitions, the cyclic order kept', () => {
    const items = ['mvnet', 'pasta', 'slirp4netns'];
    const firsts = [1, 2, 3].map((rep) => interleave(items, rep)[0]);
    expect(firsts.sort()).toEqual([...items].sort());
    expect(interleave(items, 2)).toEqual(['pasta', 'slirp4netns', 'mvnet']);
    expect(interleave(items, 4)).toEqual(interleave(items, 1));
    for (let rep = 1; rep <= 6; rep++) expect([...interleave(items, rep)].sort()).toEqual([...items].sort());
    expect(interleave([], 3)).toEqual([]);
  });

  it('bestPeer: the highest median; missing, zero and NaN results are skipped', () => {
    expect(bestPeer([{ path: 'pasta', value: 0.8 }, { path: 'slirp4netns', value: 2.4 }])).toEqual({ path: 'slirp4netns', value: 2.4 });
    expect(bestPeer([{ path: 'pasta', value: undefined }, { path: 'slirp4netns', value: 1 }])).toEqual({ path: 'slirp4netns', value: 1 });
    expect(bestPeer([{ path: 'pasta', value: 0 }, { path: 'slirp4netns', value: Number.NaN }])).toBeUndefined();
  });

  it('goals: met at exactly the target, not below, no verdict without a result', () => {
    const g = { cell: 'MTU 1500 down', ratio: 1.0, target: 1.0, against: 'slirp4netns 2.40 Gbit/s' };
    expect(goalMet(g)).toBe(true);
    expect(goalLine(g)).toBe('goal MTU 1500 down: >= 1.00x slirp4netns 2.40 Gbit/s: 1.00x  met');
    expect(goalMet({ ...g, ratio: 0.999 })).toBe(false);
    expect(goalLine({ ...g, ratio: 0.71 })).toMatch(/0\.71x {2}NOT MET$/);
    expect(goalMet({ ...g, ratio: undefined })).toBeUndefined();
    expect(goalLine({ ...g, ratio: undefined })).toMatch(/: - {2}no result$/);
  });

  it('perRunRatios: pairs the samples of the same repetition, skips the incomplete ones', () => {
    const a = [
      { rep: 1, value: 2 },
      { rep: 2, value: 3 },
      { rep: 3, value: undefined },
      { rep: 4, value: 1 },
    ];
    const b = [
      { rep: 2, value: 2 },
      { rep: 1, value: 4 },
      { rep: 3, value: 1 },
      { rep: 4, value: 0 },
    ];
    expect(perRunRatios(a, b)).toEqual({ median: 1, min: 0.5, max: 1.5, n: 2 });
    expect(perRunRatios(a, [])).toBeUndefined();
    const g = { cell: 'MTU 1500 up', ratio: 0.9, target: 1, against: 'pasta 1.00 Gbit/s', perRun: perRunRatios(a, b) };
    expect(goalLine(g)).toBe('goal MTU 1500 up: >= 1.00x pasta 1.00 Gbit/s: 0.90x (per run 0.50–1.50x)  NOT MET');
  });

  it('ratioText', () => {
    expect(ratioText(1.7, 2.4)).toBe('0.71x');
    expect(ratioText(1, 0)).toBe('-');
    expect(ratioText(undefined, 1)).toBe('-');
  });
});
