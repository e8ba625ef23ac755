// Choosing the PostgreSQL client for the Titanic store (docs/titanic.md): node-postgres (`pg`) against `postgres`
// (porsager), both pure JavaScript. The same durable lifecycle as bench/titanic-store.mjs: a request row inserted,
// its reply written, the row deleted, each a synced commit, 64 lifecycles in flight over a pool of 8 connections,
// 100 B bodies. Reports lifecycles/s and this process's CPU per lifecycle (the client library's cost; the server's
// is the same SQL for both). Needs a PostgreSQL: PG_URL, or a throwaway one started from Debian's binaries.
//   node bench/titanic-pg-client.mjs [--n 5000] [--rounds 3]
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { n: { type: 'string', default: '5000' }, rounds: { type: 'string', default: '3' } } });
const N = Number(values.n);
const DEPTH = 64;
const BODY = Buffer.alloc(100, 0x61);
let server = null;
let url = process.env.PG_URL;
if (!url) {
  const { startPostgres } = await import('../dist/test/support/postgres.js');
  server = await startPostgres();
  url = server.url;
}
const DDL = 'CREATE TABLE IF NOT EXISTS lifecycle (uuid text PRIMARY KEY, body bytea NOT NULL, reply bytea)';

async function run(lib) {
  let q;
  let end;
  if (lib === 'pg') {
    const { default: pg } = await import('pg');
    const pool = new pg.Pool({ connectionString: url, max: 8 });
    q = (text, params) => pool.query(text, params);
    end = () => pool.end();
  } else {
    const { default: postgres } = await import('postgres');
    const sql = postgres(url, { max: 8, onnotice: () => undefined });
    q = (text, params) => sql.unsafe(text, params);
    end = () => sql.end();
  }
  await q(DDL, []);
  await q('TRUNCATE lifecycle', []);
  let next = 0;
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  await Promise.all(Array.from({ length: DEPTH }, async () => {
    while (next < N) {
      const id = `${lib}-${next++}`;
      await q('INSERT INTO lifecycle (uuid, body) VALUES ($1, $2)', [id, BODY]);
      await q('UPDATE lifecycle SET reply = $2 WHERE uuid = $1', [id, BODY]);
      await q('DELETE FROM lifecycle WHERE uuid = $1', [id]);
    }
  }));
  const ms = performance.now() - t0;
  const c = process.cpuUsage(c0);
  await end();
  return { perSec: Math.round((N / ms) * 1000), cpuUsPerLifecycle: +((c.user + c.system) / N).toFixed(1) };
}

const results = { pg: [], postgres: [] };
for (let r = 0; r < Number(values.rounds); r++) {
  for (const lib of ['pg', 'postgres']) {
    const res = await run(lib);
    results[lib].push(res);
    console.error(`${lib} #${r + 1}: ${res.perSec} lifecycles/s, ${res.cpuUsPerLifecycle} us CPU each`);
  }
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const medians = Object.fromEntries(Object.entries(results).map(([k, rs]) => [k, { perSec: median(rs.map((x) => x.perSec)), cpuUsPerLifecycle: median(rs.map((x) => x.cpuUsPerLifecycle)) }]));
console.log(JSON.stringify({ what: 'insert + update + delete, each a synced commit, 64 in flight, pool of 8, 100 B', n: N, node: process.version, medians, results }, null, 2));
await server?.stop();
