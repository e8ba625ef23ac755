// The socket loop around BrokerCore: receive, hand to the core, send what it queued. Nothing else lives here.
//
// Sends are never awaited (the sockets have sendTimeout = 0): a full pipe or a vanished peer (ROUTER mandatory)
// rejects at once and the core is told, so nothing is dropped without being counted and answered.

import type { BrokerCore } from '../core/broker-core.js';
import { errorCode } from '../sockets/receive-loop.js';
import type { FrameIO } from './peer-sockets.js';

/** What a failed un-awaited send means for the core: the peer is gone, its pipe is full, or (null) neither. */
export function sendFailure(err: unknown): 'unreachable' | 'full' | null {
  const code = errorCode(err);
  return code === 'EHOSTUNREACH' ? 'unreachable' : code === 'EAGAIN' || code === 'EBUSY' ? 'full' : null;
}

export class RouterTransport {
  private closed = false;
  private loopDone: Promise<void> | null = null;
  /** Runs after the core handled each message, before the flush (the --validate admission pump). */
  afterHandle: (() => void) | null = null;

  constructor(
    /** The broker's ROUTER socket(s), or a shard's inproc PAIR to the main thread. */
    private readonly io: FrameIO,
    private readonly core: BrokerCore,
    private readonly now: () => number,
    private readonly onError: (err: unknown) => void,
  ) {}

  start(): void {
    this.loopDone = this.io.start((frames) => this.onMessage(frames), this.onError);
  }

  private onMessage(frames: Buffer[]): void {
    this.core.handle(frames, this.now());
    if (this.afterHandle !== null) this.afterHandle();
    this.flush();
  }

  /** Sends everything the core has queued. */
  flush(): void {
    const out = this.core.out;
    if (out.length === 0) return;
    const io = this.io;
    // Iterate by index: a synchronous failure below can make the core append more messages to `out`.
    for (let i = 0; i < out.length; i++) {
      const msg = out[i];
      try {
        io.send(msg).then(undefined, (err: unknown) => this.sendFailed(msg[0], err));
      } catch (err) {
        this.sendFailed(msg[0], err, true);
      }
    }
    out.length = 0;
  }

  private sendFailed(id: Buffer, err: unknown, sync = false): void {
    if (this.closed) return;
    const why = sendFailure(err);
    if (why !== null) this.core.sendFailed(id, why, this.now());
    else this.onError(err);
    if (!sync) this.flush();
  }

  async close(): Promise<void> {
    this.closed = true;
    this.io.close();
    await this.loopDone;
  }
}
