// After a burst of held requests, one full collection once the queues have emptied; never on ordinary load.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryReturn } from '../src/broker/memory-return.js';

const MiB = 1024 * 1024;

test('memory return: a full collection after held bytes fall from a burst, not before, not on small loads, not twice within the gap', () => {
  let runs = 0;
  const m = new MemoryReturn(() => runs++, 16 * MiB, 1000, 30000);
  let t = 0;
  const step = (held: number, ms = 100) => { t += ms; return m.tick(t, held); };
  for (let i = 0; i < 50; i++) step(8 * MiB); // steady load under the burst mark
  for (let i = 0; i < 50; i++) step(0);
  assert.equal(runs, 0, 'no burst, no collection');
  step(100 * MiB);
  step(40 * MiB);
  step(20 * MiB); // still above an eighth of the high mark
  for (let i = 0; i < 20; i++) step(20 * MiB);
  assert.equal(runs, 0, 'held bytes have not fallen far enough');
  step(2 * MiB);
  for (let i = 0; i < 8; i++) step(2 * MiB);
  assert.equal(runs, 0, 'waits for a quiet second');
  step(2 * MiB, 300);
  assert.equal(runs, 1, 'collected once the queues stayed low');
  for (let i = 0; i < 30; i++) step(1 * MiB);
  step(64 * MiB);
  for (let i = 0; i < 30; i++) step(0);
  assert.equal(runs, 1, 'not again within the gap');
  for (let i = 0; i < 300; i++) step(0);
  assert.equal(runs, 2, 'the second burst is collected after the gap');
});

test('memory return: the default collection is V8\'s own full GC', () => {
  const m = new MemoryReturn(undefined, 1, 0, 0);
  assert.equal(m.tick(0, 10), false);
  assert.equal(m.tick(1, 0), true, 'a GC function was found and run');
  assert.equal(m.collections, 1);
});
