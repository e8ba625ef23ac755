// MDP client: many requests in flight, each reply matched to its request, exactly RFC 7/18 on the wire by default.
//
// Matching. A plain MDP reply names its service but not its request, and one service's replies can come back in
// any order when it has several workers. So on a plain connection the client keeps at most one request per service
// in flight and matches a reply by its service frame; requests for different services go in parallel.
// Pipelining many requests per service needs an extension, `request-id` (protocol/extensions.ts): a 4-byte id frame
// before the empty delimiter that the broker returns verbatim. The client uses it only with a broker that announced
// it: each new connection first asks `mmi.extensions` (a plain MMI request; the Guide's brokers answer 501, others
// nothing, and the client stays plain). `extensions: false` never asks.
//
// Retries (Lazy Pirate, made connection-aware). Each request gets up to `retries + 1` windows of `timeout` ms. At
// the end of a window the request is resent, on a new socket to the next endpoint, only if it may have been lost:
// its connection dropped or never came up (libzmq's ZMTP heartbeats find a dead broker). On a connection that stayed
// up the broker still holds it, so the client keeps waiting and a long job runs once. A `shutdown` reply is resent
// after a short pause; a refused CURVE key moves to the next endpoint or fails with RefusedError. Only the request
// concerned moves; the others stay where they are. A reply that arrives is never turned into an error.
//
// Several brokers. With more than one endpoint the client holds a connection to each at once and sends each request
// to the connected broker with the fewest of our requests outstanding. When a connection drops (a killed broker's
// socket closes at once; a silent one is found by ZMTP heartbeats) every request sent on it goes to a connected
// broker at once, as a new window within the retry budget. libzmq keeps re-dialling the lost one, and it takes
// requests again once it is back. A reply for a request already answered elsewhere is dropped and counted.

import { EventEmitter } from 'node:events';
import type { Version } from '../protocol/codec.js';
import { clientRequest, parseClientReply, replyHeaderAt, replyService } from '../protocol/peer-codec.js';
import { isErrorReply } from '../protocol/errors.js';
import { EXT_REQUEST_ID, MMI_EXTENSIONS } from '../protocol/extensions.js';
import { AbortError, ClosedError, EndpointError, MdpError, RefusedError, TimeoutError, UnavailableError, UnreachableError, decodeError } from './errors.js';
import { toFrames, type Frame } from './sender.js';
import { titanicClose, titanicDurable, titanicResult, titanicSubmit, type TitanicWaitOptions } from './titanic-calls.js';
import type { CurveClientKeys, DealerOptions } from '../sockets/dealer.js';
import { zmtpHeartbeat } from '../sockets/zeromq.js';
import { endpointProblem } from '../sockets/endpoint.js';
import { openLink, type BrokerLink, type LinkHandler, type Transport } from './broker-link.js';
import type { Logger } from './logger.js';

export interface ClientOptions {
  /** Broker endpoint(s); a request that may have been lost is resent to the next one. */
  endpoints: string | string[];
  /**
   * With several endpoints: `spread` (default) sends each request to the connected broker with the fewest of our
   * requests outstanding; `in-order` uses one broker until it fails, then the next (primary and backups).
   */
  balance?: 'spread' | 'in-order';
  /** MDP version: 1 (default) or 2 (needed for stream()). */
  version?: Version;
  /** Milliseconds of one wait window (default 5000); a request fails after `retries + 1` windows with no reply. */
  timeout?: number;
  /** Windows after the first, and so resends at most (default 2). */
  retries?: number;
  /**
   * ZMTP heartbeats on each connection: PING every this many ms (default 2500, at least 1000), and a broker silent
   * for `heartbeatLiveness` of them (default 3) is dead: its connection drops and what it held is resent.
   */
  heartbeatInterval?: number;
  heartbeatLiveness?: number;
  /**
   * Opt-in: before the first request for a service (and again once the answer is this many ms old; `true`: 1000),
   * ask the broker `mmi.service`; while it says 404 (no worker), requests for that service fail at once with
   * UnavailableError instead of waiting for a worker. One question per service at a time, whatever the number of
   * requests. With several endpoints one broker's 404 proves nothing (another may have the worker): the request
   * goes ahead. A broker without MMI (501) or no answer: the request goes ahead too.
   */
  failFast?: boolean | number;
  /** Ask each broker for MDP extensions through MMI and pipeline with `request-id` where offered (default true). */
  extensions?: boolean;
  /** Old name for `extensions: false`. */
  plain?: boolean;
  /** CURVE: the broker's public key and this client's key pair. */
  curve?: CurveClientKeys;
  /**
   * `zmtp` (the default for tcp:// and ipc://): the project's own ZMTP, no native addon. `libzmq` (the default for
   * other schemes, such as inproc://): the zeromq binding, which must then be installed.
   */
  transport?: Transport;
  /** transport 'libzmq' only: other ZeroMQ socket options, passed to every socket the client opens. */
  socketOptions?: DealerOptions;
  /** Where connection changes and retries are logged (pino and console fit); silent when absent. */
  logger?: Logger;
}

