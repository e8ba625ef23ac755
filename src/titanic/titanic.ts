// Titanic (RFC 9) inside the broker (--titanic DIR or URL): titanic.request, titanic.reply and titanic.close
// answered from a durable store (durable-store.ts: LMDB in a directory, or PostgreSQL shared by several brokers), and
// every stored request this broker claims executed through its own queues, as a client would send it.
//
// - titanic.request: the request is written durably (group commit), then `200` + its UUID; past the store's byte
//   budget `500` at once, nothing stored.
// - Execution: each stored request goes into the core as an MDP/0.1 request from one internal client (a Peer no
//   connection has), at most `maxExecuting` at a time, oldest first; the same queues, retries and limits as any
//   request. Its reply is written durably before titanic.reply can return it. A broker error (no worker in time,
//   overloaded, workers died holding it) is not a reply: the request is given back and runs again after a pause.
//   After a restart on the same store every request without a reply runs again: a request runs at least once.
// - titanic.reply: `200` + the reply, `300` while pending, `400` for a UUID the store does not hold.
// - titanic.close: deletes request and reply, `200` whether or not it was there.
// - Retention: requests (answered or not) older than `retentionMs` are deleted on the tick.

import { randomUUID } from 'node:crypto';
import type { Asked, BrokerCore, LogFn } from '../core/broker-core.js';
import { Peer } from '../core/peer.js';
import { EMPTY, MDPC01 } from '../protocol/codec.js';
import { isErrorMark } from '../protocol/errors.js';
import { withStandIns, type FrameIO } from '../broker/frame-io.js';
import { StoreError, storeWarnings, type DurableStore, type Stored } from './durable-store.js';
import { TITANIC_CLOSE, TITANIC_REPLY, answer, isTitanic, parseAsk, type TitanicService } from './tsp.js';

export interface TitanicOptions {
  /** A directory (the embedded store) or a postgres:// URL (a store several brokers share). */
  store: string;
  /** Bytes the store may hold (requests and replies). */
  maxBytes: number;
  /** Requests and replies older than this are deleted (ms). */
  retentionMs: number;
  /** Longest service name (the broker's limit). */
  maxServiceName: number;
  /** Stored requests in the core at once. */
  maxExecuting?: number;
  /** Pause before a request that got a broker error runs again (ms). */
  retryMs?: number;
  /** titanic.reply for a pending request waits up to this long for the reply before answering 300 (ms; 0: at once). */
  holdMs?: number;
}

/** titanic.reply questions held at once for replies still pending; past this, 300 at once. */
const MAX_HELD = 10000;

/** Counters for mmi.stats and /metrics. */
export interface TitanicCounters {
  titanicStored: number;
  titanicAnswered: number;
  titanicExpired: number;
  titanicRefused: number;
  titanicRetried: number;
  /** Replies that could not be stored (the request runs again). */
  titanicFailed: number;
  titanicPending: number;
  titanicExecuting: number;
  titanicBytes: number;
}

const TITANIC_PREFIX = Buffer.from('titanic.');

/** Whether a service name frame is one of RFC 9's three (the core hands these to Titanic). */
export function isTitanicFrame(service: Buffer): boolean {
  return service.length > TITANIC_PREFIX.length && service.subarray(0, TITANIC_PREFIX.length).equals(TITANIC_PREFIX) && isTitanic(service.toString('latin1'));
}

/** titanic.reply's answer for a request as the store holds it now: 200 and the reply, 300 pending, 400 unknown. */
function replyFor(s: Stored | undefined): Buffer[] {
  return s === undefined ? answer(400, [], 'unknown UUID') : s.reply === null ? answer(300) : answer(200, s.reply);
}

export class Titanic {
  /**
   * The internal client whose requests are the stored ones. Where CURVE rights are in force it may request any
   * service: the client that stored a request was checked for that service when it asked titanic.request.
   */
  readonly peer = new Peer(-1, { name: 'titanic', mayRequest: () => null, mayServe: () => 'titanic is not a worker' });
  private store: DurableStore | null = null;
  private core: BrokerCore | null = null;
  private flush: () => void = () => undefined;
  private now: () => number = () => performance.now();
  /** Requests this broker claimed, waiting to run (oldest first), and those in the core now. */
  private waiting: Stored[] = [];
  private readonly executing = new Set<string>();
  private claiming = false;
  /** The last claim was full: more may be waiting, so room freed by a reply is filled at once, not on the tick. */
  private more = false;
  private readonly maxExecuting: number;
  private readonly retryMs: number;
  private stopping = false;
  private lastSweep = -Infinity;
  private sweeping = false;
  private readonly writes = new Set<Promise<unknown>>();
  private readonly counts = { stored: 0, answered: 0, expired: 0, refused: 0, retried: 0, failed: 0 };
  /** titanic.reply questions waiting for their reply, by UUID, each with when it gets its 300. */
  private readonly held = new Map<string, { a: Asked; until: number }[]>();
  private heldCount = 0;
  private holdTimer: NodeJS.Timeout | null = null;
  /** A warning at most every 10 s (a store that is down fails every request). */
  private readonly warn: (msg: string, err: unknown) => void;

