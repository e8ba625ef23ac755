// The zmtp transport against peers we did not write: libzmq through zeromq.js (DEALER and REQ, routing ids set and
// unset, ZMTP heartbeats on and off), plus raw TCP for the bytes on the wire. pyzmq peers: interop.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { Context, Dealer, Publisher, Request, curveKeyPair } from 'zeromq';
import { Client } from '../src/client/client.js';
import { Worker } from '../src/client/worker.js';
import { Broker } from '../src/broker/broker.js';
import type { BrokerOptions } from '../src/broker/options.js';
import { greeting, readyCommand } from '../src/zmtp/wire.js';
import { spawnBroker, brokerMetric, metricValue } from './support/spawn-broker.js';
import { B, E, until, sleep } from './helpers.js';

async function zmtpBroker(opts: Partial<BrokerOptions> = {}): Promise<{ broker: Broker; endpoint: string; port: number }> {
  const broker = new Broker({ bind: ['tcp://127.0.0.1:*'], shutdownGrace: 200, transport: 'zmtp', statsInterval: 0, ...opts });
  await broker.start();
  assert.equal(broker.transport, 'zmtp');
  const endpoint = broker.endpoints[0];
  return { broker, endpoint, port: Number(endpoint.split(':').pop()) };
}

async function counter(broker: Broker, name: string): Promise<number> {
  const out = await broker.aggregateStats();
  return metricValue(out.prometheus, name) ?? 0;
}

/** The counter once it reaches `atLeast`, or its value after `ms` (the broker sees a close a moment after the peer). */
async function counterReaches(broker: Broker, name: string, atLeast: number, ms = 3000): Promise<number> {
  const end = Date.now() + ms;
  let v = await counter(broker, name);
  while (v < atLeast && Date.now() < end) {
    await sleep(20);
    v = await counter(broker, name);
  }
  return v;
}

/** A raw TCP peer that collects every byte the broker writes. */
function rawPeer(port: number): { sock: Socket; data: () => Buffer; closed: Promise<void> } {
  const sock = connect({ host: '127.0.0.1', port });
  const chunks: Buffer[] = [];
  sock.on('data', (c: Buffer) => chunks.push(c));
  sock.on('error', () => undefined);
  const closed = new Promise<void>((r) => sock.on('close', () => r()));
  return { sock, data: () => Buffer.concat(chunks), closed };
}

test('libzmq DEALER and REQ peers, routing ids set and unset, ZMTP heartbeats on and off: every request answered', async (t) => {
  const { broker, endpoint } = await zmtpBroker({ heartbeatInterval: 200 });
  const worker = new Worker({ endpoint, service: 'echo', heartbeatInterval: 200, handler: (b) => b });
  t.after(async () => {
    await worker.close();
    await broker.close();
  });
  const variants: { name: string; sock: Dealer | Request; req: boolean }[] = [
    { name: 'dealer', sock: new Dealer({ linger: 0 }), req: false },
    { name: 'dealer+id', sock: new Dealer({ linger: 0, routingId: 'client-a' }), req: false },
    { name: 'dealer+hb', sock: new Dealer({ linger: 0, heartbeatInterval: 50, heartbeatTimeout: 500 }), req: false },
    { name: 'req', sock: new Request({ linger: 0 }), req: true },
    { name: 'req+id+hb', sock: new Request({ linger: 0, routingId: 'client-b', heartbeatInterval: 50, heartbeatTimeout: 500 }), req: true },
  ];
  for (const v of variants) {
    v.sock.connect(endpoint);
    v.sock.receiveTimeout = 3000;
  }
  t.after(() => variants.forEach((v) => v.sock.close()));
  for (let round = 0; round < 3; round++) {
    for (const v of variants) {
      const body = `${v.name}-${round}`;
      await v.sock.send(v.req ? [B('MDPC01'), B('echo'), B(body)] : [E, B('MDPC01'), B('echo'), B(body)]);
      const reply = (await v.sock.receive()).map(String);
      assert.deepEqual(reply, v.req ? ['MDPC01', 'echo', body] : ['', 'MDPC01', 'echo', body], v.name);
    }
    // Idle long enough for the broker to PING every peer a few times; nobody is dropped.
    await sleep(300);
  }
  assert.equal(await counter(broker, 'zmtp_heartbeat-timeout'), 0);
  assert.equal(worker.served, 15);
});

