// MDP worker: READY, then serve requests, heartbeating all the while (also while handlers run). When the broker goes
// silent or says DISCONNECT, the session opens a new connection and sends READY again, with exponential back-off.
//
// `concurrency: n` runs up to n handlers at once per broker. MDP gives a worker one request at a time, so that takes
// n sessions, each its own MDP worker on its own connection, and a read and a write system call per request each.
// On the zmtp transport the first session offers the broker worker credit (protocol/extensions.ts): a broker that
// grants it sends that one session up to n requests at once, and those that arrive together are answered in one
// write. Sessions are added (or drained) on each handshake so that credit and sessions add up to n: a broker that
// grants none (the Guide's, libzmq ones) gets n sessions of one request each, as before.
//
// With several brokers (`endpoints`), each broker gets its own sessions: a worker registered with every broker keeps
// serving while any one of them is up, and a reply goes back on the connection the request came in on, so to the
// broker that sent it. Up to concurrency x brokers handlers can then run at once.

import { EventEmitter } from 'node:events';
import { EMPTY, W1, W2, type Version } from '../protocol/codec.js';
import { parseWorkerInbound, workerCommand } from '../protocol/peer-codec.js';
import { EndpointError, MdpError, RefusedError, TimeoutError, UnreachableError } from './errors.js';
import { endpointProblem } from '../sockets/endpoint.js';
import type { Logger } from './logger.js';
import { toFrames, type Frame } from './sender.js';
import type { CurveClientKeys, DealerOptions } from '../sockets/dealer.js';
import { zmtpHeartbeat } from '../sockets/zeromq.js';
import { openLink, transportFor, type BrokerLink, type Transport } from './broker-link.js';

export interface RequestContext {
  /** The client address frame the broker sent (opaque). */
  client: Buffer;
  /** The endpoint of the broker that sent the request (the reply goes back to it). */
  broker: string;
  /** MDP/0.2 workers only: send a PARTIAL reply before the final one. */
  partial(body: Frame | readonly Frame[]): void;
}

export type Handler = (body: Buffer[], ctx: RequestContext) => Promise<Frame | readonly Frame[]> | Frame | readonly Frame[];

export interface WorkerOptions {
  /** The broker to register with; or give `endpoints`. */
  endpoint?: string;
  /** Several brokers: `concurrency` sessions registered with each. */
  endpoints?: string[];
  service: string;
  handler: Handler;
  version?: Version;
  /** Milliseconds between heartbeats (default 2500); must match the broker's. */
  heartbeatInterval?: number;
  /** Broker presumed dead after this many silent intervals (default 3). */
  heartbeatLiveness?: number;
  /** Reconnect back-off bounds in ms (default 100 .. 5000). */
  reconnectMin?: number;
  reconnectMax?: number;
  /** Handlers run at once per broker (default 1): one connection with worker credit where the broker grants it, else this many sessions. */
  concurrency?: number;
  /** Called when a handler throws; the session then disconnects so the broker retries the request elsewhere. */
  onError?: (err: unknown) => void;
  /** CURVE: the broker's public key and this worker's key pair. */
  curve?: CurveClientKeys;
  /** `zmtp` (the default for tcp:// and ipc://, no native addon) or `libzmq` (other schemes: the zeromq binding). */
  transport?: Transport;
  /** transport 'libzmq' only: other ZeroMQ socket options. */
  socketOptions?: DealerOptions;
  /** Where connection changes, reconnects and discarded replies are logged (pino and console fit). */
  logger?: Logger;
}

/** Events a Worker emits, each with the endpoint concerned. */
export interface WorkerEvents {
  /** A session's connection completed its handshake (READY is on its way). */
  connected: [endpoint: string];
  /** A session's connection dropped. */
  disconnected: [endpoint: string];
  /** A session starts over with a new socket and READY (broker silence while idle, DISCONNECT, a failed handler). */
  reconnecting: [endpoint: string, reason: string];
  /** The broker refused our CURVE key, or one side speaks CURVE and the other not. */
  refused: [endpoint: string, reason: string];
}

/** Sessions in a row turned away (DISCONNECT right after READY) before the Worker says `refused`. */
const TURNED_AWAY = 3;

/** How long close() waits for the DISCONNECT to be written. */
const CLOSE_WAIT_MS = 1000;

