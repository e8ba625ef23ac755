// The zmtp transport (src/zmtp/) as the broker's frame stream.

import { ZmtpRouter, type ZmtpRouterOptions } from '../zmtp/router.js';
import type { CloseReason } from '../zmtp/connection.js';
import type { LogFn } from '../core/broker-core.js';
import type { FrameIO, FrameSink } from './frame-io.js';
import { KeyPolicy, type KeyLists } from './key-policy.js';
import type { PeerPolicy } from '../core/broker-core.js';

/** Close reasons that say a peer broke the protocol (logged at warn, at most once a second). */
const HOSTILE: ReadonlySet<CloseReason> = new Set(['bad-greeting', 'mechanism', 'socket-type', 'bad-command', 'protocol-error', 'frame-too-large']);

export class ZmtpIO implements FrameIO {
  readonly router: ZmtpRouter;
  private sink: FrameSink | null = null;
  private done: (() => void) | null = null;
  private lastWarn = -Infinity;

  /** Set only when CURVE role lists or key grants are in force. */
  readonly policy: PeerPolicy | null;

  constructor(opts: ZmtpRouterOptions, log: LogFn, keys: KeyLists | null = null) {
    const inForce = keys !== null && opts.curve !== undefined && (keys.clients !== null || keys.workers !== null || keys.grants.length > 0);
    this.policy = inForce ? new KeyPolicy(keys, (id) => this.router.curveKeyOf(id)) : null;
    this.router = new ZmtpRouter(opts, {
      message: (frames) => this.sink?.message(frames),
      peerClosed: (id) => this.sink?.peerClosed(id),
      closed: (reason, peer) => {
        const now = performance.now();
        if (HOSTILE.has(reason) && now - this.lastWarn >= 1000) {
          this.lastWarn = now;
          log('warn', 'connection closed: peer broke ZMTP', { reason, peer, total: this.router.counters[reason] });
        } else log('debug', 'connection closed', { reason, peer });
      },
    });
  }

  start(sink: FrameSink): Promise<void> {
    this.sink = sink;
    return new Promise((r) => (this.done = r));
  }

  send(msg: Buffer[], tag = -1): void {
    const failed = this.router.send(msg);
    if (failed !== null) this.sink?.sendFailed(msg[0], failed, tag);
  }

  pause(id: Buffer): void {
    this.router.pause(id);
  }

  resume(id: Buffer): void {
    this.router.resume(id);
  }

  async close(): Promise<void> {
    await this.router.close();
    this.done?.();
  }
}
