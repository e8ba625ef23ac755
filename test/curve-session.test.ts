// CURVE after the handshake: what a peer on the wire (or a man in the middle) can send the broker's CURVE server.
// A replayed, reordered or tampered MESSAGE, a MESSAGE that reuses INITIATE's nonce, and a MESSAGE before the
// handshake is done each end the connection, and the request they carry is never served. The client is raw
// (test/support/raw-curve.ts, tweetnacl, written from RFC 26), so it can send what no library would.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import nacl from 'tweetnacl';
import { Worker } from '../src/client/worker.js';
import { RawCurveClient, toZ85 } from './support/raw-curve.js';
import { sleep, startBroker, until } from './helpers.js';
import type { Broker } from '../src/broker/broker.js';

const HB = { heartbeatInterval: 100, heartbeatLiveness: 3 };
const REQUEST = (body: string) => ['', 'MDPC01', 'echo', body];

interface Setup {
  broker: Broker;
  port: number;
  serverKey: string;
  keys: nacl.BoxKeyPair;
  /** Bodies the worker was handed, in order. */
  served: string[];
}

async function curveBroker(t: TestContext): Promise<Setup> {
  const server = nacl.box.keyPair();
  const clientKeys = nacl.box.keyPair();
  const workerKeys = nacl.box.keyPair();
  const z = (k: nacl.BoxKeyPair) => ({ publicKey: toZ85(k.publicKey), secretKey: toZ85(k.secretKey) });
  const { broker, endpoint } = await startBroker({ ...HB, curveKeys: z(server), allowKeys: [toZ85(clientKeys.publicKey), toZ85(workerKeys.publicKey)] });
  const served: string[] = [];
  const worker = new Worker({ endpoint, service: 'echo', ...HB, curve: { serverKey: toZ85(server.publicKey), ...z(workerKeys) }, handler: (b) => {
    served.push(b[0].toString());
    return b;
  } });
  t.after(async () => {
    await worker.close();
    await broker.close();
  });
  assert.ok(await until(() => broker.snapshot().workers === 1), 'worker registered over CURVE');
  return { broker, port: Number(new URL(endpoint).port), serverKey: toZ85(server.publicKey), keys: clientKeys, served };
}

async function replies(c: RawCurveClient, n: number): Promise<string[][]> {
  assert.ok(await until(() => c.messages().length >= n, 3000), `${n} replies`);
  return c.messages().map((m) => m.map((f) => f.toString('latin1')));
}

async function closedWithin(c: RawCurveClient, ms: number): Promise<boolean> {
  return Promise.race([c.raw.closed.then(() => true), sleep(ms).then(() => false)]);
}

test('CURVE MESSAGE: a raw RFC 26 client is served, and a replay of its request is refused, not served twice', async (t) => {
  const s = await curveBroker(t);
  const c = await RawCurveClient.open(s.port, s.serverKey, s.keys);
  t.after(() => c.close());
  const wire = c.send(REQUEST('once'));
  assert.deepEqual(await replies(c, 1), [['', 'MDPC01', 'echo', 'once']]);
  c.raw.write(...wire); // the same boxes, byte for byte
  assert.ok(await closedWithin(c, 2000), 'the broker closed the connection that replayed a nonce');
  await sleep(200);
  assert.deepEqual(s.served, ['once'], 'the replayed request was not served again');
  assert.equal(c.messages().length, 1);
});

test('CURVE MESSAGE: frames out of nonce order, a tampered box, and a nonce INITIATE used each close the connection unserved', async (t) => {
  const s = await curveBroker(t);
  const cases: [string, (c: RawCurveClient) => void][] = [
    ['reordered', (c) => {
      const n = c.next;
      const f = REQUEST('reordered').map((x) => Buffer.from(x, 'latin1'));
      c.raw.write(c.box(1, f[0], n), c.box(1, f[1], n + 1), c.box(1, f[2], n + 3), c.box(0, f[3], n + 2));
    }],
    ['tampered', (c) => {
      const wire = REQUEST('tampered').map((x, i, all) => c.box(i < all.length - 1 ? 1 : 0, Buffer.from(x, 'latin1')));
      const last = wire[3];
      last[last.length - 1] ^= 0x01;
      c.raw.write(...wire);
    }],
    ['INITIATE nonce reused', (c) => {
      const f = REQUEST('reused').map((x) => Buffer.from(x, 'latin1'));
      c.raw.write(c.box(1, f[0], 2), c.box(1, f[1], 3), c.box(1, f[2], 4), c.box(0, f[3], 5));
    }],
  ];
  for (const [name, bend] of cases) {
    const c = await RawCurveClient.open(s.port, s.serverKey, s.keys);
    t.after(() => c.close());
    bend(c);
    assert.ok(await closedWithin(c, 2000), `${name}: the broker closed the connection`);
    assert.equal(c.messages().length, 0, `${name}: no reply`);
  }
  await sleep(200);
  assert.deepEqual(s.served, [], 'none of them was served');
  // The broker is fine for an honest client afterwards.
  const ok = await RawCurveClient.open(s.port, s.serverKey, s.keys);
  t.after(() => ok.close());
  ok.send(REQUEST('honest'));
  assert.deepEqual(await replies(ok, 1), [['', 'MDPC01', 'echo', 'honest']]);
});

test('CURVE MESSAGE before the handshake is done (after WELCOME, no INITIATE): the connection is closed, nothing served', async (t) => {
  const s = await curveBroker(t);
  const c = await RawCurveClient.open(s.port, s.serverKey, s.keys, 'welcome');
  t.after(() => c.close());
  c.send(REQUEST('early'));
  assert.ok(await closedWithin(c, 2000), 'closed');
  await sleep(200);
  assert.deepEqual(s.served, []);
});
