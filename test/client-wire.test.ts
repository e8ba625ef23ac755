// The Client and Worker libraries as independent peers see them: what they put on the wire (recorded by a libzmq
// ROUTER, not by our broker), what they do when brokers refuse, vanish or stay silent, and what they export.
// Each test here failed on 8a23a70.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { Router, curveKeyPair } from 'zeromq';
import * as lib from '../src/client/index.js';
import { Client } from '../src/client/client.js';
import { Worker } from '../src/client/worker.js';
import { RefusedError, TimeoutError, UnavailableError, UnreachableError } from '../src/client/errors.js';
import { modeFlags, show, sleep, startBroker, until } from './helpers.js';
import { spawnBroker } from './support/spawn-broker.js';
import { freePort } from './support/free-port.js';

/** A libzmq ROUTER that records every message (routing id first) and may answer through `answer`. */
async function recorder(t: TestContext, answer: (m: Buffer[], send: (f: (Buffer | string)[]) => void) => void = () => undefined) {
  const router = new Router({ linger: 0 });
  await router.bind('tcp://127.0.0.1:*');
  const messages: Buffer[][] = [];
  const send = (f: (Buffer | string)[]) => void router.send(f).catch(() => undefined);
  void (async () => {
    try {
      for await (const m of router) {
        messages.push(m);
        answer(m, send);
      }
    } catch {
      // closed
    }
  })();
  t.after(() => router.close());
  return { endpoint: router.lastEndpoint as string, messages };
}

/** An endpoint nobody listens on. */
async function deadEndpoint(): Promise<string> {
  return `tcp://127.0.0.1:${await freePort()}`;
}

const openFds = () => readdirSync('/proc/self/fd').length;

test('RFC 7 on the wire: the mmi.extensions probe and a request with no body each carry a body frame (the Guide brokers abort without one)', async (t) => {
  const rec = await recorder(t);
  const client = new Client({ endpoints: rec.endpoint, timeout: 500, retries: 0 });
  t.after(() => client.close());
  const none = client.request('svc').catch(() => undefined);
  const one = client.request('other', 'x').catch(() => undefined);
  assert.ok(await until(() => rec.messages.length >= 3));
  const shown = rec.messages.map((m) => show(m.slice(1)));
  for (const m of shown) {
    assert.equal(m[0], '', 'an empty frame first');
    assert.equal(m[1], 'MDPC01');
    assert.ok(m.length >= 4, `a REQUEST with a body frame: ${JSON.stringify(m)}`);
  }
  assert.deepEqual(shown.find((m) => m[2] === 'mmi.extensions'), ['', 'MDPC01', 'mmi.extensions', '']);
  assert.deepEqual(shown.find((m) => m[2] === 'svc'), ['', 'MDPC01', 'svc', '']);
  await Promise.all([none, one]);
});

test('RFC 18 on the wire for version 2: no empty frame either way', async (t) => {
  const rec = await recorder(t, (m, send) => {
    // A broker that speaks RFC 18 as written answers FINAL with no empty frame (and offers no extensions).
    if (m[1]?.toString() === 'MDPC02' && m[3]?.toString() === 'echo') send([m[0], 'MDPC02', Buffer.from([3]), 'echo', 'ok', m[4]]);
  });
  const client = new Client({ endpoints: rec.endpoint, version: 2, timeout: 2000, retries: 0 });
  t.after(() => client.close());
  const reply = await client.request('echo', 'hi');
  assert.deepEqual(reply.map(String), ['ok', 'hi']);
  const sent = rec.messages.map((m) => show(m.slice(1)));
  assert.deepEqual(sent.find((m) => m[2] === 'echo'), ['MDPC02', '\x01', 'echo', 'hi']);
  assert.ok(sent.every((m) => m[0] === 'MDPC02'), `every request starts with the header: ${JSON.stringify(sent)}`);
});

