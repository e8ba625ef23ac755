// Worker credit (protocol/extensions.ts): a worker connection that offered X-MDP-Credit in its ZMTP READY, and was
// granted it, holds up to its credit of requests at once; each REQUEST's client address ends with a 2-byte slot tag
// the worker echoes back. First the core's rules (what a credited worker is sent, how replies are matched, what
// happens when it dies, times out or the broker shuts down), then the bytes on the wire from a raw ZMTP peer, then
// the Worker library against brokers that grant credit and brokers that do not.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { Peer, nextSerial } from '../src/core/peer.js';
import { B, CLIENT, CLIENT2, E, W_A, W_B, core, disc1, partial2, ready1, ready2, reply1, req1, req2, show, take } from './support/core-frames.js';
import type { TestCore } from './support/test-core.js';
import { RawZmtp } from './support/raw-zmtp.js';
import { registered, sleep, startBroker, until } from './helpers.js';
import { Worker } from '../src/client/worker.js';
import { Client } from '../src/client/client.js';
import { curveKeyPair } from 'zeromq';
import type { BrokerOptions } from '../src/broker/options.js';
import type { Broker } from '../src/broker/broker.js';

/** A connection that was granted this much credit (the transport sets it from the handshake). */
function credited(credit: number): Peer {
  const p = new Peer(nextSerial());
  p.credit = credit;
  return p;
}

/** A client address as a credited worker sees it: the client's routing id, then the slot. */
const tagged = (client: Buffer, slot: number) => Buffer.concat([client, Buffer.from([slot >> 8, slot & 0xff])]);

/** The REQUEST a credited MDP/0.1 worker is sent. */
const request1 = (w: Buffer, client: Buffer, slot: number, body: string) => [w, E, B('MDPW01'), B([2]), tagged(client, slot), E, B(body)];

function registerCredited(c: TestCore, credit: number, w = W_A, svc = 'svc'): Peer {
  const p = credited(credit);
  c.handle(ready1(w, svc), 0, p);
  return p;
}

test('a credited worker is sent up to its credit at once, each address tagged with its own slot; the rest queue', () => {
  const c = core();
  registerCredited(c, 3);
  for (const body of ['a', 'b', 'c', 'd']) c.handle(req1(CLIENT, 'svc', body), 1);
  assert.deepEqual(show(take(c)), show([request1(W_A, CLIENT, 0, 'a'), request1(W_A, CLIENT, 1, 'b'), request1(W_A, CLIENT, 2, 'c')]));
  assert.deepEqual(c.snapshot(), { services: 1, workers: 1, idleWorkers: 0, busyWorkers: 1, queued: 1 });
});

test('replies are matched by their tag, in any order: each client gets its own, and a freed slot takes the next request', () => {
  const c = core();
  const p = registerCredited(c, 2);
  c.handle(req1(CLIENT, 'svc', 'for-1'), 1);
  c.handle(req1(CLIENT2, 'svc', 'for-2'), 1);
  c.handle(req1(CLIENT, 'svc', 'queued'), 1);
  take(c);
  // Slot 1 (CLIENT2's) answered first.
  c.handle(reply1(W_A, tagged(CLIENT2, 1), 'answer-2'), 2, p);
  assert.deepEqual(show(take(c)), show([
    [CLIENT2, E, B('MDPC01'), B('svc'), B('answer-2')],
    request1(W_A, CLIENT, 1, 'queued'),
  ]));
  c.handle(reply1(W_A, tagged(CLIENT, 0), 'answer-1'), 3, p);
  c.handle(reply1(W_A, tagged(CLIENT, 1), 'answer-q'), 3, p);
  assert.deepEqual(show(take(c)), show([
    [CLIENT, E, B('MDPC01'), B('svc'), B('answer-1')],
    [CLIENT, E, B('MDPC01'), B('svc'), B('answer-q')],
  ]));
  assert.equal(c.stats.replies, 3);
  assert.deepEqual(c.snapshot(), { services: 1, workers: 1, idleWorkers: 1, busyWorkers: 0, queued: 0 });
});

