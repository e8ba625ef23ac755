// Durable requests, submit to reply available: mdbroker --titanic (RFC 9, LMDB store) against NATS JetStream doing
// the same work, side by side, rounds alternated (`npm run bench:titanic`; `npm run bench -- --config titanic`).
// Server, worker and client each in their own process; 100 B bodies; 64 requests in flight.
//
// mdbroker: the client sends titanic.request (answered once the request is synced to disk), polls titanic.reply
// every 2 ms until the reply is there, then titanic.close. The worker is a plain MDP Worker.
// JetStream (nats-server -js, file storage): the client publishes the request to a work-queue stream and waits for
// its PubAck; the worker (a pull consumer) publishes the reply to a reply stream, waits for that PubAck, then acks
// the request; the client polls the reply stream for its subject every 2 ms, then deletes the reply. JetStream's
// default sync is not an fsync per message (it syncs every 2 minutes); mdbroker syncs every group commit. The
// table says which is which.
//   node dist/bench/titanic.js [--rounds 3] [--requests 10000] [--warmup 2000] [--depth 64] [--systems a,b] [--out FILE]

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Client } from '../src/client/client.js';
import { Worker } from '../src/client/worker.js';
import { spawnBroker } from '../test/support/spawn-broker.js';
import { postgresMissing, startPostgres, type PostgresServer } from '../test/support/postgres.js';

/** The PostgreSQL server the mdbroker-pg rounds use (one for the run, a fresh database per round). */
let postgres: PostgresServer | null = null;
let databases = 0;

/**
 * mdbroker-hold: --titanic-hold 500 (a pending titanic.reply answered when the reply is stored). mdbroker-pg: the
 * same on a PostgreSQL store (a server started here from Debian's binaries, fsync on).
 */
type System = 'mdbroker' | 'mdbroker-hold' | 'mdbroker-pg' | 'jetstream';
const BODY = Buffer.alloc(100, 0x61);
const POLL_MS = 2;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const SELF = fileURLToPath(import.meta.url);

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => resolve(typeof a === 'object' && a !== null ? a.port : 0));
    });
  });
}

/** CPU time of a process so far (ms), from /proc (10 ms ticks). */
function cpuMs(pid: number): number {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'latin1');
    const fields = f.slice(f.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) * 10;
  } catch {
    return NaN;
  }
}

async function startServer(system: System, dir: string): Promise<{ proc: ChildProcess; endpoint: string }> {
  if (system === 'jetstream') {
    const port = await freePort();
    const proc = spawn('nats-server', ['-a', '127.0.0.1', '-p', String(port), '-js', '-sd', dir], { stdio: 'ignore' });
    const { connect } = await import('nats');
    for (let i = 0; i < 100; i++) {
      try {
        const nc = await connect({ servers: `127.0.0.1:${port}` });
        await nc.close();
        break;
      } catch {
        await sleep(50);
      }
    }
    return { proc, endpoint: `127.0.0.1:${port}` };
  }
  const hold = system === 'mdbroker' ? [] : ['--titanic-hold', '500'];
  let store = dir;
  if (system === 'mdbroker-pg') {
    postgres ??= await startPostgres();
    store = await postgres.database(`bench${++databases}`);
  }
  const b = await spawnBroker(['--bind', 'tcp://127.0.0.1:*', '--stats-interval', '0', '--titanic', store, ...hold]);
  return { proc: b.child, endpoint: b.endpoint };
}

/** The worker process. */
async function worker(system: System, endpoint: string): Promise<void> {
  if (system !== 'jetstream') {
    new Worker({ endpoint, service: 'echo', handler: (b) => b });
    return;
  }
  const { connect, AckPolicy } = await import('nats');
  const nc = await connect({ servers: endpoint });
  const js = nc.jetstream();
  const jsm = await nc.jetstreamManager();
  await jsm.consumers.add('REQ', { durable_name: 'workers', ack_policy: AckPolicy.Explicit, max_ack_pending: 1024 });
  const consumer = await js.consumers.get('REQ', 'workers');
  const msgs = await consumer.consume({ max_messages: 256 });
  for await (const m of msgs) {
    const id = m.subject.slice(4);
    void js.publish(`rep.${id}`, m.data).then(() => m.ack());
  }
}

