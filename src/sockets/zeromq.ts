// zeromq, loaded on first use: a broker on the zmtp transport without CURVE or shards never touches the binding, and
// does not pay for loading it (~9 MB of RSS, measured). The package is CommonJS, so a synchronous require works.

import { createRequire } from 'node:module';

type Zeromq = typeof import('zeromq');

const require = createRequire(import.meta.url);

export function zeromq(): Zeromq {
  return require('zeromq') as Zeromq;
}

/**
 * libzmq's ZMTP heartbeat options for a socket whose MDP heartbeat is `interval` x `liveness`: the same period, but
 * no faster than 1 s and no shorter a timeout than 3 s. libzmq PINGs every peer each period whatever else flows, so a
 * test-speed MDP interval (50 ms) over hundreds of sockets would be thousands of PINGs a second, and a busy process
 * would drop healthy peers.
 */
export function zmtpHeartbeat(interval: number, liveness: number): { heartbeatInterval: number; heartbeatTimeout: number; heartbeatTimeToLive: number } {
  const ivl = Math.max(1000, interval);
  const timeout = Math.max(3000, ivl * liveness);
  return { heartbeatInterval: ivl, heartbeatTimeout: timeout, heartbeatTimeToLive: timeout };
}
