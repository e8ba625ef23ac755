// A running broker: one ROUTER socket bound to one or more endpoints, the core, the tick timer and shutdown.

import { Router } from 'zeromq';
import { BrokerCore, DEFAULT_CORE_OPTIONS, type CoreOptions, type LogFn } from './broker-core.js';
import { RouterTransport } from './transport.js';
import { DEFAULT_LIMITS, type Limits } from './codec.js';

export interface BrokerOptions extends Omit<CoreOptions, 'limits'> {
  /** Endpoints to bind, e.g. tcp://127.0.0.1:5555. tcp://127.0.0.1:* picks a free port. */
  bind: string[];
  limits: Limits;
  /** ZeroMQ high-water marks (messages per peer). */
  sendHighWaterMark: number;
  receiveHighWaterMark: number;
  /** On close, how long busy workers get to finish before their requests fail with `shutdown`. */
  shutdownGrace: number;
  log: LogFn;
}

export const DEFAULT_BROKER_OPTIONS: BrokerOptions = {
  ...DEFAULT_CORE_OPTIONS,
  bind: ['tcp://127.0.0.1:5555'],
  limits: DEFAULT_LIMITS,
  sendHighWaterMark: 100000,
  receiveHighWaterMark: 100000,
  shutdownGrace: 5000,
  log: () => {},
};

export class Broker {
  readonly core: BrokerCore;
  readonly opts: BrokerOptions;
  private readonly sock: Router;
  private readonly transport: RouterTransport;
  private timer: NodeJS.Timeout | null = null;
  private closing: Promise<void> | null = null;
  private readonly t0 = performance.now();
  /** The endpoints actually bound (wildcard ports resolved). */
  endpoints: string[] = [];

  constructor(opts: Partial<BrokerOptions> = {}) {
    this.opts = { ...DEFAULT_BROKER_OPTIONS, ...opts, limits: { ...DEFAULT_LIMITS, ...opts.limits } };
    const o = this.opts;
    this.core = new BrokerCore(o, o.log);
    this.sock = new Router({
      // Without mandatory, ROUTER drops messages to unknown or full peers without a word.
      mandatory: true,
      sendHighWaterMark: o.sendHighWaterMark,
      receiveHighWaterMark: o.receiveHighWaterMark,
      // libzmq drops the connection of a peer that sends a frame over this size, before it costs us memory.
      maxMessageSize: o.limits.maxFrameBytes,
      linger: 1000,
    });
    this.transport = new RouterTransport(this.sock, this.core, () => this.now(), (err) =>
      o.log('warn', 'socket error', { err: String(err) }),
    );
  }

  now(): number {
    return performance.now() - this.t0;
  }

  async start(): Promise<void> {
    for (const ep of this.opts.bind) {
      await this.sock.bind(ep);
      this.endpoints.push(this.sock.lastEndpoint ?? ep);
    }
    this.transport.start();
    const period = Math.max(5, Math.min(1000, this.opts.heartbeatInterval / 2));
    this.timer = setInterval(() => {
      this.core.tick(this.now());
      this.transport.flush();
    }, period);
  }

  /** Graceful stop: no new work, busy workers get shutdownGrace ms to reply, every worker is told DISCONNECT. */
  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    this.core.beginShutdown(this.now());
    this.transport.flush();
    const until = Date.now() + this.opts.shutdownGrace;
    while (this.core.snapshot().busyWorkers > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
    this.core.finishShutdown(this.now());
    this.transport.flush();
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.transport.close();
  }
}
