// Several brokers at once: a worker registered with all of them, a client spread over them that keeps getting
// answers when one is SIGKILLed (its requests in flight move to the live broker at once), nothing lost, nothing
// delivered twice.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { Client } from '../src/client/client.js';
import { Worker } from '../src/client/worker.js';
import { modeFlags, startBroker, until } from './helpers.js';
import { spawnBroker, type BrokerProcess } from './support/spawn-broker.js';

const HB = { heartbeatInterval: 200, heartbeatLiveness: 3 };

/** Two broker processes in the test's mode, killed when the test ends. */
async function twoBrokerProcesses(t: TestContext): Promise<BrokerProcess[]> {
  const flags = ['--bind', 'tcp://127.0.0.1:*', '--heartbeat-interval', '200', '--stats-interval', '0', ...modeFlags()];
  const brokers = [await spawnBroker(flags), await spawnBroker(flags)];
  t.after(() => {
    for (const b of brokers) b.child.kill('SIGKILL');
  });
  return brokers;
}

test('a worker with two endpoints registers with both brokers and answers each on its own connection', async (t) => {
  const a = await startBroker(HB);
  const b = await startBroker(HB);
  t.after(() => Promise.all([a.broker.close(), b.broker.close()]));
  const seen: string[] = [];
  const worker = new Worker({ endpoints: [a.endpoint, b.endpoint], service: 'ha', ...HB, handler: (body, ctx) => {
    seen.push(ctx.broker);
    return [`${ctx.broker === a.endpoint ? 'A' : 'B'}:${body[0].toString()}`];
  } });
  const ca = new Client({ endpoints: a.endpoint, timeout: 3000 });
  const cb = new Client({ endpoints: b.endpoint, timeout: 3000 });
  t.after(async () => {
    ca.close();
    cb.close();
    await worker.close();
  });
  assert.ok(await until(() => a.broker.snapshot().workers === 1 && b.broker.snapshot().workers === 1, 3000), 'one session at each broker');
  const ra = await Promise.all(Array.from({ length: 10 }, (_, i) => ca.request('ha', String(i))));
  const rb = await Promise.all(Array.from({ length: 10 }, (_, i) => cb.request('ha', String(i))));
  assert.deepEqual(ra.map((r) => r[0].toString()), Array.from({ length: 10 }, (_, i) => `A:${i}`));
  assert.deepEqual(rb.map((r) => r[0].toString()), Array.from({ length: 10 }, (_, i) => `B:${i}`));
  assert.equal(worker.served, 20);
  assert.equal(seen.filter((e) => e === a.endpoint).length, 10);
});

