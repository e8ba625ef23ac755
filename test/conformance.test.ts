// Golden frame sequences over real sockets: what a client or worker written from the RFCs sees on the wire.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { RawPeer, startBroker, show, sleep, until, E } from './helpers.js';
import type { Broker } from '../src/broker/broker.js';

async function setup(t: TestContext, opts = {}): Promise<{ broker: Broker; peer: (kind?: 'dealer' | 'req') => RawPeer }> {
  const { broker, endpoint } = await startBroker({ heartbeatInterval: 100, ...opts });
  const peers: RawPeer[] = [];
  t.after(async () => {
    for (const p of peers) p.close();
    await broker.close();
  });
  return {
    broker,
    peer: (kind = 'dealer') => {
      const p = new RawPeer(endpoint, kind);
      peers.push(p);
      return p;
    },
  };
}

test('MDP/0.1: REQ client, DEALER worker: REQUEST and REPLY frames exactly as RFC 7', async (t) => {
  const { broker, peer } = await setup(t);
  const w = peer();
  await w.send(['', 'MDPW01', [1], 'echo']);
  assert.ok(await until(() => broker.snapshot().workers === 1));
  const c = peer('req');
  await c.send(['MDPC01', 'echo', 'hello', 'world']);
  const req = await w.recvSkippingHeartbeats();
  assert.ok(req);
  assert.deepEqual(show(req).slice(0, 3), ['', 'MDPW01', '\x02']);
  assert.deepEqual(show(req).slice(4), ['', 'hello', 'world']);
  await w.send(['', 'MDPW01', [3], req[3], '', 'HELLO', 'WORLD']);
  assert.deepEqual(show(await c.recv()), ['MDPC01', 'echo', 'HELLO', 'WORLD']);
});

test('MDP/0.2: DEALER client and worker, PARTIAL then FINAL, RFC 18 frames without empty frame', async (t) => {
  const { broker, peer } = await setup(t);
  const w = peer();
  await w.send(['MDPW02', [1], 'stream']);
  assert.ok(await until(() => broker.snapshot().workers === 1));
  const c = peer();
  await c.send(['MDPC02', [1], 'stream', 'q']);
  const req = await w.recvSkippingHeartbeats();
  assert.ok(req);
  assert.deepEqual(show(req).slice(0, 2), ['MDPW02', '\x02']);
  assert.deepEqual(show(req).slice(3), ['', 'q']);
  await w.send(['MDPW02', [3], req[2], '', 'part-1']);
  await w.send(['MDPW02', [3], req[2], '', 'part-2']);
  await w.send(['MDPW02', [4], req[2], '', 'final']);
  assert.deepEqual(show(await c.recv()), ['MDPC02', '\x02', 'stream', 'part-1']);
  assert.deepEqual(show(await c.recv()), ['MDPC02', '\x02', 'stream', 'part-2']);
  assert.deepEqual(show(await c.recv()), ['MDPC02', '\x03', 'stream', 'final']);
});

test('the broker heartbeats a worker at the interval and expires one that goes silent', async (t) => {
  const { broker, peer } = await setup(t, { heartbeatInterval: 100, heartbeatLiveness: 3 });
  const w = peer();
  await w.send(['', 'MDPW01', [1], 'hb']);
  const hb = await w.recv(1000);
  assert.deepEqual(show(hb), ['', 'MDPW01', '\x04']);
  // Say nothing: after 3 intervals the broker declares us dead and says DISCONNECT.
  let last: Buffer[] | null = null;
  for (let m = await w.recv(1000); m; m = await w.recv(500)) last = m;
  assert.deepEqual(show(last), ['', 'MDPW01', '\x05']);
  assert.equal(broker.snapshot().workers, 0);
});

test('MMI over the wire: 200 while served, 404 for a service only asked for, 501 otherwise', async (t) => {
  const { broker, peer } = await setup(t);
  const c = peer('req');
  await c.send(['MDPC01', 'ghost', 'x']); // queued, never served
  const c2 = peer('req');
  await c2.send(['MDPC01', 'mmi.service', 'ghost']);
  assert.deepEqual(show(await c2.recv()), ['MDPC01', 'mmi.service', '404']);
  const w = peer();
  await w.send(['', 'MDPW01', [1], 'real']);
  assert.ok(await until(() => broker.snapshot().workers === 1));
  await c2.send(['MDPC01', 'mmi.service', 'real']);
  assert.deepEqual(show(await c2.recv()), ['MDPC01', 'mmi.service', '200']);
  await c2.send(['MDPC01', 'mmi.echo']);
  assert.deepEqual(show(await c2.recv()), ['MDPC01', 'mmi.echo', '501']);
  const d = peer();
  await d.send(['MDPC02', [1], 'mmi.services']);
  assert.deepEqual(show(await d.recv()), ['MDPC02', '\x03', 'mmi.services', 'real']);
});

