// Backpressure: when workers or clients cannot keep up, the broker applies its limits and says so; it never drops
// a request without an answer or a count.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Dealer } from 'zeromq';
import { Client } from '../src/client/client.js';
import { Worker } from '../src/client/worker.js';
import { BrokerError } from '../src/client/errors.js';
import { startBroker, until, B, E } from './helpers.js';

const HB = { heartbeatInterval: 100, heartbeatLiveness: 3 };

test('a slow worker: the queue fills to --max-queue, the rest get `overloaded` at once, every request is answered', async (t) => {
  const { broker, endpoint } = await startBroker({ ...HB, maxQueue: 50 });
  const worker = new Worker({ endpoint, service: 'slow', ...HB, handler: async (b) => { await new Promise((r) => setTimeout(r, 5)); return b; } });
  const client = new Client({ endpoints: endpoint, timeout: 20000 });
  t.after(async () => {
    client.close();
    await worker.close();
    await broker.close();
  });
  assert.ok(await until(() => broker.snapshot().workers === 1));
  const results = await Promise.allSettled(Array.from({ length: 400 }, (_, i) => client.request('slow', String(i))));
  let answered = 0;
  let overloaded = 0;
  results.forEach((r, i) => {
    if (r.status === 'fulfilled') {
      assert.equal(r.value[0].toString(), String(i));
      answered++;
    } else {
      assert.ok(r.reason instanceof BrokerError && r.reason.code === 'overloaded', String(r.reason));
      overloaded++;
    }
  });
  assert.equal(answered + overloaded, 400);
  assert.ok(overloaded > 0 && answered >= 50, `answered ${answered}, overloaded ${overloaded}`);
});

test('a client that stops reading: its replies hit the high-water mark and are counted; other clients are served', async (t) => {
  const logs: string[] = [];
  // The cap per peer: 20 messages (libzmq transport) or 256 KiB (zmtp transport). Heartbeats at 1 s: the zmtp
  // transport closes the deaf connection after 3 s without a PONG, long after its replies reached the cap.
  const SLOW_HB = { heartbeatInterval: 1000, heartbeatLiveness: 3 };
  const { broker, endpoint } = await startBroker({ ...SLOW_HB, sendHighWaterMark: 20, peerQueueBytes: 256 * 1024, log: (lvl, msg) => { if (lvl === 'warn') logs.push(msg); } });
  const worker = new Worker({ endpoint, service: 'echo', ...SLOW_HB, handler: (b) => [b[0], Buffer.alloc(16 * 1024)] });
  const deaf = new Dealer({ linger: 0, receiveHighWaterMark: 10, sendHighWaterMark: 0 });
  deaf.connect(endpoint);
  const good = new Client({ endpoints: endpoint, timeout: 10000 });
  t.after(async () => {
    deaf.close();
    good.close();
    await worker.close();
    await broker.close();
  });
  assert.ok(await until(() => broker.snapshot().workers === 1));
  for (let i = 0; i < 3000; i++) await deaf.send([E, B('MDPC01'), B('echo'), B(String(i))]);
  // Every request is accounted for: replied to (and the reply dropped at the cap), or, once the zmtp transport has
  // closed the deaf connection (it answers no PING), dropped as its client's.
  const accounted = () => broker.stats().replies + broker.stats().droppedClientGone;
  assert.ok(await until(() => accounted() === 3000, 20000), `replies ${broker.stats().replies}, dropped ${broker.stats().droppedClientGone}`);
  assert.ok(await until(() => broker.stats().repliesDroppedFull > 0, 5000), 'drops were counted');
  assert.ok(logs.some((m) => m.includes('not reading')), 'and logged at warn');
  // The broker stays healthy for everyone else.
  assert.deepEqual((await good.request('echo', 'still here'))[0].toString(), 'still here');
});
