// The service queue: order, requeue at the front, and no request kept alive once it has left the queue.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { ServiceQueue } from '../src/core/service-queue.js';

setFlagsFromString('--expose_gc');
const gc = runInNewContext('gc') as () => void;

test('FIFO with requeue at the front, through growth and shrinking', () => {
  const q = new ServiceQueue<number>();
  for (let i = 0; i < 1000; i++) q.push(i);
  q.unshift(-1);
  const out: number[] = [];
  for (let x = q.shift(); x !== undefined; x = q.shift()) out.push(x);
  assert.deepEqual(out, [-1, ...Array.from({ length: 1000 }, (_, i) => i)]);
  for (let i = 0; i < 10; i++) q.push(i);
  assert.equal(q.removeWhere((x) => x % 2 === 1), 5);
  assert.deepEqual([q.shift(), q.shift(), q.size], [0, 2, 3]);
});

test('an item shifted out (or removed) is not kept alive by the queue', async () => {
  const q = new ServiceQueue<{ body: Buffer }>();
  const refs: WeakRef<object>[] = [];
  (() => {
    // Fewer than the ring's minimum capacity: nothing wraps over the slots, so only clearing them frees the items.
    for (let i = 0; i < 8; i++) {
      const item = { body: Buffer.alloc(1024) };
      refs.push(new WeakRef(item));
      q.push(item);
    }
    q.shift();
    q.shift();
    q.removeWhere(() => true);
  })();
  await new Promise((r) => setImmediate(r)); // WeakRef targets live until the end of the job that made them
  gc();
  assert.equal(q.size, 0);
  assert.deepEqual(refs.map((r) => r.deref() === undefined), Array(8).fill(true), 'every item left the queue and was collected');
});
