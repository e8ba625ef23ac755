// Titanic's embedded store: one LMDB environment in a directory (chosen by measurement, docs/titanic.md). A stored
// request is one record under its UUID: when it was stored, its service, its body frames, and once answered, the
// reply's frames. A write resolves only after its commit is synced to disk (overlappingSync off); lmdb-js puts the
// writes of one event-loop turn in one transaction, so concurrent requests share one sync (group commit).
//
// The store keeps a byte budget: a request that would take it past the budget is refused before anything is
// written. LMDB lets several processes open one environment, so the store takes a lock file of its own: a second
// broker on the same directory is refused at open with a readable error; a lock left by a process that is gone
// (kill -9) is taken over.

import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeSync, accessSync, constants } from 'node:fs';
import { join } from 'node:path';
import { open, type RootDatabase } from 'lmdb';

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

export class StoreError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StoreError';
  }
}

const VERSION = 1;
const PENDING = 0;
const ANSWERED = 1;

/** version u8, state u8, storedAt f64, then frame groups: service (1 frame), body, reply (count u32, each len u32 + bytes). */
function encode(storedAt: number, service: Buffer, body: readonly Buffer[], reply: readonly Buffer[] | null): Buffer {
  let size = 2 + 8 + 4 + 4 + service.length + 4;
  for (const f of body) size += 4 + f.length;
  size += 4;
  if (reply !== null) for (const f of reply) size += 4 + f.length;
  const b = Buffer.allocUnsafe(size);
  b[0] = VERSION;
  b[1] = reply === null ? PENDING : ANSWERED;
  b.writeDoubleLE(storedAt, 2);
  let at = 10;
  const group = (frames: readonly Buffer[]) => {
    b.writeUInt32LE(frames.length, at);
    at += 4;
    for (const f of frames) {
      b.writeUInt32LE(f.length, at);
      f.copy(b, at + 4);
      at += 4 + f.length;
    }
  };
  group([service]);
  group(body);
  group(reply ?? []);
  return b;
}

function decode(uuid: string, b: Buffer): Stored {
  if (b[0] !== VERSION) throw new StoreError(`record ${uuid} has format version ${b[0]}, this broker reads ${VERSION}`);
  const storedAt = b.readDoubleLE(2);
  let at = 10;
  const group = () => {
    const n = b.readUInt32LE(at);
    at += 4;
    const frames: Buffer[] = new Array(n);
    for (let i = 0; i < n; i++) {
      const len = b.readUInt32LE(at);
      // Copied out: LMDB's buffers are valid only until the next read on this thread.
      frames[i] = Buffer.from(b.subarray(at + 4, at + 4 + len));
      at += 4 + len;
    }
    return frames;
  };
  const [service] = group();
  const body = group();
  const reply = group();
  return { uuid, storedAt, service, body, reply: b[1] === ANSWERED ? reply : null };
}

/** The pid in a lock file, when that process still runs; null for a stale or unreadable lock. */
function liveHolder(path: string): number | null {
  let pid: number;
  try {
    pid = Number(readFileSync(path, 'latin1').trim());
  } catch {
    return null;
  }
  if (!Number.isInteger(pid) || pid <= 0 || pid === process.pid) return null;
  try {
    process.kill(pid, 0);
    return pid;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM' ? pid : null;
  }
}

export interface StoreOptions {
  /** Bytes of stored requests and replies the store may hold; past it a new request is refused. */
  maxBytes: number;
}

export class TitanicStore {
  private readonly db: RootDatabase<Buffer, string>;
  /** Bytes of the records held now (as encoded). */
  bytes = 0;
  /** Each record's size and when its request was stored (retention scans this, not the disk). */
  private readonly records = new Map<string, { bytes: number; storedAt: number }>();
  private closed = false;

  private constructor(
    readonly dir: string,
    private readonly lock: string,
    private readonly opts: StoreOptions,
  ) {
    this.db = open<Buffer, string>({ path: join(dir, 'titanic.lmdb'), encoding: 'binary', compression: false, overlappingSync: false });
    for (const { key, value } of this.db.getRange()) {
      this.records.set(key, { bytes: value.length, storedAt: value.readDoubleLE(2) });
      this.bytes += value.length;
    }
  }

  /** Opens (or creates) the store in `dir`; throws a StoreError that says why when it cannot. */
  static open(dir: string, opts: StoreOptions): TitanicStore {
    try {
      mkdirSync(dir, { recursive: true });
      accessSync(dir, constants.W_OK);
    } catch (err) {
      throw new StoreError(`titanic store ${dir}: not a writable directory (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
    }
    const lock = join(dir, 'broker.lock');
    const holder = liveHolder(lock);
    if (holder !== null) throw new StoreError(`titanic store ${dir} is in use by another broker (pid ${holder}); one broker per store directory`);
    const fd = openSync(lock, 'w');
    writeSync(fd, `${process.pid}\n`);
    closeSync(fd);
    try {
      return new TitanicStore(dir, lock, opts);
    } catch (err) {
      rmSync(lock, { force: true });
      throw new StoreError(`titanic store ${dir}: ${String(err)}`);
    }
  }

  /**
   * Stores a new request durably: resolves once it is on disk. Throws StoreError at once, writing nothing, when it
   * would take the store past its byte budget.
   */
  async store(uuid: string, service: Buffer, body: readonly Buffer[], now: number): Promise<void> {
    const value = encode(now, service, body, null);
    if (this.bytes + value.length > this.opts.maxBytes) {
      throw new StoreError(`the store holds ${this.bytes} bytes; this request (${value.length}) would pass its budget of ${this.opts.maxBytes}`);
    }
    this.account(uuid, value.length, now);
    await this.db.put(uuid, value);
  }

  /** Stores the reply of a stored request durably (replaces a reply already there). False when it is not stored. */
  async answer(uuid: string, reply: readonly Buffer[]): Promise<boolean> {
    const s = this.get(uuid);
    if (s === undefined) return false;
    const value = encode(s.storedAt, s.service, s.body, reply);
    this.account(uuid, value.length, s.storedAt);
    await this.db.put(uuid, value);
    return true;
  }

  get(uuid: string): Stored | undefined {
    const b = this.db.get(uuid);
    return b === undefined ? undefined : decode(uuid, b);
  }

  /** Deletes a request and its reply, durably; resolves true whether or not it was there (idempotent). */
  async remove(uuid: string): Promise<boolean> {
    const had = this.records.get(uuid);
    if (had !== undefined) {
      this.records.delete(uuid);
      this.bytes -= had.bytes;
    }
    await this.db.remove(uuid);
    return true;
  }

  /** Every stored request not yet answered, oldest first (what a restart executes). */
  pending(): Stored[] {
    const out: Stored[] = [];
    for (const { key, value } of this.db.getRange()) if (value[1] === PENDING) out.push(decode(key, value));
    return out.sort((a, b) => a.storedAt - b.storedAt);
  }

  /** UUIDs of the requests stored before `before` (ms since the epoch): past their retention. */
  storedBefore(before: number): string[] {
    const out: string[] = [];
    for (const [uuid, r] of this.records) if (r.storedAt < before) out.push(uuid);
    return out;
  }

  /** Records held now. */
  get count(): number {
    return this.records.size;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.db.close();
    if (liveHolder(this.lock) === null) rmSync(this.lock, { force: true });
  }

  private account(uuid: string, size: number, storedAt: number): void {
    this.bytes += size - (this.records.get(uuid)?.bytes ?? 0);
    this.records.set(uuid, { bytes: size, storedAt });
  }
}
