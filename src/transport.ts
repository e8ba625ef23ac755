// The socket loop around BrokerCore: receive, hand to the core, send what it queued. Nothing else lives here.
//
// "Fast style" from shared/node-perf-facts.md: receiveTimeout = 0 so that receive() settles at once while messages
// are waiting (no ZMQ_EVENTS syscall pair per call); only when the socket is empty do we switch to an awaited
// receive. Sends are never awaited (sendTimeout = 0): a full pipe or a vanished peer rejects at once and the core
// is told, so nothing is dropped without being counted and answered.

import type { Router } from 'zeromq';
import type { BrokerCore } from './broker-core.js';

/** Messages handled before yielding to the event loop, so timers (heartbeats) keep running under load. */
const BURST = 1000;

function errCode(err: unknown): string {
  return typeof err === 'object' && err !== null && 'code' in err ? String((err as { code: unknown }).code) : '';
}

export class RouterTransport {
  private closed = false;
  private loopDone: Promise<void> | null = null;

  constructor(
    private readonly sock: Router,
    private readonly core: BrokerCore,
    private readonly now: () => number,
    private readonly onError: (err: unknown) => void,
  ) {
    sock.receiveTimeout = 0;
    sock.sendTimeout = 0;
  }

  start(): void {
    this.loopDone = this.loop();
  }

  /** Sends everything the core has queued. */
  flush(): void {
    const out = this.core.out;
    if (out.length === 0) return;
    const sock = this.sock;
    // Iterate by index: a synchronous failure below can make the core append more messages to `out`.
    for (let i = 0; i < out.length; i++) {
      const msg = out[i];
      try {
        sock.send(msg).then(undefined, (err: unknown) => this.sendFailed(msg[0], err));
      } catch (err) {
        this.sendFailed(msg[0], err, true);
      }
    }
    out.length = 0;
  }

  private sendFailed(id: Buffer, err: unknown, sync = false): void {
    if (this.closed) return;
    const code = errCode(err);
    if (code === 'EHOSTUNREACH') this.core.sendFailed(id, 'unreachable', this.now());
    else if (code === 'EAGAIN' || code === 'EBUSY') this.core.sendFailed(id, 'full', this.now());
    else this.onError(err);
    if (!sync) this.flush();
  }

  async close(): Promise<void> {
    this.closed = true;
    if (!this.sock.closed) this.sock.close();
    await this.loopDone;
  }

  private async loop(): Promise<void> {
    const sock = this.sock;
    const core = this.core;
    let burst = 0;
    while (!this.closed) {
      let frames: Buffer[];
      try {
        frames = await sock.receive();
      } catch (err) {
        if (this.closed) return;
        if (errCode(err) !== 'EAGAIN') {
          this.onError(err);
          continue;
        }
        // Socket drained: block until the next message arrives.
        burst = 0;
        sock.receiveTimeout = -1;
        try {
          frames = await sock.receive();
        } catch (err2) {
          if (this.closed) return;
          this.onError(err2);
          continue;
        } finally {
          if (!this.closed) sock.receiveTimeout = 0;
        }
      }
      try {
        core.handle(frames, this.now());
      } catch (err) {
        // The core never throws on input; if it does, that is our bug: report it and keep serving.
        this.onError(err);
      }
      this.flush();
      if (++burst >= BURST) {
        burst = 0;
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
    }
  }
}
