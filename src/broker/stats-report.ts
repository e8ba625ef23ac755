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

/** Broker-wide keys that /metrics already carries as per-service families (their sums). */
const COVERED = new Set(['requests', 'replies', 'requeued', 'workers', 'busyWorkers', 'queued']);

/** How one broker-wide stats key appears on /metrics: its family, type and help; `scale` turns its unit into the family's. */
interface Family {
  name: string;
  type: 'counter' | 'gauge';
  help: string;
  scale?: number;
}

const counter = (name: string, help: string): Family => ({ name, type: 'counter', help });
const gauge = (name: string, help: string, scale?: number): Family => ({ name, type: 'gauge', help, scale });

/** Every broker-wide key the broker reports, with what it means (docs/operations.md lists them too). */
const FAMILIES: Record<string, Family> = {
  moved: counter('mdbroker_moved_total', 'Requests handed to another shard thread that had an idle worker (--shards)'),
  partials: counter('mdbroker_partials_total', 'PARTIAL replies (MDP/0.2) relayed to clients'),
  mmi: counter('mdbroker_mmi_total', 'MMI (mmi.*) requests answered by the broker itself'),
  malformed: counter('mdbroker_malformed_total', 'Messages dropped because they broke MDP framing'),
  unexpected: counter('mdbroker_unexpected_total', 'Well-formed messages that made no sense in the peer\'s state (e.g. a reply from a worker not holding that request)'),
  workersRegistered: counter('mdbroker_workers_registered_total', 'Worker READY registrations accepted'),
  workersExpired: counter('mdbroker_workers_expired_total', 'Workers dropped after missing heartbeats'),
  workersDisconnected: counter('mdbroker_workers_disconnected_total', 'Workers that sent DISCONNECT'),
  workersUnreachable: counter('mdbroker_workers_unreachable_total', 'Workers dropped because a send to them failed'),
  workersGone: counter('mdbroker_workers_gone_total', 'Workers whose connection closed'),
  clientsGone: counter('mdbroker_clients_gone_total', 'Clients whose connection closed'),
  droppedClientGone: counter('mdbroker_dropped_client_gone_total', 'Requests dropped because their client had gone'),
  droppedReplies: counter('mdbroker_dropped_replies_total', 'Replies dropped: their request was no longer held (expired, retried elsewhere)'),
  undeliverable: counter('mdbroker_undeliverable_total', 'Replies that could not be sent to their client'),
  repliesDroppedFull: counter('mdbroker_replies_dropped_full_total', 'Replies dropped because the client\'s send queue was full'),
  accessDenied: counter('mdbroker_access_denied_total', 'Requests or registrations refused by --access rights'),
  workersDenied: counter('mdbroker_workers_denied_total', 'Worker registrations refused (CURVE key not allowed for workers)'),
  clientsDenied: counter('mdbroker_clients_denied_total', 'Client requests refused (CURVE key not allowed for clients)'),
  services: gauge('mdbroker_services', 'Services known to the broker now'),
  heldBytes: gauge('mdbroker_held_request_bytes', 'Bytes of requests held now (queued or at a worker)'),
  connections: gauge('mdbroker_zmtp_connections', 'ZMTP connections open now'),
  unwrittenBytes: gauge('mdbroker_zmtp_unwritten_bytes', 'Bytes queued for peers that are not reading fast enough'),
  readAheadBytes: gauge('mdbroker_zmtp_read_ahead_bytes', 'Bytes allocated for large frames whose rest has not arrived yet (at most 128 MiB per thread)'),
  freeFrameBytes: gauge('mdbroker_zmtp_free_frame_bytes', 'Bytes of large frames\' buffers kept free for reuse (at most 32 MiB per thread)'),
  zmtp_accepted: counter('mdbroker_zmtp_accepted_total', 'TCP/IPC connections accepted'),
  zmtp_handshakes: counter('mdbroker_zmtp_handshakes_total', 'ZMTP handshakes completed'),
  zmtp_unsent: counter('mdbroker_zmtp_unsent_messages_total', 'Messages still queued for a connection when it closed'),
  zmtp_paused: counter('mdbroker_zmtp_read_pauses_total', 'Times reading from a peer was paused for backpressure'),
  'zmtp_write-paused': counter('mdbroker_zmtp_write_pauses_total', 'Times a peer\'s socket buffer was full'),
  'zmtp_handed-off': counter('mdbroker_zmtp_handed_off_total', 'Accepted connections handed to a less loaded shard thread (--shards)'),
  loopDelayP99Us: gauge('mdbroker_event_loop_delay_p99_seconds', 'Event-loop delay p99 since the previous report (the slowest thread with --shards)', 1e-6),
  loopDelayMaxUs: gauge('mdbroker_event_loop_delay_max_seconds', 'Event-loop delay max since the previous report (the slowest thread with --shards)', 1e-6),
  titanicStored: counter('mdbroker_titanic_stored_total', 'Titanic requests stored durably (titanic.request answered 200)'),
  titanicAnswered: counter('mdbroker_titanic_answered_total', 'Titanic replies stored durably'),
  titanicExpired: counter('mdbroker_titanic_expired_total', 'Titanic requests deleted after --titanic-retention'),
  titanicRefused: counter('mdbroker_titanic_refused_total', 'titanic.request refused with 500 (past --titanic-max-bytes)'),
  titanicRetried: counter('mdbroker_titanic_retried_total', 'Stored requests that got a broker error and were given back to run again'),
  titanicFailed: counter('mdbroker_titanic_failed_total', 'Titanic replies that could not be stored (the request runs again)'),
  titanicPending: gauge('mdbroker_titanic_pending', 'Stored Titanic requests without a reply'),
  titanicExecuting: gauge('mdbroker_titanic_executing', 'Stored Titanic requests running on this broker now'),
  titanicBytes: gauge('mdbroker_titanic_store_bytes', 'Bytes of requests and replies in the Titanic store'),
};

export interface MetricName {
  name: string;
  labels: Record<string, string>;
  type: 'counter' | 'gauge';
  help: string;
  /** What a value of the stats key is multiplied by on /metrics (1 when absent). */
  scale?: number;
}

/**
 * Where a broker-wide stats key (the `global` of a report) appears on /metrics: counters as `_total` counters,
 * gauges as gauges, ZMTP closes as one family by reason; null for keys that per-service families already sum.
 */
export function brokerWideMetric(key: string): MetricName | null {
  if (COVERED.has(key) || key.startsWith('errors_')) return null;
  const f = FAMILIES[key];
  if (f !== undefined) return { ...f, labels: {} };
  if (key.startsWith('zmtp_')) return { name: 'mdbroker_zmtp_closed_total', labels: { reason: key.slice(5) }, type: 'counter', help: 'ZMTP connections closed, by reason' };
  // A key with no entry above (a new counter): still exposed, under a name made from the key.
  return { name: `mdbroker_${key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`).replace(/[^a-z0-9_]/g, '_')}_total`, labels: {}, type: 'counter', help: `Broker-wide count: ${key}` };
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
      const opts = { name: m.name, help: m.help, labelNames: Object.keys(m.labels), registers: r };
      f = m.type === 'counter' ? new Counter(opts) : new Gauge(opts);
      families.set(m.name, f);
    }
    const value = v * (m.scale ?? 1);
    if (f instanceof Counter) f.inc(m.labels, value);
    else f.set(m.labels, value);
  }
  new Gauge({ name: 'mdbroker_uptime_seconds', help: 'Seconds since the broker started', registers: r }).set(report.uptimeMs / 1000);
  return reg.metrics();
}