test('a reply naming another client for a slot is dropped and counted; one for a free slot or with no tag ends the worker', () => {
  const c = core();
  const p = registerCredited(c, 4);
  c.handle(req1(CLIENT, 'svc', 'x'), 1);
  take(c);
  c.handle(reply1(W_A, tagged(CLIENT2, 0), 'stolen'), 2, p);
  assert.deepEqual(take(c), [], 'nothing goes to CLIENT2, nor to CLIENT');
  assert.equal(c.stats.malformed, 1);
  c.handle(reply1(W_A, tagged(CLIENT, 3), 'nobody'), 3, p);
  assert.deepEqual(show(take(c)), show([disc1(W_A)]), 'DISCONNECT for a reply to a free slot');
  assert.equal(c.stats.unexpected, 1);
  assert.equal(c.snapshot().queued, 1, 'the request it held is queued again');
  // An address of the tag alone names a slot but no client: dropped, counted. One shorter than a tag names no slot.
  const q = registerCredited(c, 2, W_B);
  c.handle(req1(CLIENT2, 'svc', 'y'), 4);
  assert.deepEqual(show(take(c)), show([request1(W_B, CLIENT, 0, 'x'), request1(W_B, CLIENT2, 1, 'y')]));
  c.handle(reply1(W_B, B([0, 0]), 'no client'), 5, q);
  assert.deepEqual(take(c), []);
  assert.equal(c.stats.malformed, 2);
  c.handle(reply1(W_B, B([7]), 'short'), 6, q);
  assert.deepEqual(show(take(c)), show([disc1(W_B)]));
  assert.equal(c.stats.unexpected, 2);
});

test('a credited worker that dies gives back every request it held, ahead of the queue, in slot order', () => {
  const c = core();
  const p = registerCredited(c, 3);
  for (const body of ['a', 'b', 'c', 'd']) c.handle(req1(CLIENT, 'svc', body), 1);
  take(c);
  c.peerClosed(p, 2);
  assert.equal(c.stats.requeued, 3);
  c.handle(ready1(W_B, 'svc'), 3);
  const order: string[] = [];
  for (let i = 0; i < 4; i++) {
    const m = take(c).find((x) => x[0].equals(W_B)) as Buffer[];
    order.push(m[m.length - 1].toString());
    c.handle(reply1(W_B, m[4], 'ok'), 4 + i);
  }
  assert.deepEqual(order, ['a', 'b', 'c', 'd']);
});

test('busy timeout counts from each held request\'s own progress: a PARTIAL keeps its request alive, not the others', () => {
  const c = core({ busyTimeout: 500, heartbeatInterval: 1000, heartbeatLiveness: 100 });
  const p = credited(2);
  c.handle(ready2(W_A, 'svc'), 0, p);
  c.handle(req2(CLIENT, 'svc', 'one'), 0);
  c.handle(req2(CLIENT, 'svc', 'two'), 300);
  take(c);
  // Progress on the later one (slot 1) does not keep the earlier one (slot 0) alive.
  c.handle(partial2(W_A, tagged(CLIENT, 1), 'progress'), 400, p);
  take(c);
  c.tick(499);
  assert.deepEqual(take(c), [], 'slot 0 dispatched at 0 is 499 ms old');
  c.tick(500);
  assert.deepEqual(show(take(c)), show([[W_A, B('MDPW02'), B([6])]]), 'slot 0 reached 500 ms: the worker is expired');
  assert.equal(c.stats.workersExpired, 1);
  assert.equal(c.stats.requeued, 2);
});

test('shutdown waits for a credited worker\'s requests in hand: their replies reach the clients, then DISCONNECT', () => {
  const c = core();
  const p = registerCredited(c, 4);
  c.handle(req1(CLIENT, 'svc', 'a'), 1);
  c.handle(req1(CLIENT2, 'svc', 'b'), 1);
  take(c);
  c.beginShutdown(2);
  assert.deepEqual(take(c), [], 'not told DISCONNECT while it holds requests');
  assert.equal(c.snapshot().workers, 1);
  c.handle(reply1(W_A, tagged(CLIENT, 0), 'A'), 3, p);
  assert.deepEqual(show(take(c)), show([[CLIENT, E, B('MDPC01'), B('svc'), B('A')]]));
  c.handle(reply1(W_A, tagged(CLIENT2, 1), 'B'), 4, p);
  assert.deepEqual(show(take(c)), show([[CLIENT2, E, B('MDPC01'), B('svc'), B('B')], disc1(W_A)]));
  assert.equal(c.snapshot().workers, 0);
});

