// --shards N: the main thread owns the public ROUTER socket, parses each message in place just far enough to know
// its service (or its worker), and hands the frames to the shard that owns that service on a MessageChannel, in one
// transferred batch per turn (shard-io.ts). Shards run BrokerCore; what they send comes back the same way and goes
// out on the ROUTER. A service lives on exactly one shard (FNV-1a hash of its name); a worker's messages follow the
// shard it registered with. mmi.services and mmi.stats are answered here, for the whole broker.
//
// Connections: every message goes to its shard with its connection's serial, and the end of a connection goes to
// every shard on the same pipe, in order; what a shard sends back names the serial it is for, and goes to that
// connection or, if it has ended, nowhere (the shard is told). CURVE rights: the connection's Peer carries them
// (resolved once at its handshake); every request and every READY is checked here against them before routing.

import { MessageChannel, Worker as Thread } from 'node:worker_threads';
import { LRUCacheWithDelete } from 'mnemonist';
import { C2, Kind, W1, W2, WCmd, clientReply, isMmi, parseInbound, toWorker, type WorkerMessage } from '../../protocol/codec.js';
import { errorBody } from '../../protocol/errors.js';
import { NO_RIGHTS, type Peer } from '../../core/peer.js';
import { WarnGate } from '../../core/warn-gate.js';
import { StatsReplies, mmiBody, type MmiSource } from '../../core/mmi.js';
import { emptyStats, type CoreSnapshot, type CoreStats } from '../../core/broker-core.js';
import type { FrameIO } from '../frame-io.js';
import { Offload } from '../offload.js';
import { parseValidateFlags } from '../validation.js';
import { Listeners } from '../listeners.js';
import { pipe, type Pipe } from './shard-io.js';
import { StatsService, mmiStatsReplies } from '../stats-service.js';
import { LoopDelay } from '../loop-delay.js';
import type { AggregateOutput } from '../stats-report.js';
import type { StatsSnapshot } from '../../core/stats.js';
import type { BrokerOptions } from '../options.js';
import type { FromShard, ShardInit, ToShard } from './shard-protocol.js';

/** DISCONNECT in the framing of the worker message `m` (from the broker to it, or handed to its shard as its own). */
function disconnect(id: Buffer, m: WorkerMessage): Buffer[] {
  return toWorker(id, m.version, m.delimited, m.version === 1 ? W1.DISCONNECT : W2.DISCONNECT);
}

function fnv1a(b: Buffer): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < b.length; i++) h = Math.imul(h ^ b[i], 0x01000193);
  return h >>> 0;
}

interface ShardState {
  thread: Thread;
  /** The pipe: frames with their connection's serial. */
  io: Pipe;
  snapshot: CoreSnapshot;
  stats: CoreStats | null;
  served: string[];
  closed: Promise<void>;
  exited: Promise<void>;
  /** Called when the shard's end marker arrives on its pipe: all its output has reached the sockets. */
  drained: () => void;
  drainedP: Promise<void>;
}

const EMPTY_SNAPSHOT: CoreSnapshot = { services: 0, workers: 0, idleWorkers: 0, busyWorkers: 0, queued: 0 };

export class ShardedBroker implements MmiSource {
  readonly listeners: Listeners;
  private readonly shards: ShardState[] = [];
  /**
   * Which shard the worker on each connection (by serial) registered with. Bounded (the libzmq transport never says
   * a connection ended): an evicted live worker's next message goes to shard 0, which tells it DISCONNECT.
   */
  private readonly workerShard = new LRUCacheWithDelete<number, number>(1 << 17);
  private readonly offload: Offload;
  private readonly statsService: StatsService;
  readonly statsReplies = new StatsReplies();
  private statsSeq = 0;
  private readonly statsWaiters = new Map<number, { left: number; snaps: StatsSnapshot[]; done: (s: StatsSnapshot[]) => void }>();
  private closedFlag = false;
  private readonly loopDelay = new LoopDelay();

  /** close() has begun: a shard thread ending now is expected. */
  private stopping = false;

