// Several brokers measured with the C yardstick, ../shared/mdpload, in one run: each round runs every system once,
// in order, each on a fresh process, then the medians and each system's ratios to the last one named. The way to put
// mdbroker beside the Guide's C broker and a raw C zmq_proxy on a shared, noisy machine.
//
//   node dist/bench/mdpload-brokers.js --system mdbroker=mdbroker --system guide='/tmp/gmb/mdbroker {endpoint}' \
//     --system rawproxy=raw --mdpload ../shared/mdpload/mdpload --repeat 3 --out results.json \
//     -- --workers 10 --clients 10 --window 4 --size 1048576
//
// A system is NAME=mdbroker [FLAGS] (this build's CLI), NAME=raw (mdpload's rawproxy beside the mdpload binary), or
// NAME=COMMAND with {endpoint} where the broker's bind endpoint goes (any MDP broker binary). Everything after `--`
// goes to mdpload as it is. Per run: msgs/s, broker CPU per request, the broker's peak RSS (VmHWM, read before it is
// stopped), p50/p99, and what mdpload counted lost or wrong.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createServer } from 'node:net';

interface Sample {
  msgsPerSec: number;
  cpuUsPerReq: number;
  peakRssMiB: number;
  p50Ms: number;
  p99Ms: number;
  lost: number;
  wrong: number;
}

const split = process.argv.indexOf('--');
const own = split < 0 ? process.argv.slice(2) : process.argv.slice(2, split);
const loadArgs = split < 0 ? ['--workers', '10', '--clients', '10', '--window', '16', '--size', '65536'] : process.argv.slice(split + 1);
const { values } = parseArgs({
  args: own,
  options: {
    system: { type: 'string', multiple: true },
    mdpload: { type: 'string', default: '../shared/mdpload/mdpload' },
    repeat: { type: 'string', default: '3' },
    seconds: { type: 'string', default: '5' },
    out: { type: 'string' },
  },
});
const systems = (values.system ?? []).map((s) => {
  const at = s.indexOf('=');
  return { name: s.slice(0, at), how: s.slice(at + 1) };
});
if (systems.length === 0 || systems.some((s) => s.name === '' || s.how === '')) {
  console.error('usage: mdpload-brokers --system NAME=mdbroker|raw|"COMMAND {endpoint}" ... [--mdpload PATH] [--repeat N] [--seconds S] [--out FILE] -- MDPLOAD ARGS');
  process.exit(2);
}
const CLI = join(dirname(fileURLToPath(import.meta.url)), '..', 'src', 'cli.js');

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

function peakRssMiB(pid: number): number {
  try {
    const line = readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find((l) => l.startsWith('VmHWM:'));
    return line === undefined ? 0 : Number(line.split(/\s+/)[1]) / 1024;
  } catch {
    return 0;
  }
}

/** Starts one system; resolves with its process and the mdpload flags that aim at it. */
async function start(how: string): Promise<{ child: ChildProcess; target: string[] }> {
  const port = await freePort();
  const endpoint = `tcp://127.0.0.1:${port}`;
  let child: ChildProcess;
  let target = ['--broker', endpoint];
  if (how === 'raw') {
    const back = `tcp://127.0.0.1:${await freePort()}`;
    child = spawn(join(dirname(values.mdpload as string), 'rawproxy'), [endpoint, back], { stdio: 'ignore' });
    target = ['--raw', '--broker', endpoint, '--backend', back];
  } else if (how === 'mdbroker' || how.startsWith('mdbroker ')) {
    const flags = how.split(' ').slice(1).filter(Boolean);
    child = spawn(process.execPath, [CLI, '--bind', endpoint, '--stats-interval', '0', '--log-level', 'warn', ...flags], { stdio: 'ignore' });
  } else {
    const [cmd, ...args] = how.replaceAll('{endpoint}', endpoint).split(' ').filter(Boolean);
    child = spawn(cmd, args, { stdio: 'ignore' });
  }
  // Listening is not announced the same way by all of them: give each the same head start.
  await new Promise((r) => setTimeout(r, 1200));
  if (child.exitCode !== null) throw new Error(`${how} exited at once (code ${child.exitCode})`);
  return { child, target };
}

