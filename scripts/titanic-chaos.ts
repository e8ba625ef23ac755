// npm run test:chaos -- --titanic: durable requests (RFC 9, mdbroker --titanic DIR) while the broker is SIGKILLed
// and restarted on its store twice and worker processes are SIGKILLed mid-request. Every request a client got a
// UUID for must be answered with its own body; none lost. Runs that happened more than once (at least once: a
// worker killed holding a request, a broker killed before it stored a reply) are counted and reported.
//   CHAOS_TITANIC_REQUESTS (default 10000), CHAOS_SEED (the kill schedule)

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Client } from '../src/client/client.js';
import { spawnBroker } from '../test/support/spawn-broker.js';
import { prng } from '../test/support/prng.js';

const REQUESTS = Number(process.env.CHAOS_TITANIC_REQUESTS ?? 10000);
const SEED = Number(process.env.CHAOS_SEED ?? Math.floor(Math.random() * 0x7fffffff) + 1);
const random = prng(SEED);
const HB = 250;
const WORKERS = 4;
const IN_FLIGHT = 64;
const CLI = fileURLToPath(new URL('../src/cli.js', import.meta.url));
const WORKER = fileURLToPath(new URL('./chaos-worker.js', import.meta.url));

const procs = new Set<ChildProcess>();
const executions = new Map<string, number>();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function startWorker(endpoint: string): ChildProcess {
  const p = spawn(process.execPath, [WORKER, endpoint, 'echo', String(HB), String(Math.floor(random() * 0x7fffffff) + 1)], { stdio: ['ignore', 'pipe', 'inherit'] });
  procs.add(p);
  createInterface({ input: p.stdout as NodeJS.ReadableStream }).on('line', (l) => {
    if (l.startsWith('done ')) executions.set(l.slice(5), (executions.get(l.slice(5)) ?? 0) + 1);
  });
  p.once('exit', () => procs.delete(p));
  return p;
}

export async function titanicChaos(): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'mdb-titanic-chaos-'));
  try {
    return await run(dir);
  } finally {
    // The store goes too when the run fails (the caller then kills what is left).
    rmSync(dir, { recursive: true, force: true });
  }
}

async function run(dir: string): Promise<number> {
  const store = join(dir, 'store');
  const flags = ['--heartbeat-interval', String(HB), '--busy-timeout', '3000', '--stats-interval', '0', '--titanic', store];
  let broker = await spawnBroker(['--bind', 'tcp://127.0.0.1:*', ...flags]);
  procs.add(broker.child);
  const endpoint = broker.endpoint;
  console.log(`chaos --titanic: seed ${SEED}; ${REQUESTS} durable requests, broker on ${endpoint}, store ${store}`);
  const workers = Array.from({ length: WORKERS }, () => startWorker(endpoint));
  // A client's request lost with a killed broker is sent again when the connection is back (the library's retries).
  const client = new Client({ endpoints: endpoint, timeout: 2000, retries: 30 });
  const uuids = new Map<string, string>();
  let refused = 0;
  let next = 0;
  let restarts = 0;
  let workerKills = 0;
  const t0 = Date.now();
  const submitting = Promise.all(Array.from({ length: IN_FLIGHT }, async () => {
    while (next < REQUESTS) {
      const id = `t${next++}`;
      for (;;) {
        try {
          uuids.set(id, await client.submit('chaos', id));
          break;
        } catch {
          // Not stored (a 500, or no answer within the retries): submitted again, as an application would.
          refused++;
          await sleep(50);
        }
      }
    }
  }));
  let submitted = false;
  void submitting.then(() => (submitted = true));
  // The schedule: a worker killed every 300-700 ms; the broker SIGKILLed at about a third and two thirds of the way.
  const killBrokerAt = [Math.floor(REQUESTS / 3), Math.floor((2 * REQUESTS) / 3)];
  while (!submitted) {
    await sleep(300 + Math.floor(random() * 400));
    const i = Math.floor(random() * WORKERS);
    workers[i].kill('SIGKILL');
    workerKills++;
    workers[i] = startWorker(endpoint);
    if (killBrokerAt.length > 0 && uuids.size >= killBrokerAt[0]) {
      killBrokerAt.shift();
      broker.child.kill('SIGKILL');
      await new Promise((r) => broker.child.once('exit', r));
      await sleep(200);
      broker = await spawnBroker(['--bind', endpoint, ...flags]);
      procs.add(broker.child);
      restarts++;
    }
    process.stderr.write(`\rchaos --titanic: ${uuids.size}/${REQUESTS} stored, ${workerKills} worker kills, ${restarts} broker kills`);
  }
  process.stderr.write('\n');
  // Every stored request must come back with its own body.
  let wrong = 0;
  let lost = 0;
  const ids = [...uuids.keys()];
  let at = 0;
  await Promise.all(Array.from({ length: IN_FLIGHT }, async () => {
    while (at < ids.length) {
      const id = ids[at++];
      const uuid = uuids.get(id) as string;
      const reply = await client.result(uuid, { wait: 60000 }).catch(() => null);
      if (reply === null) lost++;
      else if (reply.length !== 1 || reply[0].toString() !== id) wrong++;
      else await client.close(uuid);
    }
  }));
  const seconds = (Date.now() - t0) / 1000;
  client.close();
  for (const w of workers) w.kill('SIGTERM');
  broker.child.kill('SIGTERM');
  await new Promise((r) => broker.child.once('exit', r));
  let twice = 0;
  let extra = 0;
  for (const id of ids) {
    const n = executions.get(id) ?? 0;
    if (n > 1) {
      twice++;
      extra += n - 1;
    }
  }
  const never = ids.filter((id) => (executions.get(id) ?? 0) === 0).length;
  console.log(`chaos --titanic: ${ids.length} requests stored in ${seconds.toFixed(1)} s with ${restarts} broker SIGKILLs and restarts and ${workerKills} worker SIGKILLs; ${refused} submits retried`);
  console.log(`  answered with their own body: ${ids.length - wrong - lost}`);
  console.log(`  answered with a wrong body:   ${wrong}`);
  console.log(`  lost (no reply within 60 s):  ${lost}`);
  console.log(`worker executions: ${twice} requests ran more than once (${extra} extra runs: at least once, by design); ${never} answered without a run seen`);
  const ok = ids.length === REQUESTS && wrong === 0 && lost === 0 && never === 0;
  console.log(ok ? '1 passed, 0 failed' : '0 passed, 1 failed');
  return ok ? 0 : 1;
}

export function killAll(): void {
  for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
}
