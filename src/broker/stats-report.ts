// Aggregation of raw stats snapshots: merging shards, percentiles, rates, the Prometheus text (prom-client, when
// asked for), the mmi.stats JSON and the log line. A pure function of its input, so it runs the same inline or in the piscina pool.

import type * as PromClient from 'prom-client';
import { ERROR_CODES } from '../protocol/errors.js';
import { addSnapshot, newHistogram, type ServiceSnapshot, type StatsSnapshot } from '../core/stats.js';
import type { Histogram } from 'hdr-histogram-js';

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
  line: string;
  mmiOverall: string;
  mmiPerService: Record<string, string>;
}

const QUANTILES: [keyof Percentiles, string][] = [['p50', '0.5'], ['p90', '0.9'], ['p99', '0.99'], ['p999', '0.999']];

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

export async function aggregate(input: AggregateInput): Promise<AggregateOutput> {
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
  const errs = ERROR_CODES.reduce((a, e) => a + (global[`errors_${e}`] ?? 0), 0);
  const w = percentiles(allWait);
  const s = percentiles(allSvc);
  const line = `${Math.round(rates.requestsPerSec)} req/s in, ${Math.round(rates.repliesPerSec)} replies/s, ` +
    `${global.services ?? 0} services, ${global.workers ?? 0} workers (${global.busyWorkers ?? 0} busy), ` +
    `queued ${global.queued ?? 0}, errors ${errs}, malformed ${global.malformed ?? 0}, ` +
    `wait p99 ${w.p99.toFixed(2)} ms, service p99 ${s.p99.toFixed(2)} ms (since start)`;
  const mmiPerService: Record<string, string> = {};
  for (const [name, rep] of Object.entries(services)) mmiPerService[name] = JSON.stringify({ at: report.at, service: name, ...rep });
  const prometheus = input.prometheus === false ? '' : await prometheusText(report);
  return { report, prometheus, line, mmiOverall: JSON.stringify(report), mmiPerService };
}

/** The report as Prometheus text exposition, rendered by prom-client (loaded on first use). */
async function prometheusText(report: StatsReport): Promise<string> {
  const { Counter, Gauge, Registry } = (await import('prom-client')) as typeof PromClient;
  const reg = new Registry();
  const r = [reg];
  const cRequests = new Counter({ name: 'mdbroker_requests_total', help: 'Client requests received, by service', labelNames: ['service'], registers: r });
  const cReplies = new Counter({ name: 'mdbroker_replies_total', help: 'Worker replies delivered, by service', labelNames: ['service'], registers: r });
  const cRequeued = new Counter({ name: 'mdbroker_requeued_total', help: 'Requests put back after a worker died holding them', labelNames: ['service'], registers: r });
  const cErrors = new Counter({ name: 'mdbroker_errors_total', help: 'Error replies sent, by service and reason', labelNames: ['service', 'reason'], registers: r });
  const gQueued = new Gauge({ name: 'mdbroker_queue_depth', help: 'Requests waiting for a worker', labelNames: ['service'], registers: r });
  const gWorkers = new Gauge({ name: 'mdbroker_workers', help: 'Registered workers by state', labelNames: ['service', 'state'], registers: r });
  const gWait = new Gauge({ name: 'mdbroker_queue_wait_seconds', help: 'Time from enqueue to dispatch, quantiles since start (HDR)', labelNames: ['service', 'quantile'], registers: r });
  const gSvc = new Gauge({ name: 'mdbroker_service_time_seconds', help: 'Time from dispatch to final reply, quantiles since start (HDR)', labelNames: ['service', 'quantile'], registers: r });
  const gWaitCount = new Gauge({ name: 'mdbroker_queue_wait_seconds_count', help: 'Dispatches measured', labelNames: ['service'], registers: r });
  const gSvcCount = new Gauge({ name: 'mdbroker_service_time_seconds_count', help: 'Replies measured', labelNames: ['service'], registers: r });
  const gGlobal = new Gauge({ name: 'mdbroker_broker', help: 'Broker-wide counters and gauges (name label)', labelNames: ['name'], registers: r });
  const gUp = new Gauge({ name: 'mdbroker_uptime_seconds', help: 'Seconds since the broker started', registers: r });
  for (const [name, rep] of Object.entries(report.services)) {
    const l = { service: name };
    cRequests.inc(l, rep.requests);
    cReplies.inc(l, rep.replies);
    cRequeued.inc(l, rep.requeued);
    for (const e of ERROR_CODES) cErrors.inc({ service: name, reason: e }, rep.errors[e] ?? 0);
    gQueued.set(l, rep.queued);
    gWorkers.set({ service: name, state: 'idle' }, rep.idle);
    gWorkers.set({ service: name, state: 'busy' }, rep.busy);
    for (const [k, q] of QUANTILES) {
      gWait.set({ service: name, quantile: q }, rep.queueWaitMs[k] / 1000);
      gSvc.set({ service: name, quantile: q }, rep.serviceTimeMs[k] / 1000);
    }
    gWaitCount.set(l, rep.queueWaitMs.count);
    gSvcCount.set(l, rep.serviceTimeMs.count);
  }
  for (const [k, v] of Object.entries(report.global)) gGlobal.set({ name: k }, v);
  gUp.set(report.uptimeMs / 1000);
  return reg.metrics();
}
