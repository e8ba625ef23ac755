// What an app gets: request/reply through the Client and Worker libraries against nats.js through nats-server, side by
// side in one run. Server, responder and requester each run in their own process; the systems are alternated round
// by round and the medians of the rounds reported, with each process's CPU per request (from /proc, all threads).
//
//   npm run bench:apps -- [--seconds 4] [--rounds 3] [--depth 64,1 | --rate N] [--size 100] [--sessions 64] [--only a,b] [--out FILE]
//
// --rate N: open loop, N requests a second (depth shows as 0), to compare systems at the same rate.
// --sessions N: the Worker's concurrency (on our broker one connection with worker credit N; on libzmq rows N
// sessions), and N raw MDP sessions for mdbroker-peers (they offer no credit).
//
// Systems: mdbroker (the libraries on their own ZMTP, NULL), mdbroker-curve (the same on CURVE), mdbroker-libzmq and
// mdbroker-libzmq-curve (the libraries on the zeromq binding: what they cost before), mdbroker-peers (the bench's
// own raw ZMTP peers: what the broker costs with peers that cost nothing), nats (nats.js request/reply through
// nats-server; skipped when nats-server is not installed: `apt-get install nats-server`).

import { fork, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { connect } from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import * as hdr from 'hdr-histogram-js';
import { cpuSeconds } from './procstat.js';
import { spawnBroker } from '../test/support/spawn-broker.js';
import { freePort } from '../test/support/free-port.js';
import { Client } from '../src/client/client.js';
import { Worker } from '../src/client/worker.js';
import { ZmtpDealer } from '../src/zmtp/dealer.js';

type System = 'mdbroker' | 'mdbroker-curve' | 'mdbroker-libzmq' | 'mdbroker-libzmq-curve' | 'mdbroker-peers' | 'nats';
const SYSTEMS: System[] = ['mdbroker', 'nats', 'mdbroker-curve', 'mdbroker-libzmq', 'mdbroker-libzmq-curve', 'mdbroker-peers'];

interface Role {
  role: 'worker' | 'client';
  system: System;
  endpoint: string;
  depth: number;
  /** Requests a second, open loop (0: closed loop, `depth` in flight). */
  rate: number;
  size: number;
  sessions: number;
  seconds: number;
  curve?: { serverKey: string; publicKey: string; secretKey: string };
}

/** Requester -> parent. */
type Report = { kind: 'ready' } | { kind: 'window'; edge: 'start' | 'end' } | { kind: 'result'; requests: number; cpuUs: number; p50: number; p99: number; seconds: number };

const SELF = fileURLToPath(import.meta.url);
const send = (m: Report) => process.send?.(m);

// ---------------------------------------------------------------- roles (child processes)

async function runWorker(r: Role): Promise<void> {
  // Exit on SIGTERM (not killed): a --cpu-prof profile is written at exit.
  process.on('SIGTERM', () => process.exit(0));
  if (r.system === 'nats') {
    const { connect: natsConnect } = await import('nats');
    const nc = await natsConnect({ servers: r.endpoint });
    nc.subscribe('echo', { callback: (_err, msg) => msg.respond(msg.data) });
    await nc.flush();
  } else if (r.system === 'mdbroker-peers') {
    for (let i = 0; i < r.sessions; i++) rawWorker(r.endpoint);
  } else {
    const w = new Worker({
      endpoint: r.endpoint, service: 'echo', concurrency: r.sessions, handler: (body) => body,
      transport: r.system.startsWith('mdbroker-libzmq') ? 'libzmq' : 'zmtp', curve: r.curve,
    });
    await w.ready({ timeout: 10000 });
  }
  send({ kind: 'ready' });
}

const E = Buffer.alloc(0);
const MDPW01 = Buffer.from('MDPW01');
const MDPC01 = Buffer.from('MDPC01');
const ECHO = Buffer.from('echo');

/** A raw MDP/0.1 worker on ZmtpDealer: READY, REPLY to each REQUEST, HEARTBEAT each second. */
function rawWorker(endpoint: string): void {
  const d: ZmtpDealer = new ZmtpDealer(endpoint, (f) => {
    if (f[2]?.[0] === 2) d.send([E, MDPW01, Buffer.from([3]), f[3], E, ...f.slice(5)]);
  });
  d.send([E, MDPW01, Buffer.from([1]), ECHO]);
  setInterval(() => d.send([E, MDPW01, Buffer.from([4])]), 1000).unref();
}

async function runClient(r: Role): Promise<void> {
  const body = Buffer.alloc(r.size, 0x61);
  const hist = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: 3 });
  let measuring = false;
  let stopped = false;
  let count = 0;
  const done = (t0: number) => {
    if (measuring) {
      count++;
      hist.recordValue(Math.max(1, Math.round((performance.now() - t0) * 1000)));
    }
  };
  // One request, resolved when its reply is in (library and nats.js); the raw peers keep their own bookkeeping.
  let issue: () => Promise<void>;
  let close: () => void | Promise<void>;
  if (r.system === 'nats') {
    const { connect: natsConnect } = await import('nats');
    const nc = await natsConnect({ servers: r.endpoint });
    issue = async () => {
      const t0 = performance.now();
      await nc.request('echo', body, { timeout: 10000 });
      done(t0);
    };
    close = () => nc.close();
  } else if (r.system === 'mdbroker-peers') {
    // The request-id envelope (4 bytes before the empty frame): the broker returns it on the reply.
    const sent = new Map<number, number>();
    const waiting = new Map<number, () => void>();
    let seq = 0;
    const d: ZmtpDealer = new ZmtpDealer(r.endpoint, (f) => {
      const id = f[0].readUInt32BE(0);
      done(sent.get(id) as number);
      sent.delete(id);
      const w = waiting.get(id);
      waiting.delete(id);
      w?.();
    });
    issue = () => {
      const id = Buffer.alloc(4);
      id.writeUInt32BE(++seq);
      sent.set(seq, performance.now());
      d.send([id, E, MDPC01, ECHO, body]);
      const n = seq;
      return new Promise<void>((res) => waiting.set(n, res));
    };
    await d.ready;
    close = () => d.close();
  } else {
    const c = new Client({ endpoints: r.endpoint, transport: r.system.startsWith('mdbroker-libzmq') ? 'libzmq' : 'zmtp', curve: r.curve, timeout: 10000 });
    await c.ready({ timeout: 10000 });
    issue = async () => {
      const t0 = performance.now();
      await c.request('echo', body);
      done(t0);
    };
    close = () => c.close();
  }
  if (r.rate > 0) {
    // Open loop: `rate` requests a second, whatever comes back, so two systems can be compared at the same rate.
    let last = performance.now();
    let owed = 0;
    const pacer = setInterval(() => {
      if (stopped) return clearInterval(pacer);
      const now = performance.now();
      owed += ((now - last) * r.rate) / 1000;
      last = now;
      for (; owed >= 1; owed--) void issue();
    }, 1);
  } else {
    const loop = async () => {
      while (!stopped) await issue();
    };
    for (let i = 0; i < r.depth; i++) void loop();
  }
  // Warm-up (JIT, connections), then the measured window.
  await new Promise((res) => setTimeout(res, 1000));
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  measuring = true;
  send({ kind: 'window', edge: 'start' });
  await new Promise((res) => setTimeout(res, r.seconds * 1000));
  measuring = false;
  const cpu = process.cpuUsage(cpu0);
  const seconds = (performance.now() - t0) / 1000;
  send({ kind: 'window', edge: 'end' });
  stopped = true;
  send({ kind: 'result', requests: count, cpuUs: cpu.user + cpu.system, p50: hist.getValueAtPercentile(50), p99: hist.getValueAtPercentile(99), seconds });
  await new Promise((res) => setTimeout(res, 200));
  await close();
  process.exit(0);
}