export interface RequestOptions {
  timeout?: number;
  retries?: number;
  /** Withdraws the request: it rejects with AbortError, and a reply that comes later is dropped. */
  signal?: AbortSignal;
}

export interface StreamChunk {
  body: Buffer[];
  /** True for the FINAL reply, which ends the stream. */
  final: boolean;
}

/** Events a Client emits, each with the endpoint concerned. */
export interface ClientEvents {
  /** A connection's handshake completed. */
  connected: [endpoint: string];
  /** A connection dropped (or a dead peer was found by ZMTP heartbeats). */
  disconnected: [endpoint: string];
  /** libzmq is dialling again after a failed or lost connection. */
  reconnecting: [endpoint: string];
  /** The handshake failed for good: the broker refused our CURVE key, or one side speaks CURVE and the other not. */
  refused: [endpoint: string, reason: string];
}

/** ready(): an endpoint whose connection attempt failed. */
const UNREACHABLE = 'unreachable';

/** Pause before resending a request the broker answered with `shutdown`. */
const SHUTDOWN_RETRY_MS = 250;
/**
 * Fresh sockets per endpoint: at most one every REPLACE_GAP_MS, and while at most MAX_RETIRED replaced ones still
 * wait for late replies. A request that needs a fresh socket meanwhile waits for one (within its own windows). Without
 * this, every request abandoned on a plain link opened a socket for the next: 1,000 timing out together went past
 * libzmq's 1,023 sockets and the EMFILE was thrown from a timer, ending the process.
 */
const REPLACE_GAP_MS = 100;
const MAX_RETIRED = 4;
const REQUEST_ID = Buffer.from(EXT_REQUEST_ID);

interface Pending {
  id: number;
  service: string;
  serviceFrame: Buffer;
  body: Buffer[];
  timeout: number;
  retries: number;
  /** Windows begun (the first send included). */
  attempts: number;
  timer: NodeJS.Timeout | null;
  sawPartial: boolean;
  /** The link of the latest send, and its connection epoch then. */
  link: Link | null;
  epoch: number;
  /** Every link this request was sent on (a late reply on any of them still answers it). */
  links: Link[];
  /** Waiting for its service's turn (plain links carry one request per service at a time). */
  queued: boolean;
  resolve: (body: Buffer[]) => void;
  reject: (err: Error) => void;
  onPartial: ((body: Buffer[]) => void) | null;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | null;
}

interface ServiceCheck {
  at: number;
  answer: string | null;
  asked: Promise<void>;
}

/** One socket to one broker endpoint, with what the client knows of that connection. */
class Link {
  conn!: BrokerLink;
  up = false;
  /** Bumped on every disconnect: a request sent in an earlier epoch may have been lost. */
  epoch = 0;
  refused: string | null = null;
  /** The broker listed `request-id` in mmi.extensions. */
  ids = false;
  asking = false;
  retired = false;
  /** Unsettled requests sent on this link: a reply to them may still come here, so it stays open while any remain. */
  readonly pending = new Set<Pending>();
  /** Plain requests in flight here, by service. */
  readonly plainBySvc = new Map<string, Pending>();
  /** Services with a plain request abandoned here whose reply may still come: never reused for that service. */
  readonly tainted = new Set<string>();

  constructor(readonly endpoint: string) {}
}