  constructor(
    private readonly opts: TitanicOptions,
    private readonly log: LogFn,
  ) {
    this.maxExecuting = opts.maxExecuting ?? 1024;
    this.retryMs = opts.retryMs ?? 1000;
    this.warn = storeWarnings(log, () => this.store?.where);
  }

  /** Opens the store: the embedded one in a directory, or PostgreSQL for a postgres:// URL. Throws a StoreError that says why it cannot. */
  async open(): Promise<void> {
    const where = this.opts.store;
    // Loaded here, not at the top: a broker without --titanic loads neither store's package (lmdb has a native part).
    if (/^postgres(ql)?:\/\//.test(where)) {
      const { PgStore } = await import('./pg-store.js');
      this.store = await PgStore.open(where, { maxBytes: this.opts.maxBytes, log: this.log });
    } else {
      const { LmdbStore } = await import('./lmdb-store.js');
      this.store = LmdbStore.open(where, { maxBytes: this.opts.maxBytes });
    }
  }

  /** The broker's frame stream, with what the core sends our internal client taken here. */
  wrap(io: FrameIO): FrameIO {
    return withStandIns(io, (peer) => peer === this.peer, (msg) => this.onReply(msg));
  }

  /** Starts serving: every stored request without a reply (and, on a shared store, unclaimed) runs. */
  attach(core: BrokerCore, flush: () => void, now: () => number): void {
    this.core = core;
    this.flush = flush;
    this.now = now;
    const pending = this.opened().counts().pending;
    if (pending > 0) this.log('info', 'titanic: stored requests without a reply run as workers come', { pending, store: this.opened().where });
    this.fill();
  }

  counters(): TitanicCounters {
    const c = this.store?.counts() ?? { bytes: 0, records: 0, pending: 0 };
    return {
      titanicStored: this.counts.stored, titanicAnswered: this.counts.answered, titanicExpired: this.counts.expired,
      titanicRefused: this.counts.refused, titanicRetried: this.counts.retried, titanicFailed: this.counts.failed,
      titanicPending: c.pending, titanicExecuting: this.executing.size, titanicBytes: c.bytes,
    };
  }

  /** Takes the titanic.* requests the core set aside (call after the core handled messages). */
  take(): void {
    const core = this.core;
    if (core === null || core.asked.length === 0) return;
    const asked = core.asked.splice(0);
    for (const a of asked) this.serve(a);
    this.flush();
  }

  private opened(): DurableStore {
    if (this.store === null) throw new Error('titanic: the store is not open');
    return this.store;
  }

  private serve(a: Asked): void {
    const core = this.core as BrokerCore;
    const store = this.opened();
    const service = a.service.toString('latin1') as TitanicService;
    const ask = parseAsk(service, a.frames.slice(a.bodyAt), this.opts.maxServiceName);
    if (ask.kind === 'bad') return core.answerAsked(a, answer(400, [], ask.why));
    if (service === TITANIC_REPLY && ask.kind === 'reply') {
      return this.read(store.lookup(ask.uuid), (s) => {
        if (s === undefined || s.reply !== null || !this.hold(ask.uuid, a)) core.answerAsked(a, replyFor(s));
      }, a);
    }
    if (service === TITANIC_CLOSE && ask.kind === 'close') {
      this.release(ask.uuid);
      return this.write(store.remove(ask.uuid), () => core.answerAsked(a, answer(200)), a);
    }
    if (ask.kind !== 'request') return;
    // The stored request runs with the broker's own rights later (and maybe on another broker): the asking key's
    // rights for the service inside are checked now.
    const why = a.peer.rights?.mayRequest(ask.service) ?? null;
    if (why !== null) return core.answerAsked(a, answer(400, [], why));
    // A version 4 UUID as 32 hex digits (RFC 9's form). randomUUID() draws from a cached pool: randomBytes(16) per
    // request cost ~9 us of the broker's ~300 us per durable request (CPU profile, 4,000 requests).
    const uuid = randomUUID().replaceAll('-', '');
    // Copied: the frames are views of a read chunk, and the request outlives this turn.
    const stored: Stored = { uuid, storedAt: Date.now(), service: Buffer.from(ask.service), body: ask.body.map((f) => Buffer.from(f)), reply: null };
    // Run here what a worker here can run; on a shared store, anything else waits for a broker that has one.
    const claim = !store.shared || core.hasWorkers(stored.service.toString('latin1'));
    // Past the byte budget the write rejects at once with a StoreError, nothing written: write() answers 500.
    this.write(store.store(stored, claim), (claimed) => {
      this.counts.stored++;
      core.answerAsked(a, answer(200, [Buffer.from(uuid, 'latin1')]));
      if (claimed) {
        this.waiting.push(stored);
        this.pump();
      }
    }, a);
  }