test('finishShutdown fails what a credited worker still holds with `shutdown`', () => {
  const c = core();
  registerCredited(c, 4);
  c.handle(req1(CLIENT, 'svc', 'a'), 1);
  c.handle(req1(CLIENT2, 'svc', 'b'), 1);
  take(c);
  c.beginShutdown(2);
  c.finishShutdown(3);
  const out = take(c);
  const errors = out.filter((m) => m.some((f) => f.toString() === 'shutdown'));
  assert.deepEqual(errors.map((m) => m[0]), [CLIENT, CLIENT2]);
  assert.deepEqual(show(out.filter((m) => m[0].equals(W_A))), show([disc1(W_A)]));
});

test('a connection with no credit is MDP as written: one request at a time, its address untagged', () => {
  const c = core();
  c.handle(ready1(W_A, 'svc'), 0);
  c.handle(req1(CLIENT, 'svc', 'a'), 1);
  c.handle(req1(CLIENT, 'svc', 'b'), 1);
  assert.deepEqual(show(take(c)), show([[W_A, E, B('MDPW01'), B([2]), CLIENT, E, B('a')]]));
  c.handle(reply1(W_A, CLIENT, 'A'), 2);
  assert.deepEqual(show(take(c)), show([[CLIENT, E, B('MDPC01'), B('svc'), B('A')], [W_A, E, B('MDPW01'), B([2]), CLIENT, E, B('b')]]));
});

// ---- on the wire ----

/** The properties of the broker's READY (RFC 37: name as a short string, value with a 4-byte length). */
function readyProperties(p: RawZmtp): Map<string, string> {
  const data = p.commands('READY')[0];
  const out = new Map<string, string>();
  for (let i = 0; i < data.length;) {
    const n = data[i];
    const name = data.toString('latin1', i + 1, i + 1 + n);
    const len = data.readUInt32BE(i + 1 + n);
    out.set(name.toLowerCase(), data.toString('latin1', i + 5 + n, i + 5 + n + len));
    i += 5 + n + len;
  }
  return out;
}

const portOf = (endpoint: string) => Number(endpoint.slice(endpoint.lastIndexOf(':') + 1));
/** REQUESTs a raw worker got (MDP/0.1 from a ROUTER to a DEALER: '', MDPW01, 0x02, address, '', body). */
const requestsAt = (w: RawZmtp) => w.messages().filter((m) => m.length >= 6 && m[2][0] === 2);

/** A broker with this --worker-credit, a raw worker that offers credit 3 and a raw client, all closed after `t`. */
async function rawPair(t: TestContext, workerCredit: number): Promise<{ broker: Broker; w: RawZmtp; client: RawZmtp }> {
  const { broker, endpoint } = await startBroker({ transport: 'zmtp', shards: 1, workerCredit });
  t.after(() => broker.close());
  const w = await RawZmtp.open(portOf(endpoint), { 'X-MDP-Credit': '3' });
  const client = await RawZmtp.open(portOf(endpoint));
  t.after(() => {
    w.sock.destroy();
    client.sock.destroy();
  });
  return { broker, w, client };
}

