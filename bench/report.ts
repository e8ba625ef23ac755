// Rendering benchmark results: the comparison table, terminal charts, the HTML report, and two runs compared.

import Chartscii from 'chartscii';
import { TIMELINE_MS, type LoadResult, type RunConfig } from './load-config.js';

export interface Measurement extends LoadResult {
  /** Server (broker or raw proxy) CPU over the measured window, % of one core. Null for an external target. */
  serverCpuPct: number | null;
  serverCpuUsPerReq: number | null;
  serverPeakRssBytes: number | null;
  /** The broker's main-thread event-loop delay, p99 over the window (ms): how long ready work waited. */
  serverLoopDelayP99Ms: number | null;
}

export interface ConfigResult {
  config: RunConfig;
  /** Median over repeats (lost, duplicates and errors are summed). */
  broker: Measurement;
  raw: Measurement | null;
  /** broker throughput / raw proxy throughput, median of per-repeat ratios. */
  ratio: number | null;
  /** libzmq's own proxy in a native thread (--native); absent in older results. */
  native?: Measurement | null;
  nativeRatio?: number | null;
  repeats: { broker: Measurement; raw: Measurement | null; native?: Measurement | null }[];
}

export interface BenchReport {
  tool: 'mdbroker-bench';
  version: string;
  date: string;
  node: string;
  libzmq: string;
  cpu: string;
  cores: number;
  configFile: string;
  target: string;
  repeat: number;
  results: ConfigResult[];
}

const ms = (us: number) => (us / 1000).toFixed(us < 10000 ? 2 : 1);
const int = (n: number) => Math.round(n).toLocaleString('en-US');
const mib = (b: number | null) => (b === null ? '-' : `${(b / 1048576).toFixed(0)} MiB`);
const opt = (n: number | null, digits = 0) => (n === null ? '-' : n.toFixed(digits));

function errorsOf(m: LoadResult): number {
  return Object.values(m.errors).reduce((a, b) => a + b, 0);
}

function table(head: string[], rows: string[][]): string {
  const width = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(width[i]) : c.padStart(width[i]))).join('  ');
  return [line(head), width.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

const BASE_COLUMNS = ['config', 'msgs/s', 'MB/s', 'p50 ms', 'p99 ms', 'p99.9 ms', 'max ms', 'CPU %', 'CPU us/req', 'peak RSS', 'loop p99', 'raw msgs/s', 'vs raw'];
const NATIVE_COLUMNS = ['native msgs/s', 'vs native'];
const TAIL_COLUMNS = ['errors', 'lost'];

/** The table's columns: the native-proxy pair only when some result has it. */
export function columns(report: BenchReport): string[] {
  return [...BASE_COLUMNS, ...(hasNative(report) ? NATIVE_COLUMNS : []), ...TAIL_COLUMNS];
}

function hasNative(report: BenchReport): boolean {
  return report.results.some((r) => r.native);
}

export function resultRow(r: ConfigResult, withNative: boolean): string[] {
  const b = r.broker;
  return [
    // MB/s: request bodies through the broker (the replies carry as much again the other way).
    r.config.name, int(b.throughput), (b.throughput * r.config.size / 1e6).toFixed(b.throughput * r.config.size >= 1e7 ? 0 : 2), ms(b.p50), ms(b.p99), ms(b.p999), ms(b.max),
    opt(b.serverCpuPct), opt(b.serverCpuUsPerReq, 1), mib(b.serverPeakRssBytes), b.serverLoopDelayP99Ms === null || b.serverLoopDelayP99Ms === undefined ? '-' : ms(b.serverLoopDelayP99Ms * 1000),
    r.raw ? int(r.raw.throughput) : '-', r.ratio === null ? '-' : r.ratio.toFixed(2),
    ...(withNative ? [r.native ? int(r.native.throughput) : '-', r.nativeRatio == null ? '-' : r.nativeRatio.toFixed(2)] : []),
    String(errorsOf(b)), String(b.lost + b.duplicates),
  ];
}

export function renderTable(report: BenchReport): string {
  const n = hasNative(report);
  return table(columns(report), report.results.map((r) => resultRow(r, n)));
}

export function renderConditions(report: BenchReport): string {
  const peers = [...new Set(report.results.map((r) => r.config.peers ?? 'libzmq'))].join('+');
  return `${report.date}  node ${report.node}  libzmq ${report.libzmq}  ${report.cores} x ${report.cpu}  ` +
    `target ${report.target}  config ${report.configFile}  generator peers ${peers}  repeat ${report.repeat} (median)`;
}

export function renderCharts(report: BenchReport, color: boolean): string {
  const bar = (title: string, data: { label: string; value: number }[]) => {
    const text = new Chartscii(data, { title, width: 50, height: data.length, barSize: 1, valueLabels: true, ...(color ? { color: 'cyan' } : {}) }).create();
    // chartscii emits colour resets even uncoloured; keep files and pipes clean.
    return color ? text : text.replace(/\x1b\[[0-9;]*m/g, '');
  };
  const tp = report.results.map((r) => ({ label: r.config.name, value: Math.round(r.broker.throughput) }));
  const p99 = report.results.map((r) => ({ label: r.config.name, value: Number((r.broker.p99 / 1000).toFixed(2)) }));
  return `${bar('throughput (msgs/s)', tp)}\n\n${bar('p99 latency (ms)', p99)}`;
}

export function renderCompare(a: BenchReport, b: BenchReport, nameA: string, nameB: string): string {
  const byName = new Map(a.results.map((r) => [r.config.name, r]));
  const rows: string[][] = [];
  for (const rb of b.results) {
    const ra = byName.get(rb.config.name);
    if (!ra) continue;
    const ratio = (x: number | null, y: number | null) => (x && y ? (y / x).toFixed(2) : '-');
    rows.push([
      rb.config.name, int(ra.broker.throughput), int(rb.broker.throughput), ratio(ra.broker.throughput, rb.broker.throughput),
      ms(ra.broker.p99), ms(rb.broker.p99), ratio(ra.broker.p99, rb.broker.p99),
      opt(ra.broker.serverCpuUsPerReq, 1), opt(rb.broker.serverCpuUsPerReq, 1), ratio(ra.broker.serverCpuUsPerReq, rb.broker.serverCpuUsPerReq),
    ]);
  }
  if (rows.length === 0) return 'no config names in common';
  return `A = ${nameA} (${a.date})\nB = ${nameB} (${b.date})\n\n` + table(
    ['config', 'A msgs/s', 'B msgs/s', 'B/A', 'A p99 ms', 'B p99 ms', 'B/A', 'A us/req', 'B us/req', 'B/A'],
    rows,
  );
}

function esc(s: string): string {
  return s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c] as string);
}

