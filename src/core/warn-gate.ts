// Which warnings a peer causes reach the log: once a minute per peer, and at most 20 a 10 s window for all peers
// together (a flood from many connections). Callers log the rest at debug; their counters keep the totals. Used by
// the core and by the sharded broker's main thread, which refuses requests and READYs before they reach a shard.

import type { Peer } from './peer.js';

const PER_PEER_MS = 60000;
const WINDOW_MS = 10000;
const PER_WINDOW = 20;

export class WarnGate {
  private windowStart = -Infinity;
  private inWindow = 0;

  /** Whether a warning caused by `peer` goes to the log at `now` (ms); if so, it is counted against both limits. */
  allows(peer: Peer, now: number): boolean {
    if (now - peer.lastWarned < PER_PEER_MS) return false;
    if (now - this.windowStart >= WINDOW_MS) {
      this.windowStart = now;
      this.inWindow = 0;
    }
    if (this.inWindow >= PER_WINDOW) return false;
    this.inWindow++;
    peer.lastWarned = now;
    return true;
  }
}
