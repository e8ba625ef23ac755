// --shards N: N worker threads, each a whole broker (ZMTP engine, core, sockets) for the connections it accepted,
// all accepting on one listening socket (shard 0 binds it; the others accept on duplicates of its descriptor, and
// each accepted connection goes to the shard serving the fewest). The shards move requests between them only when
// one has idle workers and another has the work (spread.ts), in batches on their own ports (exchange.ts).
// The main thread holds no socket: it starts the shards, aggregates their stats (mmi.stats, /metrics, the log line)
// and stops them. See docs/architecture.md for the measurements behind this shape.

import { MessageChannel, Worker as Thread, type MessagePort } from 'node:worker_threads';
import { emptyStats, type CoreSnapshot, type CoreStats } from '../../core/broker-core.js';
import { Offload } from '../offload.js';
import { parseValidateFlags } from '../validation.js';
import { StatsService } from '../stats-service.js';
import type { AggregateOutput } from '../stats-report.js';
import type { StatsSnapshot } from '../../core/stats.js';
import type { BrokerOptions, SecurityLists } from '../options.js';
import { boardBytes } from './board.js';
import type { FromShard, ShardInit, ToShard } from './shard-protocol.js';

interface ShardState {
  thread: Thread;
  snapshot: CoreSnapshot;
  stats: CoreStats | null;
  denied: number;
  /** Connections it serves, as last reported. */
  connections: number;
  exited: Promise<void>;
  /** The next control reply of this type resolves the waiter. */
  waiters: Map<FromShard['type'], (m: FromShard) => void>;
}

const EMPTY_SNAPSHOT: CoreSnapshot = { services: 0, workers: 0, idleWorkers: 0, busyWorkers: 0, queued: 0 };

export class ShardedBroker {
  readonly transport = 'zmtp' as const;
  readonly endpoints: string[] = [];
  readonly groupEndpoints: string[][] = [];
  private readonly shards: ShardState[] = [];
  private readonly offload: Offload;
  private readonly statsService: StatsService;
  private statsSeq = 0;
  private readonly statsWaiters = new Map<number, { left: number; snaps: StatsSnapshot[]; done: (s: StatsSnapshot[]) => void }>();
  /** close() has begun: a shard thread ending now is expected. */
  private stopping = false;
  private started = false;
  /** Said once, for the first shard found dead outside close(). */
  private deadShard = false;

  constructor(
    private readonly opts: BrokerOptions,
    /** A shard thread died: its connections, queues and held requests are gone, so the broker cannot go on as it is. */
    private readonly onFatal: (err: Error) => void,
  ) {
    // Stats aggregation runs here (inline or in the pool); validation runs in the shards.
    this.offload = new Offload(opts.offload === 'all' || opts.offload === 'stats' ? 'stats' : 'none', parseValidateFlags(opts.validate), opts.offloadThreads);
    this.statsService = new StatsService(opts, this.offload, () => this.collectStats(), (out) => this.install(out));
    this.statsService.threads = () => this.shards.map((s, i) => ({ thread: i, connections: s.connections, workers: s.snapshot.workers, queued: s.snapshot.queued }));
  }

  get metricsPort(): number | null {
    return this.statsService.metricsPort;
  }

  /** Connections refused by the CURVE allow-list, over every shard (as last reported). */
  get denied(): number {
    return this.shards.reduce((a, s) => a + s.denied, 0);
  }

  async start(): Promise<void> {
    try {
      await this.startShards();
    } catch (err) {
      // A shard that could not start (an endpoint in use, say) fails start(); the others must not linger.
      this.stopping = true;
      await Promise.all(this.shards.map((s) => s.thread.terminate()));
      throw err;
    }
  }

  private async startShards(): Promise<void> {
    const shardOpts: Partial<BrokerOptions> = { ...this.opts };
    delete shardOpts.log;
    const n = this.opts.shards;
    const board = new SharedArrayBuffer(boardBytes(n));
    // A port between every pair of shards.
    const ports: (MessagePort | null)[][] = Array.from({ length: n }, () => new Array<MessagePort | null>(n).fill(null));
    for (let i = 0; i < n; i++) {
      for (let j = i + 1; j < n; j++) {
        const { port1, port2 } = new MessageChannel();
        ports[i][j] = port1;
        ports[j][i] = port2;
      }
    }
    const ready: Promise<FromShard>[] = [];
    for (let i = 0; i < n; i++) {
      const init: ShardInit = { index: i, opts: shardOpts as ShardInit['opts'], board, ports: ports[i] };
      const transfer = ports[i].filter((p): p is MessagePort => p !== null);
      const thread = new Thread(new URL('./shard-thread.js', import.meta.url), { workerData: init, transferList: transfer });
      const exited = new Promise<void>((r) => thread.once('exit', () => r()));
      const state: ShardState = { thread, snapshot: EMPTY_SNAPSHOT, stats: null, denied: 0, connections: 0, exited, waiters: new Map() };
      this.shards.push(state);
      ready.push(this.next(i, 'ready'));
      thread.on('message', (m: FromShard) => this.onShardMessage(i, m));
      thread.on('error', (err) => this.died(i, String(err)));
      thread.on('exit', (code) => this.died(i, `exited with code ${code}`));
    }
    await Promise.all(ready);
    const bound = this.next(0, 'bound');
    this.post(0, { type: 'bind' });
    const b = (await bound) as Extract<FromShard, { type: 'bound' }>;
    this.endpoints.push(...b.endpoints);
    const adopted: Promise<FromShard>[] = [];
    for (let i = 1; i < n; i++) {
      adopted.push(this.next(i, 'adopted'));
      this.post(i, { type: 'adopt', fds: b.fds });
    }
    await Promise.all(adopted);
    await this.statsService.start();
    this.statsService.health = 'serving';
    this.started = true;
  }

