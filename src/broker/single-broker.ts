// The plain broker (--shards 1): the main thread runs the ROUTER sockets and the core, with no extra hop.

import type { CoreSnapshot, CoreStats } from '../core/broker-core.js';
import { CoreHost } from './core-host.js';
import { Offload } from './offload.js';
import { parseValidateFlags } from './validation.js';
import { Listeners } from './listeners.js';
import { LoopDelay } from './loop-delay.js';
import { StatsService, mmiStatsReplies } from './stats-service.js';
import type { AggregateOutput } from './stats-report.js';
import type { BrokerOptions, SecurityLists } from './options.js';
import { Titanic, isTitanicFrame } from '../titanic/titanic.js';
import { StoreError } from '../titanic/durable-store.js';
import { ConfigError } from './config-error.js';

export class SingleBroker {
  readonly listeners: Listeners;
  private readonly host: CoreHost;
  private readonly statsService: StatsService;
  private readonly loopDelay = new LoopDelay();
  /** --titanic: RFC 9's services on a durable store. */
  private readonly titanic: Titanic | null;

  constructor(opts: BrokerOptions) {
    // One pool (if any) for both stats aggregation and validation.
    const offload = new Offload(opts.offload, parseValidateFlags(opts.validate), opts.offloadThreads);
    this.listeners = new Listeners(opts);
    const titanic = opts.titanic === null ? null : new Titanic({ store: opts.titanic, maxBytes: opts.titanicMaxBytes, retentionMs: opts.titanicRetention, holdMs: opts.titanicHold, maxServiceName: opts.limits.maxServiceName }, opts.log);
    this.titanic = titanic;
    const io = titanic === null ? this.listeners.io : titanic.wrap(this.listeners.io);
    this.host = new CoreHost(opts, io, offload, opts.log, titanic === null ? {} : { shellServices: isTitanicFrame });
    const core = this.host.core;
    if (titanic !== null) {
      const transport = this.host.transport;
      const before = transport.afterHandle;
      transport.afterHandle = before === null ? () => titanic.take() : () => {
        before();
        titanic.take();
      };
      this.host.onTick = (now) => titanic.tick(now);
    }
    const collect = () => {
      const snap = core.statsSnapshot(Date.now(), this.host.now());
      this.loopDelay.take(snap.global);
      Object.assign(snap.global, this.listeners.counters());
      if (this.titanic !== null) Object.assign(snap.global, this.titanic.counters());
      this.listeners.addDenials(snap);
      return [snap];
    };
    this.statsService = new StatsService(opts, offload, async () => collect(), (out) => core.statsReplies.set(...mmiStatsReplies(out)), collect);
    // mmi.stats is answered in the turn it is asked, from an aggregation made then (no Promise in the core).
    core.statsReplies.refresh = () => this.statsService.freshNow();
    this.statsService.threads = () => {
      const snap = core.snapshot();
      return [{ thread: 0, connections: this.listeners.counters().connections ?? 0, workers: snap.workers, queued: snap.queued }];
    };
  }

  get endpoints(): string[] {
    return this.listeners.endpoints;
  }

  get groupEndpoints(): string[][] {
    return this.listeners.groupEndpoints;
  }

  get transport(): 'zmtp' | 'libzmq' {
    return this.listeners.transport;
  }

  get denied(): number {
    return this.listeners.denied;
  }

  get metricsPort(): number | null {
    return this.statsService.metricsPort;
  }

  async start(): Promise<void> {
    // A store that cannot be opened (a directory not writable or held by another broker, a PostgreSQL not answering)
    // is a configuration error that says why; nothing else has started yet.
    await this.titanic?.open().catch((err: unknown) => {
      throw err instanceof StoreError ? new ConfigError('titanic', err.message) : err;
    });
    // Reading starts before the endpoints are bound, so no peer's first message finds nobody listening.
    await this.host.start();
    this.titanic?.attach(this.host.core, () => this.host.transport.flush(), () => this.host.now());
    await this.listeners.bind();
    await this.statsService.start();
    this.statsService.health = 'serving';
  }

  reload(lists: SecurityLists): void {
    this.listeners.reload(lists);
  }

  snapshot(): CoreSnapshot {
    return this.host.core.snapshot();
  }

  stats(): CoreStats {
    return this.host.core.stats;
  }

  aggregateStats(): Promise<AggregateOutput> {
    return this.statsService.aggregate();
  }

  async close(): Promise<void> {
    // /healthz says 503 from the first moment of the drain; /metrics answers until the core closes.
    this.statsService.draining();
    await this.host.drain();
    await this.titanic?.close();
    await this.statsService.close();
    this.loopDelay.close();
    await this.host.close();
    await this.listeners.close();
  }
}
