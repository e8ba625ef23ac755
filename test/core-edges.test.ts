// The core's edges, each at its exact boundary, and every counter the operator reads (mmi.stats, /metrics) moved by
// the event it names. Written from the mutants StrykerJS found surviving in src/core (docs/testing.md): a `>` for
// a `>=`, a counter that went down instead of up, a peer that closed and was not forgotten.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { type CoreOptions } from '../src/core/broker-core.js';
import { Peer, nextSerial, type Rights } from '../src/core/peer.js';
import { WarnGate } from '../src/core/warn-gate.js';
import { groupOf, peerKey } from '../src/core/peer-id.js';
import { ServiceQueue } from '../src/core/service-queue.js';
import { StatsRecorder } from '../src/core/stats.js';
import { TestCore } from './support/test-core.js';
import { B, CLIENT, CLIENT2, E, W_A, W_B, core, disc1, hb1, id, ready1, ready2, reply1, req1, show, take } from './support/core-frames.js';

/** Bytes a req1 message holds against the budgets besides its body: routing id (5), '' (0), 'MDPC01' (6), 'svc' (3). */
const REQ_OVERHEAD = 5 + 0 + 6 + 3;
const codeOf = (m: Buffer[]) => (m.length >= 3 && m[m.length - 3].toString('latin1') === '\0error' ? m[m.length - 2].toString() : null);

test('heartbeats: none before the interval, one at exactly the interval; expiry at exactly interval x liveness, counted', () => {
  const c = core();
  c.handle(ready1(W_A, 'svc'), 0);
  c.tick(999);
  assert.deepEqual(take(c), [], 'no heartbeat before the interval');
  c.tick(1000);
  assert.deepEqual(show(take(c)), show([hb1(W_A)]), 'one heartbeat at the interval');
  c.tick(1999);
  assert.deepEqual(take(c), []);
  c.tick(2999);
  assert.deepEqual(show(take(c)), show([hb1(W_A)]), 'alive 1 ms before its expiry, still heartbeated');
  assert.equal(c.snapshot().workers, 1);
  c.tick(3000);
  assert.deepEqual(show(take(c)), show([disc1(W_A)]), 'told DISCONNECT at expiry');
  assert.equal(c.snapshot().workers, 0);
  assert.equal(c.stats.workersExpired, 1);
});

test('busy timeout at exactly busyTimeout: DISCONNECT, counted, and the request requeued (counted per service too)', () => {
  const c = core({ busyTimeout: 500, heartbeatInterval: 1000 });
  c.handle(ready1(W_A, 'svc'), 0);
  c.handle(req1(CLIENT, 'svc', 'x'), 0);
  take(c);
  c.handle(hb1(W_A), 400);
  c.tick(499);
  assert.deepEqual(take(c), [], 'still within the busy timeout');
  c.handle(ready1(W_B, 'svc'), 499);
  c.tick(500);
  const out = show(take(c));
  assert.deepEqual(out[0], show([disc1(W_A)])[0]);
  assert.deepEqual(out[1].slice(0, 4), show([[W_B, E, B('MDPW01'), B([2])]])[0], 'requeued to the other worker');
  assert.equal(c.stats.workersExpired, 1);
  assert.equal(c.stats.requeued, 1);
  const snap = c.statsSnapshot(0, 0).services.find((s) => s.name === 'svc');
  assert.equal(snap?.requeued, 1);
});

test('a request expires at exactly its TTL, not a millisecond before; the error is counted per service', () => {
  const c = core({ requestTtl: 700 });
  c.handle(req1(CLIENT, 'none', 'x'), 0);
  c.tick(699);
  assert.deepEqual(take(c), []);
  c.tick(700);
  const [m] = take(c);
  assert.equal(codeOf(m), 'expired');
  assert.equal(c.stats.errors.expired, 1);
  assert.equal(c.statsSnapshot(0, 0).services.find((s) => s.name === 'none')?.errors.expired, 1);
  // A request whose TTL ran out while it waited is expired when a worker comes, not dispatched.
  c.handle(req1(CLIENT, 'late', 'y'), 1000);
  c.handle(ready1(W_A, 'late'), 1700);
  const out = take(c);
  assert.equal(out.length, 1);
  assert.equal(codeOf(out[0]), 'expired');
});

