// Titanic's shared store (--titanic postgres://...): any number of brokers keep one set of durable requests in
// PostgreSQL. Any broker accepts a request, runs it and answers for it.
//
// - Durable: the writes of one event-loop turn go as one autocommitted statement per kind (group commit), so a
//   resolved write is committed and flushed as the server is configured to (synchronous_commit on by default: the
//   WAL is fsynced). The server also flushes the commits of concurrent sessions together; the pool keeps several
//   sessions writing at once.
// - One broker runs a request at a time: a broker claims requests by writing its id into them. Claims are taken
//   with row locks (`FOR UPDATE SKIP LOCKED`): two brokers claiming at once take different rows, and neither waits.
//   A broker claims a request it accepted itself when it has a worker for the service (no extra round trip), and
//   otherwise claims only services it has workers for, oldest first.
// - A dead broker's claims are freed: each broker holds a session-level advisory lock on its row in
//   titanic_brokers for as long as its session lives. Every second each broker deletes the rows whose lock it can
//   take (their session is gone: the broker died, or lost its server) and frees the claims no live row owns. An
//   advisory lock, not a row lock held by an open transaction, because an open transaction would hold back vacuum
//   on every table of the database for as long as the broker runs.
// - A broker whose session to the server is cut takes a new id once it reconnects; what it was running still gets
//   its reply written (by UUID, the first reply stays), so a request runs at least once.
// - Counts (bytes, records, pending) are read every second; the byte budget is checked against them plus what this
//   broker stored since, so several brokers together may pass it by what they store in that second.

import { hostname } from 'node:os';
import pg from 'pg';
import type { LogFn } from '../core/broker-core.js';
import { StoreError, describeError as why, packFrames, storeWarnings, unpackFrames, type DurableStore, type StoreCounts, type Stored } from './durable-store.js';

