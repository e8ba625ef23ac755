// The benchmark harness end to end with tiny counts: it runs, accounts for every request, and writes its JSON.
// Timings are not asserted: this machine is shared and noisy.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { failoverDip, type BenchReport } from '../bench/report.js';

const RUN = fileURLToPath(new URL('../bench/run.js', import.meta.url));

test('npm run bench -- --config smoke --json: every request answered, the report complete', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mdbench-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const json = join(dir, 'out.json');
  const html = join(dir, 'out.html');
  const r = spawnSync(process.execPath, [RUN, '--config', 'smoke', '--json', json, '--html', html], { encoding: 'utf8', timeout: 60000 });
  assert.equal(r.status, 0, r.stderr + r.stdout);
  assert.match(r.stdout, /config\s+msgs\/s\s+MB\/s\s+p50 ms\s+p99 ms\s+p99\.9 ms/);
  const report = JSON.parse(readFileSync(json, 'utf8')) as BenchReport;
  assert.equal(report.results.length, 1);
  const [res] = report.results;
  assert.equal(res.config.name, 'smoke');
  assert.ok(res.broker.replies > 0, 'the broker answered during the window');
  assert.ok(res.raw && res.raw.replies > 0, 'the raw proxy ran too');
  assert.equal(res.broker.lost, 0);
  assert.equal(res.broker.duplicates, 0);
  assert.equal(res.broker.answered, res.broker.sent, 'every request sent was answered');
  assert.ok(typeof res.ratio === 'number' && res.ratio > 0);
  assert.ok(res.broker.serverCpuUsPerReq !== null && res.broker.serverPeakRssBytes !== null);
  assert.ok(typeof res.broker.serverLoopDelayP99Ms === 'number', `the loop p99 column has a value: ${String(res.broker.serverLoopDelayP99Ms)}`);
  assert.ok(report.node && report.libzmq && report.cpu && report.date);
  assert.match(readFileSync(html, 'utf8'), /<svg[\s\S]*smoke/);

  const cmp = spawnSync(process.execPath, [RUN, '--compare', json, json], { encoding: 'utf8', timeout: 10000 });
  assert.equal(cmp.status, 0, cmp.stderr);
  assert.match(cmp.stdout, /smoke\s+[\d,]+\s+[\d,]+\s+1\.00/);
});

test('bench: a bad option or config fails with a readable message', () => {
  const r = spawnSync(process.execPath, [RUN, '--config', 'no-such-config'], { encoding: 'utf8', timeout: 10000 });
  assert.equal(r.status, 2);
  assert.match(r.stderr, /no config 'no-such-config'/);
  const dir = mkdtempSync(join(tmpdir(), 'mdbroker-bench-'));
  try {
    const cfg = join(dir, 'typo.json');
    writeFileSync(cfg, JSON.stringify({ runs: [{ name: 'x', workerz: 5 }] }));
    const typo = spawnSync(process.execPath, [RUN, '--config', cfg], { encoding: 'utf8', timeout: 10000 });
    assert.equal(typo.status, 2);
    assert.match(typo.stderr, /run 'x': unknown key\(s\) workerz/);
    const stray = spawnSync(process.execPath, [RUN, '--config', 'smoke', 'extra'], { encoding: 'utf8', timeout: 10000 });
    assert.equal(stray.status, 2);
    assert.match(stray.stderr, /unexpected argument\(s\): extra/);
    const notResult = join(dir, 'not-a-result.json');
    writeFileSync(notResult, JSON.stringify({ hello: 1 }));
    const cmp = spawnSync(process.execPath, [RUN, '--compare', notResult, notResult], { encoding: 'utf8', timeout: 10000 });
    assert.equal(cmp.status, 2);
    assert.match(cmp.stderr, /is not a bench result/);
    const a = join(dir, 'a.json');
    const b = join(dir, 'b.json');
    const report = (name: string) => JSON.stringify({ tool: 'mdbroker-bench', date: '2026-01-01', results: [{ config: { name } }] });
    writeFileSync(a, report('one'));
    writeFileSync(b, report('two'));
    const disjoint = spawnSync(process.execPath, [RUN, '--compare', a, b], { encoding: 'utf8', timeout: 10000 });
    assert.notEqual(disjoint.status, 0);
    assert.match(disjoint.stderr, /no config names in common/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('bench failover: two brokers, the second SIGKILLed mid-window; the library clients lose nothing and the dip is reported', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mdbench-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const cfg = join(dir, 'failover.json');
  writeFileSync(cfg, JSON.stringify({ runs: [{ name: 'fo', workers: 4, clients: 4, window: 4, brokers: 2, killBrokerAtMs: 700, warmupMs: 300, durationMs: 1500, baseline: false }] }));
  const json = join(dir, 'out.json');
  const r = spawnSync(process.execPath, [RUN, '--config', cfg, '--json', json], { encoding: 'utf8', timeout: 60000 });
  assert.equal(r.status, 0, r.stderr + r.stdout);
  assert.match(r.stdout, /failover fo: broker 2 of 2 SIGKILLed 700 ms into the window; before [\d,]+ msgs\/s, lowest 100 ms after [\d,]+ msgs\/s/);
  const [res] = (JSON.parse(readFileSync(json, 'utf8')) as BenchReport).results;
  assert.equal(res.broker.lost, 0);
  assert.equal(res.broker.duplicates, 0);
  assert.ok((res.repeats[0].broker.timeline?.length ?? 0) >= 14, 'a timeline of the window in 100 ms buckets');
});

test('failoverDip: the rate before, the lowest bucket after the kill, the time back to 80%', () => {
  const timeline = [...Array(20).fill(50), 10, 0, 20, 30, 45, 50, 50];
  const d = failoverDip(timeline, 2000);
  assert.equal(d.beforePerSec, 500);
  assert.equal(d.lowestPerSec, 0);
  assert.equal(d.recoveredMs, 500, 'bucket 24 (45 >= 40) is the first back at 80%');
  assert.equal(failoverDip([...Array(20).fill(50), 0, 0], 2000).recoveredMs, null);
  assert.equal(failoverDip([...Array(20).fill(50), 45, 50], 2000).recoveredMs, 0, 'no dip under 80%');
});

test('npm run bench:apps, tiny: the libraries (NULL and CURVE) and the raw peers each answer and report their CPU', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mdapps-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const out = join(dir, 'apps.json');
  const apps = fileURLToPath(new URL('../bench/apps.js', import.meta.url));
  const r = spawnSync(process.execPath, [apps, '--only', 'mdbroker,mdbroker-curve,mdbroker-peers', '--seconds', '1', '--rounds', '1', '--depth', '4', '--sessions', '4', '--out', out], { encoding: 'utf8', timeout: 90000 });
  assert.equal(r.status, 0, r.stderr + r.stdout);
  const report = JSON.parse(readFileSync(out, 'utf8')) as { rows: { system: string; rate: number; clientUs: number; workerUs: number; serverUs: number }[] };
  assert.deepEqual(report.rows.map((x) => x.system), ['mdbroker', 'mdbroker-curve', 'mdbroker-peers']);
  for (const row of report.rows) {
    assert.ok(row.rate > 0, `${row.system} answered`);
    assert.ok(row.clientUs > 0 && row.workerUs > 0 && row.serverUs > 0, `${row.system}: CPU per request of every process`);
  }
});
