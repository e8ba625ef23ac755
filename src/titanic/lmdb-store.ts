// Titanic's embedded store (--titanic DIR): one LMDB environment in a directory, for one broker (chosen by
// measurement, docs/titanic.md). A stored request is one record under its UUID: when it was stored, its service, its
// body frames, and once answered, the reply's frames. A write resolves only after its commit is synced to disk
// (overlappingSync off); lmdb-js puts the writes of one event-loop turn in one transaction, so concurrent requests
// share one sync (group commit).
//
// The store keeps a byte budget: a request that would take it past the budget is refused before anything is
// written. LMDB lets several processes open one environment, so the store takes a lock file of its own: a second
// broker on the same directory is refused at open with a readable error; a lock left by a process that is gone
// (kill -9) is taken over.

import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeSync, accessSync, constants } from 'node:fs';
import { join } from 'node:path';
import { open, type RootDatabase } from 'lmdb';
import { StoreError, packFrames, unpackFrames, type DurableStore, type StoreCounts, type Stored } from './durable-store.js';

const VERSION = 1;
const PENDING = 0;
const ANSWERED = 1;
/** version u8, state u8, storedAt f64 */
const HEAD = 10;

/** The record: version u8, state u8, storedAt f64, then packFrames of the service, of the body, of the reply. */
function encode(s: Stored): Buffer {
  const parts = [packFrames([s.service]), packFrames(s.body), packFrames(s.reply ?? [])];
  const b = Buffer.allocUnsafe(HEAD + parts[0].length + parts[1].length + parts[2].length);
  b[0] = VERSION;
  b[1] = s.reply === null ? PENDING : ANSWERED;
  b.writeDoubleLE(s.storedAt, 2);
  let at = HEAD;
  for (const p of parts) at += p.copy(b, at);
  return b;
}

