// Titanic (RFC 9) inside the broker (--titanic DIR): titanic.request, titanic.reply and titanic.close answered from
// the embedded store, and every stored request executed through the broker's own queues, as a client would send it.
//
// - titanic.request: the request is written durably (group commit, store.ts), then `200` + its UUID; past the
//   store's byte budget `500` at once, nothing stored.
// - Execution: each stored request goes into the core as an MDP/0.1 request from one internal client (a Peer no
//   connection has), at most `maxExecuting` at a time, oldest first; the same queues, retries and limits as any
//   request. Its reply is written durably before titanic.reply can return it. A broker error (no worker in time,
//   overloaded, workers died holding it) is not a reply: the request stays pending and runs again after a pause.
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
import { StoreError, TitanicStore, type Stored } from './store.js';
import { TITANIC_CLOSE, TITANIC_REPLY, answer, isTitanic, parseAsk, type TitanicService } from './tsp.js';

export interface TitanicOptions {
  dir: string;
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
  /** The internal client whose requests are the stored ones. */
  readonly peer = new Peer(-1);
  private readonly store: TitanicStore;
  private core: BrokerCore | null = null;
  private flush: () => void = () => undefined;
  private now: () => number = () => performance.now();
  /** Stored requests waiting to run (oldest first), and those in the core now. */
  private waiting: Stored[] = [];
  private readonly executing = new Set<string>();
  /** Requests that got a broker error, with when they may run again. */
  private retries: { at: number; s: Stored }[] = [];
  private readonly maxExecuting: number;
  private readonly retryMs: number;
  private stopping = false;
  private lastSweep = -Infinity;
  private readonly writes = new Set<Promise<unknown>>();
  private readonly counts = { stored: 0, answered: 0, expired: 0, refused: 0, retried: 0 };
  /** titanic.reply questions waiting for their reply, by UUID, each with when it gets its 300. */
  private readonly held = new Map<string, { a: Asked; until: number }[]>();
  private heldCount = 0;
  private holdTimer: NodeJS.Timeout | null = null;

  constructor(
    private readonly opts: TitanicOptions,
    private readonly log: LogFn,
  ) {
    this.store = TitanicStore.open(opts.dir, { maxBytes: opts.maxBytes });
    this.maxExecuting = opts.maxExecuting ?? 1024;
    this.retryMs = opts.retryMs ?? 1000;
  }

  /** The broker's frame stream, with what the core sends our internal client taken here. */
  wrap(io: FrameIO): FrameIO {
    return withStandIns(io, (peer) => peer === this.peer, (msg) => this.onReply(msg));
  }

  /** Starts serving: every stored request without a reply runs. */
  attach(core: BrokerCore, flush: () => void, now: () => number): void {
    this.core = core;
    this.flush = flush;
    this.now = now;
    this.waiting = this.store.pending();
    if (this.waiting.length > 0) this.log('info', 'titanic: running the stored requests that have no reply', { pending: this.waiting.length, dir: this.opts.dir });
    this.pump();
  }

