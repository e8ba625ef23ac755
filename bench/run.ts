// npm run bench: runs each config of a matrix against a fresh broker process and against the zero-logic proxy,
// with the load generator in its own process, and prints one comparison table.

import { parseArgs } from 'node:util';
import { fork, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import os from 'node:os';
import * as zmq from 'zeromq';
import { DEFAULT_RUN, type LoadMessage, type LoadResult, type RunConfig, type Target } from './load-config.js';
import { cpuSeconds, peakRssBytes } from './procstat.js';
import { brokerMetric, spawnBroker } from '../test/support/spawn-broker.js';
import {
  failoverDip, renderCharts, renderCompare, renderConditions, renderHtml, renderTable,
  type BenchReport, type ConfigResult, type Measurement,
} from './report.js';

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));
const ROOT = here('../../');
const CONFIG_DIR = `${ROOT}bench/configs`;
const LOADGEN = here('./loadgen.js');
const RAW_PROXY = here('./raw-proxy.js');
/** Simulated workers per generator process: libzmq sockets take 2 file descriptors each, zmtp ones 1 (~20,000 allowed). */
const WORKERS_PER_PROCESS = { libzmq: 4000, zmtp: 12000, library: 2000 } as const;
const pkg = JSON.parse(readFileSync(`${ROOT}package.json`, 'utf8')) as { version: string };

const HELP = `npm run bench -- [options]

Runs a matrix of load configs against the mdbroker broker (a fresh process per run) and against a zero-logic
ROUTER-DEALER proxy under the same load, and prints msgs/s, latency percentiles, broker CPU and memory.

  --config NAME       bench/configs/NAME.json, or a path to a JSON file (default: default)
  --list              list the configs
  --duration MS       override every run's measured window
  --repeat N          run each config N times; report medians (default 1)
  --target ENDPOINT   bench an external MDP broker at ENDPOINT instead of starting ours
  --no-baseline       skip the raw-proxy runs
  --native            also run every config through libzmq's own proxy in a native thread (the physical floor)
  --peers KIND        the generator's simulated peers: zmtp (the project's ZMTP client side, cheap), libzmq
                      (zeromq.js sockets) or library (Client and Worker objects: what an app gets; closed-loop
                      runs only, no raw-proxy baseline); default: each config's, else zmtp
  --json FILE         write results as JSON; '-' writes to stdout and prints nothing else
  --html FILE         write a self-contained HTML report with charts
  --compare A B       compare two saved --json results and exit
  -h, --help
`;

interface ConfigFile {
  description?: string;
  runs: (Partial<RunConfig> & { name: string })[];
}

const children = new Set<ChildProcess>();
let quiet = false;
let progressLine = false;

function killAll(): void {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
}
process.on('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    killAll();
    if (progressLine) process.stderr.write('\n');
    process.stderr.write(`bench: interrupted (${sig}); every process it started was stopped\n`);
    process.exit(130);
  });
}

function progress(text: string): void {
  if (quiet || !process.stderr.isTTY) return;
  process.stderr.write(`\r\x1b[K${text}`);
  progressLine = true;
}
function say(text: string): void {
  if (quiet) return;
  if (progressLine) process.stderr.write('\r\x1b[K');
  progressLine = false;
  process.stdout.write(`${text}\n`);
}

function loadConfigFile(name: string): { file: string; runs: RunConfig[] } {
  const file = existsSync(name) ? name : `${CONFIG_DIR}/${name}.json`;
  if (!existsSync(file)) throw new Error(`no config '${name}' (looked for ${file}); try --list`);
  const parsed = JSON.parse(readFileSync(file, 'utf8')) as ConfigFile;
  if (!Array.isArray(parsed.runs) || parsed.runs.length === 0) throw new Error(`${file}: needs a non-empty "runs" array`);
  // A misspelt key would otherwise silently run the default in its place.
  const known = new Set(['name', ...Object.keys(DEFAULT_RUN)]);
  for (const r of parsed.runs) {
    const unknown = Object.keys(r).filter((k) => !known.has(k));
    if (unknown.length > 0) throw new Error(`${file}: run '${r.name}': unknown key(s) ${unknown.join(', ')} (known: ${[...known].join(', ')})`);
  }
  for (const k of Object.keys(parsed)) if (k !== 'runs' && k !== 'description') throw new Error(`${file}: unknown top-level key '${k}' (known: description, runs)`);
  return { file, runs: parsed.runs.map((r) => ({ ...DEFAULT_RUN, ...r, broker: { ...DEFAULT_RUN.broker, ...r.broker } })) };
}

