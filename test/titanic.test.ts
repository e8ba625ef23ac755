// Titanic (RFC 9) in the broker (--titanic DIR), seen by a plain MDP client: titanic.request answers 200 and a
// UUID once the request is durable; the request runs when a worker comes; titanic.reply says 300 until the reply is
// stored, then 200 and the reply, as often as asked; titanic.close deletes; a broker SIGKILLed with stored requests
// runs them after its restart on the same store.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from '../src/client/client.js';
import { Worker } from '../src/client/worker.js';
import { TitanicError } from '../src/client/titanic-calls.js';
import { startBroker } from './helpers.js';
import { spawnBroker } from './support/spawn-broker.js';

const HB = { heartbeatInterval: 200, heartbeatLiveness: 3 };
const str = (r: Buffer[]) => r.map(String);

function storeDir(t: import('node:test').TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'mdb-titanic-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Polls titanic.reply until it is not 300. */
async function result(c: Client, uuid: string, ms = 8000): Promise<string[]> {
  const until = Date.now() + ms;
  for (;;) {
    const r = str(await c.request('titanic.reply', uuid));
    if (r[0] !== '300' || Date.now() > until) return r;
    await new Promise((res) => setTimeout(res, 25));
  }
}

test('titanic: request, 300 while no worker, the worker runs it, 200 with the reply (idempotent), close, then 400', { skip: Number(process.env.MDBROKER_TEST_SHARDS ?? 1) > 1 ? '--titanic runs on one thread for now' : false }, async (t) => {
  const dir = storeDir(t);
  const { broker, endpoint } = await startBroker({ ...HB, shards: 1, titanic: dir });
  const c = new Client({ endpoints: endpoint, timeout: 5000 });
  t.after(async () => {
    c.close();
    await broker.close();
  });
  const stored = str(await c.request('titanic.request', ['echo', 'hello', 'world']));
  assert.equal(stored[0], '200');
  assert.match(stored[1], /^[0-9a-f]{32}$/);
  const uuid = stored[1];
  assert.deepEqual(str(await c.request('titanic.reply', uuid)), ['300'], 'pending: no worker yet');
  const w = new Worker({ endpoint, service: 'echo', ...HB, handler: (b) => b.map((f) => f.toString().toUpperCase()) });
  t.after(() => w.close());
  assert.deepEqual(await result(c, uuid), ['200', 'HELLO', 'WORLD']);
  assert.deepEqual(str(await c.request('titanic.reply', uuid.toUpperCase())), ['200', 'HELLO', 'WORLD'], 'asked again (any case): the same reply');
  assert.deepEqual(str(await c.request('titanic.close', uuid)), ['200']);
  assert.deepEqual(str(await c.request('titanic.close', uuid)), ['200'], 'close is idempotent');
  assert.match(str(await c.request('titanic.reply', uuid))[0], /^400\b/);
  assert.match(str(await c.request('titanic.reply', 'not-a-uuid'))[0], /^400 not a UUID/);
  assert.match(str(await c.request('titanic.request', ['echo']))[0], /^400 no request body frame/);
  assert.match(str(await c.request('titanic.request', ['mmi.service', 'x']))[0], /^400 /);
  const agg = await broker.aggregateStats();
  assert.ok(agg.prometheus.includes('titanic_stored'), 'counters in /metrics');
});

test('titanic: past the store\'s byte budget titanic.request answers 500 at once, and nothing is stored', { skip: Number(process.env.MDBROKER_TEST_SHARDS ?? 1) > 1 ? '--titanic runs on one thread for now' : false }, async (t) => {
  const dir = storeDir(t);
  const { broker, endpoint } = await startBroker({ ...HB, shards: 1, titanic: dir, titanicMaxBytes: 2000 });
  const c = new Client({ endpoints: endpoint, timeout: 5000 });
  t.after(async () => {
    c.close();
    await broker.close();
  });
  assert.equal(str(await c.request('titanic.request', ['echo', 'x'.repeat(100)]))[0], '200');
  const refused = str(await c.request('titanic.request', ['echo', 'x'.repeat(5000)]));
  assert.match(refused[0], /^500 .*budget of 2000/);
  assert.equal(refused.length, 1, 'no UUID');
});

test('titanic: a broker SIGKILLed with 300 stored requests runs every one after its restart on the same store', { skip: Number(process.env.MDBROKER_TEST_SHARDS ?? 1) > 1 ? '--titanic runs on one thread for now' : false }, async (t) => {
  const dir = storeDir(t);
  const flags = ['--bind', 'tcp://127.0.0.1:*', '--stats-interval', '0', '--heartbeat-interval', '200', '--titanic', dir];
  const first = await spawnBroker(flags);
  t.after(() => first.child.kill('SIGKILL'));
  const c1 = new Client({ endpoints: first.endpoint, timeout: 5000 });
  const uuids = await Promise.all(Array.from({ length: 300 }, async (_, i) => {
    const r = str(await c1.request('titanic.request', ['echo', `n${i}`]));
    assert.equal(r[0], '200');
    return r[1];
  }));
  c1.close();
  first.child.kill('SIGKILL');
  await new Promise((r) => first.child.once('exit', r));
  const second = await spawnBroker(['--bind', first.endpoint, ...flags.slice(2)]);
  t.after(() => second.child.kill('SIGKILL'));
  const w = new Worker({ endpoint: second.endpoint, service: 'echo', ...HB, handler: (b) => [`done:${b[0].toString()}`] });
  const c2 = new Client({ endpoints: second.endpoint, timeout: 5000 });
  t.after(async () => {
    c2.close();
    await w.close();
  });
  for (let i = 0; i < uuids.length; i += 50) {
    assert.deepEqual(await result(c2, uuids[i], 15000), ['200', `done:n${i}`]);
  }
  const all = await Promise.all(uuids.map((u) => result(c2, u, 15000)));
  assert.deepEqual(all.map((r) => r[0]), uuids.map(() => '200'));
  assert.deepEqual(all.map((r) => r[1]), uuids.map((_, i) => `done:n${i}`));
});

test('titanic: a store directory held by a live broker is refused at startup with a readable error', { skip: Number(process.env.MDBROKER_TEST_SHARDS ?? 1) > 1 ? '--titanic runs on one thread for now' : false }, async (t) => {
  const dir = storeDir(t);
  const first = await spawnBroker(['--bind', 'tcp://127.0.0.1:*', '--stats-interval', '0', '--titanic', dir]);
  t.after(() => first.child.kill('SIGKILL'));
  await assert.rejects(startBroker({ shards: 1, titanic: dir }), /in use by another broker \(pid \d+\)/);
});

test('titanic from the Client: submit, result (pending, then the reply), close(uuid), durable(); 400 and 500 as TitanicError', { skip: Number(process.env.MDBROKER_TEST_SHARDS ?? 1) > 1 ? '--titanic runs on one thread for now' : false }, async (t) => {
  const dir = storeDir(t);
  const { broker, endpoint } = await startBroker({ ...HB, shards: 1, titanic: dir, titanicMaxBytes: 4096 });
  const c = new Client({ endpoints: endpoint, timeout: 5000 });
  t.after(async () => {
    c.close();
    await broker.close();
  });
  const uuid = await c.submit('echo', ['a', 'b']);
  assert.match(uuid, /^[0-9a-f]{32}$/);
  assert.equal(await c.result(uuid), null, 'pending, asked once');
  const w = new Worker({ endpoint, service: 'echo', ...HB, handler: (b) => b.map((f) => `${f.toString()}!`) });
  t.after(() => w.close());
  assert.deepEqual((await c.result(uuid, { wait: 5000 }))?.map(String), ['a!', 'b!']);
  await c.close(uuid);
  await assert.rejects(c.result(uuid), (err: unknown) => err instanceof TitanicError && err.status === 400);
  assert.deepEqual((await c.durable('echo', 'one call')).map(String), ['one call!']);
  await assert.rejects(c.submit('echo', 'x'.repeat(8000)), (err: unknown) => err instanceof TitanicError && err.status === 500 && /budget/.test(err.reason));
  const ac = new AbortController();
  const waiting = c.result(await c.submit('nobody', 'x'), { wait: 60000, signal: ac.signal });
  setTimeout(() => ac.abort(), 100);
  await assert.rejects(waiting, (err: unknown) => err instanceof Error && err.name === 'AbortError');
});

test('titanic --titanic-hold: a pending titanic.reply is answered 200 the moment the reply is stored, or 300 when the hold ends', { skip: Number(process.env.MDBROKER_TEST_SHARDS ?? 1) > 1 ? '--titanic runs on one thread for now' : false }, async (t) => {
  const dir = storeDir(t);
  const { broker, endpoint } = await startBroker({ ...HB, shards: 1, titanic: dir, titanicHold: 1000 });
  const c = new Client({ endpoints: endpoint, timeout: 5000 });
  t.after(async () => {
    c.close();
    await broker.close();
  });
  const uuid = str(await c.request('titanic.request', ['echo', 'held']))[1];
  let started = Date.now();
  assert.deepEqual(str(await c.request('titanic.reply', uuid)), ['300']);
  const waited = Date.now() - started;
  assert.ok(waited >= 950 && waited < 3000, `300 after the hold (${waited} ms)`);
  started = Date.now();
  const asked = c.request('titanic.reply', uuid);
  const w = new Worker({ endpoint, service: 'echo', ...HB, handler: (b) => b });
  t.after(() => w.close());
  assert.deepEqual(str(await asked), ['200', 'held'], 'the held question gets the reply');
  assert.ok(Date.now() - started < 3000);
});
