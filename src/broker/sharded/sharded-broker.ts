// --shards N: the main thread owns the public ROUTER socket, parses each message in place just far enough to know
// its service (or its worker), and hands the frames to the shard that owns that service over an inproc PAIR
// (shared ZeroMQ context, no copy). Shards run BrokerCore; what they send comes back over the same PAIR and goes
// out on the ROUTER. A service lives on exactly one shard (FNV-1a hash of its name); a worker's messages follow the
// shard it registered with. mmi.services and mmi.stats are answered here, for the whole broker.

import { Worker as Thread } from 'node:worker_threads';
import type { Pair } from 'zeromq';
import { zeromq } from '../../sockets/zeromq.js';
import { LRUCacheWithDelete } from 'mnemonist';
import { C2, Kind, MDPW01, MDPW02, W1, W2, WCmd, clientReply, isMmi, parseInbound } from '../../protocol/codec.js';
import { errorBody } from '../../protocol/errors.js';
import { peerKey } from '../../core/peer-id.js';
import { StatsReplies, mmiBody, type MmiSource } from '../../core/mmi.js';
import { emptyStats, type CoreSnapshot, type CoreStats } from '../../core/broker-core.js';
import type { FrameIO } from '../frame-io.js';
import { Offload } from '../offload.js';
import { parseValidateFlags } from '../validation.js';
import { Listeners } from '../listeners.js';
import { shardIO } from './shard-io.js';
import { StatsService, mmiStatsReplies } from '../stats-service.js';
import { LoopDelay } from '../loop-delay.js';
import type { AggregateOutput } from '../stats-report.js';
import type { StatsSnapshot } from '../../core/stats.js';
import type { BrokerOptions } from '../options.js';
import type { FromShard, ShardInit, ToShard } from './shard-protocol.js';

let instances = 0;

function fnv1a(b: Buffer): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < b.length; i++) h = Math.imul(h ^ b[i], 0x01000193);
  return h >>> 0;
}

interface ShardState {
  thread: Thread;
  pair: Pair;
  /** The pipe as a frame stream. */
  io: FrameIO;
  snapshot: CoreSnapshot;
  stats: CoreStats | null;
  served: string[];
  closed: Promise<void>;
  exited: Promise<void>;
  /** Called when the shard's end marker arrives over its PAIR: all its output has reached the ROUTER. */
  drained: () => void;
  drainedP: Promise<void>;
}

const EMPTY_SNAPSHOT: CoreSnapshot = { services: 0, workers: 0, idleWorkers: 0, busyWorkers: 0, queued: 0 };

export class ShardedBroker implements MmiSource {
  readonly listeners: Listeners;
  private readonly shards: ShardState[] = [];
  /** Which shard a worker registered with. Bounded: an evicted live worker is told DISCONNECT and re-registers. */
  private readonly workerShard = new LRUCacheWithDelete<number | string, number>(1 << 17);
  private readonly offload: Offload;
  private readonly statsService: StatsService;
  readonly statsReplies = new StatsReplies();
  private statsSeq = 0;
  private readonly statsWaiters = new Map<number, { left: number; snaps: StatsSnapshot[]; done: (s: StatsSnapshot[]) => void }>();
  private closedFlag = false;
  private readonly loopDelay = new LoopDelay();

  constructor(private readonly opts: BrokerOptions) {
    this.listeners = new Listeners(opts);
    // Stats aggregation runs here (inline or in the pool); validation runs in the shards.
    this.offload = new Offload(opts.offload === 'all' || opts.offload === 'stats' ? 'stats' : 'none', parseValidateFlags(opts.validate), opts.offloadThreads);
    this.statsService = new StatsService(opts, this.offload, () => this.collectStats(), (out) => this.statsReplies.set(...mmiStatsReplies(out)));
    this.statsReplies.refresh = () => this.statsService.fresh();
  }

  get metricsPort(): number | null {
    return this.statsService.metricsPort;
  }

