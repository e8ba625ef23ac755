// Aggregation of raw stats snapshots: merging shards, percentiles, rates, the Prometheus text (prom-client, when
// asked for), the mmi.stats JSON and the log line. A pure function of its input, so it runs the same inline or in the piscina pool.

import type * as PromClient from 'prom-client';
import { ERROR_CODES } from '../protocol/errors.js';
import { addSnapshot, newHistogram, type ServiceSnapshot, type StatsSnapshot } from '../core/stats.js';
import type { Histogram } from 'hdr-histogram-js';
import type { DeniedCounts } from '../core/broker-core.js';

export interface Percentiles {
  count: number;
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
}

export interface ServiceReport {
  requests: number;
  replies: number;
  requeued: number;
  errors: Record<string, number>;
  queued: number;
  workers: number;
  idle: number;
  busy: number;
  requestsPerSec: number;
  /** Milliseconds, since the broker started. */
  queueWaitMs: Percentiles;
  serviceTimeMs: Percentiles;
}

export interface StatsReport {
  at: string;
  uptimeMs: number;
  intervalMs: number;
  shards: number;
  global: Record<string, number>;
  rates: { requestsPerSec: number; repliesPerSec: number };
  services: Record<string, ServiceReport>;
  /** CURVE keys denied a request or a READY, and how often (only when there were denials). */
  deniedKeys?: Record<string, DeniedCounts>;
}

function round2(x: number): number {
  return Math.round(x * 100) / 100;
}

export interface AggregateInput {
  current: StatsSnapshot[];
  previous: StatsSnapshot[] | null;
  /** Render the Prometheus text (default true). False skips it, and never loads prom-client (13 MB of RSS). */
  prometheus?: boolean;
}

export interface AggregateOutput {
  report: StatsReport;
  /** Empty when not asked for. */
  prometheus: string;
  /** The figures of the periodic stats log line, as fields (percentiles since start). */
  line: Record<string, number>;
  mmiOverall: string;
  mmiPerService: Record<string, string>;
}


function percentiles(h: Histogram): Percentiles {
  const ms = (us: number) => us / 1000;
  return {
    count: h.totalCount,
    p50: ms(h.getValueAtPercentile(50)), p90: ms(h.getValueAtPercentile(90)), p99: ms(h.getValueAtPercentile(99)),
    p999: ms(h.getValueAtPercentile(99.9)), max: ms(h.maxValue),
  };
}

/** Services from every shard merged by name (a service lives on one shard, but "_other" can be on several). */
function mergeServices(shards: StatsSnapshot[]): Map<string, { snaps: ServiceSnapshot[] }> {
  const out = new Map<string, { snaps: ServiceSnapshot[] }>();
  for (const sh of shards) for (const s of sh.services) {
    const e = out.get(s.name);
    if (e) e.snaps.push(s);
    else out.set(s.name, { snaps: [s] });
  }
  return out;
}

function sumGlobal(shards: StatsSnapshot[]): Record<string, number> {
  const g: Record<string, number> = {};
  for (const sh of shards) for (const [k, v] of Object.entries(sh.global)) g[k] = (g[k] ?? 0) + v;
  return g;
}

function mergeDenied(shards: StatsSnapshot[]): Record<string, DeniedCounts> | null {
  let out: Record<string, DeniedCounts> | null = null;
  for (const sh of shards) for (const [key, d] of Object.entries(sh.deniedKeys ?? {})) {
    out ??= {};
    const e = (out[key] ??= { requests: 0, ready: 0 });
    e.requests += d.requests;
    e.ready += d.ready;
  }
  return out;
}

export async function aggregate(input: AggregateInput): Promise<AggregateOutput> {
  const { out, histograms } = build(input);
  if (input.prometheus !== false) out.prometheus = await prometheusText(out.report, histograms);
  return out;
}

/** The aggregation without the Prometheus text: synchronous, so mmi.stats is answered in the turn it is asked. */
export function aggregateNow(input: AggregateInput): AggregateOutput {
  return build(input).out;
}