test('64 KiB and 8 MiB bodies, from a libzmq client through a libzmq worker, come back byte for byte', async (t) => {
  const { broker, endpoint } = await zmtpBroker({ limits: { maxFrames: 1024, maxFrameBytes: 16 << 20, maxServiceName: 255, maxEnvelope: 8 } });
  const worker = new Worker({ endpoint, service: 'echo', handler: (b) => b });
  const client = new Client({ endpoints: endpoint, timeout: 20000 });
  t.after(async () => {
    client.close();
    await worker.close();
    await broker.close();
  });
  for (const size of [64 * 1024, 8 * 1024 * 1024]) {
    const body = Buffer.alloc(size);
    for (let i = 0; i < size; i += 4096) body[i] = (i / 4096) & 0xff;
    body[size - 1] = 0x5a;
    const [small, big] = await client.request('echo', [Buffer.from('head'), body]);
    assert.equal(small.toString(), 'head');
    assert.ok(big.equals(body), `${size}-byte body intact`);
  }
});

test('a duplicate identity is refused (as libzmq ROUTER does by default); the first peer keeps it', async (t) => {
  const { broker, endpoint } = await zmtpBroker();
  const first = new Dealer({ linger: 0, routingId: 'same-id' });
  const second = new Dealer({ linger: 0, routingId: 'same-id', receiveTimeout: 500 });
  t.after(async () => {
    first.close();
    second.close();
    await broker.close();
  });
  first.connect(endpoint);
  await first.send([E, B('MDPC01'), B('mmi.service'), B('x')]);
  assert.deepEqual((await first.receive()).map(String), ['', 'MDPC01', 'mmi.service', '404']);
  second.connect(endpoint);
  await second.send([E, B('MDPC01'), B('mmi.service'), B('y')]);
  await assert.rejects(second.receive(), { code: 'EAGAIN' });
  assert.ok(await counterReaches(broker, 'zmtp_duplicate-identity', 1) >= 1);
  await first.send([E, B('MDPC01'), B('mmi.service'), B('z')]);
  assert.deepEqual((await first.receive()).map(String), ['', 'MDPC01', 'mmi.service', '404']);
});

test('on the wire: READY answered with Socket-Type ROUTER, PING answered with PONG, a silent peer PINGed then closed', async (t) => {
  const { broker, port } = await zmtpBroker({ heartbeatInterval: 100, heartbeatLiveness: 3 });
  t.after(() => broker.close());
  const p = rawPeer(port);
  p.sock.write(Buffer.concat([greeting(), readyCommand({ 'Socket-Type': 'DEALER' })]));
  // PING, TTL 0, context "ctx": the answer echoes the context.
  p.sock.write(Buffer.from([0x04, 10, 4, ...Buffer.from('PING'), 0, 0, ...Buffer.from('ctx')]));
  // The broker's READY: its socket type, and the worker credit it grants (test/worker-credit.test.ts).
  const ready = readyCommand({ 'Socket-Type': 'ROUTER', 'X-MDP-Credit': '256' });
  const end = 64 + ready.length;
  assert.ok(await until(() => p.data().length >= end + 10, 2000));
  const out = p.data();
  assert.deepEqual([...out.subarray(0, 12)], [0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0x7f, 3, 1]);
  assert.deepEqual(out.subarray(64, end), ready);
  assert.deepEqual(out.subarray(end, end + 10), Buffer.from([0x04, 8, 4, ...Buffer.from('PONG'), ...Buffer.from('ctx')]));
  // Now silent: the broker PINGs (TTL = 3 x 100 ms = 3 tenths) and closes after 3 silent intervals.
  const t0 = Date.now();
  await p.closed;
  const waited = Date.now() - t0;
  assert.match(p.data().subarray(end + 10).toString('latin1'), /\x04PING\x00\x03/);
  assert.ok(waited >= 150 && waited < 2000, `closed after ${waited} ms`);
  assert.equal(await counterReaches(broker, 'zmtp_heartbeat-timeout', 1), 1);
});

