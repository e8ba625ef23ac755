// A running broker. `shards: 1` (the default) is the plain broker: one thread. `shards: N` runs N worker threads,
// each a whole broker for the connections it accepts on the shared listening socket (see docs/architecture.md).

import { EventEmitter } from 'node:events';
import type { CoreSnapshot, CoreStats } from '../core/broker-core.js';
import { resolveOptions, type BrokerOptions, type SecurityLists } from './options.js';
import type { AggregateOutput } from './stats-report.js';
import { SingleBroker } from './single-broker.js';
import { ShardedBroker } from './sharded/sharded-broker.js';
import { chooseTransport } from './listeners.js';
import { VERSION } from './metrics-server.js';

/** What the plain and the sharded broker both provide (they need not import this: it is checked structurally). */
interface BrokerImpl {
  readonly endpoints: string[];
  readonly groupEndpoints: string[][];
  readonly transport: 'zmtp' | 'libzmq';
  /** Connections refused by the CURVE allow-list so far. */
  readonly denied: number;
  readonly metricsPort: number | null;
  start(): Promise<void>;
  close(): Promise<void>;
  reload(lists: SecurityLists): void;
  snapshot(): CoreSnapshot;
  stats(): CoreStats;
  aggregateStats(): Promise<AggregateOutput>;
}

/** Events a Broker emits. */
export interface BrokerEvents {
  /**
   * The broker cannot go on as it is: with `shards` above 1, a shard thread died, and the requests it held and
   * queued died with it. Close the broker (the other shards drain) and start a new one. As with any EventEmitter,
   * an 'error' nobody listens to ends the process.
   */
  error: [err: Error];
}

export class Broker extends EventEmitter<BrokerEvents> {
  readonly opts: BrokerOptions;
  private readonly impl: BrokerImpl;
  private closing: Promise<void> | null = null;

  constructor(opts: Partial<BrokerOptions> = {}) {
    super();
    this.opts = resolveOptions(opts);
    if (this.opts.shards > 1 && chooseTransport(this.opts).transport === 'libzmq') {
      // Shards accept on one listening socket of their own; a libzmq socket cannot be shared between threads.
      this.opts.log('warn', '--shards needs the zmtp transport; these options are served by libzmq, on one thread', { shards: this.opts.shards });
      this.opts.shards = 1;
    }
    this.impl = this.opts.shards === 1 ? new SingleBroker(this.opts) : new ShardedBroker(this.opts, (err) => this.emit('error', err));
  }

  /** The endpoints actually bound (wildcard ports resolved). */
  get endpoints(): string[] {
    return this.impl.endpoints;
  }

  /** The transport serving the endpoints (zmtp unless CURVE, an inproc:// endpoint or the options ask for libzmq). */
  get transport(): 'zmtp' | 'libzmq' {
    return this.impl.transport;
  }

  /** Per access group, the worker endpoints actually bound. */
  get groupEndpoints(): string[][] {
    return this.impl.groupEndpoints;
  }

  /** The metrics port actually bound, when metricsPort is set. */
  get metricsPort(): number | null {
    return this.impl.metricsPort;
  }

  /** Binds and serves; then logs (info) `mdbroker listening` with what was bound, as the CLI shows it. */
  async start(): Promise<void> {
    await this.impl.start();
    const groups = this.impl.groupEndpoints;
    this.opts.log('info', 'mdbroker listening', {
      endpoints: this.impl.endpoints, transport: this.impl.transport, workerEndpoints: groups.length > 0 ? groups : undefined,
      metricsPort: this.impl.metricsPort ?? undefined, version: VERSION, pid: process.pid,
    });
  }

  /** Registered workers, queued requests and so on (with shards: as last reported, within ~50 ms). */
  snapshot(): CoreSnapshot {
    return this.impl.snapshot();
  }

  /** Connections refused by the CURVE allow-list so far. */
  get curveDenied(): number {
    return this.impl.denied;
  }

  /** The broker's counters (with shards: summed, as last reported). */
  stats(): CoreStats {
    return this.impl.stats();
  }

  /** Aggregates the stats now and installs the mmi.stats answers. */
  aggregateStats(): Promise<AggregateOutput> {
    return this.impl.aggregateStats();
  }

  /**
   * Replaces the CURVE lists (what SIGHUP does with the files read again): no connection is dropped; new handshakes
   * are checked against `allowKeys`, and every key's next request or READY against the role lists and key grants.
   * Access groups' endpoints stay as they were started.
   */
  reload(lists: SecurityLists): void {
    Object.assign(this.opts, lists);
    this.impl.reload(lists);
  }

  /** Graceful stop: no new work, busy workers get shutdownGrace ms to reply, every worker is told DISCONNECT. */
  close(): Promise<void> {
    this.closing ??= this.impl.close();
    return this.closing;
  }
}