export class Client extends EventEmitter<ClientEvents> {
  private readonly endpoints: string[];
  private readonly version: Version;
  private readonly timeout: number;
  private readonly retries: number;
  private readonly extensions: boolean;
  private readonly log: Logger | undefined;
  /** The current link to each endpoint, by index. */
  private readonly links: Link[] = [];
  private endpointIndex = 0;
  /** Ids of settled requests that were sent to more than one link: a reply for one of them is a late duplicate. */
  private readonly resentIds = new Set<number>();
  /** Replies dropped because their request was already settled (answered elsewhere, timed out or withdrawn). */
  lateReplies = 0;
  private nextId = 1;
  private readonly byId = new Map<number, Pending>();
  private readonly all = new Set<Pending>();
  /** Plain sends: the request holding each service's turn, and those waiting for it. */
  private readonly turn = new Map<string, Pending>();
  /** Replaced links still open for late replies to requests sent on them. */
  private readonly retiredOpen = new Set<Link>();
  /** Requests waiting for a fresh socket (see REPLACE_GAP_MS), in order. */
  private stalled: Pending[] = [];
  private unstallTimer: NodeJS.Timeout | null = null;
  /** When each endpoint may next get a fresh socket. */
  private readonly nextFresh: number[] = [];
  private readonly waiting = new Map<string, Pending[]>();
  /** failFast: the latest mmi.service answer per service (null while the question is out). */
  private readonly serviceChecks = new Map<string, ServiceCheck>();
  private closed = false;
  private draining: Promise<void> | null = null;
  private drained: (() => void) | null = null;

  constructor(private readonly opts: ClientOptions) {
    super();
    this.endpoints = Array.isArray(opts.endpoints) ? [...opts.endpoints] : [opts.endpoints];
    if (this.endpoints.length === 0) throw new EndpointError('', 'Client needs at least one endpoint');
    for (const ep of this.endpoints) {
      const problem = endpointProblem(ep);
      if (problem !== null) throw new EndpointError(ep, `bad endpoint "${ep}": ${problem}`);
    }
    this.version = opts.version ?? 1;
    this.timeout = opts.timeout ?? 5000;
    this.retries = opts.retries ?? 2;
    this.extensions = opts.extensions ?? !(opts.plain ?? false);
    this.log = opts.logger;
    for (let i = 0; i < this.endpoints.length; i++) this.links.push(this.open(i));
  }

  /** Requests not yet settled. */
  get inFlight(): number {
    return this.all.size;
  }

  /** Sends a request and resolves with the reply body frames; rejects with BrokerError, TimeoutError, RefusedError or AbortError. */
  request(service: string, body?: Frame | readonly Frame[], opts: RequestOptions = {}): Promise<Buffer[]> {
    if (this.checksServices() && !service.startsWith('mmi.')) {
      return this.checkServed(service).then(() => new Promise((resolve, reject) => this.launch(service, body, opts, resolve, reject, null)));
    }
    return new Promise((resolve, reject) => this.launch(service, body, opts, resolve, reject, null));
  }

  /** failFast is on and means something (one endpoint). */
  private checksServices(): boolean {
    return this.opts.failFast !== undefined && this.opts.failFast !== false && this.endpoints.length === 1;
  }

  /** Resolves when `service` may be asked for (failFast); rejects with UnavailableError while the broker says 404. */
  private checkServed(service: string): Promise<void> {
    const now = Date.now();
    let known = this.serviceChecks.get(service);
    if (known === undefined || (known.at + this.checkMs < now && known.answer !== null)) {
      const entry: ServiceCheck = { at: now, answer: null, asked: Promise.resolve() };
      entry.asked = this.request('mmi.service', service, { retries: 0 }).then(
        (reply) => { entry.answer = reply[0]?.toString() ?? ''; entry.at = Date.now(); },
        () => { entry.answer = ''; entry.at = Date.now(); },
      );
      // Bounded: service names are the app's, but a flood of them must not grow this for ever.
      if (this.serviceChecks.size >= 10000) this.serviceChecks.clear();
      this.serviceChecks.set(service, entry);
      known = entry;
    }
    const check = known;
    return check.asked.then(() => {
      if (check.answer === '404') {
        throw new UnavailableError(service, `${service}: no worker serves it at ${this.endpoints[0]} (mmi.service said 404)`);
      }
    });
  }

  private get checkMs(): number {
    return typeof this.opts.failFast === 'number' ? this.opts.failFast : 1000;
  }