  async start(): Promise<void> {
    const id = `${process.pid}-${++instances}`;
    const { log, ...shardOpts } = this.opts;
    for (let i = 0; i < this.opts.shards; i++) {
      const endpoint = `inproc://mdbroker-${id}-shard-${i}`;
      const pair = new (zeromq().Pair)({ linger: 1000, sendHighWaterMark: 0, receiveHighWaterMark: 0, sendTimeout: 0 });
      await pair.bind(endpoint);
      const init: ShardInit = { index: i, endpoint, opts: shardOpts };
      const thread = new Thread(new URL('./shard-thread.js', import.meta.url), { workerData: init });
      let closed!: () => void;
      const exited = new Promise<void>((r) => thread.once('exit', () => r()));
      let drained!: () => void;
      const drainedP = new Promise<void>((r) => (drained = r));
      const state: ShardState = {
        thread, pair, io: shardIO(pair), snapshot: EMPTY_SNAPSHOT, stats: null, served: [], closed: new Promise((r) => (closed = r)), exited, drained, drainedP,
      };
      this.shards.push(state);
      const ready = new Promise<void>((resolve, reject) => {
        thread.on('message', (m: FromShard) => {
          if (m.type === 'ready') resolve();
          else if (m.type === 'closed') closed();
          else this.onShardMessage(i, m);
        });
        thread.once('error', reject);
      });
      thread.on('error', (err) => log('warn', 'shard thread failed', { shard: i, err: String(err) }));
      thread.on('exit', () => closed());
      await ready;
      void state.io.start({
        message: (frames) => this.toPeer(i, frames),
        sendFailed: (_id, why) => log('warn', 'hand-off to a shard failed', { shard: i, why }),
        peerClosed: () => undefined,
        error: (err) => log('warn', 'shard pipe error', { err: String(err) }),
      });
    }
    void this.listeners.io.start({
      message: (frames) => this.fromPeer(frames),
      sendFailed: (id, why, shard) => {
        // The shard that sent it learns the peer is gone (a worker: requeue; a client: drop its queued requests).
        if (!this.closedFlag && shard >= 0) this.post(shard, { type: 'sendFailed', id: new Uint8Array(id), why });
      },
      peerClosed: (id) => this.peerClosed(id),
      error: (err) => log('warn', 'socket error', { err: String(err) }),
    });
    await this.listeners.bind();
    await this.statsService.start();
  }

  private onShardMessage(i: number, m: FromShard): void {
    const s = this.shards[i];
    if (m.type === 'report') {
      s.snapshot = m.snapshot;
      s.stats = m.stats;
      s.served = m.served;
      for (const id of m.departed) {
        const key = peerKey(Buffer.from(id.buffer, id.byteOffset, id.byteLength));
        if (this.workerShard.get(key) === i) this.workerShard.delete(key);
      }
    } else if (m.type === 'stats') {
      const w = this.statsWaiters.get(m.seq);
      if (!w) return;
      w.snaps.push(m.snapshot);
      if (--w.left === 0) {
        this.statsWaiters.delete(m.seq);
        w.done(w.snaps);
      }
    } else if (m.type === 'log') {
      this.opts.log(m.level, m.msg, m.fields);
    }
  }

  private post(i: number, m: ToShard): void {
    this.shards[i].thread.postMessage(m);
  }

  private shardOf(service: Buffer): number {
    return fnv1a(service) % this.shards.length;
  }

  /** A message from a client or worker: route it to its shard, or answer the broker-wide MMI here. */
  /** Denials by the CURVE role lists, counted here (see fromPeer). */
  private readonly roleDenials = { workersDenied: 0, clientsDenied: 0 };

