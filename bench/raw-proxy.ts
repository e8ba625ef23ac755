// The zero-logic baselines: ROUTER (clients) to DEALER (workers) and back. Its workers are plain echo peers and
// DEALER hands them requests round-robin with no one-at-a-time rule, so each is an upper bound.
//   js:     in Node, with the zeromq binding and the receive loop the libzmq transport uses
//   native: libzmq's own zmq_proxy in a native thread (zeromq's Proxy class): no JavaScript per message at all,
//           the physical floor for a ZeroMQ ROUTER-DEALER hop on this machine
// Forked by bench/run.ts with 'js' or 'native' as argv[2]; reports its endpoints over IPC and runs until told to
// stop (SIGTERM or disconnect).

import { Dealer, Proxy, Router } from 'zeromq';
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

const native = process.argv[2] === 'native';
const proxy = native ? new Proxy(front, back) : null;

async function main(): Promise<void> {
  await front.bind('tcp://127.0.0.1:*');
  await back.bind('tcp://127.0.0.1:*');
  if (proxy) {
    proxy.run().catch(fail);
  } else {
    void receiveLoop(front, (f) => forward(back, f), fail);
    void receiveLoop(back, (f) => forward(front, f), fail);
  }
  process.send?.({ type: 'endpoints', frontend: front.lastEndpoint, backend: back.lastEndpoint });
}

function stop(): void {
  // A proxy's sockets belong to its thread until it ends; exiting the process ends both.
  if (proxy) process.exit(0);
  front.close();
  back.close();
  if (dropped > 0) process.stderr.write(`raw-proxy: ${dropped} messages dropped\n`);
  process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.on('disconnect', stop);
void main();