async function once(how: string): Promise<Sample> {
  const { child, target } = await start(how);
  try {
    const pid = child.pid as number;
    const run = spawnSync(values.mdpload as string, [
      ...target, '--broker-pid', String(pid), '--seconds', values.seconds as string, '--warmup', '1', '--drain', '2', ...loadArgs,
    ], { encoding: 'utf8', timeout: 300000 });
    if (run.status !== 0) throw new Error(`mdpload failed: ${run.stderr}`);
    const r = JSON.parse(run.stdout) as {
      msgs_per_sec: number; broker_cpu_pct: number; lat_us: { p50: number; p99: number }; lost: number; errors: number;
      detail: { bad_reply: number; unexpected: number };
    };
    return {
      msgsPerSec: r.msgs_per_sec,
      cpuUsPerReq: Math.round((r.broker_cpu_pct / 100) * 1e6 / r.msgs_per_sec),
      peakRssMiB: Math.round(peakRssMiB(pid)),
      p50Ms: Math.round(r.lat_us.p50 / 100) / 10,
      p99Ms: Math.round(r.lat_us.p99 / 100) / 10,
      lost: r.lost,
      wrong: r.errors + r.detail.bad_reply + r.detail.unexpected,
    };
  } finally {
    child.kill('SIGKILL');
    if (child.exitCode === null) await new Promise((r) => child.once('exit', r));
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

const runs: Record<string, Sample[]> = Object.fromEntries(systems.map((s) => [s.name, []]));
const repeat = Number(values.repeat);
for (let round = 1; round <= repeat; round++) {
  for (const s of systems) {
    const x = await once(s.how);
    runs[s.name].push(x);
    console.log(`round ${round} ${s.name.padEnd(10)} ${String(x.msgsPerSec).padStart(7)} msgs/s  ${String(x.cpuUsPerReq).padStart(6)} us CPU/req  peak RSS ${String(x.peakRssMiB).padStart(4)} MiB  p50 ${x.p50Ms} ms  p99 ${x.p99Ms} ms  lost ${x.lost} wrong ${x.wrong}`);
  }
}
const medians = Object.fromEntries(systems.map((s) => {
  const r = runs[s.name];
  return [s.name, {
    msgsPerSec: median(r.map((x) => x.msgsPerSec)), cpuUsPerReq: median(r.map((x) => x.cpuUsPerReq)),
    peakRssMiB: median(r.map((x) => x.peakRssMiB)), p50Ms: median(r.map((x) => x.p50Ms)), p99Ms: median(r.map((x) => x.p99Ms)),
    lost: r.reduce((a, x) => a + x.lost, 0), wrong: r.reduce((a, x) => a + x.wrong, 0),
  }];
}));
console.log(`medians of ${repeat}, mdpload ${loadArgs.join(' ')}:`);
const base = systems[systems.length - 1].name;
for (const s of systems) {
  const m = medians[s.name];
  const b = medians[base];
  console.log(`  ${s.name.padEnd(10)} ${String(m.msgsPerSec).padStart(7)} msgs/s (${(m.msgsPerSec / b.msgsPerSec).toFixed(2)}x)  ${String(m.cpuUsPerReq).padStart(6)} us CPU/req (${(m.cpuUsPerReq / b.cpuUsPerReq).toFixed(2)}x)  peak RSS ${m.peakRssMiB} MiB (${(m.peakRssMiB / b.peakRssMiB).toFixed(2)}x)  lost ${m.lost} wrong ${m.wrong}`);
}
if (values.out !== undefined) {
  writeFileSync(values.out, JSON.stringify({
    tool: 'mdpload-brokers', date: new Date().toISOString(), node: process.version,
    systems, load: loadArgs, seconds: Number(values.seconds), repeat, runs, medians,
  }, null, 2) + '\n');
  console.log(`written to ${values.out}`);
}