test('on the wire: the broker offers its cap in READY; a worker offering credit gets a burst at once, tagged, and its tags echoed route replies', async (t) => {
  const { broker, w, client } = await rawPair(t, 8);
  assert.equal(readyProperties(w).get('x-mdp-credit'), '8');
  w.send(['', 'MDPW01', '\x01', 'svc']);
  assert.ok(await until(() => broker.snapshot().workers === 1));
  for (let i = 0; i < 4; i++) client.send(['', 'MDPC01', 'svc', `body-${i}`]);
  assert.ok(await until(() => requestsAt(w).length === 3));
  await sleep(100);
  const got = requestsAt(w);
  assert.equal(got.length, 3, 'the fourth waits for a free slot');
  assert.deepEqual(got.map((m) => m[5].toString()), ['body-0', 'body-1', 'body-2']);
  const addresses = got.map((m) => m[3]);
  for (const a of addresses) assert.equal(a.length, 5 + 2, 'a 5-byte routing id and a 2-byte tag');
  assert.deepEqual(addresses.map((a) => a.readUInt16BE(5)), [0, 1, 2]);
  // Slot 1 answered first: its client gets that reply, and the fourth request takes slot 1.
  w.send(['', 'MDPW01', '\x03', addresses[1], '', 'reply-1']);
  assert.ok(await until(() => client.messages().length === 1 && requestsAt(w).length === 4));
  assert.deepEqual(client.messages()[0].map(String), ['', 'MDPC01', 'svc', 'reply-1']);
  const fourth = requestsAt(w)[3];
  assert.deepEqual([fourth[5].toString(), fourth[3].readUInt16BE(5)], ['body-3', 1]);
  for (const m of [got[0], got[2], fourth]) w.send(['', 'MDPW01', '\x03', m[3], '', `re-${m[5].toString()}`]);
  assert.ok(await until(() => client.messages().length === 4));
  assert.deepEqual(client.messages().slice(1).map((m) => m[3].toString()).sort(), ['re-body-0', 're-body-2', 're-body-3']);
});

test('on the wire: --worker-credit 1 offers nothing, and a worker offering credit is served one request at a time, untagged', async (t) => {
  const { broker, w, client } = await rawPair(t, 1);
  assert.equal(readyProperties(w).has('x-mdp-credit'), false);
  w.send(['', 'MDPW01', '\x01', 'svc']);
  assert.ok(await until(() => broker.snapshot().workers === 1));
  client.send(['', 'MDPC01', 'svc', 'a']);
  client.send(['', 'MDPC01', 'svc', 'b']);
  assert.ok(await until(() => requestsAt(w).length === 1));
  await sleep(100);
  assert.equal(requestsAt(w).length, 1);
  assert.equal(requestsAt(w)[0][3].length, 5, 'the address is the client\'s routing id alone');
});

// ---- the Worker library ----

/** A worker whose handler holds each request `ms` and records how many ran at once. */
function slowWorker(endpoint: string, concurrency: number, ms = 40): { worker: Worker; most: () => number } {
  let now = 0;
  let most = 0;
  const worker = new Worker({
    endpoint, service: 'echo', heartbeatInterval: 200, concurrency,
    handler: async (b) => {
      most = Math.max(most, ++now);
      await sleep(ms);
      now--;
      return b;
    },
  });
  return { worker, most: () => most };
}

async function burst(endpoint: string, n: number): Promise<string[]> {
  const client = new Client({ endpoints: endpoint, timeout: 10000 });
  try {
    const bodies = Array.from({ length: n }, (_, i) => `m${i}`);
    const replies = await Promise.all(bodies.map((b) => client.request('echo', b)));
    return replies.map((r) => r[0].toString());
  } finally {
    client.close();
  }
}

const CASES: { name: string; opts: Partial<BrokerOptions>; concurrency: number; connections: number }[] = [
  { name: 'a zmtp broker grants credit: one connection', opts: { transport: 'zmtp', shards: 1 }, concurrency: 6, connections: 1 },
  { name: 'a broker granting less (cap 4): the rest as plain sessions', opts: { transport: 'zmtp', shards: 1, workerCredit: 4 }, concurrency: 6, connections: 3 },
  { name: 'a libzmq-transport broker grants none: one connection per handler', opts: { transport: 'libzmq' }, concurrency: 6, connections: 6 },
  { name: 'a sharded broker grants credit too (the shard its connection lands on): one connection', opts: { transport: 'zmtp', shards: 2 }, concurrency: 6, connections: 1 },
];

for (const c of CASES) {
  test(`Worker concurrency ${c.concurrency}, ${c.name}; every request answered, ${c.concurrency} handlers at once`, async (t) => {
    const { broker, endpoint } = await startBroker({ heartbeatInterval: 200, ...c.opts });
    const { worker, most } = slowWorker(endpoint, c.concurrency);
    t.after(async () => {
      await worker.close();
      await broker.close();
    });
    assert.ok(await registered(broker, worker));
    assert.equal(worker.connections, c.connections);
    assert.equal(broker.snapshot().workers, c.connections);
    const bodies = await burst(endpoint, 60);
    assert.deepEqual(bodies, Array.from({ length: 60 }, (_, i) => `m${i}`));
    assert.equal(most(), c.concurrency);
  });
}