  /** Runs `then` once the write is durable; a failed write answers `500` (the client may retry), never `200`. */
  private write<T>(p: Promise<T>, then: (v: T) => void, a: Asked): void {
    const core = this.core as BrokerCore;
    this.track(p.then(
      (v) => {
        then(v);
        this.flush();
      },
      (err: unknown) => {
        if (err instanceof StoreError) this.counts.refused++;
        else this.warn('titanic: a store write failed; answered 500', err);
        core.answerAsked(a, answer(500, [], err instanceof StoreError ? err.message : 'store write failed'));
        this.flush();
      },
    ));
  }

  /** Runs `then` with what the store read; a failed read answers `500`. */
  private read<T>(p: Promise<T>, then: (v: T) => void, a: Asked): void {
    p.then(
      (v) => {
        then(v);
        this.flush();
      },
      (err: unknown) => {
        this.warn('titanic: a store read failed; answered 500', err);
        (this.core as BrokerCore).answerAsked(a, answer(500, [], 'store read failed'));
        this.flush();
      },
    );
  }

  /** A store write close() waits for. */
  private track(p: Promise<unknown>): void {
    this.writes.add(p);
    void p.finally(() => this.writes.delete(p));
  }

  /** Claims more requests while there is room (the embedded store: those found at open, and those given back). */
  private fill(): void {
    const core = this.core;
    const room = this.maxExecuting - this.executing.size - this.waiting.length;
    if (core === null || this.stopping || this.claiming || room <= 0) return;
    const store = this.opened();
    this.claiming = true;
    const p = store.claim(room, Date.now(), store.shared ? core.servicesWithWorkers() : null).then(
      (list) => {
        this.claiming = false;
        this.more = list.length === room;
        if (list.length === 0) return;
        for (const s of list) this.waiting.push(s);
        this.pump();
      },
      (err: unknown) => {
        this.claiming = false;
        this.warn('titanic: claiming stored requests failed; trying again on the next tick', err);
      },
    );
    this.track(p);
  }

  /** Puts waiting requests into the core, up to maxExecuting at once. */
  private pump(): void {
    const core = this.core;
    if (core === null || this.stopping) return;
    let sent = false;
    while (this.executing.size < this.maxExecuting && this.waiting.length > 0) {
      const s = this.waiting.shift() as Stored;
      if (this.executing.has(s.uuid)) continue;
      this.executing.add(s.uuid);
      core.handle([Buffer.from(s.uuid, 'latin1'), EMPTY, MDPC01, s.service, ...s.body], this.now(), this.peer);
      sent = true;
    }
    if (sent) this.flush();
  }

  /** What the core sent our internal client: [uuid, "", MDPC01, service, ...body]. */
  private onReply(msg: Buffer[]): void {
    const uuid = msg[0].toString('latin1');
    if (!this.executing.delete(uuid)) return;
    const store = this.opened();
    // Views of the worker's read chunk: the stores encode (copy) them before they first wait.
    const body = msg.slice(4);
    if (body.length > 0 && isErrorMark(body[0])) {
      // A broker error (no worker in time, overloaded, workers died holding it): not the service's reply. The
      // request is given back to run again after a pause (here, or on a shared store on any broker).
      this.counts.retried++;
      this.track(store.unclaim(uuid, Date.now() + this.retryMs).catch((err: unknown) => this.warn('titanic: giving a request back failed; it runs again when this broker\'s claims are freed', err)));
      return this.pump();
    }
    // Questions held for this reply get it without reading it back; copied, as the views do not outlive this turn.
    const copy = this.held.has(uuid) ? body.map((f) => Buffer.from(f)) : null;
    this.track(store.answer(uuid, body).then(
      (stored) => {
        if (stored) this.counts.answered++;
        this.release(uuid, stored ? copy : null);
      },
      (err: unknown) => {
        this.counts.failed++;
        this.warn('titanic: storing a reply failed; the request runs again', err);
        return store.unclaim(uuid, Date.now() + this.retryMs).catch(() => undefined);
      },
    ));
    this.pump();
    // A backlog (a restart with many stored) runs at the workers' pace, not a claim's worth per tick; claimed in
    // batches of at least half of maxExecuting.
    if (this.more && this.executing.size + this.waiting.length <= this.maxExecuting / 2) this.fill();
  }

