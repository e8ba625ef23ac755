// The broker core as a pure state machine: frames in, frames out, a fake clock. Every rule of the spec is here.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TestCore } from './support/test-core.js';
import { B, CLIENT, CLIENT2, E, W_A, W_B, W_C, core, disc1, final2, hb1, id, partial2, ready1, ready2, reply1, req1, req2, show, take } from './support/core-frames.js';

function errorOf(msg: Buffer[]): { code: string; message: string } {
  const n = msg.length;
  assert.equal(msg[n - 3].toString('latin1'), '\0error');
  return { code: msg[n - 2].toString(), message: msg[n - 1].toString() };
}

test('MDP/0.1: request to an idle worker and its reply, byte for byte', () => {
  const c = core();
  c.handle(ready1(W_A, 'echo'), 0);
  assert.deepEqual(take(c), []);
  c.handle(req1(CLIENT, 'echo', 'hello', 'world'), 1);
  assert.deepEqual(show(take(c)), show([[W_A, E, B('MDPW01'), B([2]), CLIENT, E, B('hello'), B('world')]]));
  c.handle(reply1(W_A, CLIENT, 'HELLO', 'WORLD'), 2);
  assert.deepEqual(show(take(c)), show([[CLIENT, E, B('MDPC01'), B('echo'), B('HELLO'), B('WORLD')]]));
  assert.equal(c.stats.replies, 1);
});

test('body frames pass through as the same Buffer objects (no copy)', () => {
  const c = core();
  c.handle(ready1(W_A, 'echo'), 0);
  const body = Buffer.alloc(1000, 7);
  c.handle([CLIENT, E, B('MDPC01'), B('echo'), body], 1);
  const [toWorker] = take(c);
  assert.equal(toWorker[toWorker.length - 1], body);
  const back = Buffer.alloc(2000, 9);
  c.handle([W_A, E, B('MDPW01'), B([3]), CLIENT, E, back], 2);
  const [toClient] = take(c);
  assert.equal(toClient[toClient.length - 1], back);
});

test('a request queued before any worker is dispatched when one arrives', () => {
  const c = core();
  c.handle(req1(CLIENT, 'late', 'x'), 0);
  assert.deepEqual(take(c), []);
  c.handle(ready1(W_A, 'late'), 10);
  assert.deepEqual(show(take(c)), show([[W_A, E, B('MDPW01'), B([2]), CLIENT, E, B('x')]]));
});

test('MDP/0.2: PARTIALs and FINAL reach a 0.2 client, RFC 18 frames (no empty frame)', () => {
  const c = core();
  c.handle(ready2(W_A, 'stream'), 0);
  c.handle(req2(CLIENT, 'stream', 'q'), 1);
  assert.deepEqual(show(take(c)), show([[W_A, B('MDPW02'), B([2]), CLIENT, E, B('q')]]));
  c.handle(partial2(W_A, CLIENT, 'p1'), 2);
  c.handle(partial2(W_A, CLIENT, 'p2'), 3);
  c.handle(final2(W_A, CLIENT, 'done'), 4);
  assert.deepEqual(
    show(take(c)),
    show([
      [CLIENT, B('MDPC02'), B([2]), B('stream'), B('p1')],
      [CLIENT, B('MDPC02'), B([2]), B('stream'), B('p2')],
      [CLIENT, B('MDPC02'), B([3]), B('stream'), B('done')],
    ]),
  );
  // Nothing more for that request after FINAL: a late PARTIAL is unexpected.
  c.handle(partial2(W_A, CLIENT, 'late'), 5);
  assert.deepEqual(show(take(c)), show([[W_A, B('MDPW02'), B([6])]]));
});

