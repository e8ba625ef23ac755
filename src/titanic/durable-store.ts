// What Titanic needs of a store, whichever holds the requests: the embedded LMDB store (one broker, a directory) or
// PostgreSQL (any number of brokers sharing one set of requests). Every write resolves only once it is durable; a
// request is claimed by the broker that runs it, so two brokers never run it at once (the embedded store has one
// broker, so everything it holds is its own).

import type { LogFn } from '../core/broker-core.js';

/** A stored request as read back. */
export interface Stored {
  readonly uuid: string;
  /** When it was stored (ms since the epoch). */
  readonly storedAt: number;
  readonly service: Buffer;
  readonly body: Buffer[];
  /** The reply's frames, once answered. */
  readonly reply: Buffer[] | null;
}

/** A store that cannot be opened, a request past the byte budget, a store that is not answering: says why. */
export class StoreError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StoreError';
  }
}

export interface StoreCounts {
  /** Bytes of the requests and replies held (PostgreSQL: as of the last refresh, about a second old). */
  bytes: number;
  /** Requests held, answered or not. */
  records: number;
  /** Requests held without a reply. */
  pending: number;
}

export interface DurableStore {
  /** Where it is, for logs: a directory, or a URL without its password. */
  readonly where: string;
  /** Several brokers share it: requests other brokers stored are claimed here before they run. */
  readonly shared: boolean;
  /**
   * Stores a new request durably. With `claim`, this broker claims it to run it; resolves whether it did (a shared
   * store that lost its server's session stores it unclaimed, for whichever broker claims it first). Rejects with a
   * StoreError at once, writing nothing, when it would take the store past its byte budget.
   */
  store(r: Stored, claim: boolean): Promise<boolean>;
  /** Stores the reply of a stored request durably. False when it is not stored or already has a reply (the first stays). */
  answer(uuid: string, reply: readonly Buffer[]): Promise<boolean>;
  lookup(uuid: string): Promise<Stored | undefined>;
  /** Deletes a request and its reply durably; idempotent. */
  remove(uuid: string): Promise<void>;
  /**
   * Claims up to `max` requests that have no reply, no claim and whose pause is over (`now`, ms since the epoch),
   * oldest first. `services`: only those (null: any).
   */
  claim(max: number, now: number, services: readonly string[] | null): Promise<Stored[]>;
  /** Gives a claimed request back, to run again (here or on any broker) no sooner than `notBefore`. */
  unclaim(uuid: string, notBefore: number): Promise<void>;
  /** Deletes every request stored before `before` (ms since the epoch); resolves their UUIDs. */
  expire(before: number): Promise<string[]>;
  /** The broker's clock tick (ms since the epoch): a shared store refreshes its counts and frees dead brokers' claims. */
  tick(now: number): void;
  counts(): StoreCounts;
  /** Waits for the writes in progress; a shared store gives back what this broker claimed and did not answer. */
  close(): Promise<void>;
}

/** Frames as one buffer: count u32, then each frame as length u32 + bytes (little-endian). */
export function packFrames(frames: readonly Buffer[]): Buffer {
  let size = 4;
  for (const f of frames) size += 4 + f.length;
  const b = Buffer.allocUnsafe(size);
  b.writeUInt32LE(frames.length, 0);
  let at = 4;
  for (const f of frames) {
    b.writeUInt32LE(f.length, at);
    f.copy(b, at + 4);
    at += 4 + f.length;
  }
  return b;
}

/**
 * packFrames' frames back, from `at`; returns where they end too. Each frame is copied out: the buffer may be one
 * the store reuses (LMDB's read buffer is valid only until the next read on this thread).
 */
export function unpackFrames(b: Buffer, at = 0): { frames: Buffer[]; end: number } {
  if (b.length < at + 4) throw new StoreError('a stored record is truncated');
  const n = b.readUInt32LE(at);
  at += 4;
  const frames: Buffer[] = [];
  for (let i = 0; i < n; i++) {
    if (b.length < at + 4) throw new StoreError('a stored record is truncated');
    const len = b.readUInt32LE(at);
    if (b.length < at + 4 + len) throw new StoreError('a stored record is truncated');
    frames.push(Buffer.from(b.subarray(at + 4, at + 4 + len)));
    at += 4 + len;
  }
  return { frames, end: at };
}

/** An error as a log field: `CODE: message` where the error has a code (PostgreSQL's and Node's do). */
export function describeError(err: unknown): string {
  const e = err as { code?: string; message?: string } | null;
  return e?.code !== undefined && e.message !== undefined ? `${e.code}: ${e.message}` : String(e?.message ?? err);
}

/**
 * A warning about the store at most every 10 s: a store that is down fails every request and every tick, and one
 * line says so as well as thousands.
 */
export function storeWarnings(log: LogFn, where: () => string | undefined): (msg: string, err: unknown) => void {
  let last = -Infinity;
  return (msg, err) => {
    const now = Date.now();
    if (now - last < 10000) return;
    last = now;
    log('warn', msg, { store: where(), err: describeError(err) });
  };
}
