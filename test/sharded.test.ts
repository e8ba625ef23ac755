// The sharded broker (--shards 2) in the plain `npm test`: the whole suite runs on it only in CI's shards pass, so
// a change that breaks sharding alone would otherwise pass a developer's `npm test`. Golden frames, pipelined load
// spread over both shards, a worker that dies holding a request, and MMI answered for services on either shard.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { Client } from '../src/client/client.js';
import { Worker } from '../src/client/worker.js';
import { RawPeer, show, startBroker, until } from './helpers.js';
import type { Broker } from '../src/broker/broker.js';

const HB = { heartbeatInterval: 100, heartbeatLiveness: 3 };

async function sharded(t: TestContext): Promise<{ broker: Broker; endpoint: string; peer: () => RawPeer }> {
  const { broker, endpoint } = await startBroker({ ...HB, shards: 2, transport: 'zmtp' });
  const peers: RawPeer[] = [];
  t.after(async () => {
    for (const p of peers) p.close();
    await broker.close();
  });
  return { broker, endpoint, peer: () => {
    const p = new RawPeer(endpoint);
    peers.push(p);
    return p;
  } };
}

test('--shards 2: MDP/0.1 and MDP/0.2 frames exactly as RFC 7 and RFC 18, whichever shard each peer lands on', async (t) => {
  const { broker, peer } = await sharded(t);
  const w1 = peer();
  const w2 = peer();
  await w1.send(['', 'MDPW01', [1], 'echo']);
  await w2.send(['MDPW02', [1], 'stream']);
  assert.ok(await until(() => broker.snapshot().workers === 2));
  for (let i = 0; i < 4; i++) {
    // Four clients on four connections: the shards split connections between them.
    const c = peer();
    await c.send(['', 'MDPC01', 'echo', `hello-${i}`]);
    const req = await w1.recvSkippingHeartbeats();
    assert.ok(req);
    assert.deepEqual(show(req).slice(0, 3), ['', 'MDPW01', '\x02']);
    assert.deepEqual(show(req).slice(4), ['', `hello-${i}`]);
    await w1.send(['', 'MDPW01', [3], req[3], '', `HELLO-${i}`]);
    assert.deepEqual(show(await c.recv()), ['', 'MDPC01', 'echo', `HELLO-${i}`]);
    await c.send(['MDPC02', [1], 'stream', `q-${i}`]);
    const r2 = await w2.recvSkippingHeartbeats();
    assert.ok(r2);
    assert.deepEqual(show(r2).slice(0, 2), ['MDPW02', '\x02']);
    assert.deepEqual(show(r2).slice(3), ['', `q-${i}`]);
    await w2.send(['MDPW02', [3], r2[2], '', 'part']);
    await w2.send(['MDPW02', [4], r2[2], '', 'final']);
    assert.deepEqual(show(await c.recv()), ['MDPC02', '\x02', 'stream', 'part']);
    assert.deepEqual(show(await c.recv()), ['MDPC02', '\x03', 'stream', 'final']);
  }
});

test('--shards 2: 4,000 pipelined requests from 4 clients over 6 workers, each answered once with its own body', async (t) => {
  const { broker, endpoint } = await sharded(t);
  const workers = Array.from({ length: 6 }, () => new Worker({ endpoint, service: 'echo', ...HB, handler: (b) => b }));
  const clients = Array.from({ length: 4 }, () => new Client({ endpoints: endpoint, timeout: 20000 }));
  t.after(async () => {
    for (const c of clients) c.close();
    for (const w of workers) await w.close();
  });
  assert.ok(await until(() => broker.snapshot().workers === 6, 5000));
  const replies = await Promise.all(Array.from({ length: 4000 }, (_, i) => clients[i % 4].request('echo', `n${i}`)));
  assert.deepEqual(replies.map((r) => r[0].toString()), Array.from({ length: 4000 }, (_, i) => `n${i}`));
  assert.ok(await until(() => broker.stats().replies >= 4000, 2000), `replies counted over both shards: ${broker.stats().replies}`);
});

test('--shards 2: a worker that dies holding a request: another worker answers it; MMI sees services on both shards', async (t) => {
  const { broker, endpoint, peer } = await sharded(t);
  const doomed = peer();
  await doomed.send(['', 'MDPW01', [1], 'job']);
  assert.ok(await until(() => broker.snapshot().workers === 1));
  const client = new Client({ endpoints: endpoint, timeout: 10000 });
  t.after(() => client.close());
  const reply = client.request('job', 'precious');
  assert.ok(await doomed.recvSkippingHeartbeats(), 'the doomed worker took the request');
  doomed.close();
  const rescuer = new Worker({ endpoint, service: 'job', ...HB, handler: (b) => [`rescued:${b[0].toString()}`] });
  const other = new Worker({ endpoint, service: 'other', ...HB, handler: (b) => b });
  t.after(async () => {
    await rescuer.close();
    await other.close();
  });
  assert.deepEqual((await reply).map(String), ['rescued:precious']);
  assert.ok(await until(() => broker.stats().requeued === 1), 'requeued once');
  // Clients on several connections (so on both shards) ask about services registered wherever their worker landed.
  assert.ok(await until(() => broker.snapshot().workers === 2));
  for (let i = 0; i < 4; i++) {
    const c = new Client({ endpoints: endpoint, timeout: 5000 });
    t.after(() => c.close());
    assert.deepEqual((await c.request('mmi.service', 'job')).map(String), ['200']);
    assert.deepEqual((await c.request('mmi.service', 'other')).map(String), ['200']);
    assert.deepEqual((await c.request('mmi.service', 'nobody')).map(String), ['404']);
  }
});

