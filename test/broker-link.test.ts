// The libraries' own ZMTP link (src/client/zmtp-link.ts), against peers we did not write: libzmq's CURVE server (the
// client side of RFC 26), a ROUTER that only starts listening later (messages sent meanwhile are kept), a TCP peer that
// completes the handshake and then goes silent (ZMTP heartbeats find it), a port nobody listens on (the back-off grows,
// with jitter). Also: an app that imports only mdbroker/client loads no native addon, and transport 'libzmq' (and
// inproc://, which picks it) still works.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Socket } from 'node:net';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { Router, curveKeyPair } from 'zeromq';
import { ZmtpLink } from '../src/client/zmtp-link.js';
import type { LinkHandler } from '../src/client/broker-link.js';
import { Client } from '../src/client/client.js';
import { Worker } from '../src/client/worker.js';
import { RefusedError } from '../src/client/errors.js';
import { greeting, readyCommand } from '../src/zmtp/wire.js';
import { B, E, show, sleep, startBroker, until } from './helpers.js';
import { freePort } from './support/free-port.js';

/** A handler that records what the link reports. */
function recording(): LinkHandler & { events: string[]; messages: Buffer[][]; at: number[] } {
  const r = {
    events: [] as string[],
    messages: [] as Buffer[][],
    at: [] as number[],
    message: (f: Buffer[]) => void r.messages.push(f.map((x) => Buffer.from(x))),
    connected: () => void r.events.push('connected'),
    disconnected: () => void r.events.push('disconnected'),
    retrying: () => {
      r.events.push('retrying');
      r.at.push(performance.now());
    },
    refused: (reason: string) => void r.events.push(`refused: ${reason}`),
  };
  return r;
}

/** The test brokers' heartbeat, and so the workers' (an idle worker expects the broker's heartbeats). */
const HB = { heartbeatInterval: 100, heartbeatLiveness: 3 };

/**
 * A TCP peer that greets as a ZMTP 3.`minor` ROUTER with READY and then never sends a byte (no PONG); `seen` is every
 * byte the link wrote to it.
 */