export class Worker extends EventEmitter<WorkerEvents> {
  /** Every session made, retired ones too (their counts stay in `served` and `discarded`). */
  private readonly sessions: Session[] = [];
  /** Per endpoint on the zmtp transport: the sessions that make up for credit the broker did not grant. */
  private readonly extras = new Map<string, Session[]>();
  private readonly concurrency: number;
  private closing = false;
  /**
   * On transport 'libzmq', sessions watch their sockets (a libzmq monitor each) only once someone listens or a logger
   * is given: a monitor is one more libzmq socket, and a context holds 1023, so 600 silent workers would not fit.
   * The zmtp transport reports connection events at no cost, always.
   */
  watching: boolean;

  constructor(private readonly opts: WorkerOptions) {
    super();
    if (opts.service.startsWith('mmi.')) throw new MdpError('mmi.* services are reserved for the broker');
    const endpoints = [...new Set([...(opts.endpoints ?? []), ...(opts.endpoint !== undefined ? [opts.endpoint] : [])])];
    if (endpoints.length === 0) throw new EndpointError('', 'Worker needs an endpoint (or endpoints)');
    for (const ep of endpoints) {
      const problem = endpointProblem(ep);
      if (problem !== null) throw new EndpointError(ep, `bad endpoint "${ep}": ${problem}`);
    }
    this.watching = opts.logger !== undefined;
    const n = Math.max(1, opts.concurrency ?? 1);
    this.concurrency = n;
    for (const ep of endpoints) {
      if (n > 1 && transportFor(ep, opts.transport) === 'zmtp') {
        // One session offering credit n; more follow its handshake if the broker grants less (credited()).
        this.sessions.push(new Session(opts, ep, this, n));
        this.extras.set(ep, []);
      } else {
        for (let i = 0; i < n; i++) this.sessions.push(new Session(opts, ep, this, 1));
      }
    }
    // 'newListener' is EventEmitter's own event, outside the typed map of ours.
    (this as unknown as EventEmitter).on('newListener', () => {
      if (this.watching) return;
      this.watching = true;
      for (const s of this.sessions) s.watch();
    });
  }

  private readonly waiters = new Set<() => void>();

  /**
   * Resolves once every session's connection has completed its handshake (READY is on its way). Rejects at once
   * with RefusedError when a broker refuses us (our CURVE key, or READY turned away 3 times in a row), with
   * UnreachableError when no session could connect (nothing listening, a wrong port), and with TimeoutError after
   * `timeout` ms (default 5000). Sessions keep trying meanwhile: this only says how things stand.
   */
  ready(opts: { timeout?: number } = {}): Promise<void> {
    if (!this.watching) {
      this.watching = true;
      for (const s of this.sessions) s.watch();
    }
    return new Promise((resolve, reject) => {
      const ms = opts.timeout ?? 5000;
      const finish = (err: Error | null) => {
        clearTimeout(timer);
        this.waiters.delete(check);
        if (err === null) resolve();
        else reject(err);
      };
      const check = () => {
        const live = this.sessions.filter((s) => !s.retired);
        const refused = live.find((s) => s.refusedReason !== null);
        if (refused !== undefined) return finish(new RefusedError(refused.endpoint, refused.refusedReason as string));
        if (live.every((s) => s.up)) return finish(null);
        if (live.every((s) => s.unreachable)) {
          const eps = [...new Set(live.map((s) => s.endpoint))];
          finish(new UnreachableError(eps, `no broker reachable at ${eps.join(', ')} (nothing listening, or the host refuses)`));
        }
      };
      const timer = setTimeout(() => finish(new TimeoutError(`worker sessions not connected within ${ms} ms`)), ms);
      this.waiters.add(check);
      check();
    });
  }

  /**
   * A session that offered credit completed a handshake with `credit` granted: the endpoint's extra sessions are
   * made, or drained, so that the handlers it may run add up to `concurrency`.
   */
  credited(endpoint: string, credit: number): void {
    const extras = this.extras.get(endpoint);
    if (extras === undefined || this.closing) return;
    const want = Math.max(0, this.concurrency - credit);
    while (extras.length < want) {
      const s = new Session(this.opts, endpoint, this, 1);
      if (this.watching) s.watch();
      extras.push(s);
      this.sessions.push(s);
    }
    while (extras.length > want) void (extras.pop() as Session).retire();
  }