test('a peer that connects and says nothing is closed at the handshake timeout; a PUB peer gets ERROR', async (t) => {
  const { broker, port, endpoint } = await zmtpBroker({ handshakeTimeout: 200 });
  t.after(() => broker.close());
  const hung = rawPeer(port);
  const t0 = Date.now();
  await hung.closed;
  assert.ok(Date.now() - t0 < 2000);
  assert.equal(await counterReaches(broker, 'zmtp_handshake-timeout', 1), 1);
  const pub = new Publisher({ linger: 0 });
  pub.connect(endpoint);
  t.after(() => pub.close());
  assert.ok(await counterReaches(broker, 'zmtp_socket-type', 1) >= 1, 'PUB refused and counted');
  const raw = rawPeer(port);
  raw.sock.write(Buffer.concat([greeting(), readyCommand({ 'Socket-Type': 'SUB' })]));
  await raw.closed;
  assert.match(raw.data().subarray(64).toString('latin1'), /\x05ERROR.invalid socket type SUB for ROUTER$/);
});

test('a worker whose connection ends holding a request: the request goes to another worker at once, not after expiry', async (t) => {
  // Heartbeat expiry would take 3 x 5 s; the connection's end is seen at once.
  const { broker, endpoint } = await zmtpBroker({ heartbeatInterval: 5000 });
  const client = new Client({ endpoints: endpoint, timeout: 10000 });
  const a = new Dealer({ linger: 0 });
  const b = new Dealer({ linger: 0 });
  t.after(async () => {
    client.close();
    a.close();
    b.close();
    await broker.close();
  });
  a.connect(endpoint);
  await a.send([E, B('MDPW01'), B([1]), B('job')]);
  assert.ok(await until(() => broker.snapshot().workers === 1));
  const reply = client.request('job', 'precious');
  const req = await a.receive();
  assert.equal(req.at(-1)?.toString(), 'precious');
  b.connect(endpoint);
  await b.send([E, B('MDPW01'), B([1]), B('job')]);
  assert.ok(await until(() => broker.snapshot().workers === 2));
  const t0 = Date.now();
  a.close();
  const again = await b.receive();
  assert.ok(Date.now() - t0 < 2000, `retried after ${Date.now() - t0} ms`);
  assert.equal(again.at(-1)?.toString(), 'precious');
  await b.send([E, B('MDPW01'), B([3]), again[3], E, B('saved')]);
  assert.deepEqual((await reply).map(String), ['saved']);
  assert.equal(broker.stats().workersGone, 1);
  assert.equal(broker.stats().requeued, 1);
});

test('a client whose connection ends: its queued requests are dropped (counted), no worker serves them', async (t) => {
  const { broker, endpoint } = await zmtpBroker();
  const c = new Dealer({ linger: 0 });
  c.connect(endpoint);
  for (let i = 0; i < 3; i++) await c.send([E, B('MDPC01'), B('later'), B(`r${i}`)]);
  assert.ok(await until(() => broker.snapshot().queued === 3));
  c.close();
  assert.ok(await until(() => broker.stats().clientsGone === 1));
  let served = 0;
  const worker = new Worker({ endpoint, service: 'later', handler: (body) => (served++, body) });
  t.after(async () => {
    await worker.close();
    await broker.close();
  });
  assert.ok(await until(() => broker.stats().droppedClientGone === 3));
  assert.equal(served, 0);
  assert.equal(broker.snapshot().queued, 0);
});