  constructor(
    private readonly opts: BrokerOptions,
    /** A shard thread died: its services' queues and held requests are gone, so the broker cannot go on as it is. */
    private readonly onFatal: (err: Error) => void,
  ) {
    this.listeners = new Listeners(opts);
    // Stats aggregation runs here (inline or in the pool); validation runs in the shards.
    this.offload = new Offload(opts.offload === 'all' || opts.offload === 'stats' ? 'stats' : 'none', parseValidateFlags(opts.validate), opts.offloadThreads);
    this.statsService = new StatsService(opts, this.offload, () => this.collectStats(), (out) => this.statsReplies.set(...mmiStatsReplies(out)));
  }

  get metricsPort(): number | null {
    return this.statsService.metricsPort;
  }

  async start(): Promise<void> {
    const { log, ...shardOpts } = this.opts;
    for (let i = 0; i < this.opts.shards; i++) {
      const { port1, port2 } = new MessageChannel();
      const init: ShardInit = { index: i, port: port2, opts: shardOpts };
      const thread = new Thread(new URL('./shard-thread.js', import.meta.url), { workerData: init, transferList: [port2] });
      let closed!: () => void;
      const exited = new Promise<void>((r) => thread.once('exit', () => r()));
      let drained!: () => void;
      const drainedP = new Promise<void>((r) => (drained = r));
      const state: ShardState = {
        thread, io: pipe(port1), snapshot: EMPTY_SNAPSHOT, stats: null, served: [], closed: new Promise((r) => (closed = r)), exited, drained, drainedP,
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
      thread.on('error', (err) => this.died(i, String(err)));
      thread.on('exit', (code) => {
        closed();
        this.died(i, `exited with code ${code}`);
      });
      await ready;
      void state.io.start(
        (serial, frames) => this.toPeer(i, serial, frames),
        () => state.drained(),
        (err) => log('warn', 'shard pipe error', { err: String(err) }),
      );
    }
    void this.listeners.io.start({
      message: (frames, peer) => this.fromPeer(frames, peer),
      sendFailed: (peer, why, shard) => {
        // The shard that sent it learns the peer is gone (a worker: requeue; a client: drop its queued requests).
        if (!this.closedFlag && shard >= 0) this.post(shard, { type: 'sendFailed', serial: peer.serial, why });
      },
      peerClosed: (peer) => this.peerClosed(peer),
      error: (err) => log('warn', 'socket error', { err: String(err) }),
    });
    await this.listeners.bind();
    await this.statsService.start();
    this.started = true;
  }

  private onShardMessage(i: number, m: FromShard): void {
    const s = this.shards[i];
    if (m.type === 'report') {
      s.snapshot = m.snapshot;
      s.stats = m.stats;
      s.served = m.served;
      for (const serial of m.departed) if (this.workerShard.get(serial) === i) this.workerShard.delete(serial);
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

  /** Said once, for the first shard found dead outside close(). */
  private deadShard = false;
  private started = false;

  private died(i: number, why: string): void {
    // Before start() is done, a failing shard fails start() itself.
    if (!this.started || this.stopping || this.deadShard) return;
    this.deadShard = true;
    const err = new Error(`shard ${i} died (${why}): the requests it held and queued are lost and its services cannot be served`);
    this.opts.log('warn', err.message, { shard: i });
    this.onFatal(err);
  }

  private post(i: number, m: ToShard): void {
    this.shards[i].thread.postMessage(m);
  }

  private shardOf(service: Buffer): number {
    return fnv1a(service) % this.shards.length;
  }

  /** Denials by the CURVE rights, counted here (see fromPeer). */
  private readonly roleDenials = { workersDenied: 0, clientsDenied: 0 };
  /** Which peer-caused warnings reach the log (as in the core). */
  private readonly warnGate = new WarnGate();

  /** A message from a client or worker: route it to its shard, or answer the broker-wide MMI here. */
  private fromPeer(frames: Buffer[], peer: Peer): void {
    if (peer.gone) return;
    const m = parseInbound(frames, this.opts.limits);
    const io = this.listeners.io;
    if (io.requireRights === true && (m.kind === Kind.ClientRequest || (m.kind === Kind.Worker && m.command === WCmd.Ready))) {
      const rights = peer.rights;
      if (m.kind === Kind.ClientRequest) {
        const why = rights === null ? NO_RIGHTS : rights.mayRequest(m.service);
        if (why !== null) {
          this.roleDenials.clientsDenied++;
          this.warn(peer, 'request answered `denied`', { why, service: m.service.toString('latin1'), key: rights?.name ?? null });
          return io.send(clientReply(frames, m.headerAt, m.version, C2.FINAL, m.service, errorBody('denied', why), 0), peer);
        }
      } else if (m.kind === Kind.Worker) {
        const service = m.service.toString('latin1');
        const why = rights === null ? NO_RIGHTS : rights.mayServe(service);
        if (why !== null) {
          this.roleDenials.workersDenied++;
          this.warn(peer, 'READY refused; told DISCONNECT', { why, service, key: rights?.name ?? null });
          // Every READY is checked, a registered worker's too; its shard forgets it (as if it said DISCONNECT).
          const known = this.workerShard.get(peer.serial);
          if (known !== undefined) {
            this.workerShard.delete(peer.serial);
            this.shards[known].io.send(disconnect(frames[0], m), peer.serial);
          }
          return io.send(disconnect(frames[0], m), peer);
        }
      }
    }
    let shard = 0;
    if (m.kind === Kind.ClientRequest) {
      const svc = m.service;
      if (isMmi(svc)) {
        const name = svc.toString('latin1');
        if (name === 'mmi.services') {
          return io.send(clientReply(frames, m.headerAt, m.version, C2.FINAL, svc, mmiBody(svc, frames[m.bodyAt], this), 0), peer);
        }
        if (name === 'mmi.stats') {
          // Answered once fresh figures are in from every shard.
          return this.statsService.whenFresh(() => {
            if (!peer.gone) io.send(clientReply(frames, m.headerAt, m.version, C2.FINAL, svc, mmiBody(svc, frames[m.bodyAt], this), 0), peer);
          });
        }
        // mmi.service is answered by the shard that owns the service asked about.
        const q = frames[m.bodyAt];
        shard = name === 'mmi.service' && q !== undefined ? this.shardOf(q) : 0;
      } else shard = this.shardOf(svc);
    } else if (m.kind === Kind.Worker) {
      const known = this.workerShard.get(peer.serial);
      if (m.command === WCmd.Ready) {
        // A second READY goes where the first went, so that shard sees it and says DISCONNECT.
        shard = known ?? this.shardOf(m.service);
        if (known === undefined) this.workerShard.set(peer.serial, shard);
      } else {
        shard = known ?? 0;
        if (m.command === WCmd.Disconnect && known !== undefined) this.workerShard.delete(peer.serial);
      }
    }
    this.shards[shard].io.send(frames, peer.serial);
  }

  /** A peer-caused warning, at warn where the gate allows it, else at debug. */
  private warn(peer: Peer, msg: string, fields: Record<string, unknown>): void {
    this.opts.log(this.warnGate.allows(peer, performance.now()) ? 'warn' : 'debug', msg, fields);
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

  /** A message a shard wants sent to the connection with this serial: there, or nowhere (the shard is told). */
  private toPeer(shard: number, serial: number, frames: Buffer[] | null): void {
    if (frames === null) return;
    const peer = this.listeners.io.peer(serial);
    if (peer === null || peer.gone) {
      if (!this.closedFlag) this.post(shard, { type: 'sendFailed', serial, why: 'unreachable' });
      return;
    }
    this.listeners.io.send(frames, peer, shard);
  }

  /** A peer's connection ended: every shard is told on its pipe, after whatever the peer sent before. */
  private peerClosed(peer: Peer): void {
    peer.gone = true;
    if (this.closedFlag) return;
    this.workerShard.delete(peer.serial);
    for (const s of this.shards) s.io.sendClosed(peer.serial);
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
    this.stopping = true;
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