function svgBars(title: string, data: { label: string; value: number }[], unit: string): string {
  const rowH = 26;
  const labelW = 170;
  const barW = 420;
  const max = Math.max(1, ...data.map((d) => d.value));
  const h = 30 + data.length * rowH;
  const bars = data.map((d, i) => {
    const y = 30 + i * rowH;
    const w = Math.max(1, (d.value / max) * barW);
    return `<text x="${labelW - 8}" y="${y + 16}" text-anchor="end">${esc(d.label)}</text>` +
      `<rect x="${labelW}" y="${y + 3}" width="${w.toFixed(1)}" height="18" fill="#3b82f6"/>` +
      `<text x="${labelW + w + 6}" y="${y + 16}">${esc(d.value.toLocaleString('en-US'))} ${unit}</text>`;
  });
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${labelW + barW + 150}" height="${h}" font-family="sans-serif" font-size="13">` +
    `<text x="4" y="18" font-weight="bold">${esc(title)}</text>${bars.join('')}</svg>`;
}

export function renderHtml(report: BenchReport): string {
  const tp = report.results.map((r) => ({ label: r.config.name, value: Math.round(r.broker.throughput) }));
  const p99 = report.results.map((r) => ({ label: r.config.name, value: Number((r.broker.p99 / 1000).toFixed(2)) }));
  const n = hasNative(report);
  const rows = report.results.map((r) => `<tr>${resultRow(r, n).map((c) => `<td>${esc(c)}</td>`).join('')}</tr>`).join('\n');
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>mdbroker benchmark ${esc(report.date)}</title>
<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child,th:first-child{text-align:left}</style>
</head><body>
<h1>mdbroker benchmark</h1>
<p>${esc(renderConditions(report))}</p>
${svgBars('Throughput (msgs/s)', tp, '')}
${svgBars('p99 latency (ms)', p99, 'ms')}
<table><tr>${columns(report).map((c) => `<th>${esc(c)}</th>`).join('')}</tr>
${rows}
</table>
<p>CPU % and CPU us/req are the broker process's (all threads), over the measured window. "vs raw" is broker msgs/s
divided by the zero-logic ROUTER-DEALER proxy's under the same load ("vs native": libzmq's own proxy in C).</p>
</body></html>
`;
}

/**
 * What a broker's death did to throughput, from the replies-per-bucket timeline of a failover run: the median rate
 * before the kill, the lowest bucket after it, and how long until a bucket reached 80% of the rate before.
 */
export function failoverDip(timeline: number[], killAtMs: number): { beforePerSec: number; lowestPerSec: number; recoveredMs: number | null } {
  const k = Math.floor(killAtMs / TIMELINE_MS);
  const perSec = (n: number) => (n * 1000) / TIMELINE_MS;
  const before = timeline.slice(1, k);
  const beforePerSec = before.length > 0 ? perSec(medianOf(before)) : 0;
  const after = timeline.slice(k, k + Math.round(5000 / TIMELINE_MS));
  let low = 0;
  for (let i = 1; i < after.length; i++) if (after[i] < after[low]) low = i;
  let recoveredMs: number | null = null;
  // No bucket under 80%: no dip to recover from.
  if (after.length > 0 && perSec(after[low]) >= 0.8 * beforePerSec) recoveredMs = 0;
  else for (let i = low; i < after.length; i++) {
    if (perSec(after[i]) >= 0.8 * beforePerSec) {
      recoveredMs = (i + 1) * TIMELINE_MS;
      break;
    }
  }
  return { beforePerSec, lowestPerSec: after.length > 0 ? perSec(after[low]) : 0, recoveredMs };
}

function medianOf(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}
