import { defineConfig } from 'vitest/config';
// `npm run fuzz`: the long fuzz runs (FUZZ_INPUTS inputs per target, default 10^6), one file at a
// time so the targets do not share the 2 cores; no build, no privileges.
export default defineConfig({
  test: {
    include: ['test/fuzz/**/*.fuzz.ts'],
    testTimeout: 900_000,
    hookTimeout: 60_000,
    fileParallelism: false,
  },
});