test('unexpected commands: DISCONNECT and then silence; mmi.* workers refused', async (t) => {
  const { peer } = await setup(t);
  const w = peer();
  await w.send(['', 'MDPW01', [4]]); // HEARTBEAT before READY
  assert.deepEqual(show(await w.recv()), ['', 'MDPW01', '\x05']);
  await w.send(['', 'MDPW01', [4]]);
  assert.equal(await w.recv(400), null, 'nothing more after DISCONNECT');

  const w2 = peer();
  await w2.send(['MDPW02', [1], 'twice']);
  await w2.send(['MDPW02', [1], 'twice']);
  assert.deepEqual(show(await w2.recvSkippingHeartbeats()), ['MDPW02', '\x06']);
  assert.equal(await w2.recv(400), null, 'no heartbeats after DISCONNECT');

  const w3 = peer();
  await w3.send(['', 'MDPW01', [1], 'mmi.service']);
  assert.deepEqual(show(await w3.recv()), ['', 'MDPW01', '\x05']);
});

test('malformed messages over the wire are dropped and counted; the broker keeps serving', async (t) => {
  const { broker, peer } = await setup(t);
  const junk = peer();
  const garbage: (string | number[])[][] = [
    ['x'],
    ['', 'MDPX01', 'y'],
    ['', 'MDPW01', [77]],
    ['', 'MDPW01', [1]],
    ['MDPC02', [7], 's'],
    ['', 'MDPW01', [3], 'addr'],
    [[0xff, 0xfe], [0], [1], [2], [3], [4], [5], [6], [7], [8], [9], [10]],
  ];
  for (const g of garbage) await junk.send(g);
  assert.ok(await until(() => broker.stats().malformed === garbage.length));
  const w = peer();
  await w.send(['', 'MDPW01', [1], 'still']);
  const c = peer('req');
  await c.send(['MDPC01', 'still', 'alive?']);
  const req = await w.recvSkippingHeartbeats();
  assert.ok(req);
  await w.send(['', 'MDPW01', [3], req[3], '', 'yes']);
  assert.deepEqual(show(await c.recv()), ['MDPC01', 'still', 'yes']);
});

test('error replies: same service frame, the documented three-frame body', async (t) => {
  const { peer } = await setup(t, { requestTtl: 150, maxQueue: 1 });
  const c = peer();
  await c.send(['', 'MDPC01', 'nobody', 'x']);
  await c.send(['', 'MDPC01', 'nobody', 'y']); // queue full
  assert.deepEqual(show(await c.recv()), ['', 'MDPC01', 'nobody', '\0error', 'overloaded', 'queue for nobody holds 1 requests']);
  const expired = show(await c.recv());
  assert.deepEqual(expired?.slice(0, 5), ['', 'MDPC01', 'nobody', '\0error', 'expired']);
});

test('a worker that vanishes holding a request: the request is answered by another worker', async (t) => {
  const { broker, peer } = await setup(t, { heartbeatInterval: 50, heartbeatLiveness: 3 });
  const doomed = peer();
  await doomed.send(['', 'MDPW01', [1], 'work']);
  assert.ok(await until(() => broker.snapshot().workers === 1));
  const c = peer('req');
  await c.send(['MDPC01', 'work', 'job-1']);
  const got = await doomed.recvSkippingHeartbeats();
  assert.equal(show(got)?.at(-1), 'job-1');
  doomed.close(); // gone without a word, holding job-1
  const rescuer = peer();
  await rescuer.send(['', 'MDPW01', [1], 'work']);
  const req = await rescuer.recvSkippingHeartbeats(3000);
  assert.ok(req, 'request was requeued to the second worker');
  assert.equal(show(req)?.at(-1), 'job-1');
  await rescuer.send(['', 'MDPW01', [3], req[3], '', 'done-1']);
  assert.deepEqual(show(await c.recv()), ['MDPC01', 'work', 'done-1']);
  assert.ok(await until(() => broker.stats().requeued === 1), 'requeued once');
});

test('a client with an envelope (ROUTER chain or request id) gets it back in front of the reply', async (t) => {
  const { broker, peer } = await setup(t);
  const w = peer();
  await w.send(['MDPW02', [1], 'env']);
  assert.ok(await until(() => broker.snapshot().workers === 1));
  const c = peer();
  await c.send([[0, 0, 0, 9], E, 'MDPC02', [1], 'env', 'x']);
  const req = await w.recvSkippingHeartbeats();
  assert.ok(req);
  await w.send(['MDPW02', [4], req[2], '', 'y']);
  assert.deepEqual(show(await c.recv()), ['\0\0\0\x09', '', 'MDPC02', '\x03', 'env', 'y']);
  await sleep(1);
});
