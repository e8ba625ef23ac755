// npm run test:chaos: real processes on 127.0.0.1 under steady load while things break.
//   - worker processes are killed with SIGKILL at random, mid-request, and replaced;
//   - the broker process is restarted mid-load (once with SIGKILL, once with SIGTERM); clients resend, workers
//     re-register;
//   - clients vanish with requests queued;
//   - one worker hangs: alive, heartbeating, never answering (the broker's busy timeout takes its requests back).
// Every request is accounted for: answered (exactly once at the client, with its own body), or failed back with a
// typed error. Worker executions beyond one per request are reported as duplicates. Exit 1 on any request lost
// (never settled), answered with someone else's reply, or on more error replies than a restart explains: a broker
// that answered everything with an error would otherwise pass (it loses nothing).
//
// CHAOS_SECONDS (default 40) sets the length; CHAOS_MIN_REQUESTS (default 20000) the least that must be issued;
// CHAOS_MAX_FAILED_PERMILLE (default 2) the most requests per thousand that may fail with a typed error (runs here
// fail none: a request survives a restart by its retries); CHAOS_SEED the seed of the kill and vanish schedule
// (printed at the start: the same seed replays the same schedule).
//
// --brokers 2: two broker processes at once; every worker registers with both, every client spreads over both.
// Broker A is SIGKILLed and restarted, later broker B, while workers are killed too. Requests in flight at a kill
// must move to the live broker; the worst time from a kill to the answer of a request then in flight is reported.

import { spawn, type ChildProcess } from 'node:child_process';
import { parseArgs } from 'node:util';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Client } from '../src/client/client.js';
import { spawnBroker } from '../test/support/spawn-broker.js';
import { BrokerError, TimeoutError } from '../src/client/errors.js';
import { prng } from '../test/support/prng.js';

const SECONDS = Number(process.env.CHAOS_SECONDS ?? 40);
const MIN_REQUESTS = Number(process.env.CHAOS_MIN_REQUESTS ?? 20000);
const MAX_FAILED_PERMILLE = Number(process.env.CHAOS_MAX_FAILED_PERMILLE ?? 2);
const SEED = Number(process.env.CHAOS_SEED ?? Math.floor(Math.random() * 0x7fffffff) + 1);
const random = prng(SEED);
const HB = 250;
const WORKERS = 6;
const CLIENTS = 6;
const WINDOW = 24;
const CLI = fileURLToPath(new URL('../src/cli.js', import.meta.url));
const WORKER = fileURLToPath(new URL('./chaos-worker.js', import.meta.url));

const { values: argv } = parseArgs({
  options: { brokers: { type: 'string', default: '1' }, shards: { type: 'string', default: '1' }, titanic: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
});
if (argv.help) {
  process.stdout.write('npm run test:chaos [-- --brokers 2] [--shards N] [--titanic]\n  CHAOS_SECONDS (default 40), CHAOS_MIN_REQUESTS (default 20000); --titanic: CHAOS_TITANIC_REQUESTS (default 10000)\n');
  process.exit(0);
}
const SHARDS = Number(argv.shards);
if (!Number.isInteger(SHARDS) || SHARDS < 1) {
  process.stderr.write(`chaos: --shards must be a positive integer, got '${argv.shards}'\n`);
  process.exit(2);
}
const BROKERS = Number(argv.brokers);
if (BROKERS !== 1 && BROKERS !== 2) {
  process.stderr.write(`chaos: --brokers must be 1 or 2, got '${argv.brokers}'\n`);
  process.exit(2);
}

const procs = new Set<ChildProcess>();
const executions = new Map<string, number>();
/** Each broker's endpoint (its port found once, then reused across restarts) and current process. */
const brokers: { endpoint: string; proc: ChildProcess | null }[] = [];
const events = { workerKills: 0, brokerRestarts: 0, vanishedClients: 0, abandonedRequests: 0 };

function cleanup(): void {
  for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
}
process.on('exit', cleanup);
process.on('SIGINT', () => {
  cleanup();
  process.exit(130);
});

/** Starts broker i with the chaos settings on its endpoint; a bind failure (port still held) shows as an exit. */
function startBroker(i: number): Promise<void> {
  const p = spawn(process.execPath, [
    CLI, '--bind', brokers[i].endpoint, '--heartbeat-interval', String(HB), '--heartbeat-liveness', '3', '--busy-timeout', '3000',
    '--max-attempts', '5', '--request-ttl', '20000', '--shutdown-grace', '500', '--log-level', 'warn', '--stats-interval', '0',
    '--shards', String(SHARDS),
  ], { stdio: ['ignore', 'ignore', 'inherit'] });
  procs.add(p);
  brokers[i].proc = p;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, 300);
    p.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`broker exited ${code}`));
    });
  });
}