// ---------------------------------------------------------------- the run (parent)

interface Measure {
  system: System;
  depth: number;
  rate: number;
  p50Us: number;
  p99Us: number;
  clientUs: number;
  workerUs: number;
  serverUs: number;
}

async function listening(port: number, ms: number): Promise<void> {
  const until = Date.now() + ms;
  for (;;) {
    const ok = await new Promise<boolean>((r) => {
      const s = connect(port, '127.0.0.1', () => {
        s.destroy();
        r(true);
      });
      s.on('error', () => r(false));
    });
    if (ok) return;
    if (Date.now() > until) throw new Error(`nothing listening on ${port} after ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function hasNatsServer(): boolean {
  return spawnSync('nats-server', ['--version'], { encoding: 'utf8' }).status === 0;
}

async function startServer(system: System): Promise<{ proc: ChildProcess; endpoint: string; curve?: Role['curve'] }> {
  if (system === 'nats') {
    const port = await freePort();
    const proc = spawn('nats-server', ['-a', '127.0.0.1', '-p', String(port)], { stdio: 'ignore' });
    await listening(port, 5000);
    return { proc, endpoint: `127.0.0.1:${port}` };
  }
  const flags = ['--bind', 'tcp://127.0.0.1:*', '--log-level', 'warn'];
  let curve: Role['curve'];
  let dir: string | null = null;
  if (system.endsWith('curve')) {
    const { curveKeyPair } = await import('zeromq');
    const server = curveKeyPair();
    const client = curveKeyPair();
    curve = { serverKey: server.publicKey, publicKey: client.publicKey, secretKey: client.secretKey };
    dir = mkdtempSync(join(os.tmpdir(), 'mdb-apps-'));
    writeFileSync(join(dir, 'broker.key'), `public-key = "${server.publicKey}"\nsecret-key = "${server.secretKey}"\n`, { mode: 0o600 });
    flags.push('--curve-secret-key', join(dir, 'broker.key'));
  }
  try {
    const b = await spawnBroker([...flags, '--log-level', 'info']);
    return { proc: b.child, endpoint: b.endpoint, curve };
  } finally {
    if (dir !== null) rmSync(dir, { recursive: true, force: true });
  }
}

function child(r: Role): ChildProcess {
  // BENCH_PROFILE=worker|client: a V8 CPU profile of that process into ./profiles (open it in Chrome DevTools).
  const profile = process.env.BENCH_PROFILE === r.role ? ['--cpu-prof', '--cpu-prof-dir=profiles'] : [];
  return fork(SELF, [JSON.stringify(r)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], execArgv: profile });
}

function next(proc: ChildProcess, kind: Report['kind']): Promise<Report> {
  return new Promise((resolve, reject) => {
    const onMsg = (m: Report) => {
      if (m.kind !== kind) return;
      proc.off('message', onMsg);
      resolve(m);
    };
    proc.on('message', onMsg);
    proc.once('exit', (code) => reject(new Error(`${kind}: process exited with ${code}`)));
  });
}

async function measure(system: System, depth: number, opts: { seconds: number; size: number; sessions: number; rate: number }): Promise<Measure> {
  const server = await startServer(system);
  const base = { system, endpoint: server.endpoint, depth, rate: opts.rate, size: opts.size, sessions: opts.sessions, seconds: opts.seconds, curve: server.curve };
  const worker = child({ ...base, role: 'worker' });
  try {
    await next(worker, 'ready');
    const client = child({ ...base, role: 'client' });
    await next(client, 'window');
    const pids = [server.proc.pid as number, worker.pid as number];
    const before = pids.map((p) => cpuSeconds(p) ?? 0);
    const result = next(client, 'result');
    await next(client, 'window');
    const after = pids.map((p) => cpuSeconds(p) ?? 0);
    const r = (await result) as Extract<Report, { kind: 'result' }>;
    await new Promise((res) => client.once('exit', res));
    const n = Math.max(1, r.requests);
    return {
      system, depth, rate: r.requests / r.seconds, p50Us: r.p50, p99Us: r.p99, clientUs: r.cpuUs / n,
      serverUs: ((after[0] - before[0]) * 1e6) / n, workerUs: ((after[1] - before[1]) * 1e6) / n,
    };
  } finally {
    const exited = new Promise((res) => worker.once('exit', res));
    worker.kill('SIGTERM');
    await Promise.race([exited, new Promise((res) => setTimeout(res, 3000))]);
    worker.kill('SIGKILL');
    server.proc.kill('SIGKILL');
    await new Promise((res) => setTimeout(res, 300));
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function main(): Promise<void> {
  const arg = (name: string, dflt: string) => {
    const i = process.argv.indexOf(`--${name}`);
    return i > 0 ? process.argv[i + 1] : dflt;
  };
  if (process.argv.includes('--help')) {
    console.log((await import('node:fs')).readFileSync(SELF.replace(/dist\/bench\/apps\.js$/, 'bench/apps.ts'), 'utf8').split('\n').slice(0, 10).join('\n'));
    return;
  }
  const seconds = Number(arg('seconds', '4'));
  const rounds = Number(arg('rounds', '3'));
  const size = Number(arg('size', '100'));
  const sessions = Number(arg('sessions', '64'));
  const rate = Number(arg('rate', '0'));
  const depths = rate > 0 ? [0] : arg('depth', '64,1').split(',').map(Number);
  let systems = arg('only', SYSTEMS.join(',')).split(',') as System[];
  if (systems.includes('nats') && !hasNatsServer()) {
    console.error('nats-server is not installed (apt-get install nats-server): the nats rows are skipped');
    systems = systems.filter((s) => s !== 'nats');
  }
  const all: Measure[] = [];
  for (let round = 1; round <= rounds; round++) {
    for (const depth of depths) {
      for (const system of systems) {
        if (depth === 1 && !['mdbroker', 'nats', 'mdbroker-peers'].includes(system)) continue;
        const m = await measure(system, depth, { seconds, size, sessions, rate });
        all.push(m);
        console.error(`round ${round}/${rounds} depth ${depth} ${system}: ${Math.round(m.rate)} req/s, p50 ${m.p50Us} us, client ${m.clientUs.toFixed(1)} us, worker ${m.workerUs.toFixed(1)} us, server ${m.serverUs.toFixed(1)} us per request`);
      }
    }
  }
  const rows: Measure[] = [];
  for (const depth of depths) {
    for (const system of systems) {
      const ms = all.filter((m) => m.system === system && m.depth === depth);
      if (ms.length === 0) continue;
      rows.push({
        system, depth, rate: median(ms.map((m) => m.rate)), p50Us: median(ms.map((m) => m.p50Us)), p99Us: median(ms.map((m) => m.p99Us)),
        clientUs: median(ms.map((m) => m.clientUs)), workerUs: median(ms.map((m) => m.workerUs)), serverUs: median(ms.map((m) => m.serverUs)),
      });
    }
  }
  console.log(`\nmedians of ${rounds} rounds, ${rate > 0 ? `open loop at ${rate}/s, ` : ''}${seconds} s windows, ${size} B bodies, worker concurrency ${sessions}, ${os.cpus().length} cores, Node ${process.version}`);
  console.log('system                 depth   req/s    vs nats  p50 us  p99 us  client us  worker us  server us (CPU per request)');
  for (const r of rows) {
    const nats = rows.find((x) => x.system === 'nats' && x.depth === r.depth);
    const ratio = nats ? (r.rate / nats.rate).toFixed(2) + 'x' : '-';
    console.log(`${r.system.padEnd(22)} ${String(r.depth).padStart(5)} ${String(Math.round(r.rate)).padStart(8)} ${ratio.padStart(9)} ${String(r.p50Us).padStart(7)} ${String(r.p99Us).padStart(7)} ${r.clientUs.toFixed(1).padStart(10)} ${r.workerUs.toFixed(1).padStart(10)} ${r.serverUs.toFixed(1).padStart(10)}`);
  }
  const out = arg('out', '');
  if (out !== '') {
    writeFileSync(out, JSON.stringify({ date: new Date().toISOString(), node: process.version, cores: os.cpus().length, seconds, rounds, size, sessions, rate, rows, all }, null, 2) + '\n');
    console.log(`saved ${out}`);
  }
}

if (process.argv[2]?.startsWith('{')) {
  const r = JSON.parse(process.argv[2]) as Role;
  void (r.role === 'worker' ? runWorker(r) : runClient(r)).catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
} else {
  void main().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