/** serverCpuUsPerReq: the server's processes (mdbroker-pg: the broker and PostgreSQL); brokerCpuUsPerReq: the broker's own. */
interface Round { perSec: number; p50ms: number; p99ms: number; serverCpuUsPerReq: number; brokerCpuUsPerReq: number }

async function clientRun(system: System, endpoint: string, requests: number, warmup: number, depth: number, serverPids: () => number[]): Promise<Round> {
  const lat: number[] = [];
  let next = 0;
  let submit: (id: string) => Promise<string>;
  let fetch: (key: string) => Promise<boolean>;
  let done: (key: string) => Promise<void>;
  let close: () => Promise<void>;
  if (system !== 'jetstream') {
    const c = new Client({ endpoints: endpoint, timeout: 10000 });
    submit = () => c.submit('echo', BODY);
    fetch = async (uuid) => (await c.result(uuid)) !== null;
    done = (uuid) => c.close(uuid);
    close = async () => c.close();
  } else {
    const { connect } = await import('nats');
    const nc = await connect({ servers: endpoint });
    const js = nc.jetstream();
    const jsm = await nc.jetstreamManager();
    submit = async (id) => {
      await js.publish(`req.${id}`, BODY);
      return id;
    };
    const seqs = new Map<string, number>();
    fetch = async (id) => {
      try {
        const m = await jsm.streams.getMessage('REP', { last_by_subj: `rep.${id}` });
        seqs.set(id, m.seq);
        return true;
      } catch {
        return false;
      }
    };
    done = async (id) => {
      await jsm.streams.deleteMessage('REP', seqs.get(id) as number, false);
      seqs.delete(id);
    };
    close = () => nc.close();
  }
  const drive = (until: number, record: boolean) => Promise.all(Array.from({ length: depth }, async () => {
    while (next < until) {
      const id = `r${next++}`;
      const t = performance.now();
      const key = await submit(id);
      while (!(await fetch(key))) await sleep(POLL_MS);
      if (record) lat.push(performance.now() - t);
      await done(key);
    }
  }));
  // Not measured: the first requests (JIT compilation, the store's first pages). A 4,000-request round without this
  // measured mdbroker at 2,400-2,900/s; 20,000 requests at 3,700-4,300/s.
  await drive(warmup, false);
  const pids = serverPids();
  const cpu0 = pids.reduce((sum, pid) => sum + cpuMs(pid), 0);
  const own0 = cpuMs(pids[0]);
  const t0 = performance.now();
  await drive(warmup + requests, true);
  const ms = performance.now() - t0;
  const cpu = pids.reduce((sum, pid) => sum + cpuMs(pid), 0) - cpu0;
  const own = cpuMs(pids[0]) - own0;
  await close();
  lat.sort((a, b) => a - b);
  const q = (p: number) => +lat[Math.min(lat.length - 1, Math.floor(lat.length * p))].toFixed(2);
  return { perSec: Math.round((requests / ms) * 1000), p50ms: q(0.5), p99ms: q(0.99), serverCpuUsPerReq: +((cpu * 1000) / requests).toFixed(1), brokerCpuUsPerReq: +((own * 1000) / requests).toFixed(1) };
}

