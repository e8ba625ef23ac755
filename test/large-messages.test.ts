// Large bodies (64 KiB to 8 MiB) through a running broker, byte for byte, with libzmq (the zeromq binding) as the
// clients and workers: every request has its own content, and every client must get back exactly what it sent.
// Runs in every CI mode (zmtp, libzmq, shards, offload). The broker reads large frames into buffers of their own and
// reuses them once a request has ended and its writes are done (src/zmtp/frame-pool.ts): these tests are what says
// no reused buffer is ever read or written after its reuse (a wrong reuse shows as a reply with another's bytes).
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { Dealer, curveKeyPair } from 'zeromq';
import { E, B, startBroker, until, modeOptions } from './helpers.js';
import { framePoolStats, freeFrameBytes } from '../src/zmtp/frame-pool.js';
import type { BrokerOptions } from '../src/broker/options.js';
import { RawZmtp, rawFrame } from './support/raw-zmtp.js';
import { FLAG_MORE } from '../src/zmtp/wire.js';

const HB = { heartbeatInterval: 200, heartbeatLiveness: 5 };
type Curve = { curveServerKey?: string; curvePublicKey?: string; curveSecretKey?: string };

/** A body of `size` bytes that only request `id` has (its id in the first 8 bytes, then a pattern seeded by it). */
function bodyFor(id: number, size: number): Buffer {
  const b = Buffer.allocUnsafe(size);
  let x = (id * 2654435761) >>> 0;
  for (let i = 0; i < size; i++) {
    if ((i & 3) === 0) x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    b[i] = x >>> ((i & 3) * 8);
  }
  b.writeUInt32LE(id, 0);
  b.writeUInt32LE(size, 4);
  return b;
}

/** An MDP/0.1 worker on a libzmq DEALER that echoes each request's body; `hold` makes it take requests and never answer. */
function echoWorker(endpoint: string, curve: Curve, opts: { hold?: boolean } = {}): { sock: Dealer; served: number; stop(): void } {
  const sock = new Dealer({ linger: 0, ...curve });
  sock.connect(endpoint);
  const w = { sock, served: 0, stop: () => sock.close() };
  void (async () => {
    await sock.send([E, B('MDPW01'), B([1]), B('echo')]);
    try {
      for await (const m of sock) {
        if (m[2]?.[0] !== 2) continue; // heartbeats
        w.served++;
        if (opts.hold) continue;
        await sock.send([E, B('MDPW01'), B([3]), m[3], E, ...m.slice(5)]);
      }
    } catch {
      // closed
    }
  })();
  return w;
}

/** Sends every body from its own libzmq DEALER client, `window` at a time, and checks each reply byte for byte. */
async function roundTrips(endpoint: string, curve: Curve, clients: number, sizes: number[], window: number): Promise<number> {
  let checked = 0;
  await Promise.all(Array.from({ length: clients }, async (_, c) => {
    const sock = new Dealer({ linger: 0, receiveTimeout: 20000, ...curve });
    sock.connect(endpoint);
    const sent = new Map<number, Buffer>();
    let next = 0;
    const send = async () => {
      const id = c * 100000 + next;
      const body = bodyFor(id, sizes[next % sizes.length]);
      next++;
      sent.set(id, body);
      await sock.send([E, B('MDPC01'), B('echo'), body]);
    };
    try {
      while (next < Math.min(window, sizes.length)) await send();
      for (let got = 0; got < sizes.length; got++) {
        const reply = await sock.receive();
        assert.equal(reply.length, 4, 'reply is [empty, MDPC01, echo, body]');
        assert.equal(reply[2].toString(), 'echo');
        const body = reply[3];
        const id = body.readUInt32LE(0);
        const want = sent.get(id);
        assert.ok(want !== undefined, `reply ${id} belongs to this client`);
        assert.equal(body.length, want.length, `reply ${id}: length`);
        assert.ok(body.equals(want), `reply ${id} (${body.length} bytes) byte for byte`);
        sent.delete(id);
        checked++;
        if (next < sizes.length) await send();
      }
      assert.equal(sent.size, 0);
    } finally {
      sock.close();
    }
  }));
  return checked;
}

async function broker(t: TestContext, extra: Partial<BrokerOptions> = {}): Promise<string> {
  const { broker: b, endpoint } = await startBroker({ ...HB, ...extra });
  t.after(() => b.close());
  return endpoint;
}

const SIZES = [65536, 1 << 20, 100, 20000, 65536 * 3 + 7, 16384, 16383];

for (const secure of [false, true]) {
  test(`${secure ? 'CURVE' : 'NULL'}: 64 KiB to 8 MiB bodies, each its own, 4 clients x 8 in flight through 3 workers: every reply is its request byte for byte`, async (t) => {
    const keys = curveKeyPair();
    const endpoint = await broker(t, secure ? { curveKeys: keys } : {});
    const curve = (): Curve => {
      if (!secure) return {};
      const mine = curveKeyPair();
      return { curveServerKey: keys.publicKey, curvePublicKey: mine.publicKey, curveSecretKey: mine.secretKey };
    };
    const workers = [0, 1, 2].map(() => echoWorker(endpoint, curve()));
    t.after(() => workers.forEach((w) => w.stop()));
    const before = framePoolStats.reused;
    const sizes = [...Array.from({ length: 42 }, (_, i) => SIZES[i % SIZES.length]), 8 << 20];
    assert.equal(await roundTrips(endpoint, curve(), 4, sizes, 8), 4 * sizes.length);
    const o = modeOptions();
    if (o.transport !== 'libzmq' && (o as { shards?: number }).shards === undefined && !secure) {
      // In this process (one thread, zmtp): the bodies' buffers were reused, so the pool was exercised above.
      assert.ok(framePoolStats.reused > before, `large frames' buffers reused (${framePoolStats.reused - before})`);
    }
  });
}