function build(input: AggregateInput): { out: AggregateOutput; histograms: Map<string, { wait: Histogram; service: Histogram }> } {
  const { current, previous } = input;
  const at = Math.max(...current.map((s) => s.at));
  const prevAt = previous ? Math.max(...previous.map((s) => s.at)) : null;
  const intervalMs = prevAt === null ? 0 : at - prevAt;
  const perSec = (now: number, before: number) => (intervalMs > 0 ? ((now - before) * 1000) / intervalMs : 0);

  const global = sumGlobal(current);
  const prevGlobal = previous ? sumGlobal(previous) : {};
  const merged = mergeServices(current);
  const prevMerged = previous ? mergeServices(previous) : new Map<string, { snaps: ServiceSnapshot[] }>();

  const services: Record<string, ServiceReport> = {};
  const allWait = newHistogram();
  const allSvc = newHistogram();
  const histograms = new Map<string, { wait: Histogram; service: Histogram }>();
  for (const [name, { snaps }] of merged) {
    const wait = newHistogram();
    const svc = newHistogram();
    const errors: Record<string, number> = {};
    let requests = 0, replies = 0, requeued = 0, queued = 0, workers = 0, idle = 0;
    for (const s of snaps) {
      addSnapshot(wait, s.wait);
      addSnapshot(svc, s.service);
      requests += s.requests; replies += s.replies; requeued += s.requeued;
      queued += s.queued; workers += s.workers; idle += s.idle;
      for (const e of ERROR_CODES) errors[e] = (errors[e] ?? 0) + s.errors[e];
    }
    allWait.add(wait);
    allSvc.add(svc);
    histograms.set(name, { wait, service: svc });
    const prevRequests = (prevMerged.get(name)?.snaps ?? []).reduce((a, s) => a + s.requests, 0);
    const rep: ServiceReport = {
      requests, replies, requeued, errors, queued, workers, idle, busy: workers - idle,
      requestsPerSec: perSec(requests, prevRequests), queueWaitMs: percentiles(wait), serviceTimeMs: percentiles(svc),
    };
    services[name] = rep;
  }
  const uptimeMs = Math.max(...current.map((s) => s.uptimeMs));

  const rates = {
    requestsPerSec: perSec(global.requests ?? 0, prevGlobal.requests ?? 0),
    repliesPerSec: perSec(global.replies ?? 0, prevGlobal.replies ?? 0),
  };
  const report: StatsReport = { at: new Date(at).toISOString(), uptimeMs, intervalMs, shards: current.length, global, rates, services };
  const denied = mergeDenied(current);
  if (denied !== null) report.deniedKeys = denied;
  const errs = ERROR_CODES.reduce((a, e) => a + (global[`errors_${e}`] ?? 0), 0);
  const w = percentiles(allWait);
  const s = percentiles(allSvc);
  const line = {
    reqPerSec: Math.round(rates.requestsPerSec), repliesPerSec: Math.round(rates.repliesPerSec),
    services: global.services ?? 0, workers: global.workers ?? 0, busyWorkers: global.busyWorkers ?? 0,
    queued: global.queued ?? 0, errors: errs, malformed: global.malformed ?? 0,
    waitP99Ms: round2(w.p99), serviceP99Ms: round2(s.p99),
  };
  const mmiPerService: Record<string, string> = {};
  for (const [name, rep] of Object.entries(services)) mmiPerService[name] = JSON.stringify({ at: report.at, service: name, ...rep });
  return { out: { report, prometheus: '', line, mmiOverall: JSON.stringify(report), mmiPerService }, histograms };
}

/** Latency histogram buckets for /metrics, seconds (Prometheus `le`), from 100 us to a minute. */
const BUCKETS_S = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

/** Broker-wide keys that /metrics already carries as per-service families (their sums), or as prom-client's own. */
const COVERED = new Set(['requests', 'replies', 'requeued', 'workers', 'busyWorkers', 'queued', 'loopDelayP99Us', 'loopDelayMaxUs']);
const GAUGES: Record<string, string> = {
  services: 'mdbroker_services',
  connections: 'mdbroker_zmtp_connections',
  heldBytes: 'mdbroker_held_request_bytes',
  unwrittenBytes: 'mdbroker_zmtp_unwritten_bytes',
};
const ZMTP_COUNTERS: Record<string, string> = {
  zmtp_accepted: 'mdbroker_zmtp_accepted_total',
  zmtp_handshakes: 'mdbroker_zmtp_handshakes_total',
  zmtp_unsent: 'mdbroker_zmtp_unsent_messages_total',
  zmtp_paused: 'mdbroker_zmtp_read_pauses_total',
  'zmtp_write-paused': 'mdbroker_zmtp_write_pauses_total',
};

export interface MetricName {
  name: string;
  labels: Record<string, string>;
  type: 'counter' | 'gauge';
}

/**
 * Where a broker-wide stats key (the `global` of a report) appears on /metrics: counters as `_total` counters,
 * gauges as gauges, ZMTP closes as one family by reason; null for keys that per-service families already sum.
 */
export function brokerWideMetric(key: string): MetricName | null {
  if (COVERED.has(key) || key.startsWith('errors_')) return null;
  if (key in GAUGES) return { name: GAUGES[key], labels: {}, type: 'gauge' };
  if (key in ZMTP_COUNTERS) return { name: ZMTP_COUNTERS[key], labels: {}, type: 'counter' };
  if (key.startsWith('zmtp_')) return { name: 'mdbroker_zmtp_closed_total', labels: { reason: key.slice(5) }, type: 'counter' };
  return { name: `mdbroker_${key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)}_total`, labels: {}, type: 'counter' };
}

type HistogramValue = { metricName: string; labels: Record<string, string | number>; value: number };

