// The zmtp transport (src/zmtp/) as the broker's frame stream.

import { ZmtpRouter, type ZmtpRouterOptions } from '../zmtp/router.js';
import type { CloseReason, ZmtpConnection } from '../zmtp/connection.js';
import type { LogFn } from '../core/broker-core.js';
import type { Peer } from '../core/peer.js';
import type { FrameIO, FrameSink } from './frame-io.js';
import { KeyPolicy, type KeyLists } from './key-policy.js';
import { release as releaseFrames } from '../zmtp/frame-pool.js';

/** Close reasons that say a peer broke the protocol (logged at warn, at most once a second). */
const HOSTILE: ReadonlySet<CloseReason> = new Set([
  'bad-greeting', 'mechanism', 'socket-type', 'bad-command', 'protocol-error', 'frame-too-large', 'message-too-large', 'bad-identity',
]);

/** Hosts remembered for the once-a-minute warning about an old ZMTP version (they redial several times a second). */
const MAX_OLD_HOSTS = 1024;

export class ZmtpIO implements FrameIO {
  readonly router: ZmtpRouter;
  private sink: FrameSink | null = null;
  private done: (() => void) | null = null;
  private lastWarn = -Infinity;
  private readonly oldHosts = new Map<string, number>();

  /** Set whenever CURVE is on (role lists and key grants may come with a reload): each Peer carries its key's Rights. */
  readonly policy: KeyPolicy | null;
  readonly requireRights: boolean;

  constructor(opts: ZmtpRouterOptions, private readonly log: LogFn, keys: KeyLists | null = null) {
    const policy = opts.curve !== undefined ? new KeyPolicy(keys ?? { clients: null, workers: null, grants: [] }) : null;
    this.policy = policy;
    this.requireRights = policy !== null;
    this.router = new ZmtpRouter({ ...opts, rightsOf: policy === null ? undefined : (key) => policy.rightsOf(key) }, {
      message: (frames, peer) => this.sink?.message(frames, peer),
      peerClosed: (peer) => this.sink?.peerClosed(peer),
      closed: (reason, conn) => this.closed(reason, conn),
    });
  }

  /** CURVE lists read again (SIGHUP): who may connect from now on, and what every key may do from its next message. */
  reload(allow: ReadonlySet<string> | null, keys: KeyLists): void {
    this.router.setAllow(allow);
    this.policy?.replace(keys);
  }

  start(sink: FrameSink): Promise<void> {
    this.sink = sink;
    return new Promise((r) => (this.done = r));
  }

  send(msg: Buffer[], peer: Peer, tag = -1): void {
    const failed = this.router.send(msg, peer);
    if (failed !== null) this.sink?.sendFailed(peer, failed, tag);
  }

  peer(serial: number): Peer | null {
    return this.router.peer(serial);
  }

  release(frames: Buffer[]): void {
    releaseFrames(frames);
  }

  pause(peer: Peer): void {
    this.router.pause(peer);
  }

  resume(peer: Peer): void {
    this.router.resume(peer);
  }

  async close(): Promise<void> {
    await this.router.close();
    this.done?.();
  }

  private closed(reason: CloseReason, conn: ZmtpConnection): void {
    const now = performance.now();
    const total = this.router.counters[reason];
    if (reason === 'old-version') {
      // Said once a minute per host: such a peer redials at once, and each try would be a line.
      const host = conn.host;
      const last = this.oldHosts.get(host);
      if (last !== undefined && now - last < 60000) return;
      if (this.oldHosts.size >= MAX_OLD_HOSTS) this.oldHosts.clear();
      this.oldHosts.set(host, now);
      // The octet after the signature: 0 for ZMTP 1.0 with a long identity, 1 for ZMTP 2.0 (RFC 15's revision).
      const version = conn.peerMajor === 0 ? '1.0' : conn.peerMajor === 1 ? '2.0' : `${conn.peerMajor}.x`;
      this.log('warn', `peer speaks ZMTP ${version}; the zmtp transport serves ZMTP 3.0 and later (--transport libzmq serves ZMTP 2.0)`, {
        peer: conn.address, total,
      });
      return;
    }
    if (HOSTILE.has(reason) && now - this.lastWarn >= 1000) {
      this.lastWarn = now;
      this.log('warn', 'connection closed: peer broke ZMTP', { reason, peer: conn.address, total });
    } else this.log('debug', 'connection closed', { reason, peer: conn.address });
  }
}