  /** The shard's next control message of this type (rejects if the shard dies first). */
  private next(i: number, type: FromShard['type']): Promise<FromShard> {
    const s = this.shards[i];
    return new Promise((resolve, reject) => {
      s.waiters.set(type, resolve);
      s.thread.once('error', reject);
      s.thread.once('exit', (code) => reject(new Error(`shard ${i} exited with code ${code}`)));
    });
  }

  private onShardMessage(i: number, m: FromShard): void {
    const s = this.shards[i];
    const waiter = s.waiters.get(m.type);
    if (waiter !== undefined) {
      s.waiters.delete(m.type);
      waiter(m);
    }
    if (m.type === 'report') {
      s.snapshot = m.snapshot;
      s.stats = m.stats;
      s.denied = m.denied;
      s.connections = m.connections;
    } else if (m.type === 'stats') {
      const w = this.statsWaiters.get(m.seq);
      if (!w) return;
      w.snaps.push(m.snapshot);
      if (--w.left === 0) {
        this.statsWaiters.delete(m.seq);
        w.done(w.snaps);
      }
    } else if (m.type === 'statsWanted') {
      this.statsService.fresh().catch((err: unknown) => this.opts.log('warn', 'stats aggregation failed', { err: String(err) }));
    } else if (m.type === 'log') {
      this.opts.log(m.level, m.msg, m.fields);
    }
  }

  private died(i: number, why: string): void {
    // Before start() is done, a failing shard fails start() itself.
    if (!this.started || this.stopping || this.deadShard) return;
    this.deadShard = true;
    const err = new Error(`shard ${i} died (${why}): its connections, and the requests it held and queued, are lost`);
    this.opts.log('warn', err.message, { shard: i });
    this.onFatal(err);
  }

  private post(i: number, m: ToShard): void {
    this.shards[i].thread.postMessage(m);
  }

  private install(out: AggregateOutput): void {
    for (let i = 0; i < this.shards.length; i++) this.post(i, { type: 'statsReplies', overall: out.mmiOverall, perService: out.mmiPerService });
  }

  snapshot(): CoreSnapshot {
    const t = { ...EMPTY_SNAPSHOT };
    for (const s of this.shards) {
      t.services += s.snapshot.services;
      t.workers += s.snapshot.workers;
      t.idleWorkers += s.snapshot.idleWorkers;
      t.busyWorkers += s.snapshot.busyWorkers;
      t.queued += s.snapshot.queued;
    }
    return t;
  }

  stats(): CoreStats {
    const t = emptyStats();
    for (const { stats } of this.shards) {
      if (!stats) continue;
      for (const k of Object.keys(t) as (keyof CoreStats)[]) if (k !== 'errors') t[k] += stats[k];
      for (const k of Object.keys(t.errors) as (keyof CoreStats['errors'])[]) t.errors[k] += stats.errors[k];
    }
    return t;
  }

  aggregateStats(): Promise<AggregateOutput> {
    return this.statsService.aggregate();
  }

  private collectStats(): Promise<StatsSnapshot[]> {
    const seq = ++this.statsSeq;
    return new Promise((done) => {
      // Counters are summed over the shards; the event-loop delay is the worst shard's.
      const merged = (snaps: StatsSnapshot[]) => {
        let p99 = 0;
        let max = 0;
        for (const s of snaps) {
          p99 = Math.max(p99, s.global.loopDelayP99Us ?? 0);
          max = Math.max(max, s.global.loopDelayMaxUs ?? 0);
          delete s.global.loopDelayP99Us;
          delete s.global.loopDelayMaxUs;
        }
        if (snaps[0]) Object.assign(snaps[0].global, { loopDelayP99Us: p99, loopDelayMaxUs: max });
        done(snaps);
      };
      this.statsWaiters.set(seq, { left: this.shards.length, snaps: [], done: merged });
      for (let i = 0; i < this.shards.length; i++) this.post(i, { type: 'stats', seq });
    });
  }

  reload(lists: SecurityLists): void {
    for (let i = 0; i < this.shards.length; i++) this.post(i, { type: 'reload', lists });
  }

  async close(): Promise<void> {
    this.stopping = true;
    // /healthz says 503 from the first moment of the drain.
    this.statsService.draining();
    const live = this.shards.map((s, i) => ({ s, i })).filter(({ s }) => s.thread.threadId >= 0);
    const within = <T>(p: Promise<T>, ms: number) => Promise.race([p.catch(() => undefined), new Promise((r) => setTimeout(r, ms).unref())]);
    // Every shard drains while all of them still route: a moved request's reply crosses back to its client's shard.
    await within(Promise.all(live.map(({ i }) => {
      const d = this.next(i, 'drained');
      this.post(i, { type: 'drain' });
      return d;
    })), this.opts.shutdownGrace + 3000);
    // The stats come from the shards: the metrics server closes before they do.
    await this.statsService.close();
    await within(Promise.all(live.map(({ i }) => {
      const c = this.next(i, 'closed');
      this.post(i, { type: 'close' });
      return c;
    })), 5000);
    await within(Promise.all(this.shards.map((s) => s.exited)), 5000);
    await this.offload.close();
  }
}
