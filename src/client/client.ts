// MDP client: many requests in flight over one DEALER socket, each reply matched to its request.
//
// Matching uses one wire extension, invisible to plain MDP peers: the client puts a 4-byte request id as a
// routing-envelope frame before the empty delimiter ([id, "", MDPC0x, ...]). Our broker treats frames before the
// delimiter as an envelope (as a ROUTER chain would) and returns them verbatim on the reply; workers never see them.
// Against a broker that does not do this, set `plain: true`: requests then go one at a time, as plain MDP clients do.

import type { Dealer } from 'zeromq';
import type { Version } from '../protocol/codec.js';
import { clientRequestHead, parseClientReply } from '../protocol/peer-codec.js';
import { isErrorReply } from '../protocol/errors.js';
import { ClosedError, TimeoutError, decodeError, MdpError } from './errors.js';
import { Sender, toFrames, type Frame } from './sender.js';
import { openDealer, type CurveClientKeys, type DealerOptions } from '../sockets/dealer.js';
import { receiveLoop } from '../sockets/receive-loop.js';

export interface ClientOptions {
  /** Broker endpoint(s); on timeout the client reconnects to the next one. */
  endpoints: string | string[];
  /** MDP version: 1 (default) or 2 (needed for stream()). */
  version?: Version;
  /** Milliseconds to wait for a reply before resending (default 5000). */
  timeout?: number;
  /** Resends after the first try (default 2). */
  retries?: number;
  /** Plain MDP framing without the request-id envelope: one request at a time. */
  plain?: boolean;
  /** CURVE: the broker's public key and this client's key pair. */
  curve?: CurveClientKeys;
  /** Other ZeroMQ socket options, passed to every socket the client opens. */
  socketOptions?: DealerOptions;
}

export interface RequestOptions {
  timeout?: number;
  retries?: number;
}

export interface StreamChunk {
  body: Buffer[];
  /** True for the FINAL reply, which ends the stream. */
  final: boolean;
}

/** Pause before resending a request the broker answered with `shutdown`. */
const SHUTDOWN_RETRY_MS = 250;

interface Pending {
  id: number;
  msg: Buffer[];
  service: string;
  timeout: number;
  retries: number;
  attempts: number;
  timer: NodeJS.Timeout | null;
  sawPartial: boolean;
  resolve: (body: Buffer[]) => void;
  reject: (err: Error) => void;
  onPartial: ((body: Buffer[]) => void) | null;
}

export class Client {
  private readonly endpoints: string[];
  private readonly version: Version;
  private readonly timeout: number;
  private readonly retries: number;
  private readonly plain: boolean;
  private sock: Dealer;
  private readonly sender: Sender;
  private endpointIndex = 0;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  /** plain mode: requests waiting for the one in flight. */
  private readonly waiting: Pending[] = [];
  private closed = false;

  constructor(private readonly opts: ClientOptions) {
    this.endpoints = Array.isArray(opts.endpoints) ? opts.endpoints : [opts.endpoints];
    if (this.endpoints.length === 0) throw new MdpError('Client needs at least one endpoint');
    this.version = opts.version ?? 1;
    this.timeout = opts.timeout ?? 5000;
    this.retries = opts.retries ?? 2;
    this.plain = opts.plain ?? false;
    this.sock = this.open();
    this.sender = new Sender(this.sock);
  }

  /** Sends a request and resolves with the reply body frames; rejects with BrokerError or TimeoutError. */
  request(service: string, body?: Frame | readonly Frame[], opts: RequestOptions = {}): Promise<Buffer[]> {
    return new Promise((resolve, reject) => this.submit(service, body, opts, resolve, reject, null));
  }

  /** MDP/0.2 only: yields each PARTIAL, then the FINAL (final: true). */
  async *stream(service: string, body?: Frame | readonly Frame[], opts: RequestOptions = {}): AsyncGenerator<StreamChunk> {
    if (this.version !== 2) throw new MdpError('stream() needs a client created with version: 2');
    const chunks: StreamChunk[] = [];
    let wake: (() => void) | null = null;
    let failure: Error | null = null;
    let done = false;
    const notify = () => {
      const w = wake;
      wake = null;
      w?.();
    };
    this.submit(
      service, body, opts,
      (final) => { chunks.push({ body: final, final: true }); done = true; notify(); },
      (err) => { failure = err; done = true; notify(); },
      (partial) => { chunks.push({ body: partial, final: false }); notify(); },
    );
    for (;;) {
      while (chunks.length > 0) {
        const c = chunks.shift() as StreamChunk;
        yield c;
        if (c.final) return;
      }
      if (failure) throw failure;
      if (done && chunks.length === 0) return;
      await new Promise<void>((r) => (wake = r));
    }
  }

