// The broker's options and their defaults, in a file that imports nothing of the broker back (the facade, the plain
// and the sharded broker, the listeners and the CLI all depend on it).

import { DEFAULT_CORE_OPTIONS, type CoreOptions, type LogFn } from '../core/broker-core.js';
import { DEFAULT_LIMITS, type Limits } from '../protocol/codec.js';
import type { OffloadMode } from './offload.js';
import type { KeyPair, WorkerGroup } from './security.js';
import type { KeyGrant } from './key-policy.js';
import { ConfigError } from './config-error.js';
import { MAX_CREDIT } from '../protocol/extensions.js';

/** zmtp: the broker speaks ZMTP itself on node:net (src/zmtp/); libzmq: the zeromq binding's ROUTER sockets. */
export type Transport = 'zmtp' | 'libzmq';
export const TRANSPORTS: readonly Transport[] = ['zmtp', 'libzmq'];

export interface BrokerOptions extends Omit<CoreOptions, 'limits' | 'validates'> {
  /** Endpoints to bind, e.g. tcp://127.0.0.1:5555. tcp://127.0.0.1:* picks a free port. */
  bind: string[];
  limits: Limits;
  /** zmtp (default; CURVE and inproc:// endpoints fall back to libzmq) or libzmq. */
  transport: Transport;
  /** zmtp: bytes queued for one peer before sends to it fail as full (the high-water mark in bytes). */
  peerQueueBytes: number;
  /** zmtp: a connection that has not finished its ZMTP handshake within this many ms is closed. */
  handshakeTimeout: number;
  /** libzmq: high-water marks (messages per peer). */
  sendHighWaterMark: number;
  receiveHighWaterMark: number;
  /** On close, how long busy workers get to finish before their requests fail with `shutdown`. */
  shutdownGrace: number;
  /** What runs in the piscina pool: nothing, stats aggregation, validation, or both. */
  offload: OffloadMode;
  offloadThreads: number;
  /** --validate flags (see validation.ts). */
  validate: string[];
  /** Milliseconds between stats aggregations (and log lines); 0 turns the periodic line off. */
  statsInterval: number;
  /** Serve Prometheus text on this port (0 = any free port); null = no endpoint. */
  metricsPort: number | null;
  metricsHost: string;
  /** Protocol cores on worker threads; services are partitioned over them by name. */
  shards: number;
  /**
   * zmtp transport, one core: the most requests one worker connection may hold at once when the worker offers credit
   * (protocol/extensions.ts); 1 offers none (MDP's one request at a time).
   */
  workerCredit: number;
  /** --titanic DIR|URL: serve RFC 9's titanic.* services from a durable store in DIR, or in PostgreSQL at a postgres:// URL (null: off). */
  titanic: string | null;
  /** Bytes the Titanic store may hold. */
  titanicMaxBytes: number;
  /** Titanic requests and replies older than this are deleted (ms). */
  titanicRetention: number;
  /** titanic.reply for a pending request waits up to this long for the reply before it answers 300 (ms; 0: at once). */
  titanicHold: number;
  /** CURVE: the broker's key pair turns encryption on; null = plain TCP. */
  curveKeys: KeyPair | null;
  /** With CURVE, the public keys that may connect (clients and workers); null = any key. */
  allowKeys: string[] | null;
  /** zmtp transport with CURVE: the keys that may act as clients, and as workers (null: any key that may connect). */
  clientKeys: string[] | null;
  workerKeys: string[] | null;
  /** --access: worker endpoints per access group, each with its own allow-list and services (needs CURVE). */
  workerGroups: WorkerGroup[];
  /** --access "keys": the services each key may serve and request (zmtp transport with CURVE). */
  keyGrants: KeyGrant[];
  log: LogFn;
  /** Lowest level passed to `log` (shard threads filter before posting). */
  logLevel: 'debug' | 'info' | 'warn';
}

