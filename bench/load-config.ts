// What one benchmark run is: the simulated load, and the broker flags it runs against.

export interface LoadSpec {
  /** Simulated MDP workers (each its own socket), spread over the services. */
  workers: number;
  /** Simulated clients (each its own socket). */
  clients: number;
  /** Closed loop: requests each client keeps in flight. */
  window: number;
  /** Services named svc-0 .. svc-(n-1); clients cycle through them. */
  services: number;
  /** Request body bytes (16 .. 8 MiB); replies echo it. */
  size: number;
  /** closed: as fast as the windows allow. open: a fixed offered rate, latency from the intended send time. */
  mode: 'closed' | 'open';
  /** open loop: requests per second, all clients together. */
  rate: number;
  /** Worker service time in ms (0 = echo at once). */
  serviceTimeMs: number;
  /** MDP version of the simulated clients and workers. */
  version: 1 | 2;
  /** Bodies are well-formed JSON (for --validate json runs); the header frame is then JSON text too. */
  json: boolean;
  warmupMs: number;
  durationMs: number;
  /** Heartbeat interval the simulated workers use (must match the broker's). */
  heartbeatInterval: number;
  /**
   * How the simulated peers speak ZMTP: zmtp = the project's own ZMTP client side (src/zmtp/dealer.ts, cheap, so the
   * generator costs less than the broker); libzmq = zeromq.js DEALER sockets (a stock libzmq peer); library = the
   * project's Client and Worker objects (mdbroker/client), so the figures are what an application gets.
   */
  peers: 'zmtp' | 'libzmq' | 'library';
  /**
   * CURVE on: the broker gets a fresh key pair, every simulated peer its own client pair. The peers are then libzmq
   * ones (the project's ZMTP client side speaks NULL only), so compare CURVE with NULL under libzmq peers.
   */
  curve: boolean;
  /**
   * Broker processes (1 or more). With several, every simulated worker registers with each (one session per
   * broker, as the Worker library does) and client i uses broker i mod n: the same workers and clients, spread.
   */
  brokers: number;
  /**
   * Failover: SIGKILL the last broker this many ms into the measured window (0: never; needs brokers >= 2). The
   * simulated clients are then the Client library (endpoints: every broker), which moves what the dead broker held.
   */
  killBrokerAtMs: number;
}

export interface RunConfig extends LoadSpec {
  name: string;
  /** Extra broker flags, e.g. { "max-queue": 1000 }. */
  broker: Record<string, string | number>;
  /** Also run the same load through the zero-logic proxy in Node, for the ratio (default true). */
  baseline: boolean;
  /** Also run it through libzmq's own proxy in a native thread (zeromq's Proxy class): the physical floor. */
  native: boolean;
}

export const DEFAULT_RUN: Omit<RunConfig, 'name'> = {
  workers: 10,
  clients: 10,
  window: 16,
  services: 1,
  size: 100,
  mode: 'closed',
  rate: 5000,
  serviceTimeMs: 0,
  version: 1,
  json: false,
  warmupMs: 1000,
  durationMs: 4000,
  heartbeatInterval: 2500,
  peers: 'zmtp',
  curve: false,
  brokers: 1,
  killBrokerAtMs: 0,
  broker: {},
  baseline: true,
  native: false,
};

/** Where the generator connects: one endpoint for an MDP broker, two for the raw proxy. */
export interface Target {
  kind: 'mdp' | 'raw';
  clients: string;
  workers: string;
  /** With CURVE: the broker's public key (Z85). */
  serverKey?: string;
  /** Several brokers: all their endpoints (workers register with each; clients spread). */
  endpoints?: string[];
}

export interface LoadResult {
  /** Replies received inside the measured window. */
  replies: number;
  windowMs: number;
  throughput: number;
  /** Latency percentiles in microseconds. */
  p50: number;
  p99: number;
  p999: number;
  max: number;
  mean: number;
  sent: number;
  answered: number;
  errors: Record<string, number>;
  lost: number;
  duplicates: number;
  /** Generator's own CPU time per reply, microseconds. */
  generatorCpuUsPerReq: number;
  /** Replies per TIMELINE_MS bucket over the measured window (failover runs). */
  timeline?: number[];
}

/** Bucket of the failover timeline, ms. */
export const TIMELINE_MS = 100;

export type LoadMessage =
  | { type: 'ready' }
  | { type: 'window-start' }
  | { type: 'window-end' }
  | { type: 'progress'; phase: 'warmup' | 'measure' | 'drain'; elapsedMs: number; totalMs: number; replies: number }
  | { type: 'result'; result: LoadResult }
  | { type: 'error'; message: string };