test('byte budgets at the boundary: a request that fills a budget exactly is taken, one byte more is `overloaded`', () => {
  const frame = (n: number) => Buffer.alloc(n, 1);
  const c = core({ maxClientBytes: 100, maxHeldBytes: 1000 });
  c.handle(req1(CLIENT, 'svc', frame(100 - REQ_OVERHEAD)), 0);
  assert.deepEqual(take(c), [], 'exactly the client budget: queued');
  assert.equal(c.heldBytes, 100);
  c.handle(req1(CLIENT2, 'svc', frame(100 - REQ_OVERHEAD + 1)), 0);
  const [m] = take(c);
  assert.equal(codeOf(m), 'overloaded');
  assert.match(m[m.length - 1].toString(), /this client's requests would hold 101 bytes \(limit 100\)/);
  assert.equal(c.statsSnapshot(0, 0).services.find((s) => s.name === 'svc')?.errors.overloaded, 1);
  const d = core({ maxClientBytes: 1000, maxHeldBytes: 100 });
  d.handle(req1(CLIENT, 'svc', frame(100 - REQ_OVERHEAD)), 0);
  d.handle(req1(CLIENT2, 'svc', frame(1)), 0);
  const [n] = take(d);
  assert.equal(codeOf(n), 'overloaded');
  assert.match(n[n.length - 1].toString(), /the broker's requests would hold 115 bytes \(limit 100\)/);
});

test('flow control: a client is paused at exactly half its budget and resumed once under a quarter', () => {
  const c = core({ maxClientBytes: 200 });
  const peer = c.peerOf(CLIENT);
  c.handle(req1(CLIENT, 'svc', Buffer.alloc(99 - REQ_OVERHEAD)), 0);
  assert.deepEqual(c.flow, [], '99 of 200: not paused');
  c.handle(req1(CLIENT, 'svc', Buffer.alloc(1)), 0); // +15: 114
  assert.equal(c.flow.length, 1, 'at half (100) or more: paused');
  assert.deepEqual(c.flow[0], [peer, true]);
  assert.equal(peer.paused, true);
  c.flow.length = 0;
  c.handle(ready1(W_A, 'svc'), 1);
  const [first] = take(c);
  c.handle(reply1(W_A, first[4], 'r'), 2); // 114 - 99 = 15 left: under 50, resumed
  assert.deepEqual(c.flow, [[peer, false]]);
  assert.equal(peer.paused, false);
});

test('flow control resumes only under a quarter: 50 of 200 held stays paused', () => {
  const c = core({ maxClientBytes: 200 });
  const peer = c.peerOf(CLIENT);
  c.handle(req1(CLIENT, 'svc', Buffer.alloc(50 - REQ_OVERHEAD)), 0);
  c.handle(req1(CLIENT, 'svc', Buffer.alloc(50 - REQ_OVERHEAD)), 0);
  assert.equal(peer.paused, true, '100 of 200: paused');
  c.flow.length = 0;
  c.handle(ready1(W_A, 'svc'), 1);
  const [first] = take(c);
  c.handle(reply1(W_A, first[4], 'r'), 2); // 50 left: not under 50
  assert.equal(peer.paused, true);
  assert.deepEqual(c.flow, []);
  const [second] = take(c).filter((m) => m[0].equals(W_A));
  c.handle(reply1(W_A, second[4], 'r'), 3);
  assert.equal(peer.paused, false);
  assert.equal(c.heldBytes, 0);
});

test('queue limit at the boundary: maxQueue requests queue, the next is `overloaded` with the count', () => {
  const c = core({ maxQueue: 3 });
  for (let i = 0; i < 3; i++) c.handle(req1(CLIENT, 'svc', String(i)), 0);
  assert.deepEqual(take(c), []);
  c.handle(req1(CLIENT, 'svc', 'x'), 0);
  const [m] = take(c);
  assert.equal(codeOf(m), 'overloaded');
  assert.match(m[m.length - 1].toString(), /queue for svc holds 3 requests/);
  assert.equal(c.snapshot().queued, 3);
});

test('a closed client: queued requests dropped and counted, replies for it dropped and counted; a closed worker requeues', () => {
  const c = core();
  c.handle(req1(CLIENT, 'svc', 'queued'), 0);
  c.handle(ready1(W_A, 'other'), 0);
  c.handle(req1(CLIENT, 'other', 'held'), 0);
  const [toA] = take(c);
  const client = c.peerOf(CLIENT);
  c.peerClosed(client, 1);
  assert.equal(c.stats.clientsGone, 1);
  c.peerClosed(client, 1); // a second close of the same connection changes nothing
  assert.equal(c.stats.clientsGone, 1);
  c.handle(ready1(W_B, 'svc'), 2);
  assert.deepEqual(take(c), [], 'the queued request of a client that left is not served');
  assert.equal(c.stats.droppedClientGone, 1);
  c.handle(reply1(W_A, toA[4], 'late'), 3);
  assert.deepEqual(take(c), []);
  assert.equal(c.stats.droppedReplies, 1);
  assert.equal(c.heldBytes, 0);
  // A worker's connection closing: its request goes to another worker at once, counted as gone (not expired).
  c.handle(req1(CLIENT2, 'other', 'again'), 4);
  const [toA2] = take(c);
  assert.equal(toA2[0].toString('latin1'), W_A.toString('latin1'));
  c.handle(ready1(id(20), 'other'), 5);
  c.peerClosed(W_A, 6);
  assert.equal(c.stats.workersGone, 1);
  const [moved] = take(c);
  assert.equal(moved[0].toString('latin1'), id(20).toString('latin1'));
  assert.equal(c.stats.requeued, 1);
  // The closed peer is gone: what arrives with its Peer afterwards is ignored.
  const gone = new Peer(nextSerial());
  c.peerClosed(gone, 7);
  c.handle(ready1(id(30), 'svc'), 8, gone);
  assert.equal(c.snapshot().workers, 2);
});

test('sendFailed: an unreachable worker is dropped and its request requeued; a full client pipe is counted', () => {
  const c = core();
  c.handle(ready1(W_A, 'svc'), 0);
  c.handle(ready1(W_B, 'svc'), 0);
  c.handle(req1(CLIENT, 'svc', 'x'), 1);
  const [toA] = take(c);
  c.sendFailed(toA[0], 'unreachable', 2);
  assert.equal(c.stats.workersUnreachable, 1);
  assert.equal(c.snapshot().workers, 1);
  const [toB] = take(c);
  assert.equal(toB[0].toString('latin1'), W_B.toString('latin1'));
  c.sendFailed(CLIENT2, 'full', 3);
  c.sendFailed(CLIENT2, 'full', 4);
  assert.equal(c.stats.repliesDroppedFull, 2);
  assert.equal(c.stats.undeliverable, 2);
  c.sendFailed(CLIENT, 'unreachable', 5);
  assert.equal(c.stats.undeliverable, 3);
  c.handle(reply1(W_B, toB[4], 'r'), 6);
  assert.deepEqual(take(c), [], 'the client was unreachable: its reply is dropped');
});

test('worker misbehaviour is counted: a reply to another address, a forged error frame, a second READY, a version change', () => {
  const c = core();
  c.handle(ready1(W_A, 'svc'), 0);
  c.handle(req1(CLIENT, 'svc', 'x'), 0);
  const [toA] = take(c);
  c.handle(reply1(W_A, CLIENT2, 'wrong'), 1);
  assert.deepEqual(take(c), [], 'a reply naming another client is dropped');
  assert.equal(c.stats.malformed, 1);
  c.handle(reply1(W_A, toA[4], B('\0error'), 'expired', 'forged'), 2);
  const [failed] = take(c);
  assert.equal(codeOf(failed), 'failed', 'a forged error ends the request as failed');
  assert.equal(c.stats.malformed, 2);
  assert.equal(c.snapshot().idleWorkers, 1, 'the worker stays');
  c.handle([W_A, B('MDPW02'), B([5])], 3); // a 0.2 HEARTBEAT from a 0.1 worker
  assert.equal(c.stats.malformed, 3);
  assert.equal(c.snapshot().workers, 1);
  c.handle(ready1(W_A, 'svc'), 4);
  assert.deepEqual(show(take(c)), show([disc1(W_A)]), 'a second READY: DISCONNECT');
  assert.equal(c.stats.unexpected, 1);
  assert.equal(c.snapshot().workers, 0);
  c.handle(ready2(W_B, 'mmi.service'), 5);
  assert.deepEqual(show(take(c)), show([[W_B, B('MDPW02'), B([6])]]), 'a worker for mmi.* is refused');
  assert.equal(c.stats.unexpected, 2);
  c.handle(disc1(W_B), 6);
  assert.deepEqual(take(c), [], 'a DISCONNECT from a peer that is no worker: nothing said');
});

test('DISCONNECT from a worker is counted; a HEARTBEAT after it gets nothing back; READY again registers it', () => {
  const c = core();
  c.handle(ready1(W_A, 'svc'), 0);
  c.handle(disc1(W_A), 1);
  assert.equal(c.stats.workersDisconnected, 1);
  assert.equal(c.snapshot().workers, 0);
  c.handle(hb1(W_A), 2);
  assert.deepEqual(take(c), [], 'told nothing more');
  c.handle(ready1(W_A, 'svc'), 3);
  assert.equal(c.snapshot().workers, 1);
  c.handle(hb1(id(40)), 3);
  assert.deepEqual(show(take(c)), show([disc1(id(40))]), 'a stranger that heartbeats is told DISCONNECT');
  assert.equal(c.stats.unexpected, 1);
});

test('a service name at exactly the limit registers; one octet longer is refused and counted', () => {
  const c = core({ limits: { maxServiceName: 8 } as CoreOptions['limits'] });
  c.handle(ready1(W_A, '12345678'), 0);
  assert.equal(c.snapshot().workers, 1);
  c.handle(ready1(W_B, '123456789'), 0);
  assert.deepEqual(show(take(c)), show([disc1(W_B)]));
  assert.equal(c.stats.malformed, 1);
});

test('requireRights: a peer with no rights cannot serve or request; mayServe/mayRequest decide; each refusal counted', () => {
  const c = core({ requireRights: true });
  c.handle(ready1(W_A, 'svc'), 0);
  assert.deepEqual(show(take(c)), show([disc1(W_A)]));
  assert.equal(c.stats.workersDenied, 1);
  c.handle(req1(CLIENT, 'svc', 'x'), 0);
  const [denied] = take(c);
  assert.equal(codeOf(denied), 'denied');
  assert.equal(c.stats.clientsDenied, 1);
  const serveSvc: Rights = { name: 'k', mayServe: (s) => (s === 'svc' ? null : 'not granted'), mayRequest: () => 'no' };
  const wp = new Peer(nextSerial(), serveSvc);
  c.handle(ready1(W_B, 'svc'), 1, wp);
  assert.equal(c.snapshot().workers, 1, 'granted: registered');
  c.handle(ready1(id(50), 'other'), 1, new Peer(nextSerial(), serveSvc));
  assert.equal(c.stats.workersDenied, 2);
  const askSvc: Rights = { name: 'c', mayServe: () => 'no', mayRequest: (s) => (s.toString() === 'svc' ? null : 'not granted') };
  const cp = new Peer(nextSerial(), askSvc);
  take(c);
  c.handle(req1(CLIENT2, 'other', 'no'), 2, cp);
  assert.equal(codeOf(take(c)[0]), 'denied');
  c.handle(req1(CLIENT2, 'svc', 'ok'), 2, cp);
  assert.equal(take(c)[0][0].toString('latin1'), W_B.toString('latin1'), 'granted: served');
});

test('mayRegister: a worker from an access group may register only what the group allows, counted', () => {
  const seen: [number, string][] = [];
  const c = core({ mayRegister: (group, name) => {
    seen.push([group, name]);
    return name === 'ok';
  } });
  const grouped = Buffer.from([0xff, 3, 0, 0, 0, 9]);
  c.handle(ready1(grouped, 'ok'), 0);
  c.handle(ready1(W_A, 'nope'), 0);
  assert.deepEqual(seen, [[3, 'ok'], [-1, 'nope']]);
  assert.equal(c.snapshot().workers, 1);
  assert.equal(c.stats.accessDenied, 1);
  assert.deepEqual(show(take(c)), show([disc1(W_A)]));
});

test('snapshot and MMI sources: idle and busy workers, served services', () => {
  const c = core();
  c.handle(ready1(W_A, 'a'), 0);
  c.handle(ready1(W_B, 'b'), 0);
  c.handle(req1(CLIENT, 'a', 'x'), 0);
  c.handle(req1(CLIENT, 'c', 'y'), 0);
  assert.deepEqual(c.snapshot(), { services: 3, workers: 2, idleWorkers: 1, busyWorkers: 1, queued: 1 });
  assert.deepEqual(c.servedServices().sort(), ['a', 'b']);
  assert.deepEqual(c.served().map(String).sort(), ['a', 'b']);
  assert.equal(c.workersFor('a'), 1);
  assert.equal(c.workersFor('c'), 0);
  assert.equal(c.stats.requests, 2);
  assert.equal(c.stats.workersRegistered, 2);
});

test('held frames that are views into a big read chunk are copied out of it; small ones and whole buffers are kept', () => {
  const c = core();
  const chunk = Buffer.alloc(64 * 1024, 0x61);
  const body = chunk.subarray(100, 200); // 100 bytes viewing a 64 KiB chunk
  c.handle(req1(CLIENT, 'svc', body), 0);
  c.handle(ready1(W_A, 'svc'), 1);
  const [toA] = take(c);
  const sent = toA[toA.length - 1];
  assert.deepEqual(sent, body, 'same bytes');
  assert.ok(sent.buffer.byteLength < 16 * 1024, `the held copy does not pin the 64 KiB chunk (${sent.buffer.byteLength})`);
  chunk.fill(0x62);
  assert.equal(sent[0], 0x61, 'a copy, not a view');
  // A large body in a chunk its own size is held as it is (copying it would cost, not save).
  const big = Buffer.alloc(40 * 1024, 1);
  c.handle(req1(CLIENT, 'svc2', big), 2);
  c.handle(ready1(W_B, 'svc2'), 3);
  const [toB] = take(c);
  assert.equal(toB[toB.length - 1], big);
});

test('shutdown: queued requests fail with `shutdown`, idle workers are told DISCONNECT, READY is refused', () => {
  const c = core();
  c.handle(ready1(W_A, 'svc'), 0);
  c.handle(req1(CLIENT, 'none', 'q'), 0);
  c.beginShutdown(1);
  const out = take(c);
  assert.deepEqual(out.map(codeOf).sort(), [null, 'shutdown']);
  c.handle(ready1(W_B, 'svc'), 2);
  assert.deepEqual(show(take(c)), show([disc1(W_B)]));
  assert.equal(c.stats.unexpected, 1);
  c.handle(req1(CLIENT, 'svc', 'late'), 3);
  assert.equal(codeOf(take(c)[0]), 'shutdown');
});

test('WarnGate: once a minute per peer, at most 20 in a 10 s window for everyone, and the window slides', () => {
  const g = new WarnGate();
  const p = new Peer(nextSerial());
  assert.equal(g.allows(p, 0), true);
  assert.equal(g.allows(p, 59_999), false, 'the same peer within a minute');
  assert.equal(g.allows(p, 60_000), true, 'a minute later');
  const peers = Array.from({ length: 30 }, () => new Peer(nextSerial()));
  const h = new WarnGate();
  const allowed = peers.filter((q) => h.allows(q, 1000)).length;
  assert.equal(allowed, 20, '20 in one window');
  assert.equal(h.allows(new Peer(nextSerial()), 10_999), false, 'the window is still full');
  assert.equal(h.allows(new Peer(nextSerial()), 11_000), true, 'a new window');
});

test('serials grow; routing-id keys and access groups', () => {
  const a = nextSerial();
  const b = nextSerial();
  assert.ok(b > a);
  assert.equal(peerKey(Buffer.from([0, 0, 0, 1, 2])), 258);
  assert.equal(peerKey(Buffer.from([1, 0, 0, 1, 2])), '\x01\x00\x00\x01\x02');
  assert.equal(peerKey(Buffer.from([0, 0, 0, 1])), '\x00\x00\x00\x01');
  assert.equal(groupOf(Buffer.from([0xff, 4, 9])), 4);
  assert.equal(groupOf(Buffer.from([0xff, 4])), -1, 'too short to carry a group and an id');
  assert.equal(groupOf(Buffer.from([0xfe, 4, 9])), -1);
});

test('ServiceQueue: grows past its ring and shrinks back, order kept through push, unshift and removeWhere', () => {
  const q = new ServiceQueue<number>();
  for (let i = 0; i < 100; i++) q.push(i);
  q.unshift(-1);
  assert.equal(q.size, 101);
  assert.equal(q.shift(), -1);
  const got: number[] = [];
  for (let i = 0; i < 95; i++) got.push(q.shift() as number);
  assert.deepEqual(got, Array.from({ length: 95 }, (_, i) => i));
  q.push(100);
  assert.equal(q.removeWhere((x) => x % 2 === 0), 3);
  assert.deepEqual([q.shift(), q.shift(), q.shift(), q.shift()], [95, 97, 99, undefined]);
  // Full at 16: unshift must grow too.
  const r = new ServiceQueue<number>();
  for (let i = 0; i < 16; i++) r.push(i);
  r.unshift(99);
  assert.equal(r.size, 17);
  assert.equal(r.shift(), 99);
});

test('StatsRecorder: past 10,000 service names, the rest share one `_other` entry', () => {
  const s = new StatsRecorder();
  const first = s.service('s0');
  assert.equal(s.service('s0'), first, 'one entry per name');
  for (let i = 1; i < 10_000; i++) s.service(`s${i}`);
  const over = s.service('s10000');
  assert.equal(s.service('s10001'), over, 'names past the cap share one entry');
  assert.notEqual(over, first);
  assert.equal([...s.entries()].length, 10_000);
  assert.equal(s.otherEntry(), over);
});

test('MMI answered by the core: mmi.extensions lists request-id after 200; mmi.service 200/404; others 501', () => {
  const c = core();
  c.handle(ready1(W_A, 'echo'), 0);
  const ask = (svc: string, ...body: string[]) => {
    c.handle(req1(CLIENT, svc, ...body), 1);
    return show(take(c))[0].slice(4);
  };
  assert.deepEqual(ask('mmi.extensions', ''), ['200', 'request-id']);
  assert.deepEqual(ask('mmi.service', 'echo'), ['200']);
  assert.deepEqual(ask('mmi.service', 'nobody'), ['404']);
  assert.deepEqual(ask('mmi.services', ''), ['echo']);
  assert.deepEqual(ask('mmi.what', ''), ['501']);
  assert.equal(c.stats.mmi, 5);
});

test('mmi.stats is answered in the turn it is asked, each question after a refresh; with no refresher, from what is installed', () => {
  const c = core();
  c.handle(req1(CLIENT, 'mmi.stats', ''), 0);
  assert.deepEqual(show(take(c)).map((m) => m.slice(4)), [['{}']], 'the empty report before any aggregation');
  let refreshes = 0;
  c.statsReplies.refresh = () => {
    refreshes++;
    c.statsReplies.set(Buffer.from(`{"fresh":${refreshes}}`), new Map([['echo', Buffer.from(`{"echo":${refreshes}}`)]]));
  };
  c.handle(req1(CLIENT, 'mmi.stats', ''), 1);
  c.handle(req1(CLIENT2, 'mmi.stats', 'echo'), 1);
  c.handle(req1(CLIENT2, 'mmi.stats', 'nobody'), 1);
  assert.equal(refreshes, 3, 'each question made the report current first');
  assert.deepEqual(show(take(c)).map((m) => m.slice(4)), [['{"fresh":1}'], ['{"echo":2}'], ['404']]);
  c.handle(req1(CLIENT, 'mmi.service', 'echo'), 2);
  assert.equal(refreshes, 3, 'other MMI questions aggregate nothing');
});

test('a reply is matched on the whole client address: a longer address with the same prefix is dropped', () => {
  const c = core();
  c.handle(ready1(W_A, 'svc'), 0);
  c.handle(req1(CLIENT, 'svc', 'x'), 0);
  const [toA] = take(c);
  c.handle(reply1(W_A, Buffer.concat([toA[4], B([9])]), 'r'), 1);
  c.handle(reply1(W_A, toA[4].subarray(0, 4), 'r'), 1);
  assert.deepEqual(take(c), [], 'neither a longer nor a shorter address is the client');
  assert.equal(c.stats.malformed, 2);
  c.handle(reply1(W_A, toA[4], 'r'), 2);
  assert.equal(take(c).length, 1);
});

test('a 0.1 worker that drops its empty delimiter mid-session is dropped, not served (version and delimiter both pinned)', () => {
  const c = core();
  c.handle(ready1(W_A, 'svc'), 0);
  c.handle([W_A, B('MDPW01'), B([5])], 1); // DISCONNECT without the delimiter it registered with
  c.handle([W_A, E, B('MDPW02'), B([6])], 1); // a 0.2 DISCONNECT with the delimiter
  assert.equal(c.stats.malformed, 2);
  assert.equal(c.snapshot().workers, 1, 'both were dropped, the worker stays');
  c.handle([id(77), E, B('MDPW01'), B([5])], 2);
  assert.deepEqual(take(c), [], 'a DISCONNECT from a peer that never registered: nothing sent');
  assert.equal(c.stats.unexpected, 0);
});

test('a registered worker keeps its service through ticks: a later request is dispatched to it', () => {
  const c = core();
  c.handle(ready1(W_A, 'svc'), 0);
  c.tick(500);
  assert.equal(c.snapshot().services, 1);
  c.handle(req1(CLIENT, 'svc', 'x'), 600);
  assert.equal(take(c)[0][0].toString('latin1'), W_A.toString('latin1'));
});

test('service time and queue wait are recorded in microseconds, clamped at 0 when the clock steps back', () => {
  const c = core();
  c.handle(req1(CLIENT, 'svc', 'x'), 1000);
  c.handle(ready1(W_A, 'svc'), 1003); // waited 3 ms
  const [toA] = take(c);
  c.handle(reply1(W_A, toA[4], 'r'), 1010); // served in 7 ms
  take(c);
  const s = c.statsSnapshot(0, 0).services.find((x) => x.name === 'svc');
  assert.ok(s);
  assert.equal(s.wait.total, 1);
  assert.ok(s.wait.max >= 2990 && s.wait.max <= 3010, `wait ${s.wait.max} us`);
  assert.ok(s.service.max >= 6990 && s.service.max <= 7010, `service ${s.service.max} us`);
  c.handle(req1(CLIENT, 'svc', 'y'), 2000);
  const [again] = take(c);
  c.handle(reply1(W_A, again[4], 'r'), 1500); // the clock stepped back
  const t = c.statsSnapshot(0, 0).services.find((x) => x.name === 'svc');
  assert.equal(t?.service.total, 2);
  assert.equal(t?.service.counts[0], 1, 'a negative time is recorded as 0');
  assert.equal(s.service.total, 1, 'an earlier snapshot is a copy: later replies do not change it');
});

test('a client that closes: no error reply to it when its queued request expires, no resume for it', () => {
  const c = core({ requestTtl: 100, maxClientBytes: 40 });
  const peer = c.peerOf(CLIENT);
  c.handle(req1(CLIENT, 'svc', 'xxxxxxxx'), 0); // 22 of 40: paused
  assert.equal(peer.paused, true);
  c.flow.length = 0;
  c.peerClosed(peer, 1);
  c.tick(100);
  assert.deepEqual(take(c), [], 'nothing sent to a departed client');
  assert.equal(c.stats.droppedClientGone, 1);
  assert.deepEqual(c.flow, [], 'no resume for a departed client');
  assert.equal(c.heldBytes, 0);
});

test('a client within its own budget but past the broker\'s is told the broker\'s limit', () => {
  const c = core({ maxClientBytes: 100, maxHeldBytes: 150 });
  c.handle(req1(CLIENT2, 'svc', Buffer.alloc(60 - REQ_OVERHEAD)), 0);
  c.handle(req1(CLIENT, 'svc', Buffer.alloc(100 - REQ_OVERHEAD)), 0); // exactly its own 100; the broker's 160 > 150
  const [m] = take(c);
  assert.match(m[m.length - 1].toString(), /the broker's requests would hold 160 bytes \(limit 150\)/);
});

test('--validate: requests wait for a verdict and count against the queue limit; a verdict during shutdown fails them', () => {
  const c = core({ validates: (s) => s === 'checked', maxQueue: 2 });
  c.handle(req1(CLIENT, 'checked', 'a'), 0);
  c.handle(req1(CLIENT, 'checked', 'b'), 0);
  assert.equal(c.toValidate.length, 2);
  c.handle(req1(CLIENT, 'checked', 'c'), 0);
  const [over] = take(c);
  assert.match(over[over.length - 1].toString(), /queue for checked holds 2 requests/);
  assert.equal(c.snapshot().services, 1, 'a service with requests awaiting a verdict is kept');
  const batch = c.toValidate.splice(0);
  c.admit(batch.slice(0, 1), ['too big'], 1);
  const [rejected] = take(c);
  assert.equal(rejected[rejected.length - 2].toString(), 'rejected');
  assert.equal(rejected[rejected.length - 1].toString(), 'too big');
  c.beginShutdown(2);
  take(c);
  c.admit(batch.slice(1), [null], 3);
  const [late] = take(c);
  assert.equal(late[late.length - 2].toString(), 'shutdown');
  assert.equal(c.snapshot().services, 0, 'forgotten once nothing awaits');
});

test('connectionLiveness: a busy worker is not expired for MDP silence (its connection answers for it); an idle one is', () => {
  const c = core({ connectionLiveness: true });
  c.handle(ready1(W_A, 'busy'), 0);
  c.handle(ready1(W_B, 'idle'), 0);
  c.handle(req1(CLIENT, 'busy', 'x'), 0);
  take(c);
  c.tick(3000);
  const out = show(take(c));
  assert.deepEqual(out.filter((m) => m[3] === '\x05'), show([disc1(W_B)]), 'only the idle worker was expired');
  assert.equal(c.snapshot().workers, 1);
});

test('the log says what happened and to whom: expiries, refusals, unreachable workers, full client pipes (once a second)', () => {
  const lines: string[] = [];
  const c = new TestCore({ heartbeatInterval: 1000, heartbeatLiveness: 3, busyTimeout: 500, requireRights: true }, (level, msg, fields) => lines.push(`${level} ${msg} ${JSON.stringify(fields ?? {})}`));
  const serve: Rights = { name: 'KEY', mayServe: () => null, mayRequest: () => 'not granted' };
  c.handle(ready1(W_A, 'svc'), 0, new Peer(nextSerial(), serve));
  c.handle(ready1(W_B, 'svc'), 0);
  c.handle(req1(CLIENT, 'svc', 'x'), 0, new Peer(nextSerial(), serve));
  c.handle(ready1(W_B, 'svc'), 0, new Peer(nextSerial(), { name: 'W', mayServe: () => 'not this one', mayRequest: () => null }));
  c.sendFailed(CLIENT2, 'full', 10);
  c.sendFailed(CLIENT2, 'full', 500);
  c.sendFailed(CLIENT2, 'full', 1010);
  c.handle(ready1(id(60), 'other'), 0, new Peer(nextSerial(), serve));
  c.handle(req1(CLIENT2, 'other', 'y'), 0, new Peer(nextSerial(), { name: 'C', mayServe: () => 'no', mayRequest: () => null }));
  c.tick(600);
  const third = new Peer(nextSerial(), serve);
  c.handle(ready1(id(61), 'third'), 700, third);
  c.sendFailed(third, 'unreachable', 800);
  c.tick(3000);
  const has = (re: RegExp) => assert.ok(lines.some((l) => re.test(l)), `a log line like ${re}: ${lines.join('\n')}`);
  has(/^warn READY refused; told DISCONNECT \{"why":"no CURVE rights for this connection","service":"svc","key":null\}/);
  has(/^warn request answered `denied` \{"why":"not granted","service":"svc","key":"KEY"\}/);
  has(/READY refused; told DISCONNECT \{"why":"not this one","service":"svc","key":"W"\}/);
  assert.equal(lines.filter((l) => l.startsWith('warn replies dropped: a client is not reading')).length, 2, 'at most once a second');
  has(/^warn replies dropped: a client is not reading \(its pipe is at the high-water mark\) \{"total":1\}/);
  has(/^warn worker expired: busy timeout \{"service":"other"\}/);
  has(/^info worker unreachable \{"service":"third","why":"unreachable"\}/);
  has(/^info worker expired: no heartbeat \{"service":"svc","busy":false\}/);
});