test('5,000 libzmq connections to one broker process: every one is served, RSS stays small', { timeout: 120000 }, async (t) => {
  const { child, endpoint, metricsPort } = await spawnBroker(['--bind', 'tcp://127.0.0.1:*', '--transport', 'zmtp', '--stats-interval', '0', '--metrics-port', '0']);
  t.after(() => child.kill('SIGKILL'));
  const N = 5000;
  const ctx = new Context({ maxSockets: N + 64 });
  const socks: Dealer[] = [];
  t.after(() => socks.forEach((s) => s.close()));
  for (let i = 0; i < N; i++) {
    const s = new Dealer({ context: ctx, linger: 0, receiveTimeout: 30000 });
    s.connect(endpoint);
    socks.push(s);
  }
  await Promise.all(socks.map((s, i) => s.send([E, B('MDPC01'), B('mmi.service'), B(`svc-${i}`)])));
  const replies = await Promise.all(socks.map((s) => s.receive()));
  assert.equal(replies.filter((r) => r.at(-1)?.toString() === '404').length, N);
  assert.ok((await brokerMetric(metricsPort as number, 'connections')) === N);
  const rss = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))?.[1]) / 1024;
  t.diagnostic(`broker RSS with ${N} connections: ${rss.toFixed(0)} MiB`);
  assert.ok(rss < 200, `RSS ${rss} MiB`);
});

test('ipc:// endpoints: a libzmq client and worker over a Unix socket; a live endpoint is not taken over; the file is removed on close', async () => {
  const path = `${tmpdir()}/mdbroker-test-${process.pid}-${Date.now()}.sock`;
  const broker = new Broker({ bind: [`ipc://${path}`], transport: 'zmtp', statsInterval: 0, shutdownGrace: 100 });
  await broker.start();
  assert.equal(broker.transport, 'zmtp');
  assert.deepEqual(broker.endpoints, [`ipc://${path}`]);
  const worker = new Worker({ endpoint: `ipc://${path}`, service: 'echo', handler: (b) => b });
  const client = new Client({ endpoints: `ipc://${path}`, timeout: 5000 });
  try {
    assert.deepEqual((await client.request('echo', ['over', 'ipc'])).map(String), ['over', 'ipc']);
    // A second broker on the same path: refused (the first is alive), and the first keeps serving.
    const second = new Broker({ bind: [`ipc://${path}`], transport: 'zmtp', statsInterval: 0, shutdownGrace: 100 });
    await assert.rejects(second.start(), { code: 'EADDRINUSE' });
    await second.close();
    assert.deepEqual((await client.request('echo', 'still')).map(String), ['still']);
  } finally {
    client.close();
    await worker.close();
    await broker.close();
  }
  assert.equal(existsSync(path), false);
});

test('transport choice: CURVE is served by zmtp, --access and inproc:// fall back to libzmq and say so; --transport libzmq is honoured', async () => {
  const logs: string[] = [];
  const inproc = new Broker({ bind: ['inproc://mdbroker-choice-test'], statsInterval: 0, log: (_l, m) => logs.push(m) });
  assert.equal(inproc.transport, 'libzmq');
  assert.ok(logs.some((m) => m.includes('inproc://mdbroker-choice-test is served by the libzmq transport')));
  const curve = new Broker({ bind: ['tcp://127.0.0.1:*'], curveKeys: curveKeyPair(), statsInterval: 0 });
  assert.equal(curve.transport, 'zmtp');
  const groups = new Broker({ bind: ['tcp://127.0.0.1:*'], curveKeys: curveKeyPair(), workerGroups: [{ bind: ['tcp://127.0.0.1:*'], services: ['a'], allowKeys: null }], statsInterval: 0, log: (_l, m) => logs.push(m) });
  assert.equal(groups.transport, 'libzmq');
  assert.ok(logs.some((m) => m.includes('access groups (--access) are served by the libzmq transport')));
  const asked = new Broker({ bind: ['tcp://127.0.0.1:*'], transport: 'libzmq', statsInterval: 0 });
  assert.equal(asked.transport, 'libzmq');
  assert.throws(() => new Broker({ transport: 'quic' as never }), { name: 'ConfigError', code: 'transport' });
  await inproc.close();
  await asked.close();
  await curve.close();
  await groups.close();
});

