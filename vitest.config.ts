import { configDefaults, defineConfig } from 'vitest/config';

/**
 * Two tiers; `npm test` (what CI runs) runs both.
 *
 * - fast (`npm run test:fast`): the numeric tier, in-process — kernels against their slow
 *   references, formats, goldens. Every test file NOT matched below lands here, so a new file is
 *   fast by default: keep it in-process and quick.
 * - robustness (`npm run test:robust`): CLI processes and long-running behaviour — the files
 *   matched by ROBUSTNESS. Name a new file to match (`bad-*` / `*-bad` for hostile
 *   files/runs/outputs through the CLI, `*.process.test.ts` for anything else that spawns CLI
 *   processes or kills them, `*workers*` for worker threads, `distill*` for training runs), or add
 *   it to the list. Numeric checks (a kernel against its slow reference) belong in a fast-tier file
 *   even when a robustness file exercises the same code end to end.
 *
 * Timeouts only catch hangs (no test asserts a speed): they are generous because a loaded machine
 * (another CPU-heavy job beside the suite) must give the same verdict, only later.
 */
const ROBUSTNESS = [
  'test/*bad*.test.ts', // hostile inputs, runs and outputs through the real CLI (CliWorker + own processes): bad-input, torch-bad, …
  'test/torch-bad.test.ts', // hostile symbiotic_adapter.pt files through the real CLI
  'test/*.process.test.ts', // anything else that spawns CLI processes (and CliWorker's own test)
  'test/fuzz*.test.ts', // seeded mutations of model files, through the API and the CLI
  'test/interrupt*.test.ts', // kill -9 / Ctrl-C of convert and eval processes
  'test/distill*.test.ts', // end-to-end training runs; distill processes killed and resumed
  'test/*workers*.test.ts', // worker threads (eval, distill)
  'test/browser*.test.ts', // headless Chromium on the HTML reports
  'test/usability*.test.ts', // the CLI run as a user would, own processes (test/helpers/usabilityCli.ts)
  'test/bench.test.ts', // runs `synaxim bench` sections (timed loops, even on tiny sizes)
];

export default defineConfig({
  test: {
    testTimeout: 300_000,
    hookTimeout: 300_000,
    // tfjs-wasm is single-threaded per process; forks give each test file its own backend.
    pool: 'forks',
    projects: [
      { extends: true, test: { name: 'fast', include: ['test/**/*.test.ts'], exclude: [...configDefaults.exclude, ...ROBUSTNESS] } },
      { extends: true, test: { name: 'robustness', include: ROBUSTNESS, testTimeout: 900_000, hookTimeout: 900_000 } },
    ],
  },
});
