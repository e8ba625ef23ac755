// The shard pipe (src/broker/sharded/shard-io.ts) on its own: what one end sends in a turn arrives at the other, in
// order, byte for byte, as one batch; the end of a connection and the end marker keep their place among messages.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MessageChannel } from 'node:worker_threads';
import { pipe } from '../src/broker/sharded/shard-io.js';

type Seen = { serial: number; frames: string[] | null } | 'end';

function channel(): { a: ReturnType<typeof pipe>; seen: Seen[]; batches: () => number; close: () => Promise<void> } {
  const { port1, port2 } = new MessageChannel();
  const a = pipe(port1);
  const b = pipe(port2);
  const seen: Seen[] = [];
  let batches = 0;
  port2.on('message', () => batches++);
  void b.start(
    (serial, frames) => seen.push({ serial, frames: frames === null ? null : frames.map((f) => f.toString('latin1')) }),
    () => seen.push('end'),
    (err) => assert.fail(String(err)),
  );
  return { a, seen, batches: () => batches, close: async () => { await a.close(); await b.close(); } };
}

const settle = () => new Promise((r) => setTimeout(r, 20));

test('a turn\'s messages, connection ends and the end marker arrive in order, in one batch, byte for byte', async (t) => {
  const { a, seen, batches, close } = channel();
  t.after(close);
  a.send([Buffer.from('id-1'), Buffer.alloc(0), Buffer.from('MDPC01'), Buffer.from('echo'), Buffer.from('body')], 7);
  a.sendClosed(7);
  a.send([Buffer.from('id-2'), Buffer.from([0, 255, 1])], 2 ** 40);
  a.sendEnd();
  await settle();
  assert.deepEqual(seen, [
    { serial: 7, frames: ['id-1', '', 'MDPC01', 'echo', 'body'] },
    { serial: 7, frames: null },
    { serial: 2 ** 40, frames: ['id-2', '\x00\xff\x01'] },
    'end',
  ]);
  assert.equal(batches(), 1, 'one postMessage for the turn');
});

test('a 1 MiB frame and a frame that is a view into a larger buffer arrive whole, with nothing around them', async (t) => {
  const { a, seen, close } = channel();
  t.after(close);
  const big = Buffer.alloc(1 << 20, 0x5a);
  const chunk = Buffer.from('xxxxHELLOyyyy');
  a.send([Buffer.from('id'), big, chunk.subarray(4, 9)], 1);
  await settle();
  const got = seen[0] as { frames: string[] };
  assert.equal(got.frames[1].length, 1 << 20);
  assert.ok(Buffer.from(got.frames[1], 'latin1').equals(big));
  assert.equal(got.frames[2], 'HELLO');
});

test('sends in separate turns arrive as separate batches, still in order; drained() posts at once', async (t) => {
  const { a, seen, batches, close } = channel();
  t.after(close);
  for (let i = 0; i < 3; i++) {
    a.send([Buffer.from(`m${i}`)], i);
    await settle();
  }
  a.send([Buffer.from('now')], 9);
  await a.drained();
  await settle();
  assert.deepEqual(seen.map((s) => (s === 'end' ? s : s.frames?.[0])), ['m0', 'm1', 'm2', 'now']);
  assert.equal(batches(), 4);
});
