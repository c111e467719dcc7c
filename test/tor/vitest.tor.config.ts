import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

// Only the Tor tests, with only the private-Tor global setup (no build of dist/, no native
// addon): `npx vitest run --config test/tor/vitest.tor.config.ts`.
export default defineConfig({
  root: fileURLToPath(new URL('../../', import.meta.url)),
  test: {
    include: ['test/tor/**/*.test.ts'],
    globalSetup: ['test/tor/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
    fileParallelism: true,
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
  },
});
