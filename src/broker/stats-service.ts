// The stats loop shared by the plain and the sharded broker: collect raw snapshots, aggregate them (inline or in
// the pool), install the mmi.stats answers, log the summary line, and serve /metrics.

import type { LogFn } from '../core/broker-core.js';
import type { Offload } from './offload.js';
import type { AggregateOutput } from './stats-report.js';
import type { StatsSnapshot } from '../core/stats.js';
import { MetricsServer } from './metrics-server.js';

export interface StatsServiceOptions {
  statsInterval: number;
  metricsPort: number | null;
  metricsHost: string;
  log: LogFn;
}

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
  ) {
    // Every scrape aggregates afresh (coalesced with one already running), so /metrics is never stale.
    this.metrics = opts.metricsPort === null ? null : new MetricsServer(async () => (await this.aggregate()).prometheus);
  }

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

  /** An aggregation that starts after this call (mmi.stats answers must include what came before the question). */
  fresh(): Promise<AggregateOutput> {
    const running = this.running;
    return running === null ? this.aggregate(false) : running.done.then(() => this.aggregate(false), () => this.aggregate(false));
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
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
