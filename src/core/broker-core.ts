// The broker as a pure, synchronous state machine ("sans-I/O"): feed it received messages, clock ticks and send
// failures; it appends the messages to send to `out`. No sockets, no timers, no clock: every rule is testable
// deterministically. The transport is a thin loop around it.

import {
  C2, EMPTY, Kind, MDPW01, MDPW02, W1, W2, WCmd, clientReply, cmd, parseInbound, toWorker,
  type ClientRequest, type Limits, type Version, type WorkerMessage, DEFAULT_LIMITS,
} from '../protocol/codec.js';
import { ServiceQueue } from './service-queue.js';
import { IdleList, type IdleNode } from './idle-list.js';
import { HeldRequests } from './held-requests.js';
import { CREDIT_TAG_BYTES } from '../protocol/extensions.js';
import { errorBody, errorCounts, isErrorMark, type ErrorCode } from '../protocol/errors.js';
import { groupOf } from './peer-id.js';
import { NO_RIGHTS, type Peer } from './peer.js';
import type { Neighbours, SharedService } from './neighbours.js';
import { WarnGate } from './warn-gate.js';
import { StatsReplies, isMmi, isMmiStats, mmiBody, type MmiSource } from './mmi.js';
import { StatsRecorder, snapshotHistogram, type ServiceStats, type StatsSnapshot } from './stats.js';

export interface CoreOptions {
  /** Milliseconds between heartbeats, both ways. */
  heartbeatInterval: number;
  /** A worker silent for this many intervals is dead. */
  heartbeatLiveness: number;
  /** A worker holding one request longer than this (without PARTIAL progress) is expired. */
  busyTimeout: number;
  /**
   * The transport notices dead connections (ZMTP heartbeats; the zmtp transport's close events, libzmq's failed
   * mandatory sends). A busy worker is then not expired for MDP silence, only by busyTimeout or its connection's
   * end: reference workers (the ZeroMQ Guide's) heartbeat only while idle and block in their handler.
   */
  connectionLiveness: boolean;
  /** Dispatches per request before the client gets `failed`. */
  maxAttempts: number;
  /** Milliseconds a request may wait in a queue for a worker. */
  requestTtl: number;
  /** Requests one service queue may hold. */
  maxQueue: number;
  /** Bytes of requests the broker may hold at once (queued, awaiting a verdict, or at a worker); beyond: overloaded. */
  maxHeldBytes: number;
  /** Of those, what one client's requests may hold, so one client cannot starve the others. */
  maxClientBytes: number;
  limits: Limits;
  /** Which services' requests need a --validate verdict before queueing (asked once per service); null: none. */
  validates: ((service: string) => boolean) | null;
  /** --access: may a worker that came through this access group (-1: the main endpoint) register this service? */
  mayRegister: ((group: number, service: string) => boolean) | null;
  /**
   * CURVE role lists or key grants are in force: a peer may act only within its connection's Rights, and one that
   * came without (a transport that could not resolve its key) may do nothing. Fail closed.
   */
  requireRights: boolean;
  /** --shards N: the other threads' cores, to move requests to and from (null: this core is the whole broker). */
  neighbours: Neighbours | null;
  /**
   * Services the shell answers itself (--titanic: titanic.*): their requests go to `asked`, after the client's
   * rights are checked, and the shell answers each with answerAsked() when it can (a durable write, say).
   */
  shellServices: ((service: Buffer) => boolean) | null;
}

/** A request for a service the shell answers (CoreOptions.shellServices). */
export interface Asked {
  readonly frames: Buffer[];
  readonly peer: Peer;
  readonly headerAt: number;
  readonly bodyAt: number;
  readonly version: Version;
  readonly service: Buffer;
}

export const DEFAULT_CORE_OPTIONS: CoreOptions = {
  heartbeatInterval: 2500,
  heartbeatLiveness: 3,
  busyTimeout: 60000,
  connectionLiveness: false,
  maxAttempts: 3,
  requestTtl: 30000,
  maxQueue: 100000,
  maxHeldBytes: 256 * 1024 * 1024,
  maxClientBytes: 64 * 1024 * 1024,
  limits: DEFAULT_LIMITS,
  validates: null,
  mayRegister: null,
  requireRights: false,
  neighbours: null,
  shellServices: null,
};


export interface DeniedCounts {
  requests: number;
  ready: number;
}

export type LogLevel = 'debug' | 'info' | 'warn';
export type LogFn = (level: LogLevel, msg: string, fields?: Record<string, unknown>) => void;

/** Why a send failed, as the transport saw it. */
export type SendFailure = 'unreachable' | 'full';