test('0.1 client served by a 0.2 worker gets one REPLY from FINAL; 0.2 client served by 0.1 worker gets FINAL', () => {
  const c = core();
  c.handle(ready2(W_A, 'mixed'), 0);
  c.handle(req1(CLIENT, 'mixed', 'a'), 1);
  take(c);
  c.handle(partial2(W_A, CLIENT, 'not-for-v1'), 2);
  assert.deepEqual(take(c), []);
  c.handle(final2(W_A, CLIENT, 'A'), 3);
  assert.deepEqual(show(take(c)), show([[CLIENT, E, B('MDPC01'), B('mixed'), B('A')]]));

  const d = core();
  d.handle(ready1(W_B, 'mixed'), 0);
  d.handle(req2(CLIENT2, 'mixed', 'b'), 1);
  assert.deepEqual(show(take(d)), show([[W_B, E, B('MDPW01'), B([2]), CLIENT2, E, B('b')]]));
  d.handle(reply1(W_B, CLIENT2, 'B'), 2);
  assert.deepEqual(show(take(d)), show([[CLIENT2, B('MDPC02'), B([3]), B('mixed'), B('B')]]));
});

test('a service can have 0.1 and 0.2 workers at once', () => {
  const c = core();
  c.handle(ready1(W_A, 's'), 0);
  c.handle(ready2(W_B, 's'), 1);
  c.handle(req1(CLIENT, 's', '1'), 2);
  c.handle(req1(CLIENT, 's', '2'), 3);
  const out = take(c);
  assert.deepEqual(out.map((m) => m[0]), [W_A, W_B]);
  assert.equal(out[1][1].toString(), 'MDPW02');
});

test('idle workers are picked least recently used first', () => {
  const c = core();
  for (const w of [W_A, W_B, W_C]) c.handle(ready1(w, 'lru'), 0);
  const served: Buffer[] = [];
  for (let i = 0; i < 6; i++) {
    c.handle(req1(CLIENT, 'lru', String(i)), i);
    const [m] = take(c);
    served.push(m[0]);
    c.handle(reply1(m[0], CLIENT, 'ok'), i);
    take(c);
  }
  assert.deepEqual(served, [W_A, W_B, W_C, W_A, W_B, W_C]);
});

test('the client envelope (request-id extension) is echoed before the reply; workers never see it', () => {
  const c = core();
  c.handle(ready1(W_A, 'echo'), 0);
  const rid = B([0, 0, 0, 42]);
  c.handle([CLIENT, rid, E, B('MDPC01'), B('echo'), B('x')], 1);
  assert.deepEqual(show(take(c)), show([[W_A, E, B('MDPW01'), B([2]), CLIENT, E, B('x')]]));
  c.handle(reply1(W_A, CLIENT, 'y'), 2);
  assert.deepEqual(show(take(c)), show([[CLIENT, rid, E, B('MDPC01'), B('echo'), B('y')]]));
});

test('heartbeats go to idle and busy workers each interval; a silent worker is expired', () => {
  const c = core();
  c.handle(ready1(W_A, 's'), 0);
  c.handle(ready1(W_B, 's'), 0);
  c.handle(req1(CLIENT, 's', 'x'), 0); // W_A busy
  take(c);
  c.tick(1000);
  assert.deepEqual(show(take(c)), show([hb1(W_A), hb1(W_B)]));
  c.handle(hb1(W_B), 2500);
  c.tick(3000); // W_A silent since 0: 3 intervals -> dead; its request goes to W_B
  const out = show(take(c));
  assert.deepEqual(out[0], show([disc1(W_A)])[0]);
  assert.deepEqual(out[1], show([[W_B, E, B('MDPW01'), B([2]), CLIENT, E, B('x')]])[0]);
  assert.equal(c.stats.workersExpired, 1);
  assert.equal(c.stats.requeued, 1);
  // The dead worker gets nothing more, not even heartbeats.
  c.tick(4000);
  assert.ok(take(c).every((m) => !m[0].equals(W_A)));
});