export const DEFAULT_BROKER_OPTIONS: BrokerOptions = {
  ...DEFAULT_CORE_OPTIONS,
  // Both transports detect dead connections (see listeners.ts), so a busy worker lives as long as its connection.
  connectionLiveness: true,
  bind: ['tcp://127.0.0.1:5555'],
  limits: DEFAULT_LIMITS,
  transport: 'zmtp',
  peerQueueBytes: 16 * 1024 * 1024,
  handshakeTimeout: 10000,
  sendHighWaterMark: 100000,
  receiveHighWaterMark: 100000,
  shutdownGrace: 5000,
  offload: 'none',
  offloadThreads: 1,
  validate: [],
  statsInterval: 10000,
  metricsPort: null,
  metricsHost: '127.0.0.1',
  shards: 1,
  workerCredit: 256,
  titanic: null,
  titanicMaxBytes: 1024 * 1024 * 1024,
  titanicRetention: 7 * 24 * 3600 * 1000,
  titanicHold: 0,
  curveKeys: null,
  allowKeys: null,
  clientKeys: null,
  workerKeys: null,
  workerGroups: [],
  keyGrants: [],
  log: () => {},
  logLevel: 'info',
};

/** The options with defaults filled in, checked; throws ConfigError. */
export function resolveOptions(opts: Partial<BrokerOptions>): BrokerOptions {
  const o: BrokerOptions = { ...DEFAULT_BROKER_OPTIONS, ...opts, limits: { ...DEFAULT_LIMITS, ...opts.limits } };
  if (!Number.isInteger(o.shards) || o.shards < 1) throw new ConfigError('shards', `shards must be a positive integer, got ${o.shards}`);
  if (o.titanic !== null && o.shards > 1) throw new ConfigError('titanic', '--titanic runs on one thread for now; use --shards 1');
  if (!Number.isInteger(o.titanicMaxBytes) || o.titanicMaxBytes < 1) throw new ConfigError('titanic-max-bytes', `titanic-max-bytes must be a positive integer, got ${o.titanicMaxBytes}`);
  if (!Number.isInteger(o.titanicHold) || o.titanicHold < 0 || o.titanicHold > 60000) throw new ConfigError('titanic-hold', `titanic-hold must be an integer of ms from 0 to 60000, got ${o.titanicHold}`);
  if (!Number.isInteger(o.titanicRetention) || o.titanicRetention < 1) throw new ConfigError('titanic-retention', `titanic-retention must be a positive integer of ms, got ${o.titanicRetention}`);
  if (!Number.isInteger(o.workerCredit) || o.workerCredit < 1 || o.workerCredit > MAX_CREDIT) {
    throw new ConfigError('worker-credit', `worker credit must be an integer from 1 to ${MAX_CREDIT}, got ${o.workerCredit}`);
  }
  if (o.workerGroups.length > 0 && o.curveKeys === null) throw new ConfigError('access', 'access groups (workerGroups) need CURVE (curveKeys)');
  if (o.workerGroups.length > 250) throw new ConfigError('access', 'at most 250 access groups');
  if (o.keyGrants.length > 0) {
    if (o.curveKeys === null) throw new ConfigError('access', 'key grants (--access "keys") need CURVE (curveKeys)');
    // libzmq cannot say which key sent a message; access groups are served by libzmq (listeners.ts).
    if (o.transport === 'libzmq' || o.workerGroups.length > 0) {
      throw new ConfigError('access', 'key grants (--access "keys") need the zmtp transport, which serves neither --transport libzmq nor "workerGroups"; use grants or groups, not both');
    }
  }
  for (const ep of o.bind) {
    if (!/^(tcp|ipc|inproc):\/\/.+/.test(ep)) throw new ConfigError('bind', `--bind ${ep}: the broker binds tcp://HOST:PORT, ipc://PATH or inproc://NAME`);
    if (ep.startsWith('tcp://') && !/:(\d{1,5}|\*)$/.test(ep)) throw new ConfigError('bind', `--bind ${ep}: a tcp endpoint needs a port (or * for any free one)`);
  }
  if (!TRANSPORTS.includes(o.transport)) throw new ConfigError('transport', `transport must be one of ${TRANSPORTS.join(', ')}, got '${String(o.transport)}'`);
  return o;
}

/** What SIGHUP reloads: the CURVE lists (files read again). Connections stay; each key's next message sees them. */
export type SecurityLists = Pick<BrokerOptions, 'allowKeys' | 'clientKeys' | 'workerKeys' | 'keyGrants' | 'workerGroups'>;