  private fromPeer(frames: Buffer[]): void {
    const m = parseInbound(frames, this.opts.limits);
    let shard = 0;
    // What each CURVE key may do: the shards cannot see keys, so requests and READYs are checked here (as the core does).
    const policy = this.listeners.io.policy;
    if (policy && (m.kind === Kind.ClientRequest || (m.kind === Kind.Worker && m.command === WCmd.Ready && !this.workerShard.has(peerKey(frames[0]))))) {
      if (m.kind === Kind.ClientRequest) {
        const why = policy.mayRequest(frames[0], m.service);
        if (why !== null) {
          this.roleDenials.clientsDenied++;
          this.opts.log('warn', 'request answered `denied`', { why, service: m.service.toString('latin1'), key: policy.keyName(frames[0]) });
          return this.listeners.io.send(clientReply(frames, m.headerAt, m.version, C2.FINAL, m.service, errorBody('denied', why), 0));
        }
      }
      const service = m.kind === Kind.Worker ? m.service.toString('latin1') : undefined;
      const why = service === undefined ? null : policy.mayServe(frames[0], service);
      if (why !== null) {
        this.roleDenials.workersDenied++;
        this.opts.log('warn', 'READY refused; told DISCONNECT', { why, service, key: policy.keyName(frames[0]) });
        const disconnect = m.version === 1 ? [frames[0], Buffer.alloc(0), MDPW01, Buffer.from([W1.DISCONNECT])] : [frames[0], MDPW02, Buffer.from([W2.DISCONNECT])];
        return this.listeners.io.send(disconnect);
      }
    }
    if (m.kind === Kind.ClientRequest) {
      const svc = m.service;
      if (isMmi(svc)) {
        const name = svc.toString('latin1');
        if (name === 'mmi.services') {
          return this.listeners.io.send(clientReply(frames, m.headerAt, m.version, C2.FINAL, svc, mmiBody(svc, frames[m.bodyAt], this), 0));
        }
        if (name === 'mmi.stats') {
          // Answered once fresh figures are in from every shard.
          return this.statsReplies.whenFresh(() => this.listeners.io.send(clientReply(frames, m.headerAt, m.version, C2.FINAL, svc, mmiBody(svc, frames[m.bodyAt], this), 0)));
        }
        // mmi.service is answered by the shard that owns the service asked about.
        const q = frames[m.bodyAt];
        shard = name === 'mmi.service' && q !== undefined ? this.shardOf(q) : 0;
      } else shard = this.shardOf(svc);
    } else if (m.kind === Kind.Worker) {
      const key = peerKey(frames[0]);
      const known = this.workerShard.get(key);
      if (m.command === WCmd.Ready) {
        // A second READY goes where the first went, so that shard sees it and says DISCONNECT.
        shard = known ?? this.shardOf(m.service);
        if (known === undefined) this.workerShard.set(key, shard);
      } else {
        shard = known ?? 0;
        if (m.command === WCmd.Disconnect && known !== undefined) this.workerShard.delete(key);
      }
    }
    this.shards[shard].io.send(frames);
  }

  /** MmiSource: the services served on any shard, as last reported. */
  served(): Buffer[] {
    const names = new Set<string>();
    for (const s of this.shards) for (const n of s.served) names.add(n);
    return [...names].map((n) => Buffer.from(n, 'latin1'));
  }

  /** MmiSource: only mmi.services and mmi.stats are answered here; mmi.service goes to the service's shard. */
  workersFor(name: string): number {
    return this.shards.some((s) => s.served.includes(name)) ? 1 : 0;
  }

  /** A message a shard wants sent to a peer. */
  private toPeer(shard: number, frames: Buffer[]): void {
    if (frames.length === 1 && frames[0].length === 0) return this.shards[shard].drained();
    this.listeners.io.send(frames, shard);
  }

  /** A peer's connection ended: a worker's shard is told; a client may have requests on any shard. */
  private peerClosed(id: Buffer): void {
    if (this.closedFlag) return;
    const key = peerKey(id);
    const shard = this.workerShard.get(key);
    const msg: ToShard = { type: 'peerClosed', id: new Uint8Array(id) };
    if (shard !== undefined) {
      this.workerShard.delete(key);
      this.post(shard, msg);
    } else for (let i = 0; i < this.shards.length; i++) this.post(i, msg);
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
    t.workersDenied = this.roleDenials.workersDenied;
    t.clientsDenied = this.roleDenials.clientsDenied;
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
      // The main thread's event-loop delay rides on the first shard's snapshot (global counters are summed).
      const withLoop = (snaps: StatsSnapshot[]) => {
        if (snaps[0]) {
          this.loopDelay.take(snaps[0].global);
          Object.assign(snaps[0].global, this.listeners.counters());
          this.listeners.addDenials(snaps[0]);
          snaps[0].global.workersDenied = (snaps[0].global.workersDenied ?? 0) + this.roleDenials.workersDenied;
          snaps[0].global.clientsDenied = (snaps[0].global.clientsDenied ?? 0) + this.roleDenials.clientsDenied;
        }
        done(snaps);
      };
      this.statsWaiters.set(seq, { left: this.shards.length, snaps: [], done: withLoop });
      for (let i = 0; i < this.shards.length; i++) this.post(i, { type: 'stats', seq });
    });
  }

  async close(): Promise<void> {
    await this.statsService.close();
    this.loopDelay.close();
    for (let i = 0; i < this.shards.length; i++) this.post(i, { type: 'close' });
    const deadline = new Promise((r) => setTimeout(r, this.opts.shutdownGrace + 3000));
    // Keep routing while shards drain: their DISCONNECTs and last replies come through us.
    await Promise.race([Promise.all(this.shards.map((s) => Promise.all([s.closed, s.drainedP]))), deadline]);
    this.closedFlag = true;
    for (const s of this.shards) await s.io.close();
    await this.listeners.close();
    await Promise.all(this.shards.map((s) => s.exited));
    await this.offload.close();
  }
}
