// One protocol core and what drives it: the frame stream it reads and writes, the --validate admission pump, the
// clock ticks and the graceful drain. The plain broker runs one on the main thread over its ROUTER sockets; each
// shard thread runs one over the connections it serves, with its neighbours (the other shards' cores).

import { BrokerCore, type LogFn } from '../core/broker-core.js';
import type { Neighbours } from '../core/neighbours.js';
import { accessPolicy } from './security.js';
import { AdmissionPump } from './admission.js';
import { MemoryReturn } from './memory-return.js';
import { RouterTransport } from './transport.js';
import { appliesTo, parseValidateFlags } from './validation.js';
import type { Offload } from './offload.js';
import type { FrameIO } from './frame-io.js';
import type { BrokerOptions } from './options.js';

export type HostOptions = Omit<BrokerOptions, 'log'>;

export class CoreHost {
  readonly core: BrokerCore;
  readonly transport: RouterTransport;
  private readonly admission: AdmissionPump;
  private timer: NodeJS.Timeout | null = null;
  private readonly t0 = performance.now();
  private readonly memory = new MemoryReturn();
  /** Runs on every clock tick after the core's (--titanic: retries and retention). */
  onTick: ((now: number) => void) | null = null;

  constructor(
    private readonly opts: HostOptions,
    io: FrameIO,
    private readonly offload: Offload,
    private readonly log: LogFn,
    extras: { neighbours?: Neighbours; shellServices?: (service: Buffer) => boolean } = {},
  ) {
    const rules = parseValidateFlags(opts.validate);
    const validates = rules.length > 0 ? (name: string) => appliesTo(rules, name) : null;
    // With --shards N each shard's core holds its share of the byte budgets.
    const share = Math.max(1, opts.shards);
    const budgets = { maxHeldBytes: Math.floor(opts.maxHeldBytes / share), maxClientBytes: Math.floor(opts.maxClientBytes / share) };
    // What each CURVE key may do (zmtp transport): each connection's Peer carries its key's rights, on any thread.
    const requireRights = io.requireRights ?? false;
    this.core = new BrokerCore({ ...opts, ...budgets, requireRights, validates, mayRegister: accessPolicy(opts.workerGroups), neighbours: extras.neighbours ?? null, shellServices: extras.shellServices ?? null }, log);
    const now = () => this.now();
    this.transport = new RouterTransport(io, this.core, now, (err) => log('warn', 'socket error', { err: String(err) }));
    this.admission = new AdmissionPump(this.core, offload, now, () => this.transport.flush());
    if (rules.length > 0) this.transport.afterHandle = () => this.admission.pump();
  }

  /** Milliseconds since this host started: the core's clock. */
  now(): number {
    return performance.now() - this.t0;
  }

  /** Loads validators, starts reading and ticking. */
  async start(): Promise<void> {
    await this.offload.init();
    this.transport.start();
    // Ticks at least twice per heartbeat interval (the core's contract), at most every 5 ms.
    const period = Math.max(5, Math.min(1000, this.opts.heartbeatInterval / 2));
    // The tick runs after this turn's reads (setImmediate: the check phase follows the poll phase): after the event
    // loop stalls, timers fire before the waiting messages are read, and every worker would look silent.
    const tick = () => {
      const now = this.now();
      this.core.tick(now);
      this.onTick?.(now);
      this.transport.flush();
      const did = this.memory.tick(now, this.core.heldBytes);
      if (did !== null) {
        const what = did === 'collected' ? 'full GC after a burst of held requests' : 'free heap pages returned to the system (malloc_trim)';
        this.log('debug', what, { ms: Math.round(this.now() - now), rssMiB: Math.round(process.memoryUsage.rss() / 1048576) });
      }
    };
    this.timer = setInterval(() => setImmediate(tick), period);
  }

  /**
   * The graceful half of a shutdown: no new work; busy workers and requests under validation get shutdownGrace ms
   * to finish; then whatever is left fails with `shutdown` and every worker is told DISCONNECT.
   */
  async drain(): Promise<void> {
    const core = this.core;
    core.beginShutdown(this.now());
    this.transport.flush();
    const until = Date.now() + this.opts.shutdownGrace;
    while (core.snapshot().busyWorkers > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
    // Requests still under validation are answered (with `shutdown`) when their verdicts come back.
    let wait: NodeJS.Timeout | undefined;
    await Promise.race([this.admission.idle(), new Promise((r) => (wait = setTimeout(r, Math.max(0, until - Date.now()))))]);
    clearTimeout(wait);
    core.finishShutdown(this.now());
    this.transport.flush();
  }

  /** Stops ticking and closes the frame stream and the pool. Call after drain(). */
  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.transport.close();
    await this.offload.close();
  }
}