test('--shards 2: a shard thread that dies is an `error` on the Broker that names it; close() still ends the rest', async () => {
  const { broker } = await startBroker({ shards: 2, transport: 'zmtp', heartbeatInterval: 200 });
  const failed = new Promise<Error>((r) => broker.once('error', r));
  // The thread is private to the broker: reached here only to kill it, as a crash in it would.
  const inner = broker as unknown as { impl: { shards: { thread: import('node:worker_threads').Worker }[] } };
  await inner.impl.shards[1].thread.terminate();
  const err = await failed;
  assert.match(err.message, /^shard 1 died \(exited with code 1\): its connections, and the requests it held and queued, are lost/);
  await broker.close();
});

/** Connections each shard serves, as last reported (the shards are private to the broker: reached here to look). */
function perShard(broker: Broker): number[] {
  return (broker as unknown as { impl: { shards: { connections: number }[] } }).impl.shards.map((s) => s.connections);
}

test('--shards 2: a client and a worker on different shards: every request crosses to the worker\'s shard and its reply comes back, byte for byte', async (t) => {
  const { broker, peer } = await sharded(t);
  // Connections go to the shard serving the fewest: opened one after the other, these two land on different shards.
  const w = peer();
  await w.send(['', 'MDPW01', [1], 'far']);
  assert.ok(await until(() => broker.snapshot().workers === 1));
  const c = peer();
  await c.send(['', 'MDPC01', 'mmi.service', 'far']);
  assert.deepEqual(show(await c.recv()), ['', 'MDPC01', 'mmi.service', '200']);
  assert.ok(await until(() => perShard(broker).join() === '1,1'), `one connection on each shard: ${perShard(broker)}`);
  for (let i = 0; i < 20; i++) {
    await c.send(['', 'MDPC01', 'far', `q${i}`, Buffer.alloc(3, i)]);
    const req = await w.recvSkippingHeartbeats();
    assert.ok(req);
    assert.deepEqual(show(req).slice(0, 3), ['', 'MDPW01', '\x02']);
    assert.deepEqual(show(req).slice(4), ['', `q${i}`, String.fromCharCode(i, i, i)]);
    await w.send(['', 'MDPW01', [3], req[3], '', `r${i}`]);
    assert.deepEqual(show(await c.recv()), ['', 'MDPC01', 'far', `r${i}`]);
  }
  assert.ok(await until(() => broker.stats().moved === 20 && broker.stats().replies === 20), JSON.stringify(broker.stats()));
});

test('--shards 2: a burst of 60 connections is served half by each shard (within 2: two shards may accept at once)', async (t) => {
  const { broker, peer } = await sharded(t);
  const peers = Array.from({ length: 60 }, () => peer());
  await Promise.all(peers.map((p, i) => p.send(['', 'MDPW01', [1], `s${i}`])));
  assert.ok(await until(() => broker.snapshot().workers === 60, 5000));
  assert.ok(await until(() => perShard(broker).every((n) => Math.abs(n - 30) <= 2) && perShard(broker).reduce((a, b) => a + b) === 60), `per shard: ${perShard(broker)}`);
});

test('--shards 2: an endpoint in use fails start() with the cause; its shard threads end (or this file would never exit)', async () => {
  const { broker, endpoint } = await startBroker({ shards: 2, transport: 'zmtp' });
  try {
    const second = startBroker({ shards: 2, transport: 'zmtp', bind: [endpoint] });
    await assert.rejects(second, /EADDRINUSE/);
  } finally {
    await broker.close();
  }
});

test('--shards 2 with the libzmq transport says it runs one thread, and serves', async (t) => {
  const warnings: string[] = [];
  const { broker, endpoint } = await startBroker({ ...HB, shards: 2, transport: 'libzmq', log: (level, msg) => { if (level === 'warn') warnings.push(msg); } });
  const w = new Worker({ endpoint, service: 'echo', ...HB, handler: (b) => b });
  const c = new Client({ endpoints: endpoint, timeout: 5000 });
  t.after(async () => {
    c.close();
    await w.close();
    await broker.close();
  });
  assert.deepEqual(warnings, ['--shards needs the zmtp transport; these options are served by libzmq, on one thread']);
  assert.equal(broker.opts.shards, 1);
  assert.deepEqual((await c.request('echo', 'hi')).map(String), ['hi']);
});