/**
 * A Prometheus histogram whose buckets come from our HDR histograms (recorded on the hot path, merged over shards)
 * rather than from prom-client's observe(). It hands prom-client's registry the same shape its own metrics do, so
 * the exposition (escaping, HELP and TYPE lines) stays prom-client's.
 */
class HdrHistogramMetric {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  private readonly values: HistogramValue[] = [];

  constructor(readonly name: string, readonly help: string) {}

  /** `h` in microseconds. */
  add(service: string, h: Histogram): void {
    const raw = h as unknown as { countsArrayIndex(v: number): number; getCountAtIndex(i: number): number };
    const last = raw.countsArrayIndex(h.maxValue);
    let i = 0;
    let cumulative = 0;
    for (const le of BUCKETS_S) {
      const upto = Math.min(raw.countsArrayIndex(le * 1e6), last);
      for (; i <= upto; i++) cumulative += raw.getCountAtIndex(i);
      this.values.push({ metricName: `${this.name}_bucket`, labels: { service, le }, value: cumulative });
    }
    this.values.push({ metricName: `${this.name}_bucket`, labels: { service, le: '+Inf' }, value: h.totalCount });
    this.values.push({ metricName: `${this.name}_sum`, labels: { service }, value: (h.mean * h.totalCount) / 1e6 });
    this.values.push({ metricName: `${this.name}_count`, labels: { service }, value: h.totalCount });
  }

  get(): Promise<{ name: string; help: string; type: string; aggregator: string; values: HistogramValue[] }> {
    return Promise.resolve({ name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values: this.values });
  }
}

/** The report as Prometheus text exposition, rendered by prom-client (loaded on first use). */
async function prometheusText(report: StatsReport, histograms: Map<string, { wait: Histogram; service: Histogram }>): Promise<string> {
  const { Counter, Gauge, Registry } = (await import('prom-client')) as typeof PromClient;
  const reg = new Registry();
  const r = [reg];
  const cRequests = new Counter({ name: 'mdbroker_requests_total', help: 'Client requests received, by service', labelNames: ['service'], registers: r });
  const cReplies = new Counter({ name: 'mdbroker_replies_total', help: 'Worker replies delivered, by service', labelNames: ['service'], registers: r });
  const cRequeued = new Counter({ name: 'mdbroker_requeued_total', help: 'Requests put back after a worker died holding them', labelNames: ['service'], registers: r });
  const cErrors = new Counter({ name: 'mdbroker_errors_total', help: 'Error replies sent, by service and reason', labelNames: ['service', 'reason'], registers: r });
  const gQueued = new Gauge({ name: 'mdbroker_queue_depth', help: 'Requests waiting for a worker', labelNames: ['service'], registers: r });
  const gWorkers = new Gauge({ name: 'mdbroker_workers', help: 'Registered workers by state', labelNames: ['service', 'state'], registers: r });
  const hWait = new HdrHistogramMetric('mdbroker_queue_wait_seconds', 'Time from enqueue to dispatch, since start');
  const hSvc = new HdrHistogramMetric('mdbroker_service_time_seconds', 'Time from dispatch to final reply, since start');
  for (const [name, rep] of Object.entries(report.services)) {
    const l = { service: name };
    cRequests.inc(l, rep.requests);
    cReplies.inc(l, rep.replies);
    cRequeued.inc(l, rep.requeued);
    for (const e of ERROR_CODES) cErrors.inc({ service: name, reason: e }, rep.errors[e] ?? 0);
    gQueued.set(l, rep.queued);
    gWorkers.set({ service: name, state: 'idle' }, rep.idle);
    gWorkers.set({ service: name, state: 'busy' }, rep.busy);
    const h = histograms.get(name);
    if (h) {
      hWait.add(name, h.wait);
      hSvc.add(name, h.service);
    }
  }
  // prom-client's Metric type lists its own classes; its registry asks only for name, help, type and get().
  reg.registerMetric(hWait as unknown as PromClient.Metric);
  reg.registerMetric(hSvc as unknown as PromClient.Metric);
  const families = new Map<string, PromClient.Counter | PromClient.Gauge>();
  for (const [k, v] of Object.entries(report.global)) {
    const m = brokerWideMetric(k);
    if (m === null) continue;
    let f = families.get(m.name);
    if (f === undefined) {
      const opts = { name: m.name, help: `Broker-wide: ${m.name.includes('zmtp_closed') ? 'ZMTP connections closed, by reason' : k}`, labelNames: Object.keys(m.labels), registers: r };
      f = m.type === 'counter' ? new Counter(opts) : new Gauge(opts);
      families.set(m.name, f);
    }
    if (f instanceof Counter) f.inc(m.labels, v);
    else f.set(m.labels, v);
  }
  new Gauge({ name: 'mdbroker_uptime_seconds', help: 'Seconds since the broker started', registers: r }).set(report.uptimeMs / 1000);
  return reg.metrics();
}