function validate(r: RunConfig): void {
  const bad = (what: string) => { throw new Error(`config ${r.name}: ${what}`); };
  if (!(r.workers >= 1 && r.workers <= 10000)) bad('workers must be 1..10000');
  if (!(r.clients >= 1 && r.clients <= 10000)) bad('clients must be 1..10000');
  // Up to 8 MiB: under the broker's default --max-frame-bytes (16 MiB), and what the large config runs.
  if (!(r.size >= 16 && r.size <= 8 * 1024 * 1024)) bad('size must be 16..8388608');
  if (!(r.window >= 1)) bad('window must be >= 1');
  if (!(r.services >= 1)) bad('services must be >= 1');
  if (r.mode !== 'closed' && r.mode !== 'open') bad("mode must be 'closed' or 'open'");
  if (r.mode === 'open' && !(r.rate > 0)) bad('open loop needs rate > 0');
  if (!(r.durationMs > 0 && r.durationMs <= 600000)) bad('durationMs must be 1..600000');
  if (r.peers !== 'zmtp' && r.peers !== 'libzmq' && r.peers !== 'library') bad("peers must be 'zmtp', 'libzmq' or 'library'");
  if (r.peers === 'library' && r.mode !== 'closed') bad("peers 'library' (Client and Worker objects) run closed-loop");
  if (r.peers === 'library' && r.baseline) bad("peers 'library' speak MDP, which the raw proxy does not: set \"baseline\": false (or --no-baseline)");
  if (r.curve && r.peers !== 'libzmq') bad("curve needs peers 'libzmq' (the generator's zmtp peers speak NULL only)");
  if (!(Number.isInteger(r.brokers) && r.brokers >= 1 && r.brokers <= 8)) bad('brokers must be 1..8');
  if (r.killBrokerAtMs > 0 && r.brokers < 2) bad('killBrokerAtMs needs brokers >= 2');
  if (r.killBrokerAtMs > 0 && r.mode !== 'closed') bad('failover runs (killBrokerAtMs) are closed-loop');
  if (r.killBrokerAtMs > 0 && r.killBrokerAtMs >= r.durationMs) bad('killBrokerAtMs must fall inside the measured window (durationMs)');
  if (r.brokers > 1 && r.baseline) bad('runs with several brokers have no raw-proxy baseline: set "baseline": false');
  if (r.curve && r.baseline) bad('curve runs have no raw-proxy baseline (the proxy speaks NULL): set "baseline": false');
}

/** Starts the broker CLI on a free port; resolves with its process, endpoint and metrics port. */
async function startBroker(cfg: RunConfig): Promise<{ proc: ChildProcess; endpoint: string; metricsPort: number | null; serverKey?: string }> {
  const flags = [
    '--bind', 'tcp://127.0.0.1:*', '--log-level', process.env.BENCH_BROKER_LOG ?? 'info',
    '--heartbeat-interval', String(cfg.heartbeatInterval), '--metrics-port', '0',
  ];
  for (const [k, v] of Object.entries(cfg.broker)) flags.push(`--${k}`, String(v));
  let serverKey: string | undefined;
  let dir: string | null = null;
  if (cfg.curve) {
    const pair = zmq.curveKeyPair();
    serverKey = pair.publicKey;
    dir = mkdtempSync(join(os.tmpdir(), 'mdb-bench-'));
    writeFileSync(join(dir, 'broker.key'), `public-key = "${pair.publicKey}"\nsecret-key = "${pair.secretKey}"\n`, { mode: 0o600 });
    flags.push('--curve-secret-key', join(dir, 'broker.key'));
  }
  try {
    const b = await spawnBroker(flags);
    children.add(b.child);
    return { proc: b.child, endpoint: b.endpoint, metricsPort: b.metricsPort, serverKey };
  } finally {
    if (dir !== null) rmSync(dir, { recursive: true, force: true });
  }
}