  /**
   * Resolves once a connection to a broker has completed its handshake (any endpoint). Rejects at once with
   * RefusedError when every endpoint refused us, with UnreachableError when every endpoint failed to connect
   * (nothing listening, a wrong port), and with TimeoutError after `timeout` ms (default: the request window).
   * Requests need not wait for it: they are queued and sent when a connection is up.
   */
  ready(opts: { timeout?: number } = {}): Promise<void> {
    if (this.closed) return Promise.reject(new ClosedError('client closed'));
    if (this.links.some((l) => l.up && l.refused === null)) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const failed = new Map<string, string>();
      const finish = (err: Error | null) => {
        clearTimeout(timer);
        this.off('connected', onConnected);
        this.off('refused', onRefused);
        this.off('reconnecting', onUnreachable);
        if (err === null) resolve();
        else reject(err);
      };
      const onConnected = () => finish(null);
      const check = () => {
        if (failed.size < this.endpoints.length) return;
        const reasons = [...failed.values()];
        if (reasons.every((r) => r !== UNREACHABLE)) finish(new RefusedError(this.endpoints[0], reasons.join('; ')));
        else finish(new UnreachableError(this.endpoints, `no broker reachable at ${this.endpoints.join(', ')} (nothing listening, or the host refuses)`));
      };
      const onRefused = (endpoint: string, reason: string) => {
        failed.set(endpoint, reason);
        check();
      };
      const onUnreachable = (endpoint: string) => {
        if (!failed.has(endpoint)) failed.set(endpoint, UNREACHABLE);
        check();
      };
      const ms = opts.timeout ?? this.timeout;
      const timer = setTimeout(() => finish(new TimeoutError(`no broker connection within ${ms} ms`)), ms);
      this.on('connected', onConnected);
      this.on('refused', onRefused);
      this.on('reconnecting', onUnreachable);
      for (const l of this.links) if (l.refused !== null) failed.set(l.endpoint, l.refused);
      check();
    });
  }

  /** MDP/0.2 only: yields each PARTIAL, then the FINAL (final: true). Leaving the loop early withdraws the request. */
  async *stream(service: string, body?: Frame | readonly Frame[], opts: RequestOptions = {}): AsyncGenerator<StreamChunk> {
    if (this.version !== 2) throw new MdpError('stream() needs a client created with version: 2');
    if (this.checksServices() && !service.startsWith('mmi.')) await this.checkServed(service);
    const chunks: StreamChunk[] = [];
    let wake: (() => void) | null = null;
    let failure: Error | null = null;
    let done = false;
    const notify = () => {
      const w = wake;
      wake = null;
      w?.();
    };
    const p = this.launch(
      service, body, opts,
      (final) => { chunks.push({ body: final, final: true }); done = true; notify(); },
      (err) => { failure = err; done = true; notify(); },
      (partial) => { chunks.push({ body: partial, final: false }); notify(); },
    );
    try {
      for (;;) {
        while (chunks.length > 0) {
          const c = chunks.shift() as StreamChunk;
          yield c;
          if (c.final) return;
        }
        if (failure) throw failure;
        if (done) return;
        await new Promise<void>((r) => (wake = r));
      }
    } finally {
      if (p !== null && !done) this.withdraw(p, new AbortError(`${service}: stream left before its FINAL`));
    }
  }

  /** Takes no new requests, waits until every pending one is settled, then closes. */
  drain(): Promise<void> {
    if (this.closed) return Promise.resolve();
    if (this.draining === null) {
      this.draining = new Promise<void>((resolve) => (this.drained = resolve));
      this.closeIfDrained();
    }
    return this.draining;
  }

  /**
   * Titanic (RFC 9; a broker with --titanic): stores the request durably and resolves with its UUID. Rejects with
   * TitanicError (status 400: the broker refused it as malformed; 500: not stored, try again later).
   */
  submit(service: string, body?: Frame | readonly Frame[], opts: RequestOptions = {}): Promise<string> {
    return titanicSubmit(this, service, toFrames(body), opts);
  }

  /**
   * Titanic: the reply of a stored request. Resolves with its body frames, or null while it is pending when `wait`
   * (ms, default 0: ask once) has passed; polls meanwhile. Rejects with TitanicError 400 for a UUID the broker does
   * not hold, and with AbortError when `signal` aborts.
   */
  result(uuid: string, opts: TitanicWaitOptions = {}): Promise<Buffer[] | null> {
    return titanicResult(this, uuid, opts);
  }

  /** Titanic: submit, wait for the reply (up to `wait` ms, default: no limit), close; resolves with the reply. */
  durable(service: string, body?: Frame | readonly Frame[], opts: TitanicWaitOptions = {}): Promise<Buffer[]> {
    return titanicDurable(this, service, toFrames(body), opts);
  }

  /** Fails every pending request with ClosedError and closes the sockets. With a UUID: Titanic's close instead. */
  close(): void;
  /** Titanic: deletes a stored request and its reply (resolves whether or not the broker held it). */
  close(uuid: string): Promise<void>;
  close(uuid?: string): void | Promise<void> {
    if (uuid !== undefined) return titanicClose(this, uuid);
    if (this.closed) return;
    this.closed = true;
    if (this.unstallTimer !== null) clearTimeout(this.unstallTimer);
    this.unstallTimer = null;
    this.stalled = [];
    for (const p of [...this.all]) this.fail(p, new ClosedError('client closed'));
    for (const link of this.openLinks()) void link.conn.close();
    this.drained?.();
  }

  private launch(
    service: string,
    body: Frame | readonly Frame[] | undefined,
    opts: RequestOptions,
    resolve: (b: Buffer[]) => void,
    reject: (e: Error) => void,
    onPartial: ((b: Buffer[]) => void) | null,
  ): Pending | null {
    if (this.closed || this.draining !== null) {
      reject(new ClosedError(this.closed ? 'client closed' : 'client draining'));
      return null;
    }
    if (opts.signal?.aborted) {
      reject(new AbortError(`${service}: aborted before it was sent`, { cause: opts.signal.reason }));
      return null;
    }
    const id = this.nextId;
    this.nextId = this.nextId >= 0xffffffff ? 1 : this.nextId + 1;
    const p: Pending = {
      id, service, serviceFrame: Buffer.from(service), body: toFrames(body), timeout: opts.timeout ?? this.timeout,
      retries: opts.retries ?? this.retries, attempts: 0, timer: null, sawPartial: false, link: null, epoch: 0,
      links: [], queued: false, resolve, reject, onPartial, signal: opts.signal, onAbort: null,
    };
    this.all.add(p);
    if (p.signal) {
      const signal = p.signal;
      p.onAbort = () => this.withdraw(p, new AbortError(`${service}: aborted`, { cause: signal.reason }));
      signal.addEventListener('abort', p.onAbort, { once: true });
    }
    this.attempt(p);
    return p;
  }

  /** Starts a window for p: sends it on the current link, or queues it for its service's turn. */
  private attempt(p: Pending, avoid: Link | null = null): void {
    p.attempts++;
    if (p.timer) clearTimeout(p.timer);
    p.timer = setTimeout(() => this.onWindowEnd(p), p.timeout);
    this.send(p, avoid);
  }

  private send(p: Pending, avoid: Link | null = null): void {
    let link = this.pick(avoid);
    if (!link.ids) {
      const holder = this.turn.get(p.service);
      if (holder !== undefined && holder !== p) {
        p.queued = true;
        let q = this.waiting.get(p.service);
        if (q === undefined) this.waiting.set(p.service, (q = []));
        q.push(p);
        return;
      }
      if (link.tainted.has(p.service)) {
        const fresh = this.freshLink(this.links.indexOf(link), p);
        if (fresh === null) return;
        link = fresh;
      }
    }
    p.queued = false;
    p.link = link;
    p.epoch = link.epoch;
    if (!p.links.includes(link)) p.links.push(link);
    link.pending.add(p);
    const msg = clientRequest(this.version, p.serviceFrame, p.body, link.ids);
    if (link.ids) {
      this.releaseTurn(p);
      this.byId.set(p.id, p);
      const idFrame = Buffer.allocUnsafe(4);
      idFrame.writeUInt32BE(p.id);
      msg.unshift(idFrame);
    } else {
      this.turn.set(p.service, p);
      link.plainBySvc.set(p.service, p);
    }
    link.conn.send(msg);
  }

  /** Takes a settled p off every link it was sent on, closing those that were replaced and now serve nobody. */
  private detach(p: Pending): void {
    for (const link of p.links) {
      link.pending.delete(p);
      if (link.retired && link.pending.size === 0) {
        void link.conn.close();
        this.retiredOpen.delete(link);
      }
    }
  }

  /** p no longer holds its service's turn on plain links: the next one waiting goes. */
  private releaseTurn(p: Pending): void {
    if (this.turn.get(p.service) !== p) return;
    this.turn.delete(p.service);
    const q = this.waiting.get(p.service);
    const next = q?.shift();
    if (q !== undefined && q.length === 0) this.waiting.delete(p.service);
    if (next !== undefined) this.send(next);
  }

  private onWindowEnd(p: Pending): void {
    p.timer = null;
    if (!this.all.has(p)) return;
    const link = p.link;
    if (p.attempts > p.retries || p.sawPartial) {
      const refused = link?.refused;
      this.abandon(p, refused
        ? new RefusedError(link.endpoint, `${p.service}: ${link.endpoint}: ${refused}`)
        : new TimeoutError(`${p.service}: no reply after ${p.attempts} window(s) of ${p.timeout} ms`));
      return;
    }
    // Still waiting for its service's turn, or sent on a connection that never dropped (the broker holds it).
    if (p.queued || (link !== null && link.up && link.epoch === p.epoch && link.refused === null)) {
      p.attempts++;
      p.timer = setTimeout(() => this.onWindowEnd(p), p.timeout);
      return;
    }
    // It may have been lost (the connection dropped or never came up): resend it to another connected broker, or on
    // a new socket to the next endpoint.
    this.resendElsewhere(p);
    this.log?.info?.({ service: p.service, endpoint: p.link?.endpoint, attempt: p.attempts }, 'mdp client: resent a request that may have been lost');
  }

  /**
   * Sends p again, as a new window: to another connected broker if there is one, else on a new socket to the next
   * endpoint (with one endpoint, the same one), unless its last link was already replaced.
   */
  private resendElsewhere(p: Pending): void {
    const from = p.link;
    const other = this.connectedOtherThan(from);
    if (other !== undefined) {
      if (this.opts.balance === 'in-order' && from === this.links[this.endpointIndex]) this.endpointIndex = this.links.indexOf(other);
    } else if (from !== null && this.links.includes(from)) {
      this.endpointIndex = (this.links.indexOf(from) + 1) % this.links.length;
      try {
        this.replace(this.endpointIndex);
      } catch (err) {
        // No socket to be had (EMFILE): p goes on the link there is; its windows decide.
        this.log?.warn?.({ endpoint: this.endpoints[this.endpointIndex], err: String(err) }, 'mdp client: cannot open a socket');
      }
    }
    this.attempt(p, from);
  }

  /**
   * Where a request goes. `spread`: the connected, unrefused link with the fewest of our requests outstanding.
   * `in-order`, or with none connected: the current endpoint's link (libzmq may still be dialling it; the window
   * decides what happens next). A refused link is replaced by a fresh socket, which asks again (the allow-list may
   * have changed) and fails fast. `avoid`: the link a resend is moving away from.
   */
  private pick(avoid: Link | null): Link {
    if (this.opts.balance !== 'in-order') {
      let best: Link | null = null;
      for (const l of this.links) {
        if (l === avoid || !l.up || l.refused !== null) continue;
        if (best === null || l.pending.size < best.pending.size) best = l;
      }
      if (best !== null) return best;
    }
    const link = this.links[this.endpointIndex];
    return link.refused === null ? link : this.replace(this.endpointIndex);
  }

  /**
   * Endpoint i's link replaced by a fresh socket for p, or null when none may be opened now: p then waits for one
   * (stalled), or has failed (the socket could not be opened).
   */
  private freshLink(i: number, p: Pending): Link | null {
    const now = Date.now();
    let retired = 0;
    for (const l of this.retiredOpen) if (l.endpoint === this.endpoints[i]) retired++;
    if (now < (this.nextFresh[i] ?? 0) || retired >= MAX_RETIRED) {
      p.queued = true;
      this.stalled.push(p);
      if (this.unstallTimer === null) this.unstallTimer = setTimeout(() => this.unstall(), REPLACE_GAP_MS);
      return null;
    }
    this.nextFresh[i] = now + REPLACE_GAP_MS;
    try {
      return this.replace(i);
    } catch (err) {
      this.fail(p, new MdpError(`${p.service}: cannot open a socket to ${this.endpoints[i]}: ${(err as Error).message}`));
      return null;
    }
  }

  /** Stalled requests try again for a fresh socket (those settled meanwhile are gone). */
  private unstall(): void {
    this.unstallTimer = null;
    const list = this.stalled;
    this.stalled = [];
    for (const p of list) if (this.all.has(p) && p.queued && !this.closed) this.send(p);
  }

  /** Retires endpoint i's link (it stays open while requests sent on it are unsettled) for a new socket. */
  private replace(i: number): Link {
    const link = this.open(i);
    const old = this.links[i];
    old.retired = true;
    if (old.pending.size === 0) void old.conn.close();
    else this.retiredOpen.add(old);
    this.links[i] = link;
    return link;
  }

  private open(index: number): Link {
    const endpoint = this.endpoints[index];
    // ZMTP heartbeats: a dead broker shows as a disconnect, which is what makes a request worth resending.
    const hb = zmtpHeartbeat(this.opts.heartbeatInterval ?? 2500, this.opts.heartbeatLiveness ?? 3);
    const link = new Link(endpoint);
    link.conn = openLink(endpoint, {
      transport: this.opts.transport, curve: this.opts.curve, role: 'client', socketOptions: this.opts.socketOptions,
      heartbeatInterval: hb.heartbeatInterval, heartbeatTimeout: hb.heartbeatTimeout,
    }, this.handlerFor(link));
    if (this.extensions) {
      link.asking = true;
      // An ordinary MMI request with one empty body frame: a broker that offers nothing answers 501.
      link.conn.send(clientRequest(this.version, Buffer.from(MMI_EXTENSIONS), [], false));
    }
    return link;
  }

  /** What the client does with a link's events. A reply on a link we already replaced still settles its request. */
  private handlerFor(link: Link): LinkHandler {
    return {
      message: (frames) => this.onReply(link, frames),
      connected: () => {
        link.up = true;
        this.log?.info?.({ endpoint: link.endpoint }, 'mdp client: connected');
        this.emit('connected', link.endpoint);
        if (link.epoch > 0) this.resendLost(link);
      },
      disconnected: () => {
        link.up = false;
        link.epoch++;
        this.log?.warn?.({ endpoint: link.endpoint }, 'mdp client: disconnected');
        this.emit('disconnected', link.endpoint);
        this.failOver(link);
      },
      retrying: () => this.emit('reconnecting', link.endpoint),
      refused: (reason) => this.onRefused(link, reason),
    };
  }

  /**
   * The link's connection is back (a restarted broker, a network that healed): what was sent on the connection that
   * dropped was lost with it, so it goes again now, each as a new window within its retry budget, not when its
   * window ends (and on a plain link every later request for that service waited behind it).
   */
  private resendLost(link: Link): void {
    if (this.closed || !this.links.includes(link)) return;
    const lost: Pending[] = [];
    for (const p of link.pending) if (p.link === link && p.epoch !== link.epoch && !p.queued && !p.sawPartial && p.attempts <= p.retries) lost.push(p);
    if (lost.length === 0) return;
    this.log?.info?.({ endpoint: link.endpoint, requests: lost.length }, 'mdp client: reconnected; resending what the old connection held');
    for (const p of lost) this.attempt(p);
  }

  /** A current link other than `link` whose connection is up and whose broker took our key. */
  private connectedOtherThan(link: Link | null): Link | undefined {
    return this.links.find((l) => l !== link && l.up && l.refused === null);
  }

  /** A link's connection dropped: what was sent on it goes to a connected broker now, not at the window's end. */
  private failOver(link: Link): void {
    if (this.links.length < 2 || this.closed) return;
    const moved: Pending[] = [];
    for (const p of link.pending) if (p.link === link && !p.queued && !p.sawPartial && p.attempts <= p.retries) moved.push(p);
    if (moved.length === 0 || this.connectedOtherThan(link) === undefined) return;
    this.log?.warn?.({ endpoint: link.endpoint, requests: moved.length }, 'mdp client: broker connection lost; resending its requests elsewhere');
    for (const p of moved) this.attempt(p, link);
  }

  private onRefused(link: Link, reason: string): void {
    if (link.refused !== null) return;
    link.refused = reason;
    link.up = false;
    this.log?.warn?.({ endpoint: link.endpoint, reason }, 'mdp client: connection refused');
    this.emit('refused', link.endpoint, reason);
    // Definite: resending to the same broker cannot help. Another endpoint may take the key.
    for (const p of [...link.pending]) {
      if (p.link !== link) continue; // resent elsewhere already
      if (this.endpoints.length > 1 && p.attempts <= p.retries) {
        this.resendElsewhere(p);
      } else {
        this.abandon(p, new RefusedError(link.endpoint, `${p.service}: ${link.endpoint}: ${reason}`));
      }
    }
  }

  private onReply(link: Link, frames: Buffer[]): void {
    let p: Pending | undefined;
    let at = replyHeaderAt(frames, 0, this.version);
    if (at >= 0) {
      // A plain reply (RFC 7: after an empty frame; RFC 18: the header first), matched by its service.
      const svc = replyService(frames, at, this.version);
      if (svc === null) return;
      p = link.plainBySvc.get(svc);
      if (p === undefined) {
        if (svc === MMI_EXTENSIONS && link.asking) this.onExtensions(link, frames, at);
        else if (link.tainted.has(svc)) this.lateReplies++;
        return;
      }
    } else if (frames.length >= 2 && frames[0].length === 4 && frames[1].length === 0) {
      const id = frames[0].readUInt32BE(0);
      p = this.byId.get(id);
      at = 2;
      if (p === undefined && this.resentIds.has(id)) {
        this.lateReplies++;
        return;
      }
    }
    if (p === undefined) return;
    const reply = parseClientReply(frames, at, this.version);
    if (reply === null) return;
    const body = reply.body;
    if (!reply.final) {
      p.sawPartial = true;
      // Progress: the window counts from the latest PARTIAL.
      if (p.timer) clearTimeout(p.timer);
      const q = p;
      p.timer = setTimeout(() => this.onWindowEnd(q), p.timeout);
      p.onPartial?.(body);
      return;
    }
    if (isErrorReply(body)) {
      const err = decodeError(body, p.service);
      // The broker that said `shutdown` no longer has it: if it was already sent elsewhere, that send answers it.
      if (err.code === 'shutdown' && link !== p.link) return;
      // A broker that is shutting down is going away, not refusing: try again on the next endpoint after a short
      // pause, within the retry budget. Only this request moves.
      if (err.code === 'shutdown' && p.attempts <= p.retries && !p.sawPartial) {
        if (p.timer) clearTimeout(p.timer);
        const q = p;
        p.timer = setTimeout(() => {
          if (this.all.has(q)) this.resendElsewhere(q);
        }, Math.min(p.timeout, SHUTDOWN_RETRY_MS));
        return;
      }
      this.settle(p);
      p.reject(err);
      return;
    }
    this.settle(p);
    p.resolve(body);
  }

  private onExtensions(link: Link, frames: Buffer[], headerAt: number): void {
    link.asking = false;
    const reply = parseClientReply(frames, headerAt, this.version);
    if (reply === null || reply.body[0]?.toString() !== '200') return;
    if (!reply.body.slice(1).some((f) => f.equals(REQUEST_ID))) return;
    link.ids = true;
    this.log?.debug?.({ endpoint: link.endpoint }, 'mdp client: broker offers request-id; pipelining');
    // Everyone waiting for a service's turn can go now, with ids.
    if (!this.links.includes(link)) return;
    const queued = [...this.waiting.values()].flat();
    this.waiting.clear();
    for (const q of queued) this.send(q);
  }

  private settle(p: Pending): void {
    if (p.timer) clearTimeout(p.timer);
    p.timer = null;
    if (p.onAbort) p.signal?.removeEventListener('abort', p.onAbort);
    this.all.delete(p);
    this.byId.delete(p.id);
    if (p.links.length > 1 && p.links.some((l) => l.ids)) {
      this.resentIds.add(p.id);
      // Bounded: the oldest ids go first (a Set iterates in insertion order).
      if (this.resentIds.size > 4096) this.resentIds.delete(this.resentIds.values().next().value as number);
    }
    for (const l of p.links) if (l.plainBySvc.get(p.service) === p) l.plainBySvc.delete(p.service);
    if (p.queued) {
      const q = this.waiting.get(p.service) ?? [];
      q.splice(q.indexOf(p), 1);
      if (q.length === 0) this.waiting.delete(p.service);
    }
    this.detach(p);
    this.releaseTurn(p);
    this.closeIfDrained();
  }

  private fail(p: Pending, err: Error): void {
    this.settle(p);
    p.reject(err);
  }

  /** Gives up on p while a reply may still come: a plain link must not hand that reply to the next request. */
  private abandon(p: Pending, err: Error): void {
    for (const l of p.links) if (l.plainBySvc.get(p.service) === p) l.tainted.add(p.service);
    this.fail(p, err);
  }

  private withdraw(p: Pending, err: Error): void {
    if (this.all.has(p)) this.abandon(p, err);
  }

  private closeIfDrained(): void {
    if (this.draining !== null && this.all.size === 0 && !this.closed) this.close();
  }

  private openLinks(): Link[] {
    const links = new Set<Link>(this.links);
    for (const p of this.all) for (const l of p.links) links.add(l);
    return [...links].filter((l) => !l.conn.closed);
  }
}
