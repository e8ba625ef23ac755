// The plain broker (--shards 1): the main thread runs the ROUTER socket and the core, with no extra hop.

import { BrokerCore, type CoreSnapshot, type CoreStats } from './broker-core.js';
import { RouterTransport } from './transport.js';
import { Offload } from './offload.js';
import { AdmissionPump, drainCore } from './admission.js';
import { appliesTo, parseValidateFlags } from './validation.js';
import { accessPolicy } from './security.js';
import { Listeners } from './listeners.js';
import { LoopDelay, StatsService, mmiStatsReplies } from './stats-service.js';
import type { AggregateOutput } from './stats-report.js';
import type { BrokerImpl, BrokerOptions } from './broker.js';

export class SingleBroker implements BrokerImpl {
  readonly core: BrokerCore;
  readonly listeners: Listeners;
  private readonly transport: RouterTransport;
  private readonly offload: Offload;
  private readonly admission: AdmissionPump;
  private readonly statsService: StatsService;
  private readonly loopDelay = new LoopDelay();
  private timer: NodeJS.Timeout | null = null;
  private readonly t0 = performance.now();

  constructor(private readonly opts: BrokerOptions) {
    const o = opts;
    const rules = parseValidateFlags(o.validate);
    this.core = new BrokerCore({ ...o, validates: rules.length > 0 ? (name) => appliesTo(rules, name) : null, mayRegister: accessPolicy(o.workerGroups) }, o.log);
    this.offload = new Offload(o.offload, rules, o.offloadThreads);
    this.listeners = new Listeners(o);
    const now = () => this.now();
    this.transport = new RouterTransport(this.listeners.io, this.core, now, (err) => o.log('warn', 'socket error', { err: String(err) }));
    this.admission = new AdmissionPump(this.core, this.offload, now, () => this.transport.flush());
    if (rules.length > 0) this.transport.afterHandle = () => this.admission.pump();
    this.statsService = new StatsService(o, this.offload, async () => {
      const snap = this.core.statsSnapshot(Date.now(), this.now());
      this.loopDelay.take(snap.global);
      return [snap];
    }, (out) => {
      const [all, per] = mmiStatsReplies(out);
      this.core.setStatsReplies(all, per);
    });
  }

  get metricsPort(): number | null {
    return this.statsService.metricsPort;
  }

  now(): number {
    return performance.now() - this.t0;
  }

  async start(): Promise<void> {
    await this.offload.init();
    await this.listeners.bind();
    this.transport.start();
    const period = Math.max(5, Math.min(1000, this.opts.heartbeatInterval / 2));
    this.timer = setInterval(() => {
      this.core.tick(this.now());
      this.transport.flush();
    }, period);
    await this.statsService.start();
  }

  snapshot(): CoreSnapshot {
    return this.core.snapshot();
  }

  stats(): CoreStats {
    return this.core.stats;
  }

  aggregateStats(): Promise<AggregateOutput> {
    return this.statsService.aggregate();
  }

  async close(): Promise<void> {
    await this.statsService.close();
    this.loopDelay.close();
    await drainCore(this.core, () => this.transport.flush(), this.admission, () => this.now(), this.opts.shutdownGrace);
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.transport.close();
    await this.offload.close();
    this.listeners.close();
  }
}
