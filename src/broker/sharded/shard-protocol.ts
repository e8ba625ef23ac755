// Control messages between the main thread and shard threads (worker_threads postMessage). Frames, and the end of
// each connection, travel in batches on a MessageChannel of their own (shard-io.ts); only these rare messages use
// the thread's port.

import type { CoreSnapshot, CoreStats, LogLevel } from '../../core/broker-core.js';
import type { BrokerOptions } from '../options.js';
import type { SendFailure } from '../../core/broker-core.js';
import type { StatsSnapshot } from '../../core/stats.js';
import type { MessagePort } from 'node:worker_threads';

/** Options a shard needs; functions (log) stay on the main thread. */
export type ShardOptions = Omit<BrokerOptions, 'log'>;

export interface ShardInit {
  index: number;
  /** The frame pipe's shard end (transferred). */
  port: MessagePort;
  opts: ShardOptions;
}

export type ToShard =
  /** A send to the connection with this serial failed (its end travels on the pipe, in order with its messages). */
  | { type: 'sendFailed'; serial: number; why: SendFailure }
  | { type: 'stats'; seq: number }
  | { type: 'close' };

export type FromShard =
  | { type: 'ready' }
  /** departed: serials of connections whose worker the shard forgot (the next READY on them is routed afresh). */
  | { type: 'report'; snapshot: CoreSnapshot; stats: CoreStats; served: string[]; departed: number[] }
  | { type: 'stats'; seq: number; snapshot: StatsSnapshot }
  | { type: 'log'; level: LogLevel; msg: string; fields?: Record<string, unknown> }
  | { type: 'closed' };

export const LEVELS: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2 };

/** How often a shard reports its counters and routing changes to the main thread. */
export const REPORT_MS = 50;
