// Choosing Titanic's embedded store (issue 20): a durable request's life in each candidate, 64 in flight, 100 B.
// Each request: stored (durable), its reply stored (durable), the reply read back, both deleted (titanic.close).
// Durable means the write's promise resolves only after its commit was synced to disk; writes issued in one
// event-loop turn share one sync (group commit), as the broker would do them.
//   node bench/titanic-store.mjs [--n 20000] [--depth 64] [--repeat 3] [--dir /tmp/x]
// Prints one JSON line per store per round, then the medians.
import { open } from 'lmdb';
import { ClassicLevel } from 'classic-level';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { n: { type: 'string', default: '20000' }, depth: { type: 'string', default: '64' }, repeat: { type: 'string', default: '3' }, dir: { type: 'string' } } });
const N = Number(values.n);
const DEPTH = Number(values.depth);
const BODY = Buffer.alloc(100, 7);
const pct = (a, p) => a.sort((x, y) => x - y)[Math.min(a.length - 1, Math.floor(a.length * p))];
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function lifecycle(store) {
  const lat = [];
  let next = 0;
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  async function lane() {
    while (next < N) {
      next++;
      const id = randomUUID().replace(/-/g, '');
      const t = performance.now();
      await store.put(`q${id}`, BODY);
      await store.put(`r${id}`, BODY);
      const got = await store.get(`r${id}`);
      if (got === undefined || got.length !== BODY.length) throw new Error(`reply ${id} not read back`);
      await store.del([`q${id}`, `r${id}`]);
      lat.push(performance.now() - t);
    }
  }
  await Promise.all(Array.from({ length: DEPTH }, lane));
  const ms = performance.now() - t0;
  const cpu = process.cpuUsage(c0);
  return { perSec: Math.round((N / ms) * 1000), p50ms: +pct(lat, 0.5).toFixed(2), p99ms: +pct(lat, 0.99).toFixed(2), cpuUsPerReq: +((cpu.user + cpu.system) / N).toFixed(1) };
}

/** LMDB (lmdb): with overlappingSync off a write's promise resolves after its synced commit; lmdb-js already puts the writes of a turn in one transaction. */
async function lmdbStore(dir) {
  const db = open({ path: join(dir, 'lmdb'), compression: false, overlappingSync: false });
  return {
    name: 'lmdb',
    put: (k, v) => db.put(k, v),
    get: async (k) => db.get(k),
    del: (ks) => db.transaction(() => { for (const k of ks) db.remove(k); }),
    close: () => db.close(),
  };
}

/** LevelDB (classic-level): the writes of a turn gathered by hand into one batch written with sync. */
async function levelStore(dir) {
  const db = new ClassicLevel(join(dir, 'level'), { valueEncoding: 'buffer' });
  await db.open();
  let pending = null;
  const batch = (ops) => {
    if (pending === null) {
      let done;
      const p = new Promise((resolve, reject) => (done = { resolve, reject }));
      pending = { ops: [], p };
      setImmediate(() => {
        const b = pending;
        pending = null;
        db.batch(b.ops, { sync: true }).then(done.resolve, done.reject);
      });
    }
    pending.ops.push(...ops);
    return pending.p;
  };
  return {
    name: 'classic-level',
    put: (k, v) => batch([{ type: 'put', key: k, value: v }]),
    get: (k) => db.get(k),
    del: (ks) => batch(ks.map((key) => ({ type: 'del', key }))),
    close: () => db.close(),
  };
}

const results = { lmdb: [], 'classic-level': [] };
for (let round = 0; round < Number(values.repeat); round++) {
  for (const make of [lmdbStore, levelStore]) {
    const dir = values.dir ?? mkdtempSync(join(tmpdir(), 'titanic-store-'));
    const store = await make(dir);
    const r = await lifecycle(store);
    await store.close();
    if (values.dir === undefined) rmSync(dir, { recursive: true, force: true });
    results[store.name].push(r);
    console.log(JSON.stringify({ store: store.name, round, ...r }));
  }
}
const summary = {};
for (const [name, runs] of Object.entries(results)) {
  summary[name] = Object.fromEntries(['perSec', 'p50ms', 'p99ms', 'cpuUsPerReq'].map((k) => [k, median(runs.map((r) => r[k]))]));
}
console.log(JSON.stringify({ n: N, depth: DEPTH, bodyBytes: BODY.length, medians: summary, runs: results }));