test('a client with two endpoints spreads requests over both brokers and keeps getting answers while one is SIGKILLed: none lost, none answered twice', async (t) => {
  const [A, B] = await twoBrokerProcesses(t);
  const byBroker = new Map<string, number>();
  const runs = new Map<string, number>();
  const worker = new Worker({ endpoints: [A.endpoint, B.endpoint], service: 'ha', ...HB, concurrency: 4, reconnectMin: 50, reconnectMax: 500, handler: async (body, ctx) => {
    const id = body[0].toString();
    runs.set(id, (runs.get(id) ?? 0) + 1);
    byBroker.set(ctx.broker, (byBroker.get(ctx.broker) ?? 0) + 1);
    await new Promise((r) => setTimeout(r, 2));
    return body;
  } });
  const client = new Client({ endpoints: [A.endpoint, B.endpoint], timeout: 2000, retries: 4 });
  t.after(async () => {
    client.close();
    await worker.close();
  });
  await client.request('ha', 'warm');

  const TOTAL = 3000;
  const answers = new Map<string, number>();
  const started = new Map<string, number>();
  let killedAt = 0;
  const inFlightAtKill = new Set<string>();
  let worstFailoverMs = 0;
  let sent = 0;
  const wrong: string[] = [];
  const one = async (): Promise<void> => {
    while (sent < TOTAL) {
      const id = `r${sent++}`;
      started.set(id, Date.now());
      const reply = await client.request('ha', id);
      if (reply[0].toString() !== id) wrong.push(`${id} got ${reply[0].toString()}`);
      answers.set(id, (answers.get(id) ?? 0) + 1);
      if (inFlightAtKill.has(id)) worstFailoverMs = Math.max(worstFailoverMs, Date.now() - killedAt);
      started.delete(id);
    }
  };
  const load = Promise.all(Array.from({ length: 16 }, one));
  await until(() => sent >= TOTAL / 3, 20000);
  const beforeKill = new Map(byBroker);
  for (const id of started.keys()) inFlightAtKill.add(id);
  killedAt = Date.now();
  A.child.kill('SIGKILL');
  await load;

  assert.deepEqual(wrong, []);
  assert.equal(answers.size, TOTAL, 'every request answered');
  assert.ok([...answers.values()].every((n) => n === 1), 'none answered twice');
  assert.ok((beforeKill.get(A.endpoint) ?? 0) > 50 && (beforeKill.get(B.endpoint) ?? 0) > 50, `spread before the kill: ${JSON.stringify([...beforeKill])}`);
  assert.ok(inFlightAtKill.size > 0, 'requests were in flight at the kill');
  // Failover comes from the connection's end, not a 2 s window.
  assert.ok(worstFailoverMs < 1500, `worst failover ${worstFailoverMs} ms`);
  const twice = [...runs.values()].filter((n) => n > 1).length;
  t.diagnostic(`before the kill A ${beforeKill.get(A.endpoint)}, B ${beforeKill.get(B.endpoint)} runs; ${inFlightAtKill.size} in flight at the kill, worst failover ${worstFailoverMs} ms; ${twice} run twice (at-least-once), ${client.lateReplies} late replies dropped`);
});

test('a broker that freezes (SIGSTOP: no TCP close, no PONG) is found by the ZMTP heartbeats and its requests move before their window ends', async (t) => {
  const [A, B] = await twoBrokerProcesses(t);
  const seen = new Map<string, number>();
  const worker = new Worker({ endpoints: [A.endpoint, B.endpoint], service: 'ha', ...HB, concurrency: 4, handler: async (body, ctx) => {
    seen.set(ctx.broker, (seen.get(ctx.broker) ?? 0) + 1);
    await new Promise((r) => setTimeout(r, 300));
    return body;
  } });
  // Windows of 20 s: only the connection's death can move a request within the test's time.
  const client = new Client({ endpoints: [A.endpoint, B.endpoint], timeout: 20000, retries: 1, heartbeatInterval: 1000, heartbeatLiveness: 3 });
  t.after(async () => {
    client.close();
    await worker.close();
  });
  // Both connections up (requests served through each), then requests in hand at a worker through A when it freezes.
  for (let i = 0; !(seen.get(A.endpoint) && seen.get(B.endpoint)) && i < 50; i++) await Promise.all([client.request('ha', 'warm'), client.request('ha', 'warm')]);
  assert.ok(seen.get(A.endpoint) && seen.get(B.endpoint), 'both brokers served the warm-up');
  const atA = seen.get(A.endpoint) as number;
  const lost = new Promise<string>((r) => client.once('disconnected', r));
  const inFlight = Array.from({ length: 8 }, (_, i) => client.request('ha', `r${i}`));
  assert.ok(await until(() => (seen.get(A.endpoint) as number) > atA, 2000), 'a request reached a worker through A');
  const frozenAt = Date.now();
  A.child.kill('SIGSTOP');
  const replies = await Promise.all(inFlight);
  const took = Date.now() - frozenAt;
  assert.deepEqual(replies.map((r) => r[0].toString()), Array.from({ length: 8 }, (_, i) => `r${i}`));
  assert.equal(await lost, A.endpoint, 'the frozen broker was dropped by its heartbeats');
  assert.ok(took >= 2000 && took < 10000, `answered ${took} ms after the freeze: after the 3 s heartbeat timeout, long before the 20 s window`);
  t.diagnostic(`requests at the frozen broker answered by the other ${took} ms after the freeze`);
});
