// deploy/: the Prometheus alert rules and every Grafana panel's query parse (promtool check rules), name only metrics
// a running broker serves, the example config starts a broker, and the systemd unit reloads with SIGHUP.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client } from '../src/client/client.js';
import { Worker } from '../src/client/worker.js';
import { spawnBroker } from './support/spawn-broker.js';

const DEPLOY = fileURLToPath(new URL('../../deploy/', import.meta.url));
const RULES = join(DEPLOY, 'prometheus', 'mdbroker-alerts.yml');
const DASHBOARD = join(DEPLOY, 'grafana', 'mdbroker-dashboard.json');
const hasPromtool = spawnSync('promtool', ['--version']).status === 0;
// CI installs Debian's prometheus package; there a missing promtool fails these tests instead of skipping them.
const NO_PROMTOOL = hasPromtool || process.env.MDBROKER_REQUIRE_PROMTOOL === '1' ? false : 'promtool not installed (apt-get install prometheus)';

interface Panel { title: string; targets?: { expr: string }[] }

/** Every PromQL query of the dashboard, with Grafana's variables as a plain regex. */
function dashboardQueries(): { title: string; expr: string }[] {
  const d = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as { panels: Panel[]; title: string; uid: string };
  assert.equal(d.uid, 'mdbroker');
  return d.panels.flatMap((p) => (p.targets ?? []).map((t) => ({ title: p.title, expr: t.expr.replace(/\$(instance|service)/g, '.*') })));
}

/** Every alert expression of the rules file (the `expr:` values, folded blocks included). */
function ruleQueries(): string[] {
  const text = readFileSync(RULES, 'utf8');
  return [...text.matchAll(/expr: (\|\n((?: {10}.*\n)+)|.*)/g)].map((m) => (m[2] ?? m[1]).trim());
}

test('deploy: promtool check rules passes the alert rules, and every dashboard query parses as PromQL', { skip: NO_PROMTOOL }, (t) => {
  const rules = spawnSync('promtool', ['check', 'rules', RULES], { encoding: 'utf8' });
  assert.equal(rules.status, 0, rules.stdout + rules.stderr);
  assert.match(rules.stdout, /SUCCESS: \d+ rules found/);
  // The dashboard's queries as recording rules: promtool parses each one.
  const dir = mkdtempSync(join(tmpdir(), 'mdb-deploy-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const queries = dashboardQueries();
  const yaml = `groups:\n  - name: dashboard\n    rules:\n${queries.map((q, i) => `      - record: dashboard_query_${i}\n        expr: ${JSON.stringify(q.expr)}\n`).join('')}`;
  writeFileSync(join(dir, 'dashboard.yml'), yaml);
  const dash = spawnSync('promtool', ['check', 'rules', join(dir, 'dashboard.yml')], { encoding: 'utf8' });
  assert.equal(dash.status, 0, dash.stdout + dash.stderr);
  assert.ok(queries.length >= 15, `${queries.length} queries`);
});

test('deploy: the example config starts a broker, and the rules and the dashboard name only metrics it serves', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mdb-deploy-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  // The example binds fixed ports for production; here the command line puts them on free ones.
  const b = await spawnBroker(['--config', join(DEPLOY, 'mdbroker.json'), '--bind', 'tcp://127.0.0.1:*', '--metrics-port', '0', '--metrics-host', '127.0.0.1', '--titanic', join(dir, 'store')]);
  t.after(() => b.child.kill('SIGKILL'));
  const w = new Worker({ endpoint: b.endpoint, service: 'echo', handler: (x) => x });
  const c = new Client({ endpoints: b.endpoint });
  t.after(async () => {
    c.close();
    await w.close();
  });
  await c.request('echo', 'x');
  const metrics = await (await fetch(`http://127.0.0.1:${b.metricsPort}/metrics`)).text();
  const served = new Set([...metrics.matchAll(/^# TYPE (\S+) (\w+)$/gm)].flatMap(([, name, type]) => (type === 'histogram' ? [`${name}_bucket`, `${name}_sum`, `${name}_count`] : [name])));
  const named = [...dashboardQueries().map((q) => q.expr), ...ruleQueries()].flatMap((e) => [...e.matchAll(/\b((?:mdbroker|process|nodejs)_[a-z0-9_]+)/g)].map((m) => m[1]));
  assert.ok(named.length > 20);
  for (const name of new Set(named)) assert.ok(served.has(name), `${name} is not on /metrics`);
});

test('deploy: the systemd unit runs the CLI with the config file, reloads with SIGHUP, stops with SIGTERM', () => {
  const unit = readFileSync(join(DEPLOY, 'systemd', 'mdbroker.service'), 'utf8');
  for (const section of ['[Unit]', '[Service]', '[Install]']) assert.ok(unit.includes(`\n${section}\n`), section);
  assert.match(unit, /^ExecStart=\/usr\/bin\/node \/opt\/mdbroker\/dist\/src\/cli\.js --config \/etc\/mdbroker\/mdbroker\.json$/m);
  assert.match(unit, /^ExecReload=\/bin\/kill -HUP \$MAINPID$/m);
  assert.match(unit, /^KillSignal=SIGTERM$/m);
  const docker = readFileSync(join(DEPLOY, 'Dockerfile'), 'utf8');
  assert.match(docker, /^HEALTHCHECK .*\/healthz/m);
  assert.match(docker, /^CMD \["node", "dist\/src\/cli\.js", "--config", "\/etc\/mdbroker\/mdbroker\.json"\]$/m);
});