  /** A session's connection state changed (see ready()). */
  sessionChanged(): void {
    for (const w of [...this.waiters]) w();
  }

  /**
   * Connections (MDP worker sessions) held now, over all brokers: 1 per broker that grants worker credit, else
   * `concurrency` per broker (known once each broker's first handshake is done).
   */
  get connections(): number {
    return this.sessions.reduce((a, s) => a + (s.retired ? 0 : 1), 0);
  }

  /** Replies handed to the socket so far, over all sessions. */
  get served(): number {
    return this.sessions.reduce((a, s) => a + s.served, 0);
  }

  /** Replies produced for a session the broker had already ended (it retried the request elsewhere). */
  get discarded(): number {
    return this.sessions.reduce((a, s) => a + s.discarded, 0);
  }

  /** Takes no new requests, finishes those in hand (their replies go out), then says DISCONNECT and closes. */
  async drain(): Promise<void> {
    this.closing = true;
    await Promise.all(this.sessions.map((s) => s.close(true)));
  }

  /**
   * Says DISCONNECT at once and closes: the broker gives any request in hand to another worker, and a handler still
   * running has its reply discarded (counted in `discarded`).
   */
  async close(): Promise<void> {
    this.closing = true;
    await Promise.all(this.sessions.map((s) => s.close(false)));
  }
}

class Session {
  served = 0;
  discarded = 0;
  private link!: BrokerLink;
  private readonly version: Version;
  private readonly interval: number;
  private readonly liveness: number;
  private lastHeard = 0;
  private backoff: number;
  private timer: NodeJS.Timeout | null = null;
  /** Handlers running (a handler that answered at once is never counted). */
  private inHand = 0;
  /** close(true) waits here for the handlers running to settle. */
  private whenIdle: (() => void) | null = null;
  /** close()'s Promise, once called. */
  private closed: Promise<void> | null = null;
  private closing = false;
  /** close() without finishing: DISCONNECT is (being) sent, so a reply produced now is not ours to send. */
  private abandoning = false;
  private reconnecting = false;
  /** This session has heard a HEARTBEAT or a REQUEST since its READY: the broker took it. */
  private accepted = false;
  /** Sessions in a row the broker turned away (DISCONNECT before anything else). */
  private turnedAway = 0;
  /** For Worker.ready(): the connection completed its handshake; a connect attempt failed before any did; refused. */
  up = false;
  unreachable = false;
  refusedReason: string | null = null;
  /** Drained because the broker granted credit in its place (Worker.credited); not waited for by ready(). */
  retired = false;

  constructor(
    private readonly opts: WorkerOptions,
    readonly endpoint: string,
    private readonly events: Worker,
    /** Requests this session offers to hold at once (worker credit); 1 offers none. */
    private readonly offer: number,
  ) {
    this.version = opts.version ?? 1;
    this.interval = opts.heartbeatInterval ?? 2500;
    this.liveness = opts.heartbeatLiveness ?? 3;
    this.backoff = opts.reconnectMin ?? 100;
    this.connect();
    this.timer = setInterval(() => this.onTimer(), this.interval);
  }

  private frames(command: number, ...rest: Buffer[]): Buffer[] {
    return workerCommand(this.version, command, rest);
  }

