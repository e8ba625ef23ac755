// A running broker. `shards: 1` (the default) is the plain broker: one thread, no extra hop. `shards: N` runs the
// protocol cores on N worker threads behind the main thread's ROUTER socket (see docs/architecture.md).

import { DEFAULT_CORE_OPTIONS, type CoreOptions, type CoreSnapshot, type CoreStats, type LogFn } from './broker-core.js';
import { DEFAULT_LIMITS, type Limits } from './codec.js';
import type { OffloadMode } from './offload.js';
import type { KeyPair, WorkerGroup } from './security.js';
import type { AggregateOutput } from './stats-report.js';
import { SingleBroker } from './single-broker.js';
import { ShardedBroker } from './sharded-broker.js';
import type { Listeners } from './listeners.js';

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
  /** Protocol cores on worker threads; services are partitioned over them by name. */
  shards: number;
  /** CURVE: the broker's key pair turns encryption on; null = plain TCP. */
  curveKeys: KeyPair | null;
  /** With CURVE, the public keys that may connect (clients and workers); null = any key. */
  allowKeys: string[] | null;
  /** --access: worker endpoints per access group, each with its own allow-list and services (needs CURVE). */
  workerGroups: WorkerGroup[];
  log: LogFn;
  /** Lowest level passed to `log` (shard threads filter before posting). */
  logLevel: 'debug' | 'info' | 'warn';
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
  shards: 1,
  curveKeys: null,
  allowKeys: null,
  workerGroups: [],
  log: () => {},
  logLevel: 'info',
};

export interface BrokerImpl {
  /** The listening sockets: endpoints, access-group endpoints, CURVE refusals. */
  readonly listeners: Listeners;
  readonly metricsPort: number | null;
  start(): Promise<void>;
  close(): Promise<void>;
  snapshot(): CoreSnapshot;
  stats(): CoreStats;
  aggregateStats(): Promise<AggregateOutput>;
}

export class Broker {
  readonly opts: BrokerOptions;
  private readonly impl: BrokerImpl;
  private closing: Promise<void> | null = null;

  constructor(opts: Partial<BrokerOptions> = {}) {
    this.opts = { ...DEFAULT_BROKER_OPTIONS, ...opts, limits: { ...DEFAULT_LIMITS, ...opts.limits } };
    if (!Number.isInteger(this.opts.shards) || this.opts.shards < 1) throw new Error(`shards must be a positive integer, got ${this.opts.shards}`);
    if (this.opts.workerGroups.length > 0 && this.opts.curveKeys === null) throw new Error('access groups (workerGroups) need CURVE (curveKeys)');
    if (this.opts.workerGroups.length > 250) throw new Error('at most 250 access groups');
    this.impl = this.opts.shards === 1 ? new SingleBroker(this.opts) : new ShardedBroker(this.opts);
  }

  /** The endpoints actually bound (wildcard ports resolved). */
  get endpoints(): string[] {
    return this.impl.listeners.endpoints;
  }

  /** Per access group, the worker endpoints actually bound. */
  get groupEndpoints(): string[][] {
    return this.impl.listeners.groupEndpoints;
  }

  /** The metrics port actually bound, when metricsPort is set. */
  get metricsPort(): number | null {
    return this.impl.metricsPort;
  }

  start(): Promise<void> {
    return this.impl.start();
  }

  /** Registered workers, queued requests and so on (with shards: as last reported, within ~50 ms). */
  snapshot(): CoreSnapshot {
    return this.impl.snapshot();
  }

  /** Connections refused by the CURVE allow-list so far. */
  get curveDenied(): number {
    return this.impl.listeners.denied;
  }

  /** The broker's counters (with shards: summed, as last reported). */
  stats(): CoreStats {
    return this.impl.stats();
  }

  /** Aggregates the stats now and installs the mmi.stats answers. */
  aggregateStats(): Promise<AggregateOutput> {
    return this.impl.aggregateStats();
  }

  /** Graceful stop: no new work, busy workers get shutdownGrace ms to reply, every worker is told DISCONNECT. */
  close(): Promise<void> {
    this.closing ??= this.impl.close();
    return this.closing;
  }
}