function startRawProxy(native: boolean): Promise<{ proc: ChildProcess; frontend: string; backend: string }> {
  const proc = fork(RAW_PROXY, [native ? 'native' : 'js'], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  children.add(proc);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('raw proxy did not start within 10 s')), 10000);
    proc.once('message', (m: { frontend: string; backend: string }) => {
      clearTimeout(timer);
      resolve({ proc, frontend: m.frontend, backend: m.backend });
    });
    proc.on('exit', (code) => reject(new Error(`raw proxy exited with ${code}`)));
  });
}

async function stop(proc: ChildProcess | null): Promise<void> {
  if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  proc.kill('SIGTERM');
  const t = setTimeout(() => proc.kill('SIGKILL'), 8000);
  await exited;
  clearTimeout(t);
  children.delete(proc);
}

/** One measured run of `cfg` against the broker, the JS or native raw proxy, or an external target. */
async function measure(cfg: RunConfig, kind: 'broker' | 'raw' | 'native' | 'external', external: string, label: string): Promise<Measurement> {
  let server: ChildProcess | null = null;
  /** Further broker processes (cfg.brokers > 1); their CPU and memory count with the first's. */
  const more: ChildProcess[] = [];
  let target: Target;
  let metricsPort: number | null = null;
  if (kind === 'broker') {
    const b = await startBroker(cfg);
    server = b.proc;
    metricsPort = b.metricsPort;
    target = { kind: 'mdp', clients: b.endpoint, workers: b.endpoint, serverKey: b.serverKey };
    if (cfg.brokers > 1) {
      const eps = [b.endpoint];
      for (let i = 1; i < cfg.brokers; i++) {
        const o = await startBroker(cfg);
        more.push(o.proc);
        eps.push(o.endpoint);
      }
      target.endpoints = eps;
    }
  } else if (kind === 'raw' || kind === 'native') {
    const p = await startRawProxy(kind === 'native');
    server = p.proc;
    target = { kind: 'raw', clients: p.frontend, workers: p.backend };
  } else {
    target = { kind: 'mdp', clients: external, workers: external };
  }
  // Each process holds at most WORKERS_PER_PROCESS simulated workers (2 file descriptors per socket, ~20,000 allowed):
  // helpers take the first chunks, the main generator the rest plus every client.
  const helpers: ChildProcess[] = [];
  const base = { ...cfg, target, envelope: kind !== 'external' };
  let from = 0;
  const perProcess = WORKERS_PER_PROCESS[cfg.peers];
  while (cfg.workers - from > perProcess) {
    const h = fork(LOADGEN, [JSON.stringify({ ...base, workerFrom: from, workerTo: from + perProcess, withClients: false })], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    children.add(h);
    helpers.push(h);
    await new Promise<void>((resolve, reject) => {
      h.on('message', (m: LoadMessage) => (m.type === 'ready' ? resolve() : m.type === 'error' ? reject(new Error(m.message)) : undefined));
      h.on('exit', (code) => reject(new Error(`load generator helper exited with ${code}`)));
    });
    from += perProcess;
  }
  const spec = { ...base, workerFrom: from, workerTo: cfg.workers, withClients: true };
  const gen = fork(LOADGEN, [JSON.stringify(spec)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  children.add(gen);
  /** The server processes measured (none against an external target). */
  const pids = server?.pid === undefined ? [] : [server.pid, ...more.map((m) => m.pid as number)];
  const measured = pids.length > 0;
  let killedPid = -1;
  const cpuAll = () => pids.reduce((a, p) => a + (p === killedPid ? 0 : cpuSeconds(p) ?? 0), 0);
  const rssAll = () => pids.reduce((a, p) => a + (peakRssBytes(p) ?? 0), 0);
  let cpu0: number | null = null;
  let cpu1: number | null = null;
  let peakRss: number | null = null;
  let killTimer: NodeJS.Timeout | null = null;
  /** CPU seconds of the killed broker up to its death (it no longer shows in /proc). */
  let killedCpu = 0;
  let t0 = 0;
  let t1 = 0;
  let loopDelay: Promise<number | null> = Promise.resolve(null);
  try {
    const result = await new Promise<LoadResult>((resolve, reject) => {
      gen.on('message', (m: LoadMessage) => {
        if (m.type === 'window-start') {
          t0 = performance.now();
          cpu0 = measured ? cpuAll() : null;
          if (metricsPort !== null) void loopDelayMs(metricsPort); // resets the broker's event-loop histogram
          const victim = more[more.length - 1];
          if (cfg.killBrokerAtMs > 0 && victim !== undefined) {
            killTimer = setTimeout(() => {
              killedCpu = cpuSeconds(victim.pid as number) ?? 0;
              killedPid = victim.pid as number;
              victim.kill('SIGKILL');
            }, cfg.killBrokerAtMs);
          }
        } else if (m.type === 'window-end') {
          t1 = performance.now();
          cpu1 = measured ? cpuAll() + killedCpu : null;
          // Peak so far: connection set-up, warm-up and the measured load; not the teardown that follows.
          peakRss = measured ? rssAll() : null;
          if (metricsPort !== null) loopDelay = loopDelayMs(metricsPort);
        } else if (m.type === 'progress') {
          progress(`${label}  ${m.phase.padEnd(7)} ${(m.elapsedMs / 1000).toFixed(1)}/${(m.totalMs / 1000).toFixed(1)} s  ${m.replies.toLocaleString('en-US')} replies`);
        } else if (m.type === 'result') resolve(m.result);
        else if (m.type === 'error') reject(new Error(`load generator: ${m.message}`));
      });
      gen.on('exit', (code) => reject(new Error(`load generator exited with ${code} before reporting`)));
    });
    const cpu = cpu0 !== null && cpu1 !== null ? (cpu1 as number) - (cpu0 as number) : null;
    const windowS = (t1 - t0) / 1000;
    return {
      ...result,
      serverCpuPct: cpu === null ? null : (cpu / windowS) * 100,
      serverCpuUsPerReq: cpu === null || result.replies === 0 ? null : (cpu * 1e6) / result.replies,
      serverPeakRssBytes: peakRss,
      serverLoopDelayP99Ms: await loopDelay,
    };
  } finally {
    if (killTimer) clearTimeout(killTimer);
    await stop(gen);
    for (const h of helpers) await stop(h);
    await stop(server);
    for (const m of more) await stop(m);
  }
}

function renderFailover(results: ConfigResult[]): string[] {
  const lines: string[] = [];
  for (const r of results) {
    if (r.config.killBrokerAtMs <= 0) continue;
    const dips = r.repeats.flatMap((x) => (x.broker.timeline ? [failoverDip(x.broker.timeline, r.config.killBrokerAtMs)] : []));
    if (dips.length === 0) continue;
    const med = (f: (d: (typeof dips)[number]) => number) => Math.round(median(dips.map(f)));
    const rec = dips.map((d) => d.recoveredMs).filter((x): x is number => x !== null);
    const b = med((d) => d.beforePerSec);
    const l = med((d) => d.lowestPerSec);
    lines.push(`failover ${r.config.name}: broker ${r.config.brokers} of ${r.config.brokers} SIGKILLed ${r.config.killBrokerAtMs} ms into the window; ` +
      `before ${b.toLocaleString('en-US')} msgs/s, lowest 100 ms after ${l.toLocaleString('en-US')} msgs/s (${b > 0 ? Math.round((100 * l) / b) : 0}%), ` +
      `back to 80% within ${rec.length === dips.length ? `${Math.round(median(rec))} ms` : 'the window: no'}${rec.length > 0 && median(rec) === 0 ? ' (no dip)' : ''}; p99 over the window ${(r.broker.p99 / 1000).toFixed(1)} ms; ` +
      `lost ${r.broker.lost}, errors ${Object.values(r.broker.errors).reduce((a, x) => a + x, 0)} (medians of ${dips.length})`);
  }
  return lines;
}

/** The broker's main-thread event-loop delay p99 since the previous scrape, from its /metrics. */
async function loopDelayMs(port: number): Promise<number | null> {
  try {
    const us = await brokerMetric(port, 'loopDelayP99Us');
    return us === null ? null : us / 1000;
  } catch {
    return null;
  }
}

/** A saved --json result, or a readable error saying the file is not one. */
function readReport(path: string): BenchReport {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new Error(`${path}: ${(err as Error).message}`);
  }
  const r = parsed as Partial<BenchReport> | null;
  if (r === null || typeof r !== 'object' || r.tool !== 'mdbroker-bench' || !Array.isArray(r.results)) {
    throw new Error(`${path} is not a bench result (npm run bench -- --json FILE writes one)`);
  }
  return r as BenchReport;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function medianOf(ms: Measurement[]): Measurement {
  if (ms.length === 1) return ms[0];
  const med = (f: (m: Measurement) => number | null) => {
    const xs = ms.map(f).filter((x): x is number => x !== null);
    return xs.length ? median(xs) : null;
  };
  const errors: Record<string, number> = {};
  for (const m of ms) for (const [k, v] of Object.entries(m.errors)) errors[k] = (errors[k] ?? 0) + v;
  return {
    replies: med((m) => m.replies) as number, windowMs: med((m) => m.windowMs) as number,
    throughput: med((m) => m.throughput) as number, p50: med((m) => m.p50) as number, p99: med((m) => m.p99) as number,
    p999: med((m) => m.p999) as number, max: Math.max(...ms.map((m) => m.max)), mean: med((m) => m.mean) as number,
    sent: ms.reduce((a, m) => a + m.sent, 0), answered: ms.reduce((a, m) => a + m.answered, 0), errors,
    lost: ms.reduce((a, m) => a + m.lost, 0), duplicates: ms.reduce((a, m) => a + m.duplicates, 0),
    generatorCpuUsPerReq: med((m) => m.generatorCpuUsPerReq) as number,
    serverCpuPct: med((m) => m.serverCpuPct), serverCpuUsPerReq: med((m) => m.serverCpuUsPerReq),
    serverPeakRssBytes: med((m) => m.serverPeakRssBytes), serverLoopDelayP99Ms: med((m) => m.serverLoopDelayP99Ms),
  };
}

async function main(): Promise<number> {
  const { values, positionals } = parseArgs({
    options: {
      config: { type: 'string', default: 'default' }, list: { type: 'boolean' }, duration: { type: 'string' },
      repeat: { type: 'string', default: '1' }, target: { type: 'string' }, 'no-baseline': { type: 'boolean' },
      json: { type: 'string' }, html: { type: 'string' }, compare: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
      native: { type: 'boolean' }, peers: { type: 'string' },
    },
    allowPositionals: true,
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (values.list) {
    for (const f of readdirSync(CONFIG_DIR).filter((f) => f.endsWith('.json')).sort()) {
      const c = JSON.parse(readFileSync(`${CONFIG_DIR}/${f}`, 'utf8')) as ConfigFile;
      process.stdout.write(`${f.replace(/\.json$/, '').padEnd(14)} ${c.runs.length} run(s)  ${c.description ?? ''}\n`);
    }
    process.stdout.write(`${'titanic'.padEnd(14)} durable requests (--titanic, LMDB and PostgreSQL) against NATS JetStream, submit to reply available (bench/titanic.ts)\n`);
    return 0;
  }
  if (values.compare) {
    if (positionals.length !== 2) throw new Error('--compare needs two JSON files: --compare A.json B.json');
    const [a, b] = positionals.map(readReport);
    const common = b.results.filter((rb) => a.results.some((ra) => ra.config.name === rb.config.name)).length;
    if (common === 0) throw new Error(`${positionals[0]} and ${positionals[1]} have no config names in common`);
    process.stdout.write(`${renderCompare(a, b, positionals[0], positionals[1])}\n`);
    return 0;
  }
  if (positionals.length > 0) throw new Error(`unexpected argument(s): ${positionals.join(' ')} (files are only taken by --compare)`);
  if (values.config === 'titanic') {
    // Durable requests against NATS JetStream: their own harness (three processes per system), bench/titanic.ts.
    const args = [fileURLToPath(new URL('./titanic.js', import.meta.url)), '--rounds', values.repeat === '1' ? '3' : String(values.repeat)];
    if (values.json !== undefined && values.json !== '-') args.push('--out', values.json);
    return spawnSync(process.execPath, args, { stdio: 'inherit' }).status ?? 1;
  }
  quiet = values.json === '-';
  const repeat = Number(values.repeat);
  if (!Number.isInteger(repeat) || repeat < 1) throw new Error(`--repeat must be a positive integer, got '${values.repeat}'`);
  const loaded = loadConfigFile(String(values.config));
  const file = loaded.file;
  let runs = loaded.runs;
  if (values.duration !== undefined) {
    const d = Number(values.duration);
    if (!(d > 0)) throw new Error(`--duration must be a positive number of ms, got '${values.duration}'`);
    for (const r of runs) r.durationMs = d;
  }
  if (values.peers !== undefined) for (const r of runs) r.peers = values.peers as RunConfig['peers'];
  if (values.peers === 'library') {
    // Client and Worker objects speak MDP (no raw-proxy baseline) and run closed-loop: open-loop runs are skipped.
    const open = runs.filter((r) => r.mode !== 'closed').map((r) => r.name);
    if (open.length > 0) console.error(`--peers library: skipping open-loop run(s) ${open.join(', ')}`);
    runs = runs.filter((r) => r.mode === 'closed');
    for (const r of runs) r.baseline = false;
  }
  if (values.native) for (const r of runs) r.native = true;
  runs.forEach(validate);
  const external = values.target;
  const baseline = !values['no-baseline'];

  const results: ConfigResult[] = [];
  for (let i = 0; i < runs.length; i++) {
    const cfg = runs[i];
    const reps: { broker: Measurement; raw: Measurement | null; native: Measurement | null }[] = [];
    for (let k = 0; k < repeat; k++) {
      const tag = `[${i + 1}/${runs.length}${repeat > 1 ? ` #${k + 1}` : ''}] ${cfg.name}`;
      const broker = await measure(cfg, external ? 'external' : 'broker', external ?? '', `${tag} ${external ? 'target' : 'broker'}`);
      const raw = baseline && cfg.baseline ? await measure(cfg, 'raw', '', `${tag} raw proxy`) : null;
      const native = baseline && cfg.native ? await measure(cfg, 'native', '', `${tag} native proxy`) : null;
      reps.push({ broker, raw, native });
    }
    // Ratios are taken within each repeat (same minute, same machine state), then the median.
    const ratioTo = (pick: (r: (typeof reps)[number]) => Measurement | null) => {
      const xs = reps.filter((r) => (pick(r)?.throughput ?? 0) > 0).map((r) => r.broker.throughput / (pick(r) as Measurement).throughput);
      return xs.length ? median(xs) : null;
    };
    const medianOfSome = (pick: (r: (typeof reps)[number]) => Measurement | null) => {
      const ms = reps.flatMap((r) => (pick(r) ? [pick(r) as Measurement] : []));
      return ms.length ? medianOf(ms) : null;
    };
    const res: ConfigResult = {
      config: cfg,
      broker: medianOf(reps.map((r) => r.broker)),
      raw: medianOfSome((r) => r.raw),
      ratio: ratioTo((r) => r.raw),
      native: medianOfSome((r) => r.native),
      nativeRatio: ratioTo((r) => r.native),
      repeats: reps,
    };
    results.push(res);
    say(`${cfg.name}: ${Math.round(res.broker.throughput).toLocaleString('en-US')} msgs/s, p99 ${(res.broker.p99 / 1000).toFixed(2)} ms` +
      (res.ratio !== null ? `, ${res.ratio.toFixed(2)} x raw proxy` : ''));
  }

  const report: BenchReport = {
    tool: 'mdbroker-bench', version: pkg.version, date: new Date().toISOString(), node: process.version,
    libzmq: zmq.version, cpu: os.cpus()[0]?.model ?? 'unknown', cores: os.cpus().length,
    configFile: file.replace(ROOT, ''), target: external ?? 'mdbroker (spawned)', repeat, results,
  };
  say('');
  say(renderConditions(report));
  say(renderTable(report));
  for (const line of renderFailover(results)) say(line);
  say('');
  say(renderCharts(report, process.stdout.isTTY === true));
  if (values.json === '-') process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  else if (values.json) writeFileSync(values.json, `${JSON.stringify(report, null, 2)}\n`);
  if (values.html) writeFileSync(values.html, renderHtml(report));

  const lost = results.reduce((a, r) => a + r.broker.lost + (r.raw?.lost ?? 0) + (r.native?.lost ?? 0), 0);
  const dups = results.reduce((a, r) => a + r.broker.duplicates + (r.raw?.duplicates ?? 0) + (r.native?.duplicates ?? 0), 0);
  if (lost > 0 || dups > 0) {
    process.stderr.write(`\n!!! ${lost} request(s) LOST and ${dups} answered more than once. This is a bug. !!!\n`);
    return 1;
  }
  return 0;
}

main().then(
  (code) => {
    killAll();
    process.exit(code);
  },
  (err: unknown) => {
    killAll();
    if (progressLine) process.stderr.write('\n');
    process.stderr.write(`bench: ${(err as Error).message ?? String(err)}\n`);
    process.exit(2);
  },
);