  /** The broker's clock tick: more requests claimed, the store's own upkeep, and (once a second at most) retention. */
  tick(now: number): void {
    const store = this.store;
    if (store === null || this.core === null || this.stopping) return;
    store.tick(Date.now());
    this.fill();
    if (now - this.lastSweep < 1000 || this.sweeping) return;
    this.lastSweep = now;
    this.sweeping = true;
    this.track(store.expire(Date.now() - this.opts.retentionMs).then(
      (gone) => {
        this.sweeping = false;
        if (gone.length === 0) return;
        this.counts.expired += gone.length;
        const set = new Set(gone);
        this.waiting = this.waiting.filter((s) => !set.has(s.uuid));
        for (const uuid of gone) {
          this.executing.delete(uuid);
          this.release(uuid);
        }
      },
      (err: unknown) => {
        this.sweeping = false;
        this.warn('titanic: deleting expired requests failed; trying again in a second', err);
      },
    ));
  }

  /** Holds a titanic.reply for a pending request until its reply is stored or holdMs pass; false: answer now. */
  private hold(uuid: string, a: Asked): boolean {
    const ms = this.opts.holdMs ?? 0;
    if (ms <= 0 || this.stopping || this.heldCount >= MAX_HELD) return false;
    const list = this.held.get(uuid);
    const entry = { a, until: performance.now() + ms };
    if (list === undefined) this.held.set(uuid, [entry]);
    else list.push(entry);
    this.heldCount++;
    // One timer while anything is held, at a tenth of the hold: an answer comes within 10% of holdMs late at most.
    this.holdTimer ??= setInterval(() => this.expireHolds(), Math.max(5, Math.floor(ms / 10)));
    return true;
  }

  /**
   * Answers every held question for this UUID: with `reply` when it is the one just stored, else from the store
   * (it was closed or expired, or another reply was stored first).
   */
  private release(uuid: string, reply: Buffer[] | null = null): void {
    const list = this.held.get(uuid);
    if (list === undefined) return;
    this.held.delete(uuid);
    this.heldCount -= list.length;
    this.stopHoldTimer();
    if (reply === null) return this.answerFromStore(uuid, list.map((h) => h.a));
    const core = this.core as BrokerCore;
    const body = answer(200, reply);
    for (const h of list) core.answerAsked(h.a, body);
    this.flush();
  }

  /** Held questions whose time is up are answered from the store as it is now (another broker may have answered). */
  private expireHolds(): void {
    const now = performance.now();
    for (const [uuid, list] of this.held) {
      const due = this.stopping ? list : list.filter((h) => h.until <= now);
      if (due.length === 0) continue;
      const left = due === list ? [] : list.filter((h) => h.until > now);
      if (left.length === 0) this.held.delete(uuid);
      else this.held.set(uuid, left);
      this.heldCount -= due.length;
      this.answerFromStore(uuid, due.map((h) => h.a));
    }
    this.stopHoldTimer();
  }

  /** titanic.reply's answer from the store as it is now: 200 and the reply, 300, 400; 500 when it cannot be read. */
  private answerFromStore(uuid: string, asked: Asked[]): void {
    const core = this.core as BrokerCore;
    const send = (body: Buffer[]) => {
      for (const a of asked) core.answerAsked(a, body);
      this.flush();
    };
    this.opened().lookup(uuid).then((s) => send(replyFor(s)), () => send(answer(500, [], 'store read failed')));
  }

  private stopHoldTimer(): void {
    if (this.heldCount === 0 && this.holdTimer !== null) {
      clearInterval(this.holdTimer);
      this.holdTimer = null;
    }
  }

  /** Stops running requests, answers what is held, waits for the writes in progress, closes the store. */
  async close(): Promise<void> {
    this.stopping = true;
    this.expireHolds();
    // Claims may start writes of their own: wait until none is left.
    while (this.writes.size > 0) await Promise.allSettled([...this.writes]);
    await this.store?.close();
  }
}