test('every error class the libraries throw is exported from mdbroker/client', () => {
  for (const name of ['MdpError', 'BrokerError', 'TimeoutError', 'ClosedError', 'AbortError', 'RefusedError', 'EndpointError', 'UnreachableError', 'UnavailableError'] as const) {
    assert.equal(typeof (lib as Record<string, unknown>)[name], 'function', name);
  }
});

test('a Worker turned away at every READY backs off more each time and says `refused`', async (t) => {
  const rec = await recorder(t, (m, send) => {
    if (m[2]?.toString() === 'MDPW01' && m[3]?.[0] === 1) send([m[0], '', 'MDPW01', Buffer.from([5])]);
  });
  const refused: string[] = [];
  const worker = new Worker({ endpoint: rec.endpoint, service: 'nope', handler: (b) => b });
  worker.on('refused', (_ep, reason) => refused.push(reason));
  t.after(() => worker.close());
  await sleep(2500);
  const readies = rec.messages.filter((m) => m[3]?.[0] === 1).length;
  // Back-off from 100 ms doubling (with jitter of half): about 6 READYs in 2.5 s; reset each time, it was ~30.
  assert.ok(readies >= 3 && readies <= 12, `${readies} READYs in 2.5 s`);
  assert.equal(refused.length, 1, 'the app hears `refused` once');
  assert.match(refused[0], /turned READY nope away/);
});

test('a Worker whose broker goes silent at the MDP level (the connection alive, PINGs answered) starts a new session after liveness x interval', async (t) => {
  // The broker: a libzmq ROUTER that takes READY and then says nothing, ever; libzmq still answers ZMTP PINGs, so
  // only the Worker's MDP liveness can notice.
  const rec = await recorder(t);
  const reasons: string[] = [];
  const worker = new Worker({ endpoint: rec.endpoint, service: 'quiet', heartbeatInterval: 100, heartbeatLiveness: 3, reconnectMin: 50, handler: (b) => b });
  worker.on('reconnecting', (_ep, reason) => reasons.push(reason));
  t.after(() => worker.close());
  const readies = () => rec.messages.filter((m) => m[2]?.toString() === 'MDPW01' && m[3]?.[0] === 1);
  assert.ok(await until(() => readies().length >= 2, 2500), `a second READY within 2.5 s (got ${readies().length})`);
  const ids = new Set(readies().map((m) => m[0].toString('hex')));
  assert.ok(ids.size >= 2, 'the second READY came on a new connection');
  assert.equal(reasons[0], 'broker silent');
});

test('5,000 requests against a dead port and against a silent broker: all fail with TimeoutError, the sockets stay bounded, nothing throws', async (t) => {
  const silent = await recorder(t); // accepts, reads, never answers
  for (const endpoint of [await deadEndpoint(), silent.endpoint]) {
    const client = new Client({ endpoints: endpoint, timeout: 300, retries: 1 });
    t.after(() => client.close());
    const before = openFds();
    let peak = before;
    const sampler = setInterval(() => (peak = Math.max(peak, openFds())), 10);
    const results = await Promise.allSettled(Array.from({ length: 5000 }, (_, i) => client.request('svc', String(i))));
    clearInterval(sampler);
    assert.ok(results.every((r) => r.status === 'rejected' && r.reason instanceof TimeoutError), endpoint);
    assert.ok(peak - before < 64, `at most ${peak - before} more file descriptors at once (${endpoint})`);
    client.close();
  }
});

test('after a broker restart, a request lost with the old connection is resent when the connection is back, not when its window ends', async (t) => {
  const first = await spawnBroker(['--bind', 'tcp://127.0.0.1:*', '--stats-interval', '0', ...modeFlags()]);
  t.after(() => first.child.kill('SIGKILL'));
  const endpoint = first.endpoint;
  const client = new Client({ endpoints: endpoint, timeout: 8000, retries: 1 });
  t.after(() => client.close());
  const sentAt = Date.now();
  const reply = client.request('later', 'x');
  await sleep(500); // queued at the first broker, which has no worker for it
  first.child.kill('SIGKILL');
  await new Promise((r) => first.child.once('exit', r));
  const second = await spawnBroker(['--bind', endpoint, '--stats-interval', '0', ...modeFlags()]);
  t.after(() => second.child.kill('SIGKILL'));
  const worker = new Worker({ endpoint, service: 'later', handler: () => 'from the second broker' });
  t.after(() => worker.close());
  assert.deepEqual((await reply).map(String), ['from the second broker']);
  const took = Date.now() - sentAt;
  assert.ok(took < 5000, `answered ${took} ms after it was sent (its window is 8000 ms)`);
});

