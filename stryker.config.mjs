// StrykerJS mutation testing: `npm run test:mutation -- <area>` (core, protocol, zmtp, zmtp-engine or client;
// default core).
// Not in CI: on 2 cores one area takes from minutes (protocol) to an hour (zmtp). Incremental: the result is kept
// per area in reports/mutation/<area>.incremental.json and only mutants in changed code, or covered by changed
// tests, run again; `-- <area> --force` runs them all. Scores and what survives: docs/testing.md.
//
// How it runs: Stryker writes every mutant of the area into a sandbox copy (mutation switching), `tsc` compiles it
// once, and the tap runner runs the area's test files (compiled, under dist/test) with one mutant switched on at a
// time; node's test runner speaks TAP. Coverage is per test file, so a mutant runs only the files that reach it.
// Each area has its own test files, the ones that guard it directly and finish in seconds: the whole suite on
// every mutant would take days here. zmtp leaves out zmtp-transport.test.ts (20 s a run): with it the area's
// 1,561 mutants were on course for about 90 minutes; hostile.test.ts drives the router with raw and libzmq peers.

const AREAS = {
  core: {
    mutate: ['src/core/**/*.ts'],
    tests: ['broker-core', 'core-edges', 'service-queue', 'stats', 'fuzz', 'validation', 'memory-return', 'worker-credit'],
  },
  protocol: {
    mutate: ['src/protocol/**/*.ts'],
    tests: ['broker-core', 'fuzz', 'validation', 'conformance'],
  },
  zmtp: {
    mutate: ['src/zmtp/**/*.ts'],
    tests: ['zmtp-wire', 'zmtp-parser', 'curve-session', 'hostile'],
  },
  // The engine alone (what issue 18 splits into decoder, encoder and mechanisms), with the fast tests that drive it
  // byte for byte: minutes, where the whole zmtp area with hostile.test.ts takes an hour or more here.
  'zmtp-engine': {
    mutate: ['src/zmtp/wire.ts', 'src/zmtp/z85.ts', 'src/zmtp/curve.ts', 'src/zmtp/connection.ts', 'src/zmtp/decoder.ts', 'src/zmtp/encoder.ts', 'src/zmtp/mechanism.ts'],
    tests: ['zmtp-wire', 'zmtp-parser', 'zmtp-codec', 'curve-session'],
  },
  client: {
    mutate: ['src/client/**/*.ts'],
    tests: ['client-wire', 'client', 'library', 'broker-link'],
  },
};

const area = process.env.MUTATION_AREA ?? 'core';
const chosen = AREAS[area];
if (chosen === undefined) throw new Error(`MUTATION_AREA must be one of ${Object.keys(AREAS).join(', ')}, got '${area}'`);

export default {
  packageManager: 'npm',
  testRunner: 'tap',
  checkers: ['typescript'],
  tsconfigFile: 'tsconfig.json',
  mutate: chosen.mutate,
  buildCommand: 'npx tsc -p .',
  tap: {
    testFiles: chosen.tests.map((t) => `dist/test/${t}.test.js`),
    nodeArgs: ['--test-reporter=tap', '-r', '{{hookFile}}', '{{testFile}}'],
  },
  coverageAnalysis: 'perTest',
  // Stryker gives half the processes to the TypeScript checker: 4 means 2 checkers and 2 test runners. A runner
  // mostly waits on its test file's timers and sockets: in the zmtp area's first minutes, 4 tested 30 mutants a
  // minute where 2 (one checker, one runner) tested 21. MUTATION_CONCURRENCY changes it.
  concurrency: Number(process.env.MUTATION_CONCURRENCY ?? 4),
  timeoutMS: 20000,
  ignorePatterns: ['dist', 'reports', 'bench/results', '*.cpuprofile'],
  incremental: true,
  incrementalFile: `reports/mutation/${area}.incremental.json`,
  reporters: ['clear-text', 'progress', 'json'],
  jsonReporter: { fileName: `reports/mutation/${area}.json` },
  tempDirName: `.stryker-tmp-${area}`,
  cleanTempDir: true,
};