test('a busy worker that heartbeats but never replies is expired after busyTimeout and its request requeued', () => {
  const c = core({ busyTimeout: 2500 });
  c.handle(ready1(W_A, 's'), 0);
  c.handle(req1(CLIENT, 's', 'x'), 0);
  take(c);
  for (let t = 500; t < 2500; t += 500) {
    c.handle(hb1(W_A), t);
    c.tick(t);
  }
  assert.equal(c.stats.workersExpired, 0);
  take(c);
  c.handle(hb1(W_A), 2500);
  c.tick(2500);
  assert.deepEqual(show(take(c)), show([disc1(W_A)]));
  c.handle(ready1(W_B, 's'), 2600);
  assert.deepEqual(show(take(c)), show([[W_B, E, B('MDPW01'), B([2]), CLIENT, E, B('x')]]));
});

test('after --max-attempts worker deaths the client gets a typed `failed` error on its service', () => {
  const c = core({ maxAttempts: 2 });
  c.handle(ready1(W_A, 'crashy'), 0);
  c.handle(req1(CLIENT, 'crashy', 'boom'), 0);
  take(c);
  c.handle(disc1(W_A), 1); // died holding it: attempt 1
  assert.deepEqual(take(c), []);
  c.handle(ready1(W_B, 'crashy'), 2);
  assert.equal(take(c).length, 1);
  c.handle(disc1(W_B), 3); // attempt 2 = max
  const [m] = take(c);
  assert.deepEqual(show([m.slice(0, 4)]), show([[CLIENT, E, B('MDPC01'), B('crashy')]]));
  assert.equal(errorOf(m).code, 'failed');
});

test('a request waiting longer than --request-ttl gets `expired`; the empty service is forgotten', () => {
  const c = core({ requestTtl: 2000 });
  c.handle(req2(CLIENT, 'nobody', 'x'), 0);
  assert.equal(c.snapshot().services, 1);
  c.tick(1999);
  assert.deepEqual(take(c), []);
  c.tick(2000);
  const [m] = take(c);
  assert.deepEqual(show([m.slice(0, 4)]), show([[CLIENT, B('MDPC02'), B([3]), B('nobody')]]));
  assert.equal(errorOf(m).code, 'expired');
  assert.equal(c.snapshot().services, 0);
});

test('a full service queue answers `overloaded` at once', () => {
  const c = core({ maxQueue: 2 });
  c.handle(req1(CLIENT, 'q', '1'), 0);
  c.handle(req1(CLIENT, 'q', '2'), 0);
  assert.deepEqual(take(c), []);
  c.handle(req1(CLIENT, 'q', '3'), 0);
  const [m] = take(c);
  assert.equal(errorOf(m).code, 'overloaded');
  assert.equal(c.snapshot().queued, 2);
});