async function firstBroker(): Promise<void> {
  const first = await spawnBroker(['--bind', 'tcp://127.0.0.1:*', '--log-level', 'info', '--stats-interval', '0']);
  const p = first.child;
  procs.add(p);
  const i = brokers.push({ endpoint: first.endpoint, proc: null }) - 1;
  // That one only found a free port; the real broker runs with the chaos settings on the same endpoint.
  p.kill('SIGKILL');
  await new Promise((r) => p.once('exit', r));
  await startBroker(i);
}

function startWorker(mode: 'echo' | 'hang'): ChildProcess {
  const p = spawn(process.execPath, [WORKER, endpoints.join(','), mode, String(HB), String(Math.floor(random() * 0x7fffffff) + 1)], { stdio: ['ignore', 'pipe', 'inherit'] });
  procs.add(p);
  createInterface({ input: p.stdout as NodeJS.ReadableStream }).on('line', (l) => {
    if (l.startsWith('done ')) {
      const id = l.slice(5);
      executions.set(id, (executions.get(id) ?? 0) + 1);
    }
  });
  p.once('exit', () => procs.delete(p));
  return p;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let endpoints: string[] = [];

async function main(): Promise<number> {
  console.log(`chaos: seed ${SEED} (CHAOS_SEED=${SEED} replays this schedule of kills and vanishing clients)`);
  for (let i = 0; i < BROKERS; i++) await firstBroker();
  endpoints = brokers.map((b) => b.endpoint);
  const workers: ChildProcess[] = Array.from({ length: WORKERS }, () => startWorker('echo'));
  const hanging = startWorker('hang');
  await sleep(500);

  const tally = { issued: 0, answered: 0, wrongReply: 0, errors: {} as Record<string, number> };
  const pending = new Set<string>();
  let running = true;
  const clients = Array.from({ length: CLIENTS }, () => new Client({ endpoints, timeout: 1500, retries: 12 }));
  // Failover: requests in flight when a broker is killed, and the worst time from the kill to their answer.
  const started = new Map<string, number>();
  const inFlightAtKill = new Map<string, number>();
  let worstFailoverMs = 0;
  let worstFailoverAt = '';
  const failoverMs: number[] = [];

  const loop = async (client: Client, c: number) => {
    let n = 0;
    const one = async (): Promise<void> => {
      while (running) {
        const id = `c${c}-${n++}`;
        tally.issued++;
        pending.add(id);
        try {
          const reply = await client.request('chaos', id);
          if (reply[0]?.toString() === id) tally.answered++;
          else tally.wrongReply++;
          const killedAt = inFlightAtKill.get(id);
          if (killedAt !== undefined) failoverMs.push(Date.now() - killedAt);
          if (killedAt !== undefined && Date.now() - killedAt > worstFailoverMs) {
            worstFailoverMs = Date.now() - killedAt;
            worstFailoverAt = id;
          }
        } catch (err) {
          const code = err instanceof BrokerError ? `broker:${err.code}` : err instanceof TimeoutError ? 'timeout' : `other:${String(err)}`;
          tally.errors[code] = (tally.errors[code] ?? 0) + 1;
        }
        pending.delete(id);
        inFlightAtKill.delete(id);
      }
    };
    await Promise.all(Array.from({ length: WINDOW }, one));
  };
  const loads = clients.map((cl, c) => loop(cl, c));

  const t0 = Date.now();
  const end = t0 + SECONDS * 1000;
  const restarts = [t0 + SECONDS * 1000 * 0.35, t0 + SECONDS * 1000 * 0.7];
  let lastProgress = 0;
  while (Date.now() < end) {
    await sleep(400);
    // Kill a random echo worker about every 1.2 s; start a fresh one in its place.
    if (random() < 0.33) {
      const i = Math.floor(random() * workers.length);
      workers[i].kill('SIGKILL');
      events.workerKills++;
      workers[i] = startWorker('echo');
    }
    // A client that sends a burst and vanishes at once, leaving its requests queued.
    if (random() < 0.2) {
      const v = new Client({ endpoints, timeout: 60000 });
      for (let k = 0; k < 20; k++) v.request('chaos', `vanished-${events.vanishedClients}-${k}`).catch(() => undefined);
      events.abandonedRequests += 20;
      await sleep(5);
      v.close();
      events.vanishedClients++;
    }
    if (restarts.length > 0 && Date.now() >= restarts[0]) {
      restarts.shift();
      // One broker: SIGKILL, then SIGTERM. Two: A, then B, each SIGKILLed once, each down for a second.
      const which = BROKERS === 1 ? 0 : events.brokerRestarts % BROKERS;
      const sig = BROKERS === 1 && events.brokerRestarts > 0 ? 'SIGTERM' : 'SIGKILL';
      const b = brokers[which].proc as ChildProcess;
      const exited = new Promise((r) => b.once('exit', r));
      const now = Date.now();
      for (const id of pending) if (!inFlightAtKill.has(id)) inFlightAtKill.set(id, now);
      b.kill(sig);
      await exited;
      events.brokerRestarts++;
      await sleep(BROKERS === 1 ? 200 : 1000);
      await startBroker(which);
    }
    if (Date.now() - lastProgress > 5000 && process.stderr.isTTY) {
      lastProgress = Date.now();
      process.stderr.write(`\rchaos ${Math.round((Date.now() - t0) / 1000)}/${SECONDS} s: ${tally.issued} issued, ${tally.answered} answered, ${events.workerKills} kills, ${events.brokerRestarts} restarts`);
    }
  }
  running = false;
  await Promise.race([Promise.all(loads), sleep(30000)]);
  if (process.stderr.isTTY) process.stderr.write('\n');
  for (const c of clients) c.close();
  hanging.kill('SIGKILL');
  for (const w of workers) w.kill('SIGTERM');
  for (const b of brokers) b.proc?.kill('SIGTERM');
  await sleep(300);

  let executed = 0;
  let duplicated = 0;
  let duplicateExecutions = 0;
  for (const [id, n] of executions) {
    if (id.startsWith('vanished-')) continue;
    executed++;
    if (n > 1) {
      duplicated++;
      duplicateExecutions += n - 1;
    }
  }
  const failed = Object.values(tally.errors).reduce((a, b) => a + b, 0);
  const lost = pending.size;
  const errs = Object.entries(tally.errors).map(([k, v]) => `${k} ${v}`).join(', ') || 'none';
  console.log(`chaos: ${SECONDS} s on 127.0.0.1; ${WORKERS} worker processes (${events.workerKills} killed with SIGKILL mid-load), 1 hanging worker,`);
  if (SHARDS > 1) console.log(`       --shards ${SHARDS}`);
  if (BROKERS === 1) console.log(`       broker restarted ${events.brokerRestarts}x (SIGKILL, then SIGTERM), ${events.vanishedClients} clients vanished with ${events.abandonedRequests} requests queued`);
  else console.log(`       ${BROKERS} brokers, every worker and client on both; each SIGKILLed once and restarted a second later (${events.brokerRestarts} kills), ${events.vanishedClients} clients vanished with ${events.abandonedRequests} requests queued`);
  console.log(`requests issued:            ${tally.issued}`);
  console.log(`  answered once, own body:  ${tally.answered}`);
  console.log(`  failed with a typed error: ${failed} (${errs})`);
  console.log(`  answered with a wrong body: ${tally.wrongReply}`);
  console.log(`  lost (never settled):     ${lost}`);
  console.log(`worker executions: ${executed} requests run, ${duplicated} of them more than once (${duplicateExecutions} extra runs: retries after a worker died or the broker restarted)`);
  const late = clients.reduce((a, c) => a + c.lateReplies, 0);
  const sorted = failoverMs.sort((a, b) => a - b);
  const q = (f: number) => sorted[Math.min(sorted.length - 1, Math.floor(f * sorted.length))] ?? 0;
  console.log(`failover: ${sorted.length} requests in flight${BROKERS > 1 ? ' (at either broker; the tail is requests held by the hanging or killed workers)' : ''} at the broker kills, answered after p50 ${q(0.5)} ms, p99 ${q(0.99)} ms, worst ${worstFailoverMs} ms (${worstFailoverAt || 'none'}); ${late} late replies dropped at clients`);
  const failedPermille = tally.issued === 0 ? 0 : (failed * 1000) / tally.issued;
  const ok = lost === 0 && tally.wrongReply === 0 && tally.issued >= MIN_REQUESTS && events.brokerRestarts === 2 && failedPermille <= MAX_FAILED_PERMILLE;
  console.log(`${ok ? 1 : 0} passed, ${ok ? 0 : 1} failed`);
  if (tally.issued < MIN_REQUESTS) console.log(`too few requests: ${tally.issued} < ${MIN_REQUESTS}`);
  if (failedPermille > MAX_FAILED_PERMILLE) console.log(`too many error replies: ${failed} of ${tally.issued} (${failedPermille.toFixed(2)} per thousand > ${MAX_FAILED_PERMILLE})`);
  return ok ? 0 : 1;
}

// --titanic: durable requests through broker SIGKILLs (titanic-chaos.ts); otherwise the load above.
const run = argv.titanic === true ? import('./titanic-chaos.js').then(async (m) => {
  try {
    return await m.titanicChaos();
  } finally {
    m.killAll();
  }
}) : main();
run.then(
  (code) => {
    cleanup();
    process.exit(code);
  },
  (err: unknown) => {
    console.error(`chaos: ${String((err as Error)?.stack ?? err)}`);
    cleanup();
    process.exit(2);
  },
);