test('a worker that takes large requests and vanishes: each is answered byte for byte by another worker', async (t) => {
  const endpoint = await broker(t);
  const vanishing = echoWorker(endpoint, {}, { hold: true });
  t.after(() => vanishing.stop()); // also when an assertion below fails (closing twice is harmless)
  const sizes = Array.from({ length: 12 }, (_, i) => (i % 2 === 0 ? 1 << 20 : 70000));
  const run = roundTrips(endpoint, {}, 2, sizes, 6);
  assert.ok(await until(() => vanishing.served > 0, 5000), 'the vanishing worker took a request');
  vanishing.stop();
  const good = echoWorker(endpoint, {});
  t.after(() => good.stop());
  assert.equal(await run, 24);
});

test('frame pool: a released buffer is reused only once every queued write of it is over, and never after it escaped', async () => {
  const { takeFrame, hold, unhold, release, escape, writtenCallback, dropFreeFrames, LARGE_FRAME_BYTES } = await import('../src/zmtp/frame-pool.js');
  // The tests above left buffers on the free list (up to its byte bound): start from none.
  dropFreeFrames();
  const size = LARGE_FRAME_BYTES * 3 + 5;
  const a = takeFrame(size);
  assert.equal(a.length, size);
  assert.ok(a.buffer.byteLength >= size && a.buffer.byteLength <= size * 1.125, 'capacity within 12.5% of the size');
  hold(a); // queued on one connection
  hold(a); // and on another (a request sent again after its worker died)
  release([a]);
  assert.notEqual(takeFrame(size).buffer, a.buffer, 'not reused while two writes are queued');
  unhold(a);
  assert.notEqual(takeFrame(size).buffer, a.buffer, 'not reused while one write is queued');
  (writtenCallback(a) as () => void)(); // the socket's write callback
  assert.equal(takeFrame(size).buffer, a.buffer, 'reused once both writes are over');
  // Released twice, or a late callback: on the free list once, so handed out once.
  const b = takeFrame(size);
  release([b]);
  release([b]);
  unhold(b);
  assert.equal(takeFrame(size).buffer, b.buffer);
  assert.notEqual(takeFrame(size).buffer, b.buffer, 'not handed out twice');
  // Handed to someone that may keep it (Titanic, another shard): never reused.
  const c = takeFrame(size);
  escape(c);
  release([c]);
  assert.notEqual(takeFrame(size).buffer, c.buffer);
  // Small frames and frames not from the pool are ignored.
  const plain = Buffer.alloc(size);
  hold(plain);
  release([plain, Buffer.from('x')]);
  assert.equal(writtenCallback(plain), undefined);
});

test('after a burst of large requests, the broker lets the frame pool\'s free buffers go (with its collection after a burst)', async (t) => {
  const o = modeOptions();
  if (o.transport === 'libzmq' || (o as { shards?: number }).shards !== undefined) {
    t.skip('the frame pool is this process\'s only on one zmtp thread');
    return;
  }
  const endpoint = await broker(t);
  // 40 MiB of requests wait in the queue (a burst of held bytes), then one worker serves them all.
  const sizes = Array.from({ length: 40 }, () => 1 << 20);
  const run = roundTrips(endpoint, {}, 4, sizes.slice(0, 10), 10);
  await new Promise((r) => setTimeout(r, 300));
  const w = echoWorker(endpoint, {});
  t.after(() => w.stop());
  assert.equal(await run, 40);
  assert.ok(freeFrameBytes() > 0, 'the bodies\' buffers went back to the free list');
  // Held bytes fell from 40 MiB to nothing: after a quiet second the broker collects, and lets the free list go first.
  assert.ok(await until(() => freeFrameBytes() === 0, 5000), `free list let go (${freeFrameBytes()} bytes left)`);
});

test('a peer that announces a 4 MiB body and stalls: the read-ahead gauge shows what the broker allocated ahead, and its close gives it back', async (t) => {
  const o = modeOptions();
  if (o.transport === 'libzmq' || (o as { shards?: number }).shards !== undefined) {
    t.skip('the gauge is read from this process on one zmtp thread');
    return;
  }
  const { broker: b, endpoint } = await startBroker({ ...HB });
  t.after(() => b.close());
  const gauge = async (key: string) => (await b.aggregateStats()).report.global[key] ?? 0;
  const p = await RawZmtp.open(Number(new URL(endpoint).port));
  t.after(() => p.close());
  const body = rawFrame(Buffer.alloc(4 << 20, 0x61), 0);
  // The request's first frames, then the body's header and its first 1,000 bytes: the rest never comes.
  p.write(rawFrame(Buffer.alloc(0), FLAG_MORE), rawFrame(Buffer.from('MDPC01'), FLAG_MORE), rawFrame(Buffer.from('echo'), FLAG_MORE), body.subarray(0, 9 + 1000));
  /** The gauge once `ok` says so, or its value after 3 s. */
  const settled = async (key: string, ok: (v: number) => boolean) => {
    let v = await gauge(key);
    for (const end = Date.now() + 3000; !ok(v) && Date.now() < end; v = await gauge(key)) await new Promise((r) => setTimeout(r, 20));
    return v;
  };
  assert.equal(await settled('readAheadBytes', (v) => v > 0), (4 << 20) - 1000, 'the body\'s buffer, less what arrived, counted as read ahead');
  p.close();
  assert.equal(await settled('readAheadBytes', (v) => v === 0), 0, 'the closed connection gave its read-ahead back');
});