// The same in every pass of the suite (this file's brokers ignore the mode), and 7 s long: plain pass only.
const brokerMode = ['MDBROKER_TEST_OFFLOAD', 'MDBROKER_TEST_SHARDS', 'MDBROKER_TEST_TRANSPORT'].some((k) => process.env[k]);

test('a client sending faster than its service is served is paused (TCP pushes back on it), not refused', { skip: brokerMode ? 'plain pass only' : false }, async (t) => {
  // A 1 MiB share per client: the broker stops reading a client whose requests hold 512 KiB, resumes below 256 KiB.
  const { broker, endpoint, port } = await zmtpBroker({ heartbeatInterval: 200, maxClientBytes: 1024 * 1024 });
  const worker = new Worker({ endpoint, service: 'echo', heartbeatInterval: 200, handler: (b) => b });
  t.after(async () => {
    await worker.close();
    await broker.close();
  });
  assert.ok(await until(() => broker.snapshot().workers === 1));
  const N = 10000;
  const body = Buffer.alloc(2048, 0x5a);
  const sock = connect({ host: '127.0.0.1', port });
  t.after(() => sock.destroy());
  const received: Buffer[] = [];
  sock.on('data', (d: Buffer) => received.push(d));
  const frame = (flags: number, data: Buffer) => {
    const long = data.length > 255;
    const h = Buffer.alloc(long ? 9 : 2);
    h[0] = flags | (long ? 2 : 0);
    if (long) h.writeBigUInt64BE(BigInt(data.length), 1);
    else h[1] = data.length;
    return Buffer.concat([h, data]);
  };
  const request = Buffer.concat([frame(1, E), frame(1, B('MDPC01')), frame(1, B('echo')), frame(0, body)]);
  sock.write(Buffer.concat([greeting(), readyCommand({ 'Socket-Type': 'DEALER' })]));
  for (let i = 0; i < N; i++) sock.write(request); // 20 MB at once; one worker serves them one by one
  assert.ok(await counterReaches(broker, 'zmtp_paused', 1, 10000) >= 1, 'the broker paused reading from us');
  let heldBack = 0;
  let maxHeld = 0;
  const replies = () => {
    const all = Buffer.concat(received);
    let at = 64; // greeting
    let ends = 0;
    while (at + 2 <= all.length) {
      const flags = all[at];
      const long = (flags & 2) !== 0;
      if (at + (long ? 9 : 2) > all.length) break;
      const size = long ? Number(all.readBigUInt64BE(at + 1)) : all[at + 1];
      at += (long ? 9 : 2) + size;
      if (at > all.length) break;
      if ((flags & 4) === 0 && (flags & 1) === 0) ends++;
    }
    return ends;
  };
  const done = await until(() => {
    heldBack = Math.max(heldBack, sock.writableLength);
    maxHeld = Math.max(maxHeld, broker.snapshot().queued);
    return replies() === N;
  }, 30000);
  assert.ok(done, `${replies()} of ${N} replies`);
  assert.ok(heldBack > 1024 * 1024, `our writes were held back by TCP: up to ${heldBack} bytes waited in our socket`);
  assert.ok(maxHeld < 1000, `the broker queued at most ${maxHeld} of our requests at a time`);
  assert.equal(broker.stats().errors.overloaded, 0, 'nothing refused');
});