test('Worker with credit: drain() sends the replies of every request in hand, then says DISCONNECT', async (t) => {
  const { broker, endpoint } = await startBroker({ transport: 'zmtp', shards: 1, heartbeatInterval: 200 });
  const { worker } = slowWorker(endpoint, 4, 150);
  const client = new Client({ endpoints: endpoint, timeout: 10000 });
  t.after(async () => {
    client.close();
    await worker.close();
    await broker.close();
  });
  assert.ok(await registered(broker, worker));
  const replies = ['a', 'b', 'c', 'd'].map((x) => client.request('echo', x));
  assert.ok(await until(() => broker.snapshot().busyWorkers === 1));
  await worker.drain();
  assert.deepEqual((await Promise.all(replies)).map((r) => r[0].toString()), ['a', 'b', 'c', 'd']);
  assert.equal(worker.served, 4);
  assert.ok(await until(() => broker.snapshot().workers === 0));
  assert.equal(broker.stats().requeued, 0);
});

test('Worker with credit: a handler that throws gives back every request its connection held; all are answered by a new session', async (t) => {
  const { broker, endpoint } = await startBroker({ transport: 'zmtp', shards: 1, heartbeatInterval: 200 });
  let thrown = false;
  const errors: unknown[] = [];
  const worker = new Worker({
    endpoint, service: 'echo', heartbeatInterval: 200, concurrency: 4, reconnectMin: 20, onError: (e) => errors.push(e),
    handler: async (b) => {
      await sleep(30);
      if (!thrown && b[0].toString() === 'boom') {
        thrown = true;
        throw new Error('boom');
      }
      return b;
    },
  });
  t.after(async () => {
    await worker.close();
    await broker.close();
  });
  assert.ok(await registered(broker, worker));
  const bodies = ['boom', 'x', 'y', 'z'];
  const client = new Client({ endpoints: endpoint, timeout: 10000 });
  t.after(() => client.close());
  const replies = await Promise.all(bodies.map((b) => client.request('echo', b)));
  assert.deepEqual(replies.map((r) => r[0].toString()), bodies);
  // The throw, and each reply of the connection's other handlers, discarded because the broker gave them out again.
  assert.equal(errors.filter((e) => e instanceof Error && e.message === 'boom').length, 1);
  assert.equal(errors.length, 1 + worker.discarded);
  assert.ok(broker.stats().requeued >= 1);
});

test('Worker with credit under CURVE: the property travels in the sealed INITIATE and READY; one connection serves four at once', async (t) => {
  const keys = curveKeyPair();
  const workerKeys = curveKeyPair();
  const clientKeys = curveKeyPair();
  const { broker, endpoint } = await startBroker({ transport: 'zmtp', shards: 1, heartbeatInterval: 200, curveKeys: keys, allowKeys: [workerKeys.publicKey, clientKeys.publicKey] });
  let now = 0;
  let most = 0;
  const worker = new Worker({
    endpoint, service: 'echo', heartbeatInterval: 200, concurrency: 4, curve: { serverKey: keys.publicKey, ...workerKeys },
    handler: async (b) => {
      most = Math.max(most, ++now);
      await sleep(40);
      now--;
      return b;
    },
  });
  const client = new Client({ endpoints: endpoint, timeout: 10000, curve: { serverKey: keys.publicKey, ...clientKeys } });
  t.after(async () => {
    client.close();
    await worker.close();
    await broker.close();
  });
  assert.ok(await registered(broker, worker));
  assert.equal(worker.connections, 1);
  const bodies = Array.from({ length: 16 }, (_, i) => `c${i}`);
  const replies = await Promise.all(bodies.map((b) => client.request('echo', b)));
  assert.deepEqual(replies.map((r) => r[0].toString()), bodies);
  assert.equal(most, 4);
});
