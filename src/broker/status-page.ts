// The live status page at GET / on --metrics-port: one HTML page that polls /status.json every second and draws the
// services table and small charts with uPlot (a 50 KB charting library, served from the package's own
// node_modules at /assets/: no CDN, nothing fetched from outside). Everything it shows comes from the same
// aggregation as mmi.stats and /metrics.

import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

/** /assets/NAME -> [content type, body], read once on first use. */
let assets: Map<string, [string, Buffer]> | null = null;

export function statusAsset(name: string): [string, Buffer] | null {
  if (assets === null) {
    const require = createRequire(import.meta.url);
    assets = new Map([
      ['uPlot.iife.min.js', ['text/javascript; charset=utf-8', readFileSync(require.resolve('uplot/dist/uPlot.iife.min.js'))]],
      ['uPlot.min.css', ['text/css; charset=utf-8', readFileSync(require.resolve('uplot/dist/uPlot.min.css'))]],
    ]);
  }
  return assets.get(name) ?? null;
}

/** What /status.json holds beside the report: the broker's threads and the process. */
export interface ThreadStatus {
  thread: number;
  connections: number;
  workers: number;
  queued: number;
}

export const STATUS_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>mdbroker status</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/assets/uPlot.min.css">
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
  h1 { font-size: 1.3em; margin: 0 0 .2em; }
  #summary { color: #555; margin-bottom: 1em; }
  .health { display: inline-block; padding: 0 .5em; border-radius: 3px; color: #fff; background: #2a7; }
  .health.draining, .health.starting, .health.down { background: #c33; }
  table { border-collapse: collapse; margin: 1em 0; min-width: 60%; }
  th, td { padding: .25em .8em; text-align: right; border-bottom: 1px solid #ddd; }
  th:first-child, td:first-child { text-align: left; }
  th { background: #f4f4f4; }
  .charts { display: flex; flex-wrap: wrap; gap: 1em; }
  .chart h2 { font-size: 1em; margin: .5em 0 0; }
  #error { color: #c33; }
</style>
</head>
<body>
<h1>mdbroker <span id="health" class="health">...</span></h1>
<div id="summary">loading...</div>
<div id="error"></div>
<table id="services">
  <thead><tr><th>service</th><th>workers</th><th>idle</th><th>busy</th><th>queued</th><th>req/s</th><th>requests</th><th>errors</th><th>wait p99 ms</th><th>service p99 ms</th></tr></thead>
  <tbody></tbody>
</table>
<div class="charts">
  <div class="chart"><h2>requests per second</h2><div id="c-rate"></div></div>
  <div class="chart"><h2>queued requests</h2><div id="c-queue"></div></div>
  <div class="chart"><h2>service time p99 (ms)</h2><div id="c-latency"></div></div>
</div>
<table id="threads">
  <thead><tr><th>thread</th><th>connections</th><th>workers</th><th>queued</th></tr></thead>
  <tbody></tbody>
</table>
<script src="/assets/uPlot.iife.min.js"></script>
<script>
'use strict';
const KEEP = 120;
const times = [];
const series = { rate: new Map(), queue: new Map(), latency: new Map() };
const charts = {};
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => '&#' + c.charCodeAt(0) + ';');
const fmt = (x) => x >= 100 ? Math.round(x).toLocaleString() : String(Math.round(x * 100) / 100);
function push(kind, name, value) {
  let s = series[kind].get(name);
  if (!s) { s = new Array(times.length - 1).fill(null); series[kind].set(name, s); }
  s.push(value);
}
function draw(kind, el) {
  const names = [...series[kind].keys()];
  const data = [times.slice(), ...names.map((n) => series[kind].get(n).slice(-times.length))];
  const key = names.join('|');
  if (!charts[kind] || charts[kind].key !== key) {
    if (charts[kind]) charts[kind].plot.destroy();
    const colors = ['#27a', '#e73', '#2a7', '#c33', '#85c', '#aa2', '#5bc', '#888'];
    const opts = { width: 420, height: 180, legend: { show: true }, series: [{}, ...names.map((n, i) => ({ label: n, stroke: colors[i % colors.length], width: 2 }))], axes: [{}, { size: 60 }] };
    charts[kind] = { key, plot: new uPlot(opts, data, document.getElementById(el)) };
  } else charts[kind].plot.setData(data);
}
async function poll() {
  let s;
  try {
    const r = await fetch('/status.json', { cache: 'no-store' });
    s = await r.json();
    document.getElementById('error').textContent = '';
  } catch (e) {
    document.getElementById('health').textContent = 'down';
    document.getElementById('health').className = 'health down';
    document.getElementById('error').textContent = 'no answer from the broker: ' + e;
    return;
  }
  const rep = s.report;
  const h = document.getElementById('health');
  h.textContent = s.health;
  h.className = 'health ' + s.health;
  const names = Object.keys(rep.services).sort();
  const sum = (k) => names.reduce((a, n) => a + rep.services[n][k], 0);
  const count = (n, what) => n + ' ' + what + (n === 1 ? '' : 's');
  document.getElementById('summary').textContent =
    'up ' + Math.round(rep.uptimeMs / 1000) + ' s, ' + count(rep.shards, 'thread') + '; ' +
    count(names.length, 'service') + ', ' + count(sum('workers'), 'worker') + ' (' + sum('idle') + ' idle), ' + sum('queued') + ' queued; ' +
    fmt(rep.rates.requestsPerSec) + ' requests/s; ' + (rep.global.connections ?? 0) + ' connections; RSS ' +
    Math.round(s.rssBytes / 1048576) + ' MiB; version ' + s.version;
  document.querySelector('#services tbody').innerHTML = names.map((n) => {
    const v = rep.services[n];
    const errors = Object.values(v.errors).reduce((a, x) => a + x, 0);
    return '<tr data-service="' + esc(n) + '"><td>' + esc(n) + '</td><td class="workers">' + v.workers + '</td><td>' + v.idle + '</td><td>' + v.busy +
      '</td><td class="queued">' + v.queued + '</td><td>' + fmt(v.requestsPerSec) + '</td><td>' + v.requests + '</td><td>' + errors +
      '</td><td>' + fmt(v.queueWaitMs.p99) + '</td><td>' + fmt(v.serviceTimeMs.p99) + '</td></tr>';
  }).join('') || '<tr><td colspan="10">no services yet: no worker has registered and no request was sent</td></tr>';
  document.querySelector('#threads tbody').innerHTML = s.threads.map((t) =>
    '<tr><td>' + t.thread + '</td><td>' + t.connections + '</td><td>' + t.workers + '</td><td>' + t.queued + '</td></tr>').join('');
  times.push(Date.now() / 1000);
  push('rate', 'all', rep.rates.requestsPerSec);
  for (const n of names) {
    push('queue', n, rep.services[n].queued);
    push('latency', n, rep.services[n].serviceTimeMs.p99);
  }
  for (const kind of Object.keys(series)) for (const [n, s2] of series[kind]) { if (s2.length < times.length) s2.push(null); }
  if (times.length > KEEP) {
    times.shift();
    for (const kind of Object.keys(series)) for (const s2 of series[kind].values()) s2.shift();
  }
  if (typeof uPlot !== 'undefined') {
    draw('rate', 'c-rate');
    draw('queue', 'c-queue');
    draw('latency', 'c-latency');
  }
}
poll();
setInterval(poll, 1000);
</script>
</body>
</html>
`;
