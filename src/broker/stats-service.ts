// The stats loop shared by the plain and the sharded broker: collect raw snapshots, aggregate them (inline or in
// the pool), install the mmi.stats answers, log the summary line, and serve /metrics.

import type { LogFn } from '../core/broker-core.js';
import type { Offload } from './offload.js';
import { aggregateNow, type AggregateOutput } from './stats-report.js';
import type { StatsSnapshot } from '../core/stats.js';
import { MetricsServer, VERSION } from './metrics-server.js';
import type { ThreadStatus } from './status-page.js';

export interface StatsServiceOptions {
  statsInterval: number;
  metricsPort: number | null;
  metricsHost: string;
  log: LogFn;
}

/** What freshNow() may spend on aggregations in a burst (ms); it earns it back at a tenth of the clock. */
const NOW_BUDGET_MS = 100;

export class StatsService {
  private prev: StatsSnapshot[] | null = null;
  private running: { done: Promise<AggregateOutput>; prometheus: boolean } | null = null;
  private timer: NodeJS.Timeout | null = null;
  private readonly metrics: MetricsServer | null;
  /** The metrics port actually bound. */
  metricsPort: number | null = null;

  constructor(
    private readonly opts: StatsServiceOptions,
    private readonly offload: Offload,
    /** Raw snapshots of every shard (one for the plain broker). */
    private readonly collect: () => Promise<StatsSnapshot[]>,
    /** Receives each aggregation (to install mmi.stats answers). */
    private readonly install: (out: AggregateOutput) => void,
    /** The same snapshots taken synchronously, where they can be (the plain broker): for freshNow(). */
    private readonly collectNow: (() => StatsSnapshot[]) | null = null,
  ) {
    // Every scrape aggregates afresh (coalesced with one already running), so /metrics is never stale.
    this.metrics = opts.metricsPort === null ? null : new MetricsServer(async () => (await this.aggregate()).prometheus, () => this.health, () => this.status());
  }

  /** Each thread's connections, workers and queue (the status page); the broker sets it. */
  threads: () => ThreadStatus[] = () => [];

  /** What the status page polls: a fresh report (no Prometheus text), health, threads, the process. */
  private async status(): Promise<object> {
    const out = await this.aggregate(false);
    return { health: this.health, version: VERSION, rssBytes: process.memoryUsage.rss(), threads: this.threads(), report: out.report };
  }

  /** What GET /healthz says: 200 only while serving (after start, before a drain). */
  health: 'starting' | 'serving' | 'draining' = 'starting';

  /** Serves /metrics and /healthz (503 until serving()), and starts the periodic reports. */
  async start(): Promise<void> {
    if (this.metrics) this.metricsPort = await this.metrics.listen(this.opts.metricsPort as number, this.opts.metricsHost);
    // A first (empty) report so mmi.stats and /metrics answer from the start.
    await this.aggregate(this.metrics !== null);
    if (this.opts.statsInterval > 0) {
      this.timer = setInterval(() => {
        this.aggregate(this.metrics !== null).then(
          (out) => this.opts.log('info', 'stats', out.line),
          (err: unknown) => this.opts.log('warn', 'stats aggregation failed', { err: String(err) }),
        );
      }, this.opts.statsInterval);
    }
  }

  /**
   * Aggregates now (coalesced with a run in progress). The Prometheus text is rendered only when asked for: by a
   * /metrics scrape, by the public aggregateStats(), or on the timer when /metrics is served.
   */
  aggregate(prometheus = true): Promise<AggregateOutput> {
    const running = this.running;
    if (running) return running.prometheus || !prometheus ? running.done : running.done.then(() => this.aggregate(true));
    const done = this.collect().then(async (current) => {
      const out = await this.offload.aggregate({ current, previous: this.prev, prometheus });
      this.prev = current;
      this.install(out);
      return out;
    });
    this.running = { done, prometheus };
    const clear = () => {
      this.running = null;
    };
    done.then(clear, clear);
    return done;
  }

  /** freshNow()'s budget: ms of aggregation it may spend now (a token bucket, refilled at a tenth of the clock). */
  private budgetMs = NOW_BUDGET_MS;
  private budgetAt = performance.now();

  /**
   * Aggregates now, synchronously, on this thread (also with --offload stats: a pool round trip is a turn later),
   * and installs the result, for an mmi.stats question asked now. Bounded: these aggregations may take a tenth of
   * the thread (a bucket of 100 ms, refilled at 100 ms a second); past it, the report last made answers until the
   * bucket refills. A report of 100 services costs well under a millisecond, so only a flood of questions sees one.
   */
  freshNow(): void {
    if (this.collectNow === null) return;
    const t = performance.now();
    this.budgetMs = Math.min(NOW_BUDGET_MS, this.budgetMs + (t - this.budgetAt) / 10);
    this.budgetAt = t;
    if (this.budgetMs <= 0) return;
    const current = this.collectNow();
    const out = aggregateNow({ current, previous: this.prev, prometheus: false });
    this.prev = current;
    this.install(out);
    const done = performance.now();
    this.budgetMs -= done - t;
    this.budgetAt = done;
  }

  /** An aggregation that starts after this call (mmi.stats answers must include what came before the question). */
  fresh(): Promise<AggregateOutput> {
    const running = this.running;
    return running === null ? this.aggregate(false) : running.done.then(() => this.aggregate(false), () => this.aggregate(false));
  }

  /** Shutdown begins: /healthz answers 503 (a load balancer stops sending) while /metrics still answers. */
  draining(): void {
    this.health = 'draining';
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  async close(): Promise<void> {
    this.draining();
    await this.running?.done.catch(() => undefined);
    await this.metrics?.close();
  }
}

/** mmi.stats answers as Buffers, from an aggregation. */
export function mmiStatsReplies(out: AggregateOutput): [Buffer, Map<string, Buffer>] {
  const per = new Map<string, Buffer>();
  for (const [k, v] of Object.entries(out.mmiPerService)) per.set(k, Buffer.from(v));
  return [Buffer.from(out.mmiOverall), per];
}
