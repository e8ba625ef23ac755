// The zero-logic baseline: ROUTER (clients) to DEALER (workers) and back, in Node with the same zeromq binding and
// the same receive loop as the broker. Whatever the broker costs beyond this is MDP logic. Its workers are plain
// echo peers and DEALER hands them requests round-robin with no one-at-a-time rule, so this is an upper bound.
// Forked by bench/run.ts; reports its endpoints over IPC and runs until told to stop (SIGTERM or disconnect).

import { Dealer, Router } from 'zeromq';
import { receiveLoop } from '../src/sockets/receive-loop.js';

const front = new Router({ sendTimeout: 0, sendHighWaterMark: 0, receiveHighWaterMark: 0, linger: 0 });
const back = new Dealer({ sendTimeout: 0, sendHighWaterMark: 0, receiveHighWaterMark: 0, linger: 0 });
let dropped = 0;

function forward(to: Router | Dealer, frames: Buffer[]): void {
  try {
    to.send(frames).catch(() => dropped++);
  } catch {
    dropped++;
  }
}

function fail(err: unknown): void {
  process.stderr.write(`raw-proxy: ${String(err)}\n`);
}

async function main(): Promise<void> {
  await front.bind('tcp://127.0.0.1:*');
  await back.bind('tcp://127.0.0.1:*');
  void receiveLoop(front, (f) => forward(back, f), fail);
  void receiveLoop(back, (f) => forward(front, f), fail);
  process.send?.({ type: 'endpoints', frontend: front.lastEndpoint, backend: back.lastEndpoint });
}

function stop(): void {
  front.close();
  back.close();
  if (dropped > 0) process.stderr.write(`raw-proxy: ${dropped} messages dropped\n`);
  process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.on('disconnect', stop);
void main();
