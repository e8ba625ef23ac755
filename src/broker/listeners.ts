// The broker's listening sockets, shared by the plain and the sharded broker: the main ROUTER and one per access
// group, with CURVE and a ZAP domain each when keys are set, bound to their endpoints.

import { Router } from 'zeromq';
import { PeerSockets, socketIO, type FrameIO } from './peer-sockets.js';
import { secureRouter, zap } from './security.js';
import type { BrokerOptions } from './options.js';

export class Listeners {
  readonly io: FrameIO;
  readonly endpoints: string[] = [];
  readonly groupEndpoints: string[][] = [];
  private readonly main: Router;
  private readonly groups: Router[];
  private readonly domains: string[] = [];

  constructor(private readonly opts: BrokerOptions) {
    const router = () => new Router({
      // Without mandatory, ROUTER drops messages to unknown or full peers without a word.
      mandatory: true,
      // Never await a send: a full or vanished peer must fail at once and be told to the core, not queue an EBUSY.
      sendTimeout: 0,
      sendHighWaterMark: opts.sendHighWaterMark,
      receiveHighWaterMark: opts.receiveHighWaterMark,
      // libzmq drops the connection of a peer that sends a frame over this size, before it costs us memory.
      maxMessageSize: opts.limits.maxFrameBytes,
      linger: 1000,
    });
    this.main = router();
    this.groups = opts.workerGroups.map(router);
    this.io = this.groups.length > 0 ? new PeerSockets(this.main, this.groups) : socketIO(this.main);
  }

  /** Connections refused by the allow-lists so far (all sockets). */
  get denied(): number {
    return this.domains.reduce((a, d) => a + zap.deniedCount(d), 0);
  }

  /** Registers the ZAP domains, puts CURVE options on, binds every endpoint. */
  async bind(): Promise<void> {
    const o = this.opts;
    const secure = async (sock: Router, allow: string[] | null) => {
      const sec = await secureRouter(o.curveKeys, allow, o.log);
      if (sec.domain !== null) this.domains.push(sec.domain);
      Object.assign(sock, sec.options);
    };
    await secure(this.main, o.allowKeys);
    for (const ep of o.bind) {
      await this.main.bind(ep);
      this.endpoints.push(this.main.lastEndpoint ?? ep);
    }
    for (let g = 0; g < this.groups.length; g++) {
      const sock = this.groups[g];
      await secure(sock, o.workerGroups[g].allowKeys);
      const bound: string[] = [];
      for (const ep of o.workerGroups[g].bind) {
        await sock.bind(ep);
        bound.push(sock.lastEndpoint ?? ep);
      }
      this.groupEndpoints.push(bound);
    }
  }

  close(): void {
    this.io.close();
    for (const d of this.domains) zap.unregister(d);
  }
}