  private connect(): void {
    // ZMTP heartbeats: a dead connection is dropped and re-dialled even while a job is in hand and the broker is
    // silent at the MDP level; every broker answers PING at the transport level.
    const { heartbeatInterval, heartbeatTimeout } = zmtpHeartbeat(this.interval, this.liveness);
    const endpoint = this.endpoint;
    const log = this.opts.logger;
    let link: BrokerLink | null = null;
    // Events from a link we replaced belong to a session the broker has given up on.
    const current = () => link === this.link;
    link = openLink(endpoint, {
      transport: this.opts.transport, curve: this.opts.curve, role: 'worker', socketOptions: this.opts.socketOptions, credit: this.offer,
      heartbeatInterval, heartbeatTimeout, watch: this.events.watching,
      reconnectMin: this.opts.reconnectMin, reconnectMax: this.opts.reconnectMax,
    }, {
      message: (frames) => {
        if (current()) this.onMessage(link as BrokerLink, frames);
      },
      connected: (credit) => {
        if (!current()) return;
        log?.info?.({ endpoint, service: this.opts.service, credit }, 'mdp worker: connected');
        this.up = true;
        this.unreachable = false;
        if (this.offer > 1) this.events.credited(endpoint, credit);
        this.events.emit('connected', endpoint);
        this.events.sessionChanged();
      },
      disconnected: () => {
        if (!current()) return;
        log?.warn?.({ endpoint, service: this.opts.service }, 'mdp worker: disconnected');
        this.up = false;
        this.events.emit('disconnected', endpoint);
        // The broker forgot this session with its connection: start a new one (READY again) after the back-off.
        void this.reconnect('connection lost');
      },
      retrying: () => {
        if (!current() || this.up) return;
        this.unreachable = true;
        this.events.sessionChanged();
      },
      refused: (reason) => {
        if (!current()) return;
        log?.warn?.({ endpoint, service: this.opts.service, reason }, 'mdp worker: connection refused');
        this.refusedReason = reason;
        this.events.emit('refused', endpoint, reason);
        this.events.sessionChanged();
      },
    });
    this.link = link;
    this.lastHeard = Date.now();
    this.accepted = false;
    link.send(this.frames(W1.READY, Buffer.from(this.opts.service)));
  }

  /** Reports the current link's connection changes to the Worker's listeners and logger (libzmq: from now on). */
  watch(): void {
    this.link.watch?.();
  }

  /** A new session after the back-off; `lingerMs`: what is queued on the old link is written first. */
  private async reconnect(reason: string, lingerMs = 0): Promise<void> {
    if (this.reconnecting || this.closing) return;
    this.opts.logger?.info?.({ endpoint: this.endpoint, service: this.opts.service, reason }, 'mdp worker: new session');
    this.events.emit('reconnecting', this.endpoint, reason);
    this.reconnecting = true;
    void this.link.close(lingerMs);
    // Jitter: workers that lost the same broker do not all come back in the same millisecond.
    await new Promise((r) => setTimeout(r, this.backoff * (0.5 + Math.random() / 2)));
    this.backoff = Math.min(this.backoff * 2, this.opts.reconnectMax ?? 5000);
    this.reconnecting = false;
    if (!this.closing) this.connect();
  }

  private onTimer(): void {
    // Heartbeats go on while close() waits for the handler, so the broker does not expire us mid-request.
    if (this.reconnecting) return;
    // Broker silence ends an idle session only. With a job in hand it is no sign of death: the Guide's brokers
    // heartbeat idle workers only. A dead connection is found by ZMTP heartbeats (socket options in connect()).
    if (this.inHand === 0 && Date.now() - this.lastHeard > this.interval * this.liveness) {
      if (!this.closing) void this.reconnect('broker silent');
      return;
    }
    // Not while no connection is up: they would pile up behind READY. Before the broker is heard they can wait (it
    // heartbeats an idle worker each interval and expires one only after `liveness` of them).
    if (!this.up && !this.accepted) return;
    this.link.send(this.frames(this.version === 1 ? W1.HEARTBEAT : W2.HEARTBEAT));
  }

  private onMessage(link: BrokerLink, frames: Buffer[]): void {
    const m = parseWorkerInbound(frames, this.version);
    if (m === null) return;
    this.lastHeard = Date.now();
    if (m.command === (this.version === 1 ? W1.DISCONNECT : W2.DISCONNECT)) {
      // The back-off grows across DISCONNECTs: only a session the broker took (a HEARTBEAT or a REQUEST) resets it.
      if (!this.accepted && ++this.turnedAway === TURNED_AWAY) {
        const reason = `the broker turned READY ${this.opts.service} away ${TURNED_AWAY} times in a row (a key not granted the service, a reserved name, or a broker shutting down)`;
        this.opts.logger?.warn?.({ endpoint: this.endpoint, service: this.opts.service }, `mdp worker: ${reason}`);
        this.refusedReason = reason;
        this.events.emit('refused', this.endpoint, reason);
        this.events.sessionChanged();
      }
      void this.reconnect('broker said DISCONNECT');
      return;
    }
    if (!this.accepted) {
      this.accepted = true;
      this.turnedAway = 0;
      this.refusedReason = null;
      this.backoff = this.opts.reconnectMin ?? 100;
      this.up = true;
      this.events.sessionChanged();
    }
    if (m.command === W1.REQUEST && m.client !== null && !this.closing) {
      // Not while closing: our DISCONNECT crosses this REQUEST, and the broker requeues it for another worker.
      this.serve(link, m.client, m.body);
    }
  }

