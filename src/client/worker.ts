// MDP worker: READY, then serve one request at a time, heartbeating all the while (also while the handler runs).
// When the broker goes silent or says DISCONNECT, the session opens a new socket and sends READY again, with
// exponential back-off. `concurrency: n` runs n independent sessions, each its own MDP worker on its own socket.
// With several brokers (`endpoints`), each broker gets its own `concurrency` sessions: a worker registered with
// every broker keeps serving while any one of them is up, and a reply goes back on the socket the request came in
// on, so to the broker that sent it. Up to concurrency x brokers handlers can then run at once.

import { EventEmitter } from 'node:events';
import { EMPTY, W1, W2, type Version } from '../protocol/codec.js';
import { parseWorkerInbound, workerCommand } from '../protocol/peer-codec.js';
import { EndpointError, MdpError, RefusedError, TimeoutError, UnreachableError } from './errors.js';
import { endpointProblem } from '../sockets/endpoint.js';
import type { Logger } from './logger.js';
import { toFrames, type Frame } from './sender.js';
import type { CurveClientKeys, DealerOptions } from '../sockets/dealer.js';
import { zmtpHeartbeat } from '../sockets/zeromq.js';
import { openLink, type BrokerLink, type Transport } from './broker-link.js';

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
  /** Independent MDP workers (sockets) to run (default 1). */
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
  private readonly sessions: Session[] = [];
  /**
   * On transport 'libzmq', sessions watch their sockets (a libzmq monitor each) only once someone listens or a logger
   * is given: a monitor is one more libzmq socket, and a context holds 1023, so 600 silent workers would not fit.
   * The zmtp transport reports connection events at no cost, always.
   */
  watching: boolean;

  constructor(opts: WorkerOptions) {
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
    for (const ep of endpoints) for (let i = 0; i < n; i++) this.sessions.push(new Session(opts, ep, this));
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
        const refused = this.sessions.find((s) => s.refusedReason !== null);
        if (refused !== undefined) return finish(new RefusedError(refused.endpoint, refused.refusedReason as string));
        if (this.sessions.every((s) => s.up)) return finish(null);
        if (this.sessions.every((s) => s.unreachable)) {
          const eps = [...new Set(this.sessions.map((s) => s.endpoint))];
          finish(new UnreachableError(eps, `no broker reachable at ${eps.join(', ')} (nothing listening, or the host refuses)`));
        }
      };
      const timer = setTimeout(() => finish(new TimeoutError(`worker sessions not connected within ${ms} ms`)), ms);
      this.waiters.add(check);
      check();
    });
  }

  /** A session's connection state changed (see ready()). */
  sessionChanged(): void {
    for (const w of [...this.waiters]) w();
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
    await Promise.all(this.sessions.map((s) => s.close(true)));
  }

  /**
   * Says DISCONNECT at once and closes: the broker gives any request in hand to another worker, and a handler still
   * running has its reply discarded (counted in `discarded`).
   */
  async close(): Promise<void> {
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
  /** The handler's Promise for the request in hand (null when none, or when the handler answered at once). */
  private busy: Promise<void> | null = null;
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

  constructor(
    private readonly opts: WorkerOptions,
    readonly endpoint: string,
    private readonly events: Worker,
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
      transport: this.opts.transport, curve: this.opts.curve, role: 'worker', socketOptions: this.opts.socketOptions,
      heartbeatInterval, heartbeatTimeout, watch: this.events.watching,
      reconnectMin: this.opts.reconnectMin, reconnectMax: this.opts.reconnectMax,
    }, {
      message: (frames) => {
        if (current()) this.onMessage(link as BrokerLink, frames);
      },
      connected: () => {
        if (!current()) return;
        log?.info?.({ endpoint, service: this.opts.service }, 'mdp worker: connected');
        this.up = true;
        this.unreachable = false;
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
    if (this.busy === null && Date.now() - this.lastHeard > this.interval * this.liveness) {
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
   * the request (the hot path of an echo-style worker); a Promise is awaited, and `busy` holds it.
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
    this.busy = Promise.resolve(result).then(
      (reply) => this.answer(link, client, reply),
      (err: unknown) => this.failed(link, err),
    ).finally(() => this.settled());
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

  /** The handler threw (or its Promise rejected): the broker gets the request back at once, through a new session. */
  private failed(link: BrokerLink, err: unknown): void {
    this.opts.onError?.(err);
    if (link === this.link && !link.closed) {
      link.send(this.frames(this.version === 1 ? W1.DISCONNECT : W2.DISCONNECT));
      // The DISCONNECT is written before the link closes: the broker requeues the request at once.
      void this.reconnect('handler failed', CLOSE_WAIT_MS);
    }
  }

  /** The request in hand is settled. Silence during it proves nothing (brokers may heartbeat idle workers only). */
  private settled(): void {
    this.busy = null;
    this.lastHeard = Date.now();
  }

  /** `finish`: wait for the request in hand and send its reply first (drain); else leave it to the broker to retry. */
  async close(finish: boolean): Promise<void> {
    this.closing = true;
    this.abandoning = !finish;
    if (finish && this.busy) await this.busy;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    if (!this.link.closed) {
      this.link.send(this.frames(this.version === 1 ? W1.DISCONNECT : W2.DISCONNECT));
      // Bounded: a link that never connected (broker down, or our key refused) drops it.
      await this.link.close(CLOSE_WAIT_MS);
    }
  }
}
