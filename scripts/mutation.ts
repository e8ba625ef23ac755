// npm run test:mutation -- [core|protocol|zmtp|zmtp-engine|client|all] [--force]: StrykerJS over one area of the
// source (see stryker.config.mjs); --force reruns every mutant instead of the incremental run. Reports:
// reports/mutation/.
import { spawnSync } from 'node:child_process';

const AREAS = ['core', 'protocol', 'zmtp', 'zmtp-engine', 'client'];
const args = process.argv.slice(2);
if (args.includes('--help') || args.includes('-h')) {
  process.stdout.write('npm run test:mutation -- [core|protocol|zmtp|zmtp-engine|client|all] [--force]\n  default: core, incremental (only mutants in changed code or covered by changed tests run again)\n');
  process.exit(0);
}
const force = args.includes('--force');
const named = args.filter((a) => !a.startsWith('-'));
const areas = named.length === 0 ? ['core'] : named.includes('all') ? AREAS : named;
for (const a of areas) {
  if (!AREAS.includes(a)) {
    process.stderr.write(`test:mutation: unknown area '${a}' (one of ${AREAS.join(', ')}, all)\n`);
    process.exit(2);
  }
}
for (const area of areas) {
  process.stdout.write(`\n== mutation testing: src/${area} ==\n`);
  const r = spawnSync('npx', ['stryker', 'run', ...(force ? ['--force'] : [])], { stdio: 'inherit', env: { ...process.env, MUTATION_AREA: area } });
  if (r.status !== 0) process.exit(r.status ?? 1);
}
