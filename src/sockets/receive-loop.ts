// The receive loop shared by the broker's transport and the benchmark's peers.
//
// "Fast style" from shared/node-perf-facts.md: with receiveTimeout = 0, receive() settles at once while messages
// are queued, skipping the ZMQ_EVENTS syscall pair zeromq.js otherwise makes per call; only when the socket is
// empty does the loop switch to an awaited (polled) receive. It yields to the event loop every BURST messages so
// timers (heartbeats) keep running under load.

import type { Dealer, Pair, Router } from 'zeromq';

const BURST = 1000;

type Receiver = Dealer | Router | Pair;

export function errorCode(err: unknown): string {
  return typeof err === 'object' && err !== null && 'code' in err ? String((err as { code: unknown }).code) : '';
}

/**
 * Calls onMessage for every message until the socket closes. `fast: false` uses plain awaited receives, cheaper
 * for sockets that see a message now and then (an EAGAIN rejection costs an Error object each time it drains).
 */
export async function receiveLoop(
  sock: Receiver,
  onMessage: (frames: Buffer[]) => void,
  onError: (err: unknown) => void,
  fast = true,
): Promise<void> {
  sock.receiveTimeout = fast ? 0 : -1;
  let burst = 0;
  while (!sock.closed) {
    let frames: Buffer[];
    try {
      frames = await sock.receive();
    } catch (err) {
      if (sock.closed) return;
      if (errorCode(err) !== 'EAGAIN') {
        onError(err);
        continue;
      }
      burst = 0;
      sock.receiveTimeout = -1;
      try {
        frames = await sock.receive();
      } catch (err2) {
        if (sock.closed) return;
        onError(err2);
        continue;
      } finally {
        if (!sock.closed) sock.receiveTimeout = 0;
      }
    }
    try {
      onMessage(frames);
    } catch (err) {
      onError(err);
    }
    if (fast && ++burst >= BURST) {
      burst = 0;
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }
}