/** The advisory-lock namespace of broker rows ('ti'): pg_advisory_lock(NS, broker id). */
const NS = 0x7469;
/** Sessions writing at once: concurrent commits share the server's WAL flushes. */
const POOL = 8;
/** Requests one retention pass deletes at most (the next pass deletes the rest). */
const EXPIRE_BATCH = 10000;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS titanic_requests (
  uuid text PRIMARY KEY,
  stored_at bigint NOT NULL,
  service text NOT NULL,
  body bytea NOT NULL,
  reply bytea,
  bytes integer NOT NULL,
  claimed_by integer,
  not_before bigint NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS titanic_requests_runnable ON titanic_requests (stored_at) WHERE reply IS NULL AND claimed_by IS NULL;
CREATE INDEX IF NOT EXISTS titanic_requests_claimed ON titanic_requests (claimed_by) WHERE claimed_by IS NOT NULL;
CREATE INDEX IF NOT EXISTS titanic_requests_stored_at ON titanic_requests (stored_at);
CREATE TABLE IF NOT EXISTS titanic_brokers (
  id serial PRIMARY KEY,
  since bigint NOT NULL,
  host text NOT NULL,
  pid integer NOT NULL
);`;

export interface PgStoreOptions {
  maxBytes: number;
  log: LogFn;
}

interface Row {
  uuid: string;
  stored_at: string;
  service: string;
  body: Buffer;
  reply: Buffer | null;
}

function fromRow(r: Row): Stored {
  return { uuid: r.uuid, storedAt: Number(r.stored_at), service: Buffer.from(r.service, 'latin1'), body: unpackFrames(r.body).frames, reply: r.reply === null ? null : unpackFrames(r.reply).frames };
}

/** The URL as logs may show it: without its password. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password !== '') u.password = '***';
    return u.toString();
  } catch {
    return 'postgres://(unparsable URL)';
  }
}

interface Insert {
  uuid: string;
  storedAt: number;
  service: string;
  body: Buffer;
  bytes: number;
  by: number | null;
}

/** Calls of one event-loop turn gathered into one call of `run` (which returns one result per item, in order). */
class Batch<T, R> {
  private items: T[] = [];
  private settle: { resolve: (r: R) => void; reject: (err: unknown) => void }[] = [];
  private scheduled = false;

  constructor(private readonly run: (items: T[]) => Promise<R[]>) {}

  add(item: T): Promise<R> {
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.flush());
    }
    this.items.push(item);
    return new Promise<R>((resolve, reject) => this.settle.push({ resolve, reject }));
  }

  private flush(): void {
    const items = this.items;
    const settle = this.settle;
    this.items = [];
    this.settle = [];
    this.scheduled = false;
    this.run(items).then(
      (rs) => settle.forEach((s, i) => s.resolve(rs[i])),
      (err: unknown) => settle.forEach((s) => s.reject(err)),
    );
  }
}

export class PgStore implements DurableStore {
  readonly shared = true;
  /** This broker's row in titanic_brokers (0: none now; its session is being re-established). */
  private me = 0;
  private session: pg.Client | null = null;
  private reconnecting = false;
  private nextReconnect = 0;
  private refreshing = false;
  private lastRefresh = 0;
  private readonly known: StoreCounts = { bytes: 0, records: 0, pending: 0 };
  /** Bytes this broker stored since the last count. */
  private added = 0;
  private closed = false;
  /** A warning at most every 10 s (a server that is down fails every tick). */
  private readonly warn: (msg: string, err: unknown) => void;
  // The writes and reads of one event-loop turn go as one statement each (one round trip, one commit). bench:titanic
  // here (64 in flight, 100 B; separate runs, not alternated): a statement per request 1,327 durable requests/s at
  // 1,101 us of server CPU each (one round); batched 1,567-1,655/s at 878-882 us (two rounds).
  private readonly inserts = new Batch<Insert, void>(async (rows) => {
    await this.pool.query(
      'INSERT INTO titanic_requests (uuid, stored_at, service, body, bytes, claimed_by) SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bytea[], $5::int[], $6::int[])',
      [rows.map((r) => r.uuid), rows.map((r) => r.storedAt), rows.map((r) => r.service), rows.map((r) => r.body), rows.map((r) => r.bytes), rows.map((r) => r.by)],
    );
    return rows.map(() => undefined);
  });
  private readonly answers = new Batch<{ uuid: string; packed: Buffer }, boolean>(async (rows) => {
    const r = await this.pool.query<{ uuid: string }>(
      `UPDATE titanic_requests t SET reply = v.reply, bytes = t.bytes + v.n, claimed_by = NULL
       FROM unnest($1::text[], $2::bytea[], $3::int[]) AS v(uuid, reply, n) WHERE t.uuid = v.uuid AND t.reply IS NULL RETURNING t.uuid`,
      [rows.map((a) => a.uuid), rows.map((a) => a.packed), rows.map((a) => a.packed.length)],
    );
    const done = new Set(r.rows.map((row) => row.uuid));
    // One reply per request: of two for one UUID in a batch, the first is the one stored.
    return rows.map((a) => done.delete(a.uuid));
  });
  private readonly lookups = new Batch<string, Stored | undefined>(async (uuids) => {
    const r = await this.pool.query<Row>('SELECT uuid, stored_at, service, body, reply FROM titanic_requests WHERE uuid = ANY($1::text[])', [uuids]);
    const found = new Map(r.rows.map((row) => [row.uuid, row]));
    return uuids.map((u) => {
      const row = found.get(u);
      return row === undefined ? undefined : fromRow(row);
    });
  });
  private readonly removals = new Batch<string, void>(async (uuids) => {
    await this.pool.query('DELETE FROM titanic_requests WHERE uuid = ANY($1::text[])', [uuids]);
    return uuids.map(() => undefined);
  });

  private constructor(
    private readonly url: string,
    readonly where: string,
    private readonly pool: pg.Pool,
    private readonly opts: PgStoreOptions,
  ) {
    this.warn = storeWarnings(opts.log, () => where);
  }

  /** Connects, creates the tables if they are not there, registers this broker; a StoreError says why it cannot. */
  static async open(url: string, opts: PgStoreOptions): Promise<PgStore> {
    const where = redactUrl(url);
    const pool = new pg.Pool({ connectionString: url, max: POOL, connectionTimeoutMillis: 5000, query_timeout: 30000 });
    // An idle session the server cuts is an 'error' here; without a listener it would end the process.
    pool.on('error', (err) => opts.log('warn', 'titanic: a PostgreSQL session was cut', { store: where, err: why(err) }));
    const store = new PgStore(url, where, pool, opts);
    try {
      const c = await pool.connect();
      try {
        await c.query('BEGIN');
        // Brokers starting together: one creates the tables, the others wait for it.
        await c.query('SELECT pg_advisory_xact_lock($1, 0)', [NS]);
        await c.query(SCHEMA);
        await c.query('COMMIT');
      } finally {
        c.release();
      }
      await store.register();
      await store.refresh();
    } catch (err) {
      await pool.end().catch(() => undefined);
      await store.session?.end().catch(() => undefined);
      throw new StoreError(`titanic store ${where}: cannot use PostgreSQL (${why(err)})`);
    }
    return store;
  }

  /** A session of our own holding the advisory lock on a new row of ours for as long as it lives. */
  private async register(): Promise<void> {
    const c = new pg.Client({ connectionString: this.url, connectionTimeoutMillis: 5000 });
    c.on('error', (err) => this.lost(c, err));
    c.on('end', () => this.lost(c, new Error('session ended')));
    await c.connect();
    try {
      // Row and lock in one transaction: the row is never visible unlocked, so nobody takes it for a dead broker's.
      await c.query('BEGIN');
      const r = await c.query<{ id: number }>('INSERT INTO titanic_brokers (since, host, pid) VALUES ($1, $2, $3) RETURNING id', [Date.now(), hostname(), process.pid]);
      const id = r.rows[0].id;
      await c.query('SELECT pg_advisory_lock($1, $2)', [NS, id]);
      await c.query('COMMIT');
      this.session = c;
      this.me = id;
    } catch (err) {
      await c.end().catch(() => undefined);
      throw err;
    }
  }

  private lost(c: pg.Client, err: unknown): void {
    if (this.session !== c) return;
    this.session = null;
    this.me = 0;
    if (!this.closed) this.opts.log('warn', 'titanic: lost the PostgreSQL session that holds this broker\'s claims; other brokers may run what it was running', { store: this.where, err: why(err) });
    c.end().catch(() => undefined);
  }

  async store(r: Stored, claim: boolean): Promise<boolean> {
    const body = packFrames(r.body);
    const bytes = r.service.length + body.length;
    const held = this.known.bytes + this.added;
    if (held + bytes > this.opts.maxBytes) {
      throw new StoreError(`the store holds ${held} bytes; this request (${bytes}) would pass its budget of ${this.opts.maxBytes}`);
    }
    this.added += bytes;
    const by = claim && this.me !== 0 ? this.me : null;
    await this.inserts.add({ uuid: r.uuid, storedAt: r.storedAt, service: r.service.toString('latin1'), body, bytes, by });
    return by !== null;
  }

  async answer(uuid: string, reply: readonly Buffer[]): Promise<boolean> {
    const packed = packFrames(reply);
    const answered = await this.answers.add({ uuid, packed });
    if (answered) this.added += packed.length;
    return answered;
  }

  lookup(uuid: string): Promise<Stored | undefined> {
    return this.lookups.add(uuid);
  }

  remove(uuid: string): Promise<void> {
    return this.removals.add(uuid);
  }

  async claim(max: number, now: number, services: readonly string[] | null): Promise<Stored[]> {
    const me = this.me;
    if (me === 0 || max <= 0 || (services !== null && services.length === 0)) return [];
    const r = await this.pool.query<Row>(
      `UPDATE titanic_requests SET claimed_by = $1 WHERE uuid IN (
         SELECT uuid FROM titanic_requests
         WHERE reply IS NULL AND claimed_by IS NULL AND not_before <= $2 AND ($4::text[] IS NULL OR service = ANY($4::text[]))
         ORDER BY stored_at LIMIT $3 FOR UPDATE SKIP LOCKED)
       RETURNING uuid, stored_at, service, body, reply`,
      [me, now, max, services],
    );
    return r.rows.map(fromRow).sort((a, b) => a.storedAt - b.storedAt);
  }

  async unclaim(uuid: string, notBefore: number): Promise<void> {
    await this.pool.query('UPDATE titanic_requests SET claimed_by = NULL, not_before = $2 WHERE uuid = $1 AND reply IS NULL', [uuid, notBefore]);
  }

  async expire(before: number): Promise<string[]> {
    const r = await this.pool.query<{ uuid: string }>(
      'DELETE FROM titanic_requests WHERE uuid IN (SELECT uuid FROM titanic_requests WHERE stored_at < $1 LIMIT $2) RETURNING uuid',
      [before, EXPIRE_BATCH],
    );
    return r.rows.map((row) => row.uuid);
  }

  tick(now: number): void {
    if (this.closed) return;
    if (this.session === null && !this.reconnecting && now >= this.nextReconnect) {
      this.reconnecting = true;
      this.register().then(
        () => this.opts.log('info', 'titanic: PostgreSQL session back; claiming again', { store: this.where, broker: this.me }),
        (err: unknown) => {
          this.nextReconnect = Date.now() + 1000;
          this.warn('titanic: PostgreSQL is not answering; retrying every second', err);
        },
      ).finally(() => (this.reconnecting = false));
    }
    if (!this.refreshing && now - this.lastRefresh >= 1000) {
      this.refreshing = true;
      this.lastRefresh = now;
      this.reap()
        .then(() => this.refresh())
        .catch((err: unknown) => this.warn('titanic: could not read the store\'s counts or free dead brokers\' claims', err))
        .finally(() => (this.refreshing = false));
    }
  }

  counts(): StoreCounts {
    return { ...this.known, bytes: this.known.bytes + this.added };
  }

  /** Frees the claims of brokers whose session is gone (their advisory lock can be taken). */
  private async reap(): Promise<void> {
    if (this.me === 0) return;
    const dead = await this.pool.query<{ id: number }>('DELETE FROM titanic_brokers WHERE id <> $1 AND pg_try_advisory_xact_lock($2, id) RETURNING id', [this.me, NS]);
    const freed = await this.pool.query(
      'UPDATE titanic_requests t SET claimed_by = NULL WHERE claimed_by IS NOT NULL AND reply IS NULL AND NOT EXISTS (SELECT 1 FROM titanic_brokers b WHERE b.id = t.claimed_by)',
    );
    if (dead.rows.length > 0 || (freed.rowCount ?? 0) > 0) {
      this.opts.log('info', 'titanic: freed the claims of brokers that are gone', { store: this.where, brokers: dead.rows.map((r) => r.id), requests: freed.rowCount });
    }
  }

  private async refresh(): Promise<void> {
    const r = await this.pool.query<{ bytes: string; records: string; pending: string }>(
      'SELECT coalesce(sum(bytes), 0) AS bytes, count(*) AS records, count(*) FILTER (WHERE reply IS NULL) AS pending FROM titanic_requests',
    );
    this.known.bytes = Number(r.rows[0].bytes);
    this.known.records = Number(r.rows[0].records);
    this.known.pending = Number(r.rows[0].pending);
    this.added = 0;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const me = this.me;
    try {
      if (me !== 0) {
        // What this broker claimed and did not answer runs on the others now, not after a dead broker's timeout.
        await this.pool.query('UPDATE titanic_requests SET claimed_by = NULL WHERE claimed_by = $1 AND reply IS NULL', [me]);
        await this.pool.query('DELETE FROM titanic_brokers WHERE id = $1', [me]);
      }
    } catch (err) {
      this.opts.log('warn', 'titanic: could not give back this broker\'s claims at close; other brokers free them within a second', { store: this.where, err: why(err) });
    }
    const s = this.session;
    this.session = null;
    await s?.end().catch(() => undefined);
    await this.pool.end().catch(() => undefined);
  }
}
