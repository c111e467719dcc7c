import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/support/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // Integration files create their own uniquely named namespaces, so they can run side by side.
    maxConcurrency: 4,
    fileParallelism: true,
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
  },
});
