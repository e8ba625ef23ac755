// Control messages between the main thread and the shard threads (worker_threads postMessage). What the shards say
// to each other (requests, replies, work asked for, connections handed over) travels on their own ports in batches
// (exchange.ts); only these rare messages use the thread's port.

import type { CoreSnapshot, CoreStats, LogLevel } from '../../core/broker-core.js';
import type { BrokerOptions, SecurityLists } from '../options.js';
import type { StatsSnapshot } from '../../core/stats.js';
import type { MessagePort } from 'node:worker_threads';

/** Options a shard needs; functions (log) stay on the main thread. */
export type ShardOptions = Omit<BrokerOptions, 'log'>;

export interface ShardInit {
  index: number;
  opts: ShardOptions;
  /** The counters every thread shares (board.ts). */
  board: SharedArrayBuffer;
  /** A port to every other shard, by index (null at its own). */
  ports: (MessagePort | null)[];
}

export type ToShard =
  /** Shard 0: bind the endpoints. */
  | { type: 'bind' }
  /** The other shards: accept on these listening descriptors too (each takes its own duplicate). */
  | { type: 'adopt'; fds: number[] }
  | { type: 'stats'; seq: number }
  /** The mmi.stats answers from the last aggregation. */
  | { type: 'statsReplies'; overall: string; perService: Record<string, string> }
  /** SIGHUP: the CURVE lists read again. */
  | { type: 'reload'; lists: SecurityLists }
  /** Stop taking work, let busy workers finish, fail what is left (the exchange keeps running). */
  | { type: 'drain' }
  /** Every shard has drained: close the connections and end. */
  | { type: 'close' };

export type FromShard =
  | { type: 'ready' }
  | { type: 'bound'; endpoints: string[]; fds: number[] }
  | { type: 'adopted' }
  | { type: 'report'; snapshot: CoreSnapshot; stats: CoreStats; denied: number; connections: number }
  | { type: 'stats'; seq: number; snapshot: StatsSnapshot }
  | { type: 'log'; level: LogLevel; msg: string; fields?: Record<string, unknown> }
  /** An mmi.stats question is held here: aggregate (a collection that starts now reaches it). */
  | { type: 'statsWanted' }
  | { type: 'drained' }
  | { type: 'closed' };

export const LEVELS: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2 };

/** How often a shard reports its counters to the main thread. */
export const REPORT_MS = 50;
