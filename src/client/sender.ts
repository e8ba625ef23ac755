// zeromq allows one pending send() per socket; a second throws EBUSY. Client and worker code sends from timers
// and handlers at any time, so every send goes through this FIFO, which keeps at most one send in flight.

import type { Dealer } from 'zeromq';
import { createRequire } from 'node:module';
import type * as QueueModule from 'mnemonist/queue';

// The one module, not mnemonist's index (which loads every structure it has: 7 MiB of RSS).
const Queue = createRequire(import.meta.url)('mnemonist/queue') as typeof QueueModule.default.default;

export class Sender {
  private readonly queue = new Queue<Buffer[]>();
  private pumping = false;
  private idleWaiters: (() => void)[] = [];

  constructor(private readonly sock: Dealer) {}

  send(msg: Buffer[]): void {
    this.queue.enqueue(msg);
    if (!this.pumping) void this.pump();
  }

  /** Resolves once everything queued so far has been handed to ZeroMQ. */
  drained(): Promise<void> {
    if (!this.pumping && this.queue.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private async pump(): Promise<void> {
    this.pumping = true;
    while (this.queue.size > 0) {
      const msg = this.queue.dequeue() as Buffer[];
      const sock = this.sock;
      if (sock.closed) continue;
      try {
        await sock.send(msg);
      } catch {
        // The socket was closed or replaced under us; whoever replaced it resends what matters.
      }
    }
    this.pumping = false;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }
}

export type Frame = Buffer | string | Uint8Array;

export function toFrames(body: Frame | readonly Frame[] | undefined): Buffer[] {
  if (body === undefined) return [];
  const list = Array.isArray(body) ? (body as readonly Frame[]) : [body as Frame];
  return list.map((f) => (Buffer.isBuffer(f) ? f : typeof f === 'string' ? Buffer.from(f) : Buffer.from(f.buffer, f.byteOffset, f.byteLength)));
}