async function silentRouter(t: TestContext, minor: number): Promise<{ port: number; seen: Buffer[] }> {
  const seen: Buffer[] = [];
  const server = createServer((sock: Socket) => {
    sock.on('data', (b) => seen.push(b));
    sock.on('error', () => undefined);
    const g = greeting();
    g[11] = minor;
    sock.write(Buffer.concat([g, readyCommand({ 'Socket-Type': 'ROUTER' })]));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  t.after(() => server.close());
  return { port: (server.address() as { port: number }).port, seen };
}

/** A libzmq ROUTER that answers every [id, '', MDPC01, service, ...body] with the same frames (an MDP echo). */
async function echoRouter(t: TestContext, endpoint: string, opts: ConstructorParameters<typeof Router>[0] = {}): Promise<Router> {
  const router = new Router({ linger: 0, ...opts });
  await router.bind(endpoint);
  void (async () => {
    try {
      for await (const m of router) await router.send(m);
    } catch {
      // closed
    }
  })();
  t.after(() => router.close());
  return router;
}

test("CURVE as the client (RFC 26) against libzmq's CURVE server: requests answered; a wrong server key never gets through", async (t) => {
  const server = curveKeyPair();
  const client = curveKeyPair();
  const router = await echoRouter(t, 'tcp://127.0.0.1:*', { curveServer: true, curveSecretKey: server.secretKey });
  const endpoint = router.lastEndpoint as string;
  const c = new Client({ endpoints: endpoint, timeout: 2000, retries: 0, curve: { serverKey: server.publicKey, ...client } });
  t.after(() => c.close());
  await c.ready({ timeout: 3000 });
  // The echo router hands the request back as its reply: the body crossed both ways inside MESSAGE boxes.
  const big = Buffer.alloc(300000, 7);
  assert.deepEqual(show(await c.request('echo', ['hello', 'curve'])), ['hello', 'curve']);
  const reply = await c.request('echo', big);
  assert.ok(reply[0].equals(big), '300 kB byte for byte');

  const wrong = curveKeyPair();
  const lost = new Client({ endpoints: endpoint, timeout: 600, retries: 0, curve: { serverKey: wrong.publicKey, ...client } });
  t.after(() => lost.close());
  await assert.rejects(lost.request('echo', 'x'), (err: Error) => err.name === 'TimeoutError' || err instanceof RefusedError);
});

test('messages sent before the broker listens are kept and delivered once it does; nothing before the handshake', async (t) => {
  const port = await freePort();
  const h = recording();
  const link = new ZmtpLink(`tcp://127.0.0.1:${port}`, { heartbeatInterval: 1000, heartbeatTimeout: 3000, reconnectMin: 20, reconnectMax: 100 }, h);
  t.after(() => link.close());
  link.send([E, B('MDPC01'), B('echo'), B('one')]);
  link.send([E, B('MDPC01'), B('echo'), B('two')]);
  await until(() => h.events.filter((e) => e === 'retrying').length >= 2, 2000);
  await echoRouter(t, `tcp://127.0.0.1:${port}`);
  assert.ok(await until(() => h.messages.length === 2, 3000), `replies: ${h.messages.length}, events: ${h.events.join(', ')}`);
  assert.deepEqual(h.messages.map((m) => m[3].toString()), ['one', 'two']);
  assert.ok(h.events.includes('connected'));
});

test('a broker that completes the handshake and then goes silent is found by ZMTP heartbeats (PING with a TTL)', async (t) => {
  const { port, seen } = await silentRouter(t, 1);
  const h = recording();
  const link = new ZmtpLink(`tcp://127.0.0.1:${port}`, { heartbeatInterval: 100, heartbeatTimeout: 300, reconnectMin: 5000, reconnectMax: 5000 }, h);
  t.after(() => link.close());
  const start = performance.now();
  assert.ok(await until(() => h.events.includes('disconnected'), 3000), h.events.join(', '));
  const took = performance.now() - start;
  assert.deepEqual(h.events.slice(0, 2), ['connected', 'disconnected']);
  assert.ok(took < 1500, `found dead after ${Math.round(took)} ms`);
  // Our PINGs asked for a TTL of the heartbeat timeout (3 tenths of a second).
  const wire = Buffer.concat(seen);
  const ping = wire.indexOf('\x04PING', 0, 'latin1');
  assert.ok(ping > 0, 'a PING was sent');
  assert.equal(wire.readUInt16BE(ping + 5), 3);
});

test('a ZMTP 3.0 broker (libzmq 4.1: no PING) is neither PINGed nor dropped for its silence', async (t) => {
  const { port, seen } = await silentRouter(t, 0);
  const h = recording();
  const link = new ZmtpLink(`tcp://127.0.0.1:${port}`, { heartbeatInterval: 100, heartbeatTimeout: 300, reconnectMin: 5000, reconnectMax: 5000 }, h);
  t.after(() => link.close());
  await sleep(1000);
  assert.deepEqual(h.events, ['connected']);
  assert.equal(Buffer.concat(seen).indexOf('\x04PING', 0, 'latin1'), -1, 'no PING sent');
});

test('a port nobody listens on: the link dials again with a back-off that grows (and jitter), not at a fixed rate', async (t) => {
  const port = await freePort();
  const h = recording();
  const link = new ZmtpLink(`tcp://127.0.0.1:${port}`, { heartbeatInterval: 1000, heartbeatTimeout: 3000, reconnectMin: 40, reconnectMax: 640 }, h);
  t.after(() => link.close());
  await sleep(2000);
  await link.close();
  // 20-40, 40-80, 80-160, 160-320, 320-640, then 320-640 each: 6 to 9 attempts in 2 s (a fixed 40 ms: 50).
  const n = h.at.length;
  assert.ok(n >= 5 && n <= 10, `${n} attempts in 2 s`);
  const gaps = h.at.slice(1).map((x, i) => x - h.at[i]);
  assert.ok(gaps[gaps.length - 1] > 3 * gaps[0], `gaps grow: ${gaps.map(Math.round).join(', ')}`);
  assert.ok(h.events.every((e) => e === 'retrying'));
});

test('transport libzmq still works (and inproc:// picks it): client and worker through a broker, and an inproc echo', async (t) => {
  const { broker, endpoint } = await startBroker(HB);
  const worker = new Worker({ endpoint, service: 'echo', transport: 'libzmq', ...HB, handler: (b) => b });
  const client = new Client({ endpoints: endpoint, transport: 'libzmq', timeout: 3000 });
  t.after(async () => {
    client.close();
    await worker.close();
    await broker.close();
  });
  assert.deepEqual(show(await client.request('echo', 'over libzmq')), ['over libzmq']);
  await echoRouter(t, 'inproc://link-test');
  const inproc = new Client({ endpoints: 'inproc://link-test', timeout: 2000, extensions: false });
  t.after(() => inproc.close());
  assert.deepEqual(show(await inproc.request('echo', 'in process')), ['in process']);
});

test('an app that imports only mdbroker/client and talks to a broker loads no native addon (zeromq, sodium-native)', async (t) => {
  const { broker, endpoint } = await startBroker(HB);
  const worker = new Worker({ endpoint, service: 'echo', ...HB, handler: (b) => b });
  t.after(async () => {
    await worker.close();
    await broker.close();
  });
  const entry = fileURLToPath(new URL('../src/client/index.js', import.meta.url));
  // process.dlopen is how Node loads every .node addon: the child records each call.
  const script = `
    const loaded = [];
    const dlopen = process.dlopen;
    process.dlopen = (m, file, ...rest) => { loaded.push(file); return dlopen(m, file, ...rest); };
    const { Client, Worker } = await import(${JSON.stringify(entry)});
    const w = new Worker({ endpoint: ${JSON.stringify(endpoint)}, service: 'own', heartbeatInterval: 100, heartbeatLiveness: 3, handler: (b) => b });
    const c = new Client({ endpoints: ${JSON.stringify(endpoint)}, timeout: 3000 });
    const a = await c.request('echo', 'x');
    const b = await c.request('own', 'y');
    c.close();
    await w.close();
    console.log(JSON.stringify({ replies: [a[0].toString(), b[0].toString()], loaded }));
  `;
  // Not spawnSync: the broker and the worker of this process must keep running meanwhile.
  const out = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 20000 });
  const result = JSON.parse(out.stdout.trim().split('\n').pop() as string) as { replies: string[]; loaded: string[] };
  assert.deepEqual(result.replies, ['x', 'y']);
  assert.deepEqual(result.loaded, []);
});