function bytesEqual(a: Buffer, b: Buffer): boolean {
  const n = a.length;
  if (n !== b.length) return false;
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** A request waiting for its --validate verdict (see BrokerCore.toValidate / admit). */
export interface Admission {
  readonly serviceName: string;
  /** False for a request that waits only to keep arrival order behind one that is checked. */
  readonly needsCheck: boolean;
  body(): Buffer[];
}

class Request implements Admission {
  attempts = 0;
  enqueuedAt: number;
  dispatchedAt = 0;
  /** Held by a worker: dispatch or its last PARTIAL (the busy timeout counts from here). */
  progressAt = 0;
  /** Bytes held against the budgets until the request ends (0 once released). */
  bytes = 0;
  constructor(
    /** The client's message as received; the prefix before headerAt is echoed in front of the reply. */
    readonly frames: Buffer[],
    readonly headerAt: number,
    readonly bodyAt: number,
    readonly version: Version,
    /** The connection that sent it: its reply goes there or nowhere. */
    readonly client: Peer,
    readonly service: Service,
    public deadline: number,
    now: number,
  ) {
    this.enqueuedAt = now;
  }
  get serviceName(): string {
    return this.service.name;
  }
  get needsCheck(): boolean {
    return this.service.needsCheck;
  }
  body(): Buffer[] {
    return this.frames.slice(this.bodyAt);
  }
}

class Service {
  readonly queue = new ServiceQueue<Request>();
  readonly idle = new IdleList<Worker>();
  workers = 0;
  /** Requests of this service waiting for a validation verdict: the service is not forgotten meanwhile. */
  awaitingVerdict = 0;
  /** Its place on the board the shard threads share (null: one thread, or the board is full). */
  shared: SharedService | null = null;
  constructor(
    readonly name: string,
    /** Interned copy of the name frame, reused on every reply. */
    readonly frame: Buffer,
    readonly stats: ServiceStats,
    readonly needsCheck: boolean,
  ) {}
}

/** mmi.stats questions held at once for fresh figures (--shards); past this, the last report answers at once. */
const MAX_STATS_HELD = 1000;

/** A frame in a read chunk this much bigger than the whole request (and past Node's 8 KiB pool slabs) pins it. */
const PINNING_CHUNK = 16 * 1024;

/**
 * The frames of a request about to be held, copied into one right-sized buffer if any of them is a view into a
 * much larger read chunk: a held 100-byte request must not keep a 64 KiB chunk alive (the transports hand the core
 * subarrays of what they read). Requests that arrived alone, and large bodies, are kept as they are.
 */
function compacted(frames: Buffer[], bytes: number): Buffer[] {
  const limit = Math.max(PINNING_CHUNK, 2 * bytes);
  let pins = false;
  for (let i = 0; i < frames.length; i++) if (frames[i].buffer.byteLength > limit) pins = true;
  if (!pins) return frames;
  // Its own backing store: from Node's pool it would sit in a slab of Buffer.poolSize (64 KiB on Node 24).
  const block = Buffer.allocUnsafeSlow(bytes);
  const out = new Array<Buffer>(frames.length);
  let at = 0;
  for (let i = 0; i < frames.length; i++) {
    const f = frames[i];
    if (f.buffer.byteLength <= limit) {
      out[i] = f;
      continue;
    }
    f.copy(block, at);
    out[i] = block.subarray(at, at + f.length);
    at += f.length;
  }
  return out;
}

/** Microseconds between two ms clock readings, clamped to what the histograms hold. */
function micros(from: number, to: number): number {
  const us = Math.round((to - from) * 1000);
  return us < 0 ? 0 : us > 600_000_000 ? 600_000_000 : us;
}

/**
 * A registered worker. It is in its service's idle list while it can take a request: with no credit while it holds
 * none, with credit while it holds fewer than its credit.
 */
class Worker implements IdleNode {
  idlePrev: IdleNode | null = null;
  idleNext: IdleNode | null = null;
  idleIn: IdleList<IdleNode> | null = null;
  readonly held: HeldRequests<Request>;
  constructor(
    readonly id: Buffer,
    readonly peer: Peer,
    readonly version: Version,
    readonly delimited: boolean,
    readonly service: Service,
    public expiry: number,
    public lastSent: number,
    credit: number,
  ) {
    this.held = new HeldRequests(credit);
  }

  /** Its REQUESTs' client address frames end with the slot tag (credit above 1). */
  get tagged(): boolean {
    return this.held.credit > 1;
  }
}

/** A credited worker's client address: the client's, then the slot (protocol/extensions.ts). */
function taggedAddress(client: Buffer, slot: number): Buffer {
  const a = Buffer.allocUnsafe(client.length + CREDIT_TAG_BYTES);
  client.copy(a, 0);
  a.writeUInt16BE(slot, client.length);
  return a;
}

export interface CoreStats {
  requests: number;
  /** Of those, sent on to another thread's core (--shards): it counts their replies and errors. */
  moved: number;
  replies: number;
  partials: number;
  mmi: number;
  malformed: number;
  unexpected: number;
  requeued: number;
  workersRegistered: number;
  workersExpired: number;
  workersDisconnected: number;
  workersUnreachable: number;
  /** Registered workers whose connection ended (transports that tell: zmtp); their requests were retried at once. */
  workersGone: number;
  /** Other peers (clients) whose connection ended: their queued requests and replies are dropped as they come up. */
  clientsGone: number;
  droppedClientGone: number;
  droppedReplies: number;
  /** Sends that failed to a peer that is not a registered worker (a client gone or too slow, a departed worker). */
  undeliverable: number;
  /** Of those, replies to a client whose pipe was full (it stopped reading). */
  repliesDroppedFull: number;
  /** READYs refused by the --access policy. */
  accessDenied: number;
  /** READYs from keys not on --allow-workers (told DISCONNECT), requests from keys not on --allow-clients (`denied`). */
  workersDenied: number;
  clientsDenied: number;
  errors: Record<ErrorCode, number>;
}

export function emptyStats(): CoreStats {
  return {
    requests: 0, moved: 0, replies: 0, partials: 0, mmi: 0, malformed: 0, unexpected: 0, requeued: 0,
    workersRegistered: 0, workersExpired: 0, workersDisconnected: 0, workersUnreachable: 0, workersGone: 0, clientsGone: 0,
    droppedClientGone: 0, droppedReplies: 0, undeliverable: 0, repliesDroppedFull: 0, accessDenied: 0, workersDenied: 0, clientsDenied: 0,
    errors: errorCounts(),
  };
}

export interface CoreSnapshot {
  services: number;
  workers: number;
  idleWorkers: number;
  busyWorkers: number;
  queued: number;
}

export class BrokerCore implements MmiSource {
  /** Messages to send, each [routing id, ...frames]. The transport drains it after every call. */
  readonly out: Buffer[][] = [];
  /** The connection each message in `out` is for (same index): the transport sends it there or nowhere. */
  readonly to: Peer[] = [];
  /**
   * Frames of requests and replies that have ended, which the core keeps no more: the transport drains it after
   * `out` and may reuse their memory once what it sent of them is written (zmtp's frame pool).
   */
  readonly done: Buffer[][] = [];
  /**
   * Clients to stop reading from, and to read from again: a client whose requests hold half its --max-client-bytes
   * is paused (TCP pushes back on it) rather than refused, and resumed below a quarter. The transport drains them,
   * in order, after every call; one that cannot pause (libzmq, a shard's pipe) drops them, and such clients get
   * `overloaded` at the full share instead. Each entry: [peer, true to pause].
   */
  readonly flow: [Peer, boolean][] = [];
  /** Told each peer whose worker the core forgets (the sharded broker keeps its routing table with it). */
  departed: ((peer: Peer) => void) | null = null;
  /** Requests waiting for a --validate verdict, in arrival order. The shell drains it and answers with admit(). */
  readonly toValidate: Admission[] = [];
  private awaitingVerdict = 0;
  readonly stats: CoreStats = emptyStats();
  readonly opts: CoreOptions;
  private readonly services = new Map<string, Service>();
  private readonly workers = new Set<Worker>();
  private stopping = false;
  private lastFullWarning = -Infinity;
  /** Which peer-caused warnings reach the log (the counters keep the totals). */
  private readonly warnGate = new WarnGate();
  /** Bytes of the requests held now (each client's share lives on its Peer). */
  heldBytes = 0;
  private readonly workerTtl: number;
  readonly recorder = new StatsRecorder();
  /** mmi.stats answers: the whole broker, and per service; installed by the shell after each aggregation. */
  readonly statsReplies = new StatsReplies();
  /** mmi.stats questions waiting for figures that include them (statsReplies.deferred). */
  private readonly statsHeld: { frames: Buffer[]; peer: Peer; m: ClientRequest }[] = [];

  constructor(opts: Partial<CoreOptions> = {}, private readonly log: LogFn = () => {}) {
    this.opts = { ...DEFAULT_CORE_OPTIONS, ...opts, limits: { ...DEFAULT_LIMITS, ...opts.limits } };
    this.workerTtl = this.opts.heartbeatInterval * this.opts.heartbeatLiveness;
  }

  /** One message received from `peer` (frames[0] is its routing id). */
  handle(frames: Buffer[], now: number, peer: Peer): void {
    if (peer.gone) return;
    const m = parseInbound(frames, this.opts.limits);
    if (m.kind === Kind.ClientRequest) this.onRequest(frames, peer, m, now);
    else if (m.kind === Kind.Worker) this.onWorker(frames, peer, m, now);
    else {
      this.stats.malformed++;
      const fields = { reason: m.reason, frames: frames.length };
      if (this.warnable(peer, now)) this.log('warn', m.request ? 'invalid request answered with `invalid`' : 'malformed message dropped', fields);
      else this.log('debug', 'malformed message dropped', fields);
      if (m.request) this.replyError(peer, frames, m.request.headerAt, m.request.version, m.request.service, 'invalid', m.reason);
    }
  }

  /**
   * A request another thread's core moved here (--shards): `client` stands for its client. It was counted, checked
   * against the client's rights and validated there; here it is queued, served and answered like any other.
   */
  handleMoved(frames: Buffer[], now: number, client: Peer): void {
    if (client.gone) return;
    const m = parseInbound(frames, this.opts.limits);
    if (m.kind !== Kind.ClientRequest || isMmi(m.service)) {
      this.stats.malformed++;
      return;
    }
    this.onRequest(frames, client, m, now, true);
  }

  /**
   * Another thread has idle workers for this service (--shards): up to `n` of the requests queued here move there,
   * oldest first. Their bytes leave this core's budgets.
   */
  give(name: string, n: number, to: number, now: number): void {
    const svc = this.services.get(name);
    const neighbours = this.opts.neighbours;
    if (svc === undefined || neighbours === null || this.stopping) return;
    for (let k = 0; k < n && svc.queue.size > 0; ) {
      const r = svc.queue.shift() as Request;
      if (r.deadline <= now) {
        this.expire(r);
        continue;
      }
      this.release(r);
      if (r.client.gone) {
        this.stats.droppedClientGone++;
        continue;
      }
      this.moveTo(to, r.frames, r.client);
      k++;
    }
    this.share(svc);
    this.maybeForget(svc);
  }

  /** Clock tick: heartbeats, dead workers, expired requests. Call at least every heartbeatInterval / 2. */
  tick(now: number): void {
    const interval = this.opts.heartbeatInterval;
    const keepBusy = this.opts.connectionLiveness;
    for (const w of this.workers) {
      const busy = w.held.size > 0;
      if (now >= w.expiry && !(keepBusy && busy)) {
        this.stats.workersExpired++;
        this.log('info', 'worker expired: no heartbeat', { service: w.service.name, busy });
        this.sendDisconnect(w.peer, w.id, w.version, w.delimited);
        this.deleteWorker(w, now);
      } else if (busy && now - w.held.oldest() >= this.opts.busyTimeout) {
        this.stats.workersExpired++;
        this.log('warn', 'worker expired: busy timeout', { service: w.service.name });
        this.sendDisconnect(w.peer, w.id, w.version, w.delimited);
        this.deleteWorker(w, now);
      } else if (now - w.lastSent >= interval) {
        this.send(w.peer, toWorker(w.id, w.version, w.delimited, w.version === 1 ? W1.HEARTBEAT : W2.HEARTBEAT));
        w.lastSent = now;
      }
    }
    for (const svc of this.services.values()) {
      // A full scan, not a look at the head: requeued requests go to the front with fresh deadlines, so the
      // queue is not ordered by deadline. O(queued) once per tick, not per request.
      if (svc.queue.size > 0) {
        svc.queue.removeWhere((r) => {
          if (r.deadline > now) return false;
          this.expire(r);
          return true;
        });
      }
      if (svc.shared !== null) {
        this.share(svc);
        // Requests stranded on a thread whose workers left are asked for here at least once a tick.
        if (svc.workers > 0) this.opts.neighbours?.want(svc.shared, svc.idle.size, svc.workers);
      }
      this.maybeForget(svc);
    }
  }

  /** A send to `peer` failed: its connection is gone (ROUTER mandatory) or its pipe is full. */
  sendFailed(peer: Peer, why: SendFailure, now: number): void {
    const w = peer.worker as Worker | null;
    if (w !== null) {
      this.stats.workersUnreachable++;
      this.log('info', 'worker unreachable', { service: w.service.name, why });
      this.deleteWorker(w, now);
      return;
    }
    this.stats.undeliverable++;
    if (why === 'unreachable') {
      peer.gone = true;
      this.log('debug', 'message to a departed client or peer not delivered');
      return;
    }
    // A client that does not read its replies: its pipe is at the high-water mark. Counted, and said out loud
    // (at most once a second), since that client will never see this reply.
    this.stats.repliesDroppedFull++;
    if (now - this.lastFullWarning >= 1000) {
      this.lastFullWarning = now;
      this.log('warn', 'replies dropped: a client is not reading (its pipe is at the high-water mark)', { total: this.stats.repliesDroppedFull });
    }
  }

  /**
   * The transport saw a peer's connection end. A worker is gone at once: its request is retried now, not after
   * heartbeat expiry. A client's queued requests are dropped (counted) when they come up, and replies for it are
   * discarded, so no worker serves a client that left, and nobody who takes its routing id later gets them.
   */
  peerClosed(peer: Peer, now: number): void {
    if (peer.gone) return;
    peer.gone = true;
    const w = peer.worker as Worker | null;
    if (w !== null) {
      this.stats.workersGone++;
      this.log('debug', 'worker connection closed', { service: w.service.name, busy: w.held.size > 0 });
      this.deleteWorker(w, now);
      return;
    }
    this.stats.clientsGone++;
    peer.paused = false;
  }

  /** Stops taking work: queued requests fail with `shutdown`, idle workers are told DISCONNECT. */
  beginShutdown(now: number): void {
    this.stopping = true;
    for (const svc of this.services.values()) {
      for (let r = svc.queue.shift(); r; r = svc.queue.shift()) this.failRequest(r, 'shutdown', 'broker is shutting down');
      for (let w = svc.idle.shift(); w; w = svc.idle.shift()) {
        // A credited worker may be idle with requests in hand: it is let go once they are answered (workerFreed).
        if (w.held.size > 0) continue;
        this.sendDisconnect(w.peer, w.id, w.version, w.delimited);
        this.deleteWorker(w, now);
      }
      this.maybeForget(svc);
    }
  }

  /** Ends the shutdown: requests still held by workers fail with `shutdown`, every worker is told DISCONNECT. */
  finishShutdown(now: number): void {
    this.stopping = true;
    for (const w of this.workers) {
      for (const r of w.held.drain()) this.failRequest(r, 'shutdown', 'broker shut down before the worker replied');
      this.sendDisconnect(w.peer, w.id, w.version, w.delimited);
      this.deleteWorker(w, now);
    }
    for (const svc of this.services.values()) {
      for (let r = svc.queue.shift(); r; r = svc.queue.shift()) this.failRequest(r, 'shutdown', 'broker is shutting down');
      this.maybeForget(svc);
    }
  }

  /** Requests for the services the shell answers (shellServices), in arrival order; the shell drains it. */
  readonly asked: Asked[] = [];

  /** The shell's answer to a request it took from `asked`: its body frames, sent as a FINAL reply. */
  answerAsked(a: Asked, body: Buffer[]): void {
    if (a.peer.gone) return;
    this.reply(a.peer, a.frames, a.headerAt, a.version, C2.FINAL, a.service, body, 0);
  }

  /** Whether a worker for this service is connected here (idle or busy). */
  hasWorkers(name: string): boolean {
    return (this.services.get(name)?.workers ?? 0) > 0;
  }

  /** The services with a worker connected here. */
  servicesWithWorkers(): string[] {
    const out: string[] = [];
    for (const svc of this.services.values()) if (svc.workers > 0) out.push(svc.name);
    return out;
  }

  /** mmi.stats questions held now (statsReplies.deferred). */
  get statsWaiting(): number {
    return this.statsHeld.length;
  }

  /** Answers the first `n` held mmi.stats questions from the report installed now (it includes them). */
  answerStats(n: number): void {
    for (const { frames, peer, m } of this.statsHeld.splice(0, n)) {
      if (!peer.gone) this.reply(peer, frames, m.headerAt, m.version, C2.FINAL, m.service, mmiBody(m.service, frames[m.bodyAt], this), 0);
    }
  }

  /** Raw stats for aggregation: counters and copies of the histogram counts. Once per stats interval. */
  statsSnapshot(wallNow: number, uptimeMs: number): StatsSnapshot {
    const services: StatsSnapshot['services'] = [];
    const add = (name: string, st: ServiceStats) => {
      const live = this.services.get(name);
      services.push({
        name, requests: st.requests, replies: st.replies, requeued: st.requeued, errors: { ...st.errors },
        queued: live?.queue.size ?? 0, workers: live?.workers ?? 0, idle: live?.idle.size ?? 0,
        wait: snapshotHistogram(st.wait), service: snapshotHistogram(st.service),
      });
    };
    for (const [name, st] of this.recorder.entries()) add(name, st);
    const other = this.recorder.otherEntry();
    if (other) add('_other', other);
    const { errors, ...counters } = this.stats;
    const global: Record<string, number> = { ...counters };
    for (const [k, v] of Object.entries(errors)) global[`errors_${k}`] = v;
    const snap = this.snapshot();
    global.services = snap.services;
    global.workers = snap.workers;
    global.busyWorkers = snap.busyWorkers;
    global.queued = snap.queued;
    global.heldBytes = this.heldBytes;
    return { at: wallNow, uptimeMs, global, services };
  }

  snapshot(): CoreSnapshot {
    let idle = 0;
    let queued = 0;
    for (const svc of this.services.values()) {
      idle += svc.idle.size;
      queued += svc.queue.size;
    }
    return { services: this.services.size, workers: this.workers.size, idleWorkers: idle, busyWorkers: this.workers.size - idle, queued };
  }

  /** Names of services with at least one worker. */
  servedServices(): string[] {
    const names: string[] = [];
    for (const svc of this.services.values()) if (svc.workers > 0) names.push(svc.name);
    return names;
  }

  /** MmiSource: name frames of the services with at least one worker (on any thread). */
  served(): Buffer[] {
    const frames: Buffer[] = [];
    const names = new Set<string>();
    for (const svc of this.services.values()) {
      if (svc.workers > 0) {
        frames.push(svc.frame);
        names.add(svc.name);
      }
    }
    const elsewhere = this.opts.neighbours?.served() ?? [];
    for (const f of elsewhere) if (!names.has(f.toString('latin1'))) frames.push(f);
    return frames;
  }

  /** MmiSource: workers registered for a service (on any thread). */
  workersFor(name: string): number {
    return (this.services.get(name)?.workers ?? 0) + (this.opts.neighbours?.workers(name) ?? 0);
  }

  private warnable(peer: Peer, now: number): boolean {
    return this.warnGate.allows(peer, now);
  }

  // ---- clients ----

  private onRequest(frames: Buffer[], peer: Peer, m: ClientRequest, now: number, moved = false): void {
    if (!moved) this.stats.requests++;
    if (this.opts.requireRights && !moved) {
      const rights = peer.rights;
      const why = rights === null ? NO_RIGHTS : rights.mayRequest(m.service);
      if (why !== null) {
        this.stats.clientsDenied++;
        const fields = { why, service: m.service.toString('latin1'), key: rights?.name ?? null };
        this.log(this.warnable(peer, now) ? 'warn' : 'debug', 'request answered `denied`', fields);
        return this.replyError(peer, frames, m.headerAt, m.version, m.service, 'denied', why);
      }
    }
    if (isMmi(m.service)) return this.onMmi(frames, peer, m);
    if (this.opts.shellServices !== null && !moved && this.opts.shellServices(m.service)) {
      this.asked.push({ frames, peer, headerAt: m.headerAt, bodyAt: m.bodyAt, version: m.version, service: m.service });
      return;
    }
    if (this.stopping) return this.replyError(peer, frames, m.headerAt, m.version, m.service, 'shutdown', 'broker is shutting down');
    const name = m.service.toString('latin1');
    let svc = this.services.get(name);
    if (svc === undefined) svc = this.newService(name, m.service);
    if (!moved) {
      svc.stats.requests++;
      // No idle worker here: one on another thread takes it now (and one here waits for nothing queued first).
      if (svc.shared !== null && svc.idle.size === 0 && (svc.queue.size === 0 || svc.workers === 0) && !svc.needsCheck && this.awaitingVerdict === 0) {
        const to = (this.opts.neighbours as Neighbours).target(svc.shared, svc.workers);
        if (to >= 0) {
          this.moveTo(to, frames, peer);
          return this.maybeForget(svc);
        }
      }
    }
    let bytes = 0;
    for (let i = 0; i < frames.length; i++) bytes += frames[i].length;
    const mine = peer.heldBytes;
    if (this.heldBytes + bytes > this.opts.maxHeldBytes || mine + bytes > this.opts.maxClientBytes) {
      svc.stats.errors.overloaded++;
      const why = mine + bytes > this.opts.maxClientBytes
        ? `this client's requests would hold ${mine + bytes} bytes (limit ${this.opts.maxClientBytes})`
        : `the broker's requests would hold ${this.heldBytes + bytes} bytes (limit ${this.opts.maxHeldBytes})`;
      this.replyError(peer, frames, m.headerAt, m.version, m.service, 'overloaded', why);
      return this.maybeForget(svc);
    }
    const r = new Request(compacted(frames, bytes), m.headerAt, m.bodyAt, m.version, peer, svc, now + this.opts.requestTtl, now);
    r.bytes = bytes;
    this.heldBytes += bytes;
    peer.heldBytes = mine + bytes;
    if (mine + bytes >= this.opts.maxClientBytes >>> 1 && !peer.paused) {
      peer.paused = true;
      this.flow.push([peer, true]);
    }
    // Everything waits behind a request under validation, so no client's requests are reordered.
    if (!moved && (svc.needsCheck || this.awaitingVerdict > 0)) {
      // Requests awaiting a verdict count against their service's queue limit.
      const held = svc.queue.size + svc.awaitingVerdict;
      if (held >= this.opts.maxQueue) return this.failRequest(r, 'overloaded', `queue for ${name} holds ${held} requests`);
      this.awaitingVerdict++;
      svc.awaitingVerdict++;
      this.toValidate.push(r);
      return;
    }
    this.enqueue(r, now);
  }

  /** Verdicts for requests taken from toValidate, in the same order: null admits, a string rejects (the reason). */
  admit(batch: readonly Admission[], verdicts: readonly (string | null)[], now: number): void {
    for (let i = 0; i < batch.length; i++) {
      const r = batch[i] as Request;
      this.awaitingVerdict--;
      r.service.awaitingVerdict--;
      const verdict = verdicts[i];
      if (this.stopping) this.failRequest(r, 'shutdown', 'broker is shutting down');
      else if (verdict !== null) this.failRequest(r, 'rejected', verdict);
      else this.enqueue(r, now);
      this.maybeForget(r.service);
    }
  }

  private enqueue(r: Request, now: number): void {
    const svc = r.service;
    if (svc.queue.size >= this.opts.maxQueue) return this.failRequest(r, 'overloaded', `queue for ${svc.name} holds ${svc.queue.size} requests`);
    svc.queue.push(r);
    this.dispatch(svc, now);
  }

  private newService(name: string, frame: Buffer): Service {
    const svc = new Service(name, Buffer.from(frame), this.recorder.service(name), this.opts.validates?.(name) ?? false);
    svc.shared = this.opts.neighbours?.open(name) ?? null;
    this.services.set(name, svc);
    return svc;
  }

  /** A client's request goes to another thread's core, which answers it. */
  private moveTo(to: number, frames: Buffer[], client: Peer): void {
    this.stats.moved++;
    client.spread = true;
    (this.opts.neighbours as Neighbours).move(to, frames, client);
  }

  /** The service's counts, for the other threads (--shards). */
  private share(svc: Service): void {
    if (svc.shared !== null) (this.opts.neighbours as Neighbours).publish(svc.shared, svc.idle.size, svc.queue.size, svc.workers);
  }

  private onMmi(frames: Buffer[], peer: Peer, m: ClientRequest): void {
    this.stats.mmi++;
    // mmi.stats: the figures must include what happened up to this question.
    if (isMmiStats(m.service)) {
      this.statsReplies.fresh();
      // --shards: the figures come from every thread, a turn or more later; past MAX_STATS_HELD, the last report.
      if (this.statsReplies.deferred && this.statsHeld.length < MAX_STATS_HELD) {
        this.statsHeld.push({ frames, peer, m });
        return;
      }
    }
    this.reply(peer, frames, m.headerAt, m.version, C2.FINAL, m.service, mmiBody(m.service, frames[m.bodyAt], this), 0);
  }

  private dispatch(svc: Service, now: number): void {
    while (svc.idle.size > 0 && svc.queue.size > 0) {
      const r = svc.queue.shift() as Request;
      if (r.deadline <= now) {
        this.expire(r);
        continue;
      }
      if (r.client.gone) {
        this.stats.droppedClientGone++;
        this.release(r);
        continue;
      }
      const w = svc.idle.shift() as Worker;
      r.attempts++;
      r.dispatchedAt = now;
      r.progressAt = now;
      svc.stats.wait.recordValue(micros(r.enqueuedAt, now));
      const slot = w.held.add(r);
      // A credited worker with room left goes to the back: requests spread over the idle workers in turn, and those
      // dispatched in one turn to one worker leave in one write.
      if (!w.held.full) svc.idle.push(w);
      w.lastSent = now;
      const f = r.frames;
      const msg: Buffer[] = [w.id];
      if (w.delimited) msg.push(EMPTY);
      msg.push(w.version === 1 ? MDPW01 : MDPW02, cmd(W1.REQUEST), w.tagged ? taggedAddress(f[0], slot) : f[0], EMPTY);
      for (let i = r.bodyAt; i < f.length; i++) msg.push(f[i]);
      this.send(w.peer, msg);
    }
    if (svc.shared !== null) {
      this.share(svc);
      if (svc.idle.size > 0 && !this.stopping) (this.opts.neighbours as Neighbours).want(svc.shared, svc.idle.size, svc.workers);
    }
  }

  private expire(r: Request): void {
    this.failRequest(r, 'expired', `no worker for ${r.service.name} within ${this.opts.requestTtl} ms`);
  }

  /** The request has ended (answered, failed or dropped): its bytes leave the budgets. */
  private release(r: Request): void {
    const bytes = r.bytes;
    if (bytes === 0) return;
    r.bytes = 0;
    this.heldBytes -= bytes;
    const peer = r.client;
    const left = peer.heldBytes - bytes;
    peer.heldBytes = left;
    if (peer.paused && left < this.opts.maxClientBytes >>> 2) {
      peer.paused = false;
      if (!peer.gone) this.flow.push([peer, false]);
    }
  }

  private failRequest(r: Request, code: ErrorCode, why: string): void {
    this.release(r);
    r.service.stats.errors[code]++;
    if (r.client.gone) {
      this.stats.droppedClientGone++;
    } else this.replyError(r.client, r.frames, r.headerAt, r.version, r.service.frame, code, why);
    this.done.push(r.frames);
  }

  private replyError(to: Peer, frames: Buffer[], headerAt: number, version: Version, service: Buffer, code: ErrorCode, why: string): void {
    this.stats.errors[code]++;
    this.reply(to, frames, headerAt, version, C2.FINAL, service, errorBody(code, why), 0);
  }

  /** Sends [prefix of `client`] + client header + service + body[from..] to `to`, the peer that sent `client`. */
  private reply(to: Peer, client: Buffer[], headerAt: number, version: Version, v2cmd: number, service: Buffer, body: Buffer[], from: number): void {
    this.send(to, clientReply(client, headerAt, version, v2cmd, service, body, from));
  }

  private send(to: Peer, msg: Buffer[]): void {
    this.out.push(msg);
    this.to.push(to);
  }

  // ---- workers ----

  private onWorker(frames: Buffer[], peer: Peer, m: WorkerMessage, now: number): void {
    const w = peer.worker as Worker | null;
    if (w === null) return this.onUnknownWorker(frames[0], peer, m, now);
    if (m.version !== w.version || m.delimited !== w.delimited) {
      this.stats.malformed++;
      this.log('debug', 'worker changed protocol version mid-session; dropped', { service: w.service.name });
      return;
    }
    w.expiry = now + this.workerTtl;
    switch (m.command) {
      case WCmd.Heartbeat:
        return;
      case WCmd.Disconnect:
        this.stats.workersDisconnected++;
        this.log('debug', 'worker disconnected', { service: w.service.name });
        return this.deleteWorker(w, now);
      case WCmd.Ready:
        return this.rejectWorker(w, now, 'second READY');
      case WCmd.Partial:
      case WCmd.Final: {
        // A credited worker's address ends with the slot its request was held in; it must name a held request.
        const tagged = w.tagged;
        const tag = m.client.length - CREDIT_TAG_BYTES;
        const slot = tagged ? (tag >= 0 ? m.client.readUInt16BE(tag) : -1) : 0;
        const r = slot >= 0 ? w.held.at(slot) : null;
        if (r === null) return this.rejectWorker(w, now, 'reply while holding no request');
        if (!bytesEqual(tagged ? m.client.subarray(0, tag) : m.client, r.frames[0])) {
          this.stats.malformed++;
          this.log('debug', 'reply with wrong client address dropped', { service: w.service.name });
          return;
        }
        if (m.bodyAt < frames.length && isErrorMark(frames[m.bodyAt])) {
          // A worker must not be able to forge a broker error; the request ends as failed, the worker stays.
          this.stats.malformed++;
          this.failRequest(r, 'failed', 'worker reply began with the reserved error frame');
          return this.workerFreed(w, slot, now);
        }
        if (m.command === WCmd.Partial) {
          r.progressAt = now;
          if (r.version === 2) {
            this.stats.partials++;
            this.deliver(r, C2.PARTIAL, frames, m.bodyAt);
          }
          this.done.push(frames);
          return;
        }
        this.release(r);
        this.stats.replies++;
        r.service.stats.replies++;
        r.service.stats.service.recordValue(micros(r.dispatchedAt, now));
        this.deliver(r, C2.FINAL, frames, m.bodyAt);
        this.done.push(frames, r.frames);
        return this.workerFreed(w, slot, now);
      }
      default:
        return;
    }
  }

  private deliver(r: Request, v2cmd: number, frames: Buffer[], bodyAt: number): void {
    if (r.client.gone) {
      this.stats.droppedReplies++;
      return;
    }
    this.reply(r.client, r.frames, r.headerAt, r.version, v2cmd, r.service.frame, frames, bodyAt);
  }

  private onUnknownWorker(id: Buffer, peer: Peer, m: WorkerMessage, now: number): void {
    if (m.command === WCmd.Disconnect) return;
    if (m.command !== WCmd.Ready) {
      // A worker we told DISCONNECT (or that said it) hears nothing more from us.
      if (peer.disconnected) return;
      this.stats.unexpected++;
      this.log('info', 'command before READY; worker told DISCONNECT', { command: m.byte, version: m.version });
      return this.refuse(peer, id, m);
    }
    peer.disconnected = false;
    if (isMmi(m.service) || this.stopping) {
      this.stats.unexpected++;
      this.log('info', this.stopping ? 'READY during shutdown refused' : 'worker for reserved mmi.* service refused', {
        service: m.service.toString('latin1'),
      });
      return this.refuse(peer, id, m);
    }
    if (m.service.length > this.opts.limits.maxServiceName) {
      this.stats.malformed++;
      return this.refuse(peer, id, m);
    }
    const name = m.service.toString('latin1');
    if (this.opts.requireRights) {
      const rights = peer.rights;
      const why = rights === null ? NO_RIGHTS : rights.mayServe(name);
      if (why !== null) {
        this.stats.workersDenied++;
        this.log(this.warnable(peer, now) ? 'warn' : 'debug', 'READY refused; told DISCONNECT', { why, service: name, key: rights?.name ?? null });
        return this.refuse(peer, id, m);
      }
    }
    if (this.opts.mayRegister !== null && !this.opts.mayRegister(groupOf(id), name)) {
      this.stats.accessDenied++;
      const fields = { service: name, group: groupOf(id) };
      this.log(this.warnable(peer, now) ? 'warn' : 'debug', 'worker may not register this service through this endpoint; told DISCONNECT', fields);
      return this.refuse(peer, id, m);
    }
    let svc = this.services.get(name);
    if (svc === undefined) svc = this.newService(name, m.service);
    // The routing id frame may be a view into a larger received block; keep a copy of our own.
    const w = new Worker(Buffer.from(id), peer, m.version, m.delimited, svc, now + this.workerTtl, now, peer.credit);
    peer.worker = w;
    this.workers.add(w);
    svc.workers++;
    this.stats.workersRegistered++;
    this.log('debug', 'worker ready', { service: name, version: m.version });
    this.workerIdle(w, now);
  }

  /** DISCONNECT to a peer that is not (or no longer) a worker here; it hears nothing more until a fresh READY. */
  private refuse(peer: Peer, id: Buffer, m: WorkerMessage): void {
    peer.disconnected = true;
    this.sendDisconnect(peer, id, m.version, m.delimited);
  }

  /**
   * A held request ended: its slot is free, and a worker that was full can take work again. One still in the idle
   * list (a credited worker with room) stays there; at shutdown none is (beginShutdown took them all out).
   */
  private workerFreed(w: Worker, slot: number, now: number): void {
    w.held.remove(slot);
    if (w.idleIn === null) this.workerIdle(w, now);
  }

  private workerIdle(w: Worker, now: number): void {
    if (this.stopping) {
      if (w.held.size > 0) return;
      this.sendDisconnect(w.peer, w.id, w.version, w.delimited);
      return this.deleteWorker(w, now);
    }
    w.service.idle.push(w);
    this.dispatch(w.service, now);
  }

  /** A valid but unexpected command: DISCONNECT, forget the worker, and say nothing more to it. */
  private rejectWorker(w: Worker, now: number, why: string): void {
    this.stats.unexpected++;
    this.log('info', `unexpected command (${why}); worker told DISCONNECT`, { service: w.service.name });
    this.sendDisconnect(w.peer, w.id, w.version, w.delimited);
    this.deleteWorker(w, now);
  }

  private deleteWorker(w: Worker, now: number): void {
    const svc = w.service;
    const peer = w.peer;
    if (peer.worker === w) peer.worker = null;
    if (!this.workers.delete(w)) return;
    this.departed?.(peer);
    peer.disconnected = true;
    svc.idle.remove(w);
    svc.workers--;
    const held = w.held.drain();
    for (let i = held.length - 1; i >= 0; i--) {
      // From the last, each to the front: the worker's requests go back in slot order, ahead of the queue.
      const r = held[i];
      if (this.stopping) this.failRequest(r, 'shutdown', 'broker shut down before the worker replied');
      else if (r.attempts >= this.opts.maxAttempts) {
        this.failRequest(r, 'failed', `workers for ${svc.name} died holding this request ${r.attempts} times`);
      } else {
        this.stats.requeued++;
        svc.stats.requeued++;
        r.deadline = now + this.opts.requestTtl;
        r.enqueuedAt = now;
        svc.queue.unshift(r);
      }
    }
    this.dispatch(svc, now);
    this.maybeForget(svc);
  }

  private maybeForget(svc: Service): void {
    if (svc.workers === 0 && svc.queue.size === 0 && svc.awaitingVerdict === 0 && this.services.get(svc.name) === svc) {
      this.services.delete(svc.name);
      if (svc.shared !== null) (this.opts.neighbours as Neighbours).close(svc.shared);
      svc.shared = null;
    }
  }

  private sendDisconnect(to: Peer, id: Buffer, version: Version, delimited: boolean): void {
    if (!to.gone) this.send(to, toWorker(id, version, delimited, version === 1 ? W1.DISCONNECT : W2.DISCONNECT));
  }
}