test('byte budgets: past the broker-wide or one client\'s share, `overloaded` at once, and the bytes come back when requests end', () => {
  const c = core({ maxHeldBytes: 2500, maxClientBytes: 1500 });
  const big = (client: Buffer) => [client, E, B('MDPC01'), B('q'), Buffer.alloc(1000)];
  c.handle(big(CLIENT), 0); // ~1017 bytes held
  c.handle(big(CLIENT), 0); // the client's share would pass 1500
  const [own] = take(c);
  assert.equal(errorOf(own).code, 'overloaded');
  assert.match(errorOf(own).message, /this client's requests would hold \d+ bytes \(limit 1500\)/);
  c.handle(big(CLIENT2), 0); // another client is still served: ~2034 held
  assert.deepEqual(take(c), []);
  c.handle(big(id(3)), 0); // the broker-wide budget would pass 2500
  const [all] = take(c);
  assert.match(errorOf(all).message, /the broker's requests would hold \d+ bytes \(limit 2500\)/);
  assert.equal(c.snapshot().queued, 2);
  c.handle(ready1(W_A, 'q'), 1);
  c.handle(reply1(W_A, CLIENT, 'done'), 2); // the first request ends: its bytes are free again
  take(c); // (the reply, and CLIENT2's request to the worker)
  c.handle(big(id(3)), 3);
  assert.deepEqual(take(c), [], 'queued, not refused');
  assert.equal(c.snapshot().queued, 1);
  assert.equal(c.stats.errors.overloaded, 2);
});

test('a client holding half its share is paused (not refused) and resumed below a quarter', () => {
  const c = core({ maxClientBytes: 4000 });
  const req = () => [CLIENT, E, B('MDPC01'), B('q'), Buffer.alloc(900)];
  c.handle(req(), 0); // ~917 bytes
  c.handle(req(), 0); // ~1834 bytes: still under 2000
  assert.equal(c.flow.length, 0);
  c.handle(req(), 0); // ~2751 bytes: stop reading this client
  assert.deepEqual(c.flow.splice(0).map(([peer, pause]) => [peer, pause]), [[c.peerOf(CLIENT), true]]);
  c.handle(ready1(W_A, 'q'), 1);
  c.handle(reply1(W_A, CLIENT, 'r'), 2); // ~1834 held: not yet below 1000
  c.handle(reply1(W_A, CLIENT, 'r'), 3); // ~917 held: read this client again
  assert.deepEqual(c.flow.splice(0).map(([, pause]) => pause), [false]);
  assert.equal(c.stats.errors.overloaded, 0);
});

test('a held request does not pin the large read chunk its frames came in', () => {
  const c = core();
  // As a transport hands them over: subarrays of one 64 KiB read chunk holding many messages.
  const chunk = Buffer.alloc(65536, 1);
  const frames = [CLIENT, E, B('MDPC01'), B('later'), chunk.subarray(100, 200)];
  c.handle(frames, 0); // no worker yet: the request is held
  c.handle(ready1(W_A, 'later'), 1);
  const [toWorker] = take(c);
  const body = toWorker[toWorker.length - 1];
  assert.deepEqual(body, chunk.subarray(100, 200));
  assert.ok(body.buffer.byteLength < 16384, `the body now lives in a right-sized buffer (${body.buffer.byteLength} bytes)`);
  // A request that arrived in its own buffer is passed on as is (the hot path copies nothing).
  const own = Buffer.alloc(100, 2);
  c.handle(reply1(W_A, CLIENT, 'x'), 2);
  take(c);
  c.handle([CLIENT, E, B('MDPC01'), B('later'), own], 3);
  const [again] = take(c);
  assert.equal(again[again.length - 1], own);
});

test('a vanished client costs nothing: its queued requests are dropped, its replies discarded', () => {
  const c = core();
  c.handle(req1(CLIENT, 's', 'a'), 0);
  c.handle(req1(CLIENT, 's', 'b'), 0);
  c.handle(req1(CLIENT2, 's', 'c'), 0);
  c.sendFailed(CLIENT, 'unreachable', 1); // e.g. an earlier reply bounced with EHOSTUNREACH
  c.handle(ready1(W_A, 's'), 2);
  const [m] = take(c);
  assert.equal(m[m.length - 1].toString(), 'c');
  assert.equal(c.stats.droppedClientGone, 2);
});

test('MMI: mmi.service is 200 only while a worker serves it; other mmi.* are 501; mmi.services lists', () => {
  const c = core();
  const mmi = (svc: string, ...body: string[]) => {
    c.handle(req1(CLIENT, svc, ...body), 0);
    return show(take(c))[0];
  };
  c.handle(req1(CLIENT2, 'asked-only', 'x'), 0); // creates a queue, but nobody serves it
  assert.deepEqual(mmi('mmi.service', 'asked-only'), ['\0\0\0\0\x01', '', 'MDPC01', 'mmi.service', '404']);
  c.handle(ready1(W_A, 'echo'), 0);
  assert.deepEqual(mmi('mmi.service', 'echo'), ['\0\0\0\0\x01', '', 'MDPC01', 'mmi.service', '200']);
  assert.deepEqual(mmi('mmi.services'), ['\0\0\0\0\x01', '', 'MDPC01', 'mmi.services', 'echo']);
  assert.deepEqual(mmi('mmi.nosuch'), ['\0\0\0\0\x01', '', 'MDPC01', 'mmi.nosuch', '501']);
  c.handle(disc1(W_A), 1);
  assert.deepEqual(mmi('mmi.service', 'echo'), ['\0\0\0\0\x01', '', 'MDPC01', 'mmi.service', '404']);
  // 0.2 clients get FINAL
  c.handle(req2(CLIENT, 'mmi.service', 'echo'), 2);
  assert.deepEqual(show(take(c)), [['\0\0\0\0\x01', 'MDPC02', '\x03', 'mmi.service', '404']]);
});

test('a worker registering an mmi.* service is told DISCONNECT', () => {
  const c = core();
  c.handle(ready1(W_A, 'mmi.service'), 0);
  assert.deepEqual(show(take(c)), show([disc1(W_A)]));
  assert.equal(c.snapshot().workers, 0);
});

test('unexpected commands get DISCONNECT once, then nothing more', () => {
  const c = core();
  c.handle(hb1(W_A), 0); // HEARTBEAT before READY
  assert.deepEqual(show(take(c)), show([disc1(W_A)]));
  c.handle(hb1(W_A), 1);
  c.handle(reply1(W_A, CLIENT, 'x'), 1);
  assert.deepEqual(take(c), []);
  c.tick(5000);
  assert.deepEqual(take(c), []);

  c.handle(reply1(W_B, CLIENT, 'x'), 0); // REPLY before READY
  assert.deepEqual(show(take(c)), show([disc1(W_B)]));

  c.handle(ready2(W_C, 's'), 0);
  c.handle(ready2(W_C, 's'), 1); // second READY
  assert.deepEqual(show(take(c)), show([[W_C, B('MDPW02'), B([6])]]));
  c.tick(10000);
  assert.deepEqual(take(c), []);
  assert.equal(c.stats.unexpected, 3);
});

test('a REPLY from an idle worker is unexpected: DISCONNECT', () => {
  const c = core();
  c.handle(ready1(W_A, 's'), 0);
  c.handle(reply1(W_A, CLIENT, 'x'), 1);
  assert.deepEqual(show(take(c)), show([disc1(W_A)]));
});

test("after a worker's DISCONNECT the broker sends it nothing, and its request is requeued", () => {
  const c = core();
  c.handle(ready1(W_A, 's'), 0);
  c.handle(req1(CLIENT, 's', 'x'), 0);
  take(c);
  c.handle(disc1(W_A), 1);
  for (let t = 1000; t <= 10000; t += 500) c.tick(t);
  assert.ok(take(c).every((m) => !m[0].equals(W_A)));
  assert.equal(c.snapshot().queued, 0); // expired by now: the client heard why
  assert.equal(c.stats.errors.expired, 1);
});

test('a worker may come back after DISCONNECT with a fresh READY', () => {
  const c = core();
  c.handle(ready1(W_A, 's'), 0);
  c.handle(disc1(W_A), 1);
  c.handle(ready1(W_A, 's'), 2);
  c.handle(req1(CLIENT, 's', 'x'), 3);
  const out = take(c);
  assert.equal(out.length, 1);
  assert.ok(out[0][0].equals(W_A));
  assert.equal(out[0][3][0], 2); // REQUEST
  assert.equal(c.snapshot().workers, 1);
});

test('malformed messages are dropped and counted, never thrown', () => {
  const c = core();
  c.handle(ready1(W_A, 's'), 0);
  const bad: Buffer[][] = [
    [CLIENT],
    [CLIENT, E],
    [CLIENT, E, B('MDPC01')], // no service
    [CLIENT, E, B('XXXXXX'), B('s')],
    [CLIENT, E, B('MDPC0'), B('s')],
    [CLIENT, B('MDPC02'), B([9])], // bad 0.2 client command, no service to answer on (with one: `invalid`, below)
    [CLIENT, B('MDPC02')],
    [W_B, E, B('MDPW01'), B([1])], // READY without service
    [W_B, E, B('MDPW01'), B([1]), B('s'), B('extra')], // READY with extra frame
    [W_B, E, B('MDPW01'), B([1]), E], // READY, empty service
    [W_B, E, B('MDPW01'), B([9])], // unknown command
    [W_B, E, B('MDPW01'), B([1, 2])], // two-byte command
    [W_B, E, B('MDPW01')], // no command
    [W_B, B('MDPW01'), B([1]), B('s')], // 0.1 worker without empty frame
    [W_A, E, B('MDPW01'), B([4]), B('x')], // HEARTBEAT with operand
    [W_A, E, B('MDPW01'), B([3]), CLIENT], // REPLY without empty frame
    [W_A, E, B('MDPW01'), B([3]), CLIENT, B('notempty'), B('x')],
    [W_A, B('MDPW02'), B([4]), CLIENT, E, B('x')], // version switch mid-session
    [W_B, B('x'), B('y'), B('z'), B('w'), B('v'), B('u'), B('t'), B('s'), B('r'), B('q'), B('p')],
  ];
  for (const m of bad) c.handle(m, 1);
  assert.deepEqual(take(c), []);
  assert.equal(c.stats.malformed, bad.length);
  // ...and the broker still serves.
  c.handle(req1(CLIENT, 's', 'ok'), 2);
  assert.equal(take(c).length, 1);
});

test('a request over a limit is answered with `invalid`, not queued', () => {
  const c = core({ limits: { maxFrames: 8, maxFrameBytes: 100, maxServiceName: 5, maxEnvelope: 8 } });
  c.handle(req1(CLIENT, 'svc', ...Array.from({ length: 10 }, () => 'x')), 0);
  c.handle([CLIENT, E, B('MDPC01'), B('svc'), Buffer.alloc(101)], 0);
  c.handle(req1(CLIENT, 'toolong'), 0);
  c.handle(req1(CLIENT, ''), 0);
  const out = take(c);
  assert.deepEqual(out.map((m) => errorOf(m).code), ['invalid', 'invalid', 'invalid', 'invalid']);
  assert.match(errorOf(out[0]).message, /too many frames/);
  assert.equal(c.snapshot().queued, 0);
});

test('a worker reply imitating a broker error is not forwarded; the client gets `failed`', () => {
  const c = core();
  c.handle(ready1(W_A, 's'), 0);
  c.handle(req1(CLIENT, 's', 'x'), 0);
  take(c);
  c.handle([W_A, E, B('MDPW01'), B([3]), CLIENT, E, B('\0error'), B('expired'), B('forged')], 1);
  const [m] = take(c);
  assert.equal(errorOf(m).code, 'failed');
});

test('a reply with the wrong client address is dropped; the right one still goes through', () => {
  const c = core();
  c.handle(ready1(W_A, 's'), 0);
  c.handle(req1(CLIENT, 's', 'x'), 0);
  take(c);
  c.handle(reply1(W_A, CLIENT2, 'wrong'), 1);
  assert.deepEqual(take(c), []);
  c.handle(reply1(W_A, CLIENT, 'right'), 2);
  assert.equal(take(c)[0][0], CLIENT);
});

test('a failed send to a worker (gone) requeues its request to another worker', () => {
  const c = core();
  c.handle(ready1(W_A, 's'), 0);
  c.handle(ready1(W_B, 's'), 0);
  c.handle(req1(CLIENT, 's', 'x'), 0);
  assert.deepEqual(take(c)[0][0], W_A);
  c.sendFailed(W_A, 'unreachable', 1);
  const out = take(c);
  assert.equal(out.length, 1);
  assert.deepEqual(out[0][0], W_B);
});

test('shutdown: queued requests fail with `shutdown`, idle workers DISCONNECT, busy ones finish first', () => {
  const c = core();
  c.handle(ready1(W_A, 's'), 0);
  c.handle(ready1(W_B, 't'), 0);
  c.handle(req1(CLIENT, 's', 'held'), 0);
  c.handle(req1(CLIENT2, 's', 'queued'), 0);
  take(c);
  c.beginShutdown(1);
  const out = show(take(c));
  assert.deepEqual(out.length, 2);
  assert.equal(out[0][0], CLIENT2.toString('latin1'));
  assert.equal(out[0][5], 'shutdown');
  assert.deepEqual(out[1], show([disc1(W_B)])[0]);
  c.handle(req1(CLIENT2, 's', 'new'), 2);
  assert.equal(errorOf(take(c)[0]).code, 'shutdown');
  c.handle(reply1(W_A, CLIENT, 'done'), 3);
  assert.deepEqual(show(take(c)), show([[CLIENT, E, B('MDPC01'), B('s'), B('done')], disc1(W_A)]));
  c.finishShutdown(4);
  assert.deepEqual(take(c), []);
  assert.equal(c.snapshot().workers, 0);
});

test('finishShutdown fails requests still held and disconnects every worker', () => {
  const c = core();
  c.handle(ready1(W_A, 's'), 0);
  c.handle(req1(CLIENT, 's', 'held'), 0);
  take(c);
  c.beginShutdown(1);
  c.finishShutdown(2);
  const out = take(c);
  assert.equal(errorOf(out[0]).code, 'shutdown');
  assert.deepEqual(show([out[1]]), show([disc1(W_A)]));
});

test('memory stays bounded under churn: services and workers are forgotten', () => {
  const c = core();
  for (let i = 0; i < 5000; i++) {
    const w = Buffer.from(`worker-${i}`);
    c.handle([w, E, B('MDPW01'), B([1]), B(`svc-${i % 50}`)], i);
    c.handle([w, E, B('MDPW01'), B([5])], i);
  }
  assert.deepEqual(c.snapshot(), { services: 0, workers: 0, idleWorkers: 0, busyWorkers: 0, queued: 0 });
});

test('an MDP/0.2 client sending REQUEST as 0x02 (seen from a third-party library) gets an `invalid` reply naming the byte', () => {
  const c = core();
  c.handle([CLIENT, B('MDPC02'), B([2]), B('echo'), B('body')], 1);
  const out = take(c);
  assert.equal(out.length, 1);
  assert.deepEqual(show(out)[0].slice(0, 4), ['\x00\x00\x00\x00\x01', 'MDPC02', '\x03', 'echo']);
  const err = errorOf(out[0]);
  assert.equal(err.code, 'invalid');
  assert.match(err.message, /0x02, not REQUEST \(0x01\)/);
  assert.equal(c.stats.malformed, 1);
  assert.equal(c.stats.requests, 0);
});

test('protocol errors are logged at warn, once a minute per peer; log fields carry wire values', () => {
  const logs: { level: string; msg: string; fields?: Record<string, unknown> }[] = [];
  const c = new TestCore({ heartbeatInterval: 1000 }, (level, msg, fields) => logs.push({ level, msg, fields }));
  const warns = () => logs.filter((l) => l.level === 'warn').length;
  c.handle([CLIENT, B('junk')], 1);
  c.handle([CLIENT, B('junk'), B('again')], 2);
  assert.equal(warns(), 1, 'the same peer again within a minute: debug only');
  c.handle([CLIENT2, B('junk')], 3);
  assert.equal(warns(), 2, 'another peer: its own warning');
  c.handle([CLIENT, B('junk')], 60_002);
  assert.equal(warns(), 3, 'a minute later: warned again');
  // HEARTBEAT before READY: MDP/0.1 HEARTBEAT is 0x04 on the wire (the log must not say 5, the internal value).
  c.handle(hb1(W_A), 60_003);
  const before = logs.find((l) => l.msg.startsWith('command before READY'));
  assert.equal(before?.fields?.command, 4);
  assert.equal(before?.fields?.version, 1);
});
