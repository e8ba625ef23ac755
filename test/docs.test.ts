// The docs stay true: the running-from-code example runs, relative links resolve, and the operations guide's metrics
// reference names every family a broker serves.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startBroker } from './helpers.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

test('docs/examples/from-code.mjs runs: a broker, a worker and a client in one process, then a clean exit', () => {
  const r = spawnSync(process.execPath, [join(ROOT, 'docs', 'examples', 'from-code.mjs')], { cwd: ROOT, encoding: 'utf8', timeout: 30000 });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^broker on tcp:\/\/127\.0\.0\.1:\d+, status page on http:\/\/127\.0\.0\.1:\d+\/\nHELLO WORLD\nclosed\n$/);
  assert.match(r.stderr, /^\{"level":"info","time":\d+,"msg":"mdbroker listening","endpoints":\["tcp:\/\/127\.0\.0\.1:\d+"\]/, 'consoleLog wrote JSON lines to stderr');
});

test('README and docs/: every relative link points at a file that exists', () => {
  const files = ['README.md', ...readdirSync(join(ROOT, 'docs')).filter((f) => f.endsWith('.md')).map((f) => join('docs', f))];
  const broken: string[] = [];
  for (const f of files) {
    const text = readFileSync(join(ROOT, f), 'utf8');
    for (const [, target] of text.matchAll(/\]\(([^)#\s]+)(#[^)]*)?\)/g)) {
      if (/^[a-z]+:/.test(target)) continue;
      if (!existsSync(join(ROOT, dirname(f), target))) broken.push(`${f}: ${target}`);
    }
  }
  assert.deepEqual(broken, []);
});

test('docs/operations.md names every metric family a broker serves', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mdb-docs-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const { broker } = await startBroker({ shards: 1, metricsPort: 0, statsInterval: 0, titanic: join(dir, 'store') });
  t.after(() => broker.close());
  const metrics = await (await fetch(`http://127.0.0.1:${broker.metricsPort}/metrics`)).text();
  const doc = readFileSync(join(ROOT, 'docs', 'operations.md'), 'utf8');
  const families = [...metrics.matchAll(/^# TYPE (mdbroker_\w+) /gm)].map((m) => m[1]);
  assert.ok(families.length > 30);
  assert.deepEqual(families.filter((f) => !doc.includes(`\`${f}`)), [], 'families missing from the metrics reference');
});
