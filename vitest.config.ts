import { defineConfig } from 'vitest/config';

// MVNET_SKIP_PRIVILEGED=1 runs only the unit tests, on purpose; otherwise the global setup
// fails the run with a clear message when root, /dev/net/tun or `ip netns` are missing.
const unitOnly = process.env.MVNET_SKIP_PRIVILEGED === '1';

export default defineConfig({
  test: {
    include: unitOnly ? ['test/unit/**/*.test.ts'] : ['test/**/*.test.ts'],
    globalSetup: ['test/support/global-setup.ts', 'test/tor/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
    // Integration files create their own uniquely named namespaces, so they can run side by side.
    fileParallelism: true,
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
  },
});
