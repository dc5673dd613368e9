import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // tfjs-wasm is single-threaded per process; forks give each test file its own backend.
    pool: 'forks',
  },
});
