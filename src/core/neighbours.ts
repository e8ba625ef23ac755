// The other cores of a sharded broker, as one core sees them (--shards N: every thread runs a whole core for the
// connections it accepted). A core serves its own clients with its own workers first; a request crosses to another
// thread only when this one has no idle worker for it and another has, or when this one has no worker for its
// service at all. The thread's shell implements this over shared counters and batched ports (src/broker/sharded/).

import type { Peer } from './peer.js';

/** A service's place on the board the threads share (its counts, and where the others keep theirs). */
export interface SharedService {
  readonly name: string;
}

export interface Neighbours {
  /** The service now exists in this core: its counts go on the board. Null when the board is full (not shared). */
  open(name: string): SharedService | null;
  /** The core forgot the service. */
  close(s: SharedService): void;
  /** This core's counts for the service, for the other threads to read. */
  publish(s: SharedService, idle: number, queued: number, workers: number): void;
  /**
   * The thread a new request should go to, or -1 to keep it here: one with an idle worker and nothing queued, or,
   * when this core has no worker for the service (`workers` is 0), one that has workers.
   */
  target(s: SharedService, workers: number): number;
  /**
   * This core has `idle` idle workers and nothing queued for the service, or has `workers` and could serve requests
   * that wait on a thread without any: ask the threads that queue the service's requests to move some here.
   */
  want(s: SharedService, idle: number, workers: number): void;
  /** Hands a client's request (its message as received) to another thread's core. */
  move(to: number, frames: Buffer[], client: Peer): void;
  /** Workers for the service on the other threads. */
  workers(name: string): number;
  /** Names of the services with workers on the other threads. */
  served(): Buffer[];
}
