import { defineConfig } from 'vitest/config';
// Unit tests only: no build, no privileges (used by `npm run test:unit`).
export default defineConfig({ test: { include: ['test/unit/**/*.test.ts'] } });