test('ready(): resolves on the first handshake, rejects fast for a wrong port (UnreachableError) and for a refused CURVE key (RefusedError)', async (t) => {
  const { broker, endpoint } = await startBroker({ heartbeatInterval: 200, heartbeatLiveness: 3 });
  t.after(() => broker.close());
  const client = new Client({ endpoints: endpoint });
  const worker = new Worker({ endpoint, service: 'echo', heartbeatInterval: 200, handler: (b) => b, concurrency: 2 });
  t.after(async () => {
    client.close();
    await worker.close();
  });
  await Promise.all([client.ready(), worker.ready()]);
  assert.deepEqual((await client.request('echo', 'up')).map(String), ['up']);

  const dead = await deadEndpoint();
  const lost = new Client({ endpoints: dead, timeout: 10000 });
  const lostWorker = new Worker({ endpoint: dead, service: 'x', handler: (b) => b });
  t.after(async () => {
    lost.close();
    await lostWorker.close();
  });
  const started = Date.now();
  await assert.rejects(lost.ready(), (err: unknown) => err instanceof UnreachableError && err.endpoints[0] === dead);
  await assert.rejects(lostWorker.ready(), UnreachableError);
  assert.ok(Date.now() - started < 3000, `both said so in ${Date.now() - started} ms, not after a 10 s window`);

  const keys = curveKeyPair();
  const curved = await startBroker({ curveKeys: keys, allowKeys: [curveKeyPair().publicKey] });
  t.after(() => curved.broker.close());
  const stranger = new Client({ endpoints: curved.endpoint, timeout: 10000, curve: { serverKey: keys.publicKey, ...curveKeyPair() } });
  t.after(() => stranger.close());
  await assert.rejects(stranger.ready(), RefusedError);
});

test('failFast: while the broker says no worker serves a service, requests for it fail at once (UnavailableError), one MMI question at a time', async (t) => {
  const { broker, endpoint } = await startBroker({ heartbeatInterval: 200, heartbeatLiveness: 3 });
  t.after(() => broker.close());
  const client = new Client({ endpoints: endpoint, failFast: 300, timeout: 10000 });
  t.after(() => client.close());
  const started = Date.now();
  const results = await Promise.allSettled(Array.from({ length: 20 }, () => client.request('ghost', 'x')));
  assert.ok(results.every((r) => r.status === 'rejected' && r.reason instanceof UnavailableError && r.reason.service === 'ghost'));
  assert.ok(Date.now() - started < 2000, `failed in ${Date.now() - started} ms, not after a 10 s window`);
  assert.ok(await until(() => broker.stats().mmi >= 1));
  assert.ok(broker.stats().mmi <= 2, `${broker.stats().mmi} MMI questions for 20 requests (the probe and one mmi.service)`);
  // The broker's heartbeat interval: with the Worker's default (2.5 s) an idle worker was expired after 600 ms.
  const worker = new Worker({ endpoint, service: 'ghost', heartbeatInterval: 200, handler: () => 'here now' });
  t.after(() => worker.close());
  await worker.ready();
  // ready() is the worker's side (its handshake); the broker registers it when its READY is read.
  assert.ok(await until(() => broker.snapshot().workers === 1), 'the broker has the worker');
  await sleep(400); // past the 300 ms the answer is kept
  assert.deepEqual((await client.request('ghost', 'y')).map(String), ['here now']);
});