  /** Fails every pending request with ClosedError and closes the socket. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const p of [...this.pending.values(), ...this.waiting]) {
      if (p.timer) clearTimeout(p.timer);
      p.reject(new ClosedError('client closed'));
    }
    this.pending.clear();
    this.waiting.length = 0;
    this.sock.close();
  }

  private submit(
    service: string,
    body: Frame | readonly Frame[] | undefined,
    opts: RequestOptions,
    resolve: (b: Buffer[]) => void,
    reject: (e: Error) => void,
    onPartial: ((b: Buffer[]) => void) | null,
  ): void {
    if (this.closed) return reject(new ClosedError('client closed'));
    const id = this.nextId;
    this.nextId = this.nextId >= 0xffffffff ? 1 : this.nextId + 1;
    const head = clientRequestHead(this.version, Buffer.from(service));
    if (!this.plain) {
      const idFrame = Buffer.allocUnsafe(4);
      idFrame.writeUInt32BE(id);
      head.unshift(idFrame);
    }
    const p: Pending = {
      id, msg: head.concat(toFrames(body)), service, timeout: opts.timeout ?? this.timeout,
      retries: opts.retries ?? this.retries, attempts: 0, timer: null, sawPartial: false, resolve, reject, onPartial,
    };
    if (this.plain && this.pending.size > 0) {
      this.waiting.push(p);
      return;
    }
    this.launch(p);
  }

  private launch(p: Pending): void {
    this.pending.set(p.id, p);
    this.transmit(p);
  }

  private transmit(p: Pending): void {
    p.attempts++;
    if (p.timer) clearTimeout(p.timer);
    p.timer = setTimeout(() => this.onTimeout(p), p.timeout);
    this.sender.send(p.msg);
  }

  private onTimeout(p: Pending): void {
    p.timer = null;
    if (this.pending.get(p.id) !== p) return;
    if (p.attempts > p.retries || p.sawPartial) {
      this.settle(p);
      p.reject(new TimeoutError(`${p.service}: no reply after ${p.attempts} attempt(s) of ${p.timeout} ms`));
      return;
    }
    // Lazy Pirate: a new socket (to the next endpoint, if any), then resend everything still pending on it.
    this.reconnect();
    for (const q of this.pending.values()) {
      if (q === p) this.transmit(q);
      else this.sender.send(q.msg);
    }
  }

  private settle(p: Pending): void {
    if (p.timer) clearTimeout(p.timer);
    p.timer = null;
    this.pending.delete(p.id);
    if (this.plain) {
      const next = this.waiting.shift();
      if (next) this.launch(next);
    }
  }

  private open(): Dealer {
    const sock = openDealer(this.endpoints[this.endpointIndex], this.opts.curve, this.opts.socketOptions);
    // A reply on a socket we already replaced still settles its request: matching is by request id.
    void receiveLoop(sock, (frames) => this.onReply(frames), () => undefined, false);
    return sock;
  }

  private reconnect(): void {
    this.sock.close();
    this.endpointIndex = (this.endpointIndex + 1) % this.endpoints.length;
    this.sock = this.open();
    this.sender.reset(this.sock);
  }

  private onReply(frames: Buffer[]): void {
    let at = 0;
    let p: Pending | undefined;
    if (this.plain) {
      p = this.pending.values().next().value;
    } else {
      if (frames.length < 2 || frames[0].length !== 4) return;
      p = this.pending.get(frames[0].readUInt32BE(0));
      at = 1;
    }
    if (p === undefined) return;
    const reply = parseClientReply(frames, at, this.version);
    if (reply === null) return;
    const body = reply.body;
    if (!reply.final) {
      p.sawPartial = true;
      // Progress: the timeout counts from the latest PARTIAL.
      if (p.timer) clearTimeout(p.timer);
      p.timer = setTimeout(() => this.onTimeout(p as Pending), p.timeout);
      p.onPartial?.(body);
      return;
    }
    if (isErrorReply(body)) {
      const err = decodeError(body, p.service);
      // A broker that is shutting down is going away, not refusing: try again (a new socket, the next endpoint)
      // after a short pause, within the retry budget.
      if (err.code === 'shutdown' && p.attempts <= p.retries && !p.sawPartial) {
        if (p.timer) clearTimeout(p.timer);
        p.timer = setTimeout(() => this.onTimeout(p as Pending), Math.min(p.timeout, SHUTDOWN_RETRY_MS));
        return;
      }
      this.settle(p);
      p.reject(err);
      return;
    }
    this.settle(p);
    p.resolve(body);
  }
}