function decode(uuid: string, b: Buffer): Stored {
  if (b[0] !== VERSION) throw new StoreError(`record ${uuid} has format version ${b[0]}, this broker reads ${VERSION}`);
  const service = unpackFrames(b, HEAD);
  const body = unpackFrames(b, service.end);
  const reply = unpackFrames(b, body.end);
  return { uuid, storedAt: b.readDoubleLE(2), service: service.frames[0], body: body.frames, reply: b[1] === ANSWERED ? reply.frames : null };
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

interface Held {
  bytes: number;
  storedAt: number;
  answered: boolean;
}

export class LmdbStore implements DurableStore {
  readonly shared = false;
  private readonly db: RootDatabase<Buffer, string>;
  /** Bytes of the records held now (as encoded). */
  private bytes = 0;
  private pendingCount = 0;
  /** Each record's size, when its request was stored and whether it has its reply (retention scans this, not the disk). */
  private readonly records = new Map<string, Held>();
  /** Unanswered requests found at open, oldest first: claim() hands them out once. */
  private fresh: string[] = [];
  /** Requests given back to run again, each with when it may (in the order given back: one pause for all). */
  private later: { uuid: string; at: number }[] = [];
  private closed = false;

  private constructor(
    readonly where: string,
    private readonly lock: string,
    private readonly opts: StoreOptions,
  ) {
    this.db = open<Buffer, string>({ path: join(where, 'titanic.lmdb'), encoding: 'binary', compression: false, overlappingSync: false });
    const pending: { uuid: string; storedAt: number }[] = [];
    for (const { key, value } of this.db.getRange()) {
      const held = { bytes: value.length, storedAt: value.readDoubleLE(2), answered: value[1] === ANSWERED };
      this.account(key, held);
      if (!held.answered) pending.push({ uuid: key, storedAt: held.storedAt });
    }
    this.fresh = pending.sort((a, b) => a.storedAt - b.storedAt).map((p) => p.uuid);
  }

  /** Opens (or creates) the store in `dir`; throws a StoreError that says why when it cannot. */
  static open(dir: string, opts: StoreOptions): LmdbStore {
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
      return new LmdbStore(dir, lock, opts);
    } catch (err) {
      rmSync(lock, { force: true });
      throw new StoreError(`titanic store ${dir}: ${String(err)}`);
    }
  }

  async store(r: Stored, claim: boolean): Promise<boolean> {
    const value = encode(r);
    if (this.bytes + value.length > this.opts.maxBytes) {
      throw new StoreError(`the store holds ${this.bytes} bytes; this request (${value.length}) would pass its budget of ${this.opts.maxBytes}`);
    }
    this.account(r.uuid, { bytes: value.length, storedAt: r.storedAt, answered: false });
    // One broker: a request it does not run now waits for claim() like the ones found at open.
    if (!claim) this.fresh.push(r.uuid);
    await this.db.put(r.uuid, value);
    return claim;
  }

  async answer(uuid: string, reply: readonly Buffer[]): Promise<boolean> {
    const s = this.get(uuid);
    if (s === undefined || s.reply !== null) return false;
    const value = encode({ ...s, reply: [...reply] });
    this.account(uuid, { bytes: value.length, storedAt: s.storedAt, answered: true });
    await this.db.put(uuid, value);
    return true;
  }

  lookup(uuid: string): Promise<Stored | undefined> {
    return Promise.resolve(this.get(uuid));
  }

  get(uuid: string): Stored | undefined {
    const b = this.db.get(uuid);
    return b === undefined ? undefined : decode(uuid, b);
  }

  async remove(uuid: string): Promise<void> {
    this.account(uuid, null);
    await this.db.remove(uuid);
  }

  /** One broker runs every service here: `services` (what a shared store filters on) does not apply. */
  claim(max: number, now: number, _services?: readonly string[] | null): Promise<Stored[]> {
    const out: Stored[] = [];
    const take = (uuid: string) => {
      const s = this.records.get(uuid)?.answered === false ? this.get(uuid) : undefined;
      if (s !== undefined) out.push(s);
    };
    let due = 0;
    while (due < this.later.length && this.later[due].at <= now && out.length < max) take(this.later[due++].uuid);
    if (due > 0) this.later = this.later.slice(due);
    let n = 0;
    while (n < this.fresh.length && out.length < max) take(this.fresh[n++]);
    if (n > 0) this.fresh = this.fresh.slice(n);
    return Promise.resolve(out.sort((a, b) => a.storedAt - b.storedAt));
  }

  unclaim(uuid: string, notBefore: number): Promise<void> {
    if (this.records.get(uuid)?.answered === false) this.later.push({ uuid, at: notBefore });
    return Promise.resolve();
  }

  async expire(before: number): Promise<string[]> {
    const gone: string[] = [];
    for (const [uuid, r] of this.records) if (r.storedAt < before) gone.push(uuid);
    await Promise.all(gone.map((uuid) => this.remove(uuid)));
    return gone;
  }

  tick(): void {}

  counts(): StoreCounts {
    return { bytes: this.bytes, records: this.records.size, pending: this.pendingCount };
  }

  /** Every stored request not yet answered, oldest first. */
  pending(): Stored[] {
    const out: Stored[] = [];
    for (const { key, value } of this.db.getRange()) if (value[1] === PENDING) out.push(decode(key, value));
    return out.sort((a, b) => a.storedAt - b.storedAt);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.db.close();
    if (liveHolder(this.lock) === null) rmSync(this.lock, { force: true });
  }

  /** Counts a record in (its new size and state) or out (null). */
  private account(uuid: string, now: Held | null): void {
    const was = this.records.get(uuid);
    if (was !== undefined) {
      this.bytes -= was.bytes;
      if (!was.answered) this.pendingCount--;
    }
    if (now === null) {
      this.records.delete(uuid);
      return;
    }
    this.records.set(uuid, now);
    this.bytes += now.bytes;
    if (!now.answered) this.pendingCount++;
  }
}