async function round(system: System, requests: number, warmup: number, depth: number): Promise<Round> {
  const dir = mkdtempSync(join(tmpdir(), `mdb-bench-titanic-${system}-`));
  const server = await startServer(system, dir);
  if (system === 'jetstream') {
    const { connect, RetentionPolicy, StorageType } = await import('nats');
    const nc = await connect({ servers: server.endpoint });
    const jsm = await nc.jetstreamManager();
    await jsm.streams.add({ name: 'REQ', subjects: ['req.>'], retention: RetentionPolicy.Workqueue, storage: StorageType.File });
    await jsm.streams.add({ name: 'REP', subjects: ['rep.>'], storage: StorageType.File, allow_direct: false });
    await nc.close();
  }
  const w = spawn(process.execPath, [SELF, 'worker', system, server.endpoint], { stdio: ['ignore', 'inherit', 'inherit'] });
  try {
    await sleep(500);
    // mdbroker-pg: the broker's CPU and PostgreSQL's (the postmaster and the sessions the broker opened).
    const pids = () => [server.proc.pid as number, ...(system === 'mdbroker-pg' ? (postgres as PostgresServer).pids() : [])];
    return await clientRun(system, server.endpoint, requests, warmup, depth, pids);
  } finally {
    w.kill('SIGKILL');
    server.proc.kill('SIGTERM');
    await new Promise((r) => server.proc.once('exit', r));
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { rounds: { type: 'string', default: '3' }, requests: { type: 'string', default: '10000' }, systems: { type: 'string' }, warmup: { type: 'string', default: '2000' }, depth: { type: 'string', default: '64' }, out: { type: 'string' } } });
  const requests = Number(values.requests);
  const depth = Number(values.depth);
  const systems: System[] = ['mdbroker', 'mdbroker-hold'];
  if (postgresMissing() === null) systems.push('mdbroker-pg');
  else console.error('PostgreSQL is not installed (apt-get install postgresql): the mdbroker-pg rows are skipped');
  if (spawnSync('nats-server', ['--version']).status === 0) systems.push('jetstream');
  else console.error('nats-server is not installed (apt-get install nats-server): the JetStream rows are skipped');
  if (values.systems !== undefined) {
    const only = values.systems.split(',');
    systems.splice(0, systems.length, ...systems.filter((s) => only.includes(s)));
  }
  const runs: Record<string, Round[]> = Object.fromEntries(systems.map((s) => [s, []]));
  for (let r = 0; r < Number(values.rounds); r++) {
    for (const s of systems) {
      const res = await round(s, requests, Number(values.warmup), depth);
      runs[s].push(res);
      console.error(`${s} #${r + 1}: ${res.perSec} durable requests/s, p50 ${res.p50ms} ms, p99 ${res.p99ms} ms, server ${res.serverCpuUsPerReq} us/req (its main process ${res.brokerCpuUsPerReq})`);
    }
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const medians = Object.fromEntries(Object.entries(runs).map(([s, rs]) => [s, {
    perSec: median(rs.map((x) => x.perSec)), p50ms: median(rs.map((x) => x.p50ms)), p99ms: median(rs.map((x) => x.p99ms)), serverCpuUsPerReq: median(rs.map((x) => x.serverCpuUsPerReq)), brokerCpuUsPerReq: median(rs.map((x) => x.brokerCpuUsPerReq)),
  }]));
  const out = {
    what: 'durable requests, submit to reply available, 100 B, server/worker/client in their own processes',
    durability: {
      mdbroker: 'fsync per group commit (LMDB, every write of a turn in one synced transaction)',
      'mdbroker-hold': 'the same, with --titanic-hold 500',
      'mdbroker-pg': 'PostgreSQL, fsync and synchronous_commit on (its defaults): each write a commit, concurrent commits flushed together; --titanic-hold 500; server CPU is the broker\'s and PostgreSQL\'s together',
      jetstream: 'JetStream default (file storage, no fsync per message)',
    },
    requests, warmup: Number(values.warmup), depth, pollMs: POLL_MS, node: process.version, medians, runs,
  };
  await postgres?.stop();
  const text = JSON.stringify(out, null, 2);
  if (values.out) writeFileSync(values.out, `${text}\n`);
  console.log(text);
}

if (process.argv[2] === 'worker') void worker(process.argv[3] as System, process.argv[4]);
else main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
