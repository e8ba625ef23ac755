// A running broker: one ROUTER socket bound to one or more endpoints, the core, the tick timer, stats, the
// --validate admission pump, the optional metrics endpoint, and shutdown.

import { Router } from 'zeromq';
import { BrokerCore, DEFAULT_CORE_OPTIONS, type CoreOptions, type CoreSnapshot, type CoreStats, type LogFn } from './broker-core.js';
import { RouterTransport } from './transport.js';
import { DEFAULT_LIMITS, type Limits } from './codec.js';
import { Offload, type OffloadMode } from './offload.js';
import { AdmissionPump } from './admission.js';
import { appliesTo, parseValidateFlags } from './validation.js';
import { MetricsServer } from './metrics-server.js';
import type { AggregateOutput } from './stats-report.js';
import type { StatsSnapshot } from './stats.js';

export interface BrokerOptions extends Omit<CoreOptions, 'limits' | 'validates'> {
  /** Endpoints to bind, e.g. tcp://127.0.0.1:5555. tcp://127.0.0.1:* picks a free port. */
  bind: string[];
  limits: Limits;
  /** ZeroMQ high-water marks (messages per peer). */
  sendHighWaterMark: number;
  receiveHighWaterMark: number;
  /** On close, how long busy workers get to finish before their requests fail with `shutdown`. */
  shutdownGrace: number;
  /** What runs in the piscina pool: nothing, stats aggregation, validation, or both. */
  offload: OffloadMode;
  offloadThreads: number;
  /** --validate flags (see validation.ts). */
  validate: string[];
  /** Milliseconds between stats aggregations (and log lines); 0 turns the periodic line off. */
  statsInterval: number;
  /** Serve Prometheus text on this port (0 = any free port); null = no endpoint. */
  metricsPort: number | null;
  metricsHost: string;
  log: LogFn;
}

export const DEFAULT_BROKER_OPTIONS: BrokerOptions = {
  ...DEFAULT_CORE_OPTIONS,
  bind: ['tcp://127.0.0.1:5555'],
  limits: DEFAULT_LIMITS,
  sendHighWaterMark: 100000,
  receiveHighWaterMark: 100000,
  shutdownGrace: 5000,
  offload: 'none',
  offloadThreads: 1,
  validate: [],
  statsInterval: 10000,
  metricsPort: null,
  metricsHost: '127.0.0.1',
  log: () => {},
};

export class Broker {
  readonly core: BrokerCore;
  readonly opts: BrokerOptions;
  private readonly sock: Router;
  private readonly transport: RouterTransport;
  private readonly offload: Offload;
  private readonly admission: AdmissionPump;
  private readonly metrics: MetricsServer | null;
  private timer: NodeJS.Timeout | null = null;
  private statsTimer: NodeJS.Timeout | null = null;
  private closing: Promise<void> | null = null;
  private readonly t0 = performance.now();
  private prevStats: StatsSnapshot[] | null = null;
  private aggregating: Promise<AggregateOutput> | null = null;
  /** The endpoints actually bound (wildcard ports resolved). */
  endpoints: string[] = [];
  /** The metrics port actually bound, when --metrics-port is set. */
  metricsPort: number | null = null;

  constructor(opts: Partial<BrokerOptions> = {}) {
    this.opts = { ...DEFAULT_BROKER_OPTIONS, ...opts, limits: { ...DEFAULT_LIMITS, ...opts.limits } };
    const o = this.opts;
    const rules = parseValidateFlags(o.validate);
    this.core = new BrokerCore({ ...o, validates: rules.length > 0 ? (name) => appliesTo(rules, name) : null }, o.log);
    this.offload = new Offload(o.offload, rules, o.offloadThreads);
    this.sock = new Router({
      // Without mandatory, ROUTER drops messages to unknown or full peers without a word.
      mandatory: true,
      sendHighWaterMark: o.sendHighWaterMark,
      receiveHighWaterMark: o.receiveHighWaterMark,
      // libzmq drops the connection of a peer that sends a frame over this size, before it costs us memory.
      maxMessageSize: o.limits.maxFrameBytes,
      linger: 1000,
    });
    const now = () => this.now();
    this.transport = new RouterTransport(this.sock, this.core, now, (err) => o.log('warn', 'socket error', { err: String(err) }));
    this.admission = new AdmissionPump(this.core, this.offload, now, () => this.transport.flush());
    if (rules.length > 0) this.transport.afterHandle = () => this.admission.pump();
    this.metrics = o.metricsPort === null ? null : new MetricsServer(() => this.prometheus());
  }

  now(): number {
    return performance.now() - this.t0;
  }

  async start(): Promise<void> {
    await this.offload.init();
    for (const ep of this.opts.bind) {
      await this.sock.bind(ep);
      this.endpoints.push(this.sock.lastEndpoint ?? ep);
    }
    this.transport.start();
    const period = Math.max(5, Math.min(1000, this.opts.heartbeatInterval / 2));
    this.timer = setInterval(() => {
      this.core.tick(this.now());
      this.transport.flush();
    }, period);
    if (this.metrics) this.metricsPort = await this.metrics.listen(this.opts.metricsPort as number, this.opts.metricsHost);
    // A first (empty) report so mmi.stats and /metrics answer from the start.
    await this.aggregateStats();
    if (this.opts.statsInterval > 0) {
      this.statsTimer = setInterval(() => {
        this.aggregateStats().then(
          (out) => this.opts.log('info', `stats: ${out.line}`),
          (err: unknown) => this.opts.log('warn', 'stats aggregation failed', { err: String(err) }),
        );
      }, this.opts.statsInterval);
    }
  }

  /** Registered workers, queued requests and so on, now. */
  snapshot(): CoreSnapshot {
    return this.core.snapshot();
  }

  /** The broker's counters, now. */
  stats(): CoreStats {
    return this.core.stats;
  }

  /** Aggregates the stats now (inline or in the pool) and installs the mmi.stats answers. */
  aggregateStats(): Promise<AggregateOutput> {
    if (this.aggregating) return this.aggregating;
    const current = [this.core.statsSnapshot(Date.now(), this.now())];
    const run = this.offload.aggregate({ current, previous: this.prevStats }).then((out) => {
      this.prevStats = current;
      const per = new Map<string, Buffer>();
      for (const [k, v] of Object.entries(out.mmiPerService)) per.set(k, Buffer.from(v));
      this.core.setStatsReplies(Buffer.from(out.mmiOverall), per);
      return out;
    });
    this.aggregating = run;
    const clear = () => {
      this.aggregating = null;
    };
    run.then(clear, clear);
    return run;
  }

  /** Every scrape aggregates afresh (coalesced with one already running), so /metrics is never stale. */
  private async prometheus(): Promise<string> {
    return (await this.aggregateStats()).prometheus;
  }

  /** Graceful stop: no new work, busy workers get shutdownGrace ms to reply, every worker is told DISCONNECT. */
  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    if (this.statsTimer) clearInterval(this.statsTimer);
    this.core.beginShutdown(this.now());
    this.transport.flush();
    const until = Date.now() + this.opts.shutdownGrace;
    while (this.core.snapshot().busyWorkers > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
    // Requests still under validation are answered (with `shutdown`) when their verdicts come back.
    await Promise.race([this.admission.idle(), new Promise((r) => setTimeout(r, Math.max(0, until - Date.now())))]);
    this.core.finishShutdown(this.now());
    this.transport.flush();
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.aggregating?.catch(() => undefined);
    await this.metrics?.close();
    await this.transport.close();
    await this.offload.close();
  }
}