  /**
   * Runs the handler for one request. A handler that answers at once is answered at once, with no Promise made for
   * the request (the hot path of an echo-style worker); a Promise is awaited, and counted in `inHand`.
   */
  private serve(link: BrokerLink, client: Buffer, body: Buffer[]): void {
    const ctx: RequestContext = {
      client,
      broker: this.endpoint,
      partial: (b) => {
        if (this.version !== 2) throw new MdpError('partial() needs an MDP/0.2 worker');
        if (link === this.link) link.send(this.frames(W2.PARTIAL, client, EMPTY, ...toFrames(b)));
      },
    };
    let result: ReturnType<Handler>;
    try {
      result = this.opts.handler(body, ctx);
    } catch (err) {
      this.failed(link, err);
      this.settled();
      return;
    }
    if (typeof (result as PromiseLike<unknown> | null)?.then !== 'function') {
      this.answer(link, client, result as Frame | readonly Frame[]);
      this.settled();
      return;
    }
    this.inHand++;
    void Promise.resolve(result).then(
      (reply) => this.answer(link, client, reply),
      (err: unknown) => this.failed(link, err),
    ).finally(() => {
      this.inHand--;
      this.settled();
    });
  }

  /** The handler's reply goes back on the link the request came in on, if the broker still expects it from us. */
  private answer(link: BrokerLink, client: Buffer, reply: Frame | readonly Frame[]): void {
    let frames: Buffer[];
    try {
      frames = toFrames(reply);
    } catch (err) {
      return this.failed(link, err);
    }
    if (link === this.link && !link.closed && !this.abandoning) {
      link.send(this.frames(this.version === 1 ? W1.REPLY : W2.FINAL, client, EMPTY, ...frames));
      this.served++;
    } else {
      // The broker told us DISCONNECT meanwhile: it has given the request to another worker. Counted, never silent.
      this.discarded++;
      const why = this.closing ? 'the worker was closed' : 'the broker ended this session';
      this.opts.logger?.warn?.({ service: this.opts.service }, `mdp worker: reply discarded: ${why} while the handler ran`);
      this.opts.onError?.(new MdpError(`${this.opts.service}: reply discarded: ${why} while the handler ran`));
    }
  }

  /**
   * The handler threw (or its Promise rejected): the broker gets the request back at once, through a new session.
   * MDP has no way to hand back one request, so with credit every request this session holds goes back with it (the
   * replies of handlers still running are then discarded, and counted).
   */
  private failed(link: BrokerLink, err: unknown): void {
    this.opts.onError?.(err);
    if (link === this.link && !link.closed) {
      link.send(this.frames(this.version === 1 ? W1.DISCONNECT : W2.DISCONNECT));
      // The DISCONNECT is written before the link closes: the broker requeues the request at once.
      void this.reconnect('handler failed', CLOSE_WAIT_MS);
    }
  }

  /** A request is settled. Silence while one ran proves nothing (brokers may heartbeat idle workers only). */
  private settled(): void {
    this.lastHeard = Date.now();
    if (this.inHand === 0 && this.whenIdle !== null) this.whenIdle();
  }

  /** Drained: not needed now that the broker grants credit (Worker.credited). */
  retire(): Promise<void> {
    this.retired = true;
    return this.close(true);
  }

  /** `finish`: wait for the requests in hand and send their replies first (drain); else leave them to the broker. */
  close(finish: boolean): Promise<void> {
    if (this.closed === null) this.closed = this.shut(finish);
    else if (!finish && !this.abandoning) {
      // close() after drain(): stop waiting for the handlers; their replies are discarded.
      this.abandoning = true;
      this.whenIdle?.();
    }
    return this.closed;
  }

  private async shut(finish: boolean): Promise<void> {
    this.closing = true;
    this.abandoning = !finish;
    if (finish && this.inHand > 0) await new Promise<void>((r) => (this.whenIdle = r));
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    if (!this.link.closed) {
      this.link.send(this.frames(this.version === 1 ? W1.DISCONNECT : W2.DISCONNECT));
      // Bounded: a link that never connected (broker down, or our key refused) drops it.
      await this.link.close(CLOSE_WAIT_MS);
    }
  }
}