  counters(): TitanicCounters {
    return {
      titanicStored: this.counts.stored, titanicAnswered: this.counts.answered, titanicExpired: this.counts.expired,
      titanicRefused: this.counts.refused, titanicRetried: this.counts.retried,
      titanicPending: this.waiting.length + this.retries.length + this.executing.size, titanicExecuting: this.executing.size,
      titanicBytes: this.store.bytes,
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

  private serve(a: Asked): void {
    const core = this.core as BrokerCore;
    const service = a.service.toString('latin1') as TitanicService;
    const ask = parseAsk(service, a.frames.slice(a.bodyAt), this.opts.maxServiceName);
    if (ask.kind === 'bad') return core.answerAsked(a, answer(400, [], ask.why));
    if (service === TITANIC_REPLY && ask.kind === 'reply') {
      const s = this.store.get(ask.uuid);
      if (s !== undefined && s.reply === null && this.hold(ask.uuid, a)) return;
      return core.answerAsked(a, replyFor(s));
    }
    if (service === TITANIC_CLOSE && ask.kind === 'close') {
      this.release(ask.uuid);
      return this.write(this.store.remove(ask.uuid), () => core.answerAsked(a, answer(200)), a);
    }
    if (ask.kind !== 'request') return;
    // A version 4 UUID as 32 hex digits (RFC 9's form). randomUUID() draws from a cached pool: randomBytes(16) per
    // request cost ~9 us of the broker's ~300 us per durable request (CPU profile, 4,000 requests).
    const uuid = randomUUID().replaceAll('-', '');
    // Copied: the frames are views of a read chunk, and the request outlives this turn.
    const stored: Stored = { uuid, storedAt: Date.now(), service: Buffer.from(ask.service), body: ask.body.map((f) => Buffer.from(f)), reply: null };
    // Past the byte budget the write rejects at once with a StoreError, nothing written: write() answers 500.
    this.write(this.store.store(uuid, stored.service, stored.body, stored.storedAt), () => {
      this.counts.stored++;
      core.answerAsked(a, answer(200, [Buffer.from(uuid, 'latin1')]));
      this.waiting.push(stored);
      this.pump();
    }, a);
  }

  /** Runs `then` once the write is durable; a failed write answers `500` (the client may retry), never `200`. */
  private write(p: Promise<unknown>, then: () => void, a: Asked): void {
    const core = this.core as BrokerCore;
    this.track(p.then(
      () => {
        then();
        this.flush();
      },
      (err: unknown) => {
        if (err instanceof StoreError) this.counts.refused++;
        else this.log('warn', 'titanic: store write failed', { err: String(err) });
        core.answerAsked(a, answer(500, [], err instanceof StoreError ? err.message : 'store write failed'));
        this.flush();
      },
    ));
  }

  /** A store write close() waits for. */
  private track(p: Promise<unknown>): void {
    this.writes.add(p);
    void p.finally(() => this.writes.delete(p));
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
    // Views of the worker's read chunk: store.answer() encodes (copies) them before it first waits.
    const body = msg.slice(4);
    if (body.length > 0 && isErrorMark(body[0])) {
      // A broker error: not the service's reply. It runs again after a pause (unless closed or expired meanwhile).
      const s = this.store.get(uuid);
      if (s !== undefined && s.reply === null) {
        this.counts.retried++;
        this.retries.push({ at: this.now() + this.retryMs, s });
      }
      return this.pump();
    }
    this.track(this.store.answer(uuid, body).then(
      (stored) => {
        if (stored) this.counts.answered++;
        this.release(uuid);
      },
      (err: unknown) => this.log('warn', 'titanic: storing a reply failed; the request will run again after a restart', { uuid, err: String(err) }),
    ));
    this.pump();
  }

  /** The broker's clock tick: retries whose pause is over, and (once a second at most) retention. */
  tick(now: number): void {
    if (this.retries.length > 0) {
      const due = this.retries.filter((r) => r.at <= now);
      if (due.length > 0) {
        this.retries = this.retries.filter((r) => r.at > now);
        for (const r of due) this.waiting.push(r.s);
        this.pump();
      }
    }
    if (now - this.lastSweep < 1000) return;
    this.lastSweep = now;
    for (const uuid of this.store.storedBefore(Date.now() - this.opts.retentionMs)) {
      this.counts.expired++;
      this.executing.delete(uuid);
      this.waiting = this.waiting.filter((s) => s.uuid !== uuid);
      this.retries = this.retries.filter((r) => r.s.uuid !== uuid);
      this.release(uuid);
      void this.store.remove(uuid);
    }
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
    // One timer while anything is held, at a tenth of the hold: a 300 comes within 10% of holdMs late at most.
    this.holdTimer ??= setInterval(() => this.expireHolds(), Math.max(5, Math.floor(ms / 10)));
    return true;
  }

  /** Answers every held question for this UUID from the store as it is now (200, or 400 once closed). */
  private release(uuid: string): void {
    const list = this.held.get(uuid);
    if (list === undefined) return;
    this.held.delete(uuid);
    this.heldCount -= list.length;
    const core = this.core as BrokerCore;
    const body = replyFor(this.store.get(uuid));
    for (const { a } of list) core.answerAsked(a, body);
    this.flush();
    this.stopHoldTimer();
  }

  private expireHolds(): void {
    const now = performance.now();
    const core = this.core as BrokerCore;
    let any = false;
    for (const [uuid, list] of this.held) {
      const left = list.filter((h) => {
        if (h.until > now && !this.stopping) return true;
        core.answerAsked(h.a, answer(300));
        any = true;
        return false;
      });
      this.heldCount -= list.length - left.length;
      if (left.length === 0) this.held.delete(uuid);
      else if (left.length < list.length) this.held.set(uuid, left);
    }
    if (any) this.flush();
    this.stopHoldTimer();
  }

  private stopHoldTimer(): void {
    if (this.heldCount === 0 && this.holdTimer !== null) {
      clearInterval(this.holdTimer);
      this.holdTimer = null;
    }
  }

  /** Stops running requests, waits for the writes in progress, closes the store. */
  async close(): Promise<void> {
    this.stopping = true;
    this.expireHolds();
    await Promise.allSettled([...this.writes]);
    await this.store.close();
  }
}
