// The loop around BrokerCore: what the frame stream delivers goes to the core, what the core queued goes out.
// Nothing else lives here.

import type { BrokerCore, SendFailure } from '../core/broker-core.js';
import type { Peer } from '../core/peer.js';
import type { FrameIO, FrameSink } from './frame-io.js';

export class RouterTransport implements FrameSink {
  private closed = false;
  private flushing = false;
  private loopDone: Promise<void> | null = null;
  /** Runs after the core handled each message, before the flush (the --validate admission pump). */
  afterHandle: (() => void) | null = null;

  constructor(
    /** The broker's ROUTER socket(s) (a shard's: with its neighbours' clients). */
    private readonly io: FrameIO,
    private readonly core: BrokerCore,
    private readonly now: () => number,
    private readonly onError: (err: unknown) => void,
  ) {}

  start(): void {
    this.loopDone = this.io.start(this);
  }

  message(frames: Buffer[], peer: Peer): void {
    this.core.handle(frames, this.now(), peer);
    if (this.afterHandle !== null) this.afterHandle();
    this.flush();
  }

  /** A request another shard moved here (--shards), from `client` (which stands for its client). */
  moved(frames: Buffer[], client: Peer): void {
    this.core.handleMoved(frames, this.now(), client);
    this.flush();
  }

  sendFailed(peer: Peer, why: SendFailure): void {
    if (this.closed) return;
    this.core.sendFailed(peer, why, this.now());
    // A failure inside flush() is picked up by its loop; a later one needs its own flush.
    if (!this.flushing) this.flush();
  }

  peerClosed(peer: Peer): void {
    if (this.closed) return;
    this.core.peerClosed(peer, this.now());
    this.flush();
  }

  error(err: unknown): void {
    this.onError(err);
  }

  /** Sends everything the core has queued, and pauses or resumes the peers it asked to. */
  flush(): void {
    const core = this.core;
    if (core.flow.length > 0) {
      const io = this.io;
      for (const [peer, pause] of core.flow) {
        if (pause) io.pause?.(peer);
        else io.resume?.(peer);
      }
      core.flow.length = 0;
    }
    const out = core.out;
    if (out.length > 0) {
      const to = core.to;
      const io = this.io;
      this.flushing = true;
      // Iterate by index: a synchronous failure below can make the core append more messages to `out`.
      for (let i = 0; i < out.length; i++) io.send(out[i], to[i]);
      out.length = 0;
      to.length = 0;
      this.flushing = false;
    }
    // After the sends: a transport that reuses frames' memory has counted the writes still to come.
    const done = core.done;
    if (done.length > 0) {
      const release = this.io.release;
      if (release !== undefined) for (let i = 0; i < done.length; i++) release.call(this.io, done[i]);
      done.length = 0;
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.io.close();
    await this.loopDone;
  }
}
