// After a burst of held requests: one full collection once the queues have emptied, then the free pages go back to
// the system; never on ordinary load.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryReturn } from '../src/broker/memory-return.js';

const MiB = 1024 * 1024;

test('memory return: a collection after held bytes fall from a burst, not before, not on small loads, not twice within the gap; a trim after each', () => {
  let runs = 0;
  let trims = 0;
  const m = new MemoryReturn({ collect: () => runs++, trim: () => trims++, burstBytes: 16 * MiB, quietMs: 1000, minGapMs: 30000 });
  let t = 0;
  const step = (held: number, ms = 100) => { t += ms; return m.tick(t, held); };
  for (let i = 0; i < 50; i++) step(8 * MiB); // steady load under the burst mark
  for (let i = 0; i < 50; i++) step(0);
  assert.equal(runs, 0, 'no burst, no collection');
  step(100 * MiB);
  step(40 * MiB);
  for (let i = 0; i < 20; i++) step(4 * MiB); // still above a 32nd of the high mark
  assert.equal(runs, 0, 'held bytes have not fallen far enough');
  for (let i = 0; i < 9; i++) step(2 * MiB);
  assert.equal(runs, 0, 'waits for a quiet second');
  assert.equal(step(2 * MiB, 300), 'collected');
  assert.equal(trims, 0, 'the trim waits for V8 to free what the collection found');
  assert.equal(step(2 * MiB, 600), 'trimmed');
  assert.equal(trims, 1);
  for (let i = 0; i < 30; i++) step(1 * MiB);
  step(64 * MiB);
  for (let i = 0; i < 30; i++) step(0);
  assert.equal(runs, 1, 'not again within the gap');
  for (let i = 0; i < 300; i++) step(0);
  assert.equal(runs, 2, 'the second burst is collected after the gap');
  assert.equal(trims, 2);
});

test('memory return: by default V8\'s own full GC, then glibc\'s malloc_trim (through koffi) on Linux', () => {
  const m = new MemoryReturn({ burstBytes: 1, quietMs: 0, minGapMs: 0 });
  assert.equal(m.tick(0, 10), null);
  assert.equal(m.tick(1, 0), 'collected', 'a GC function was found and run');
  assert.equal(m.tick(600, 0), process.platform === 'linux' ? 'trimmed' : null);
});

test('memory return: what is kept for reuse (the frame pool\'s free buffers) is let go just before the collection', () => {
  const order: string[] = [];
  const m = new MemoryReturn({ collect: () => order.push('collect'), trim: () => order.push('trim'), letGo: () => order.push('let go'), burstBytes: 1, quietMs: 0, minGapMs: 0 });
  m.tick(0, 10);
  m.tick(1, 0);
  m.tick(600, 0);
  assert.deepEqual(order, ['let go', 'collect', 'trim']);
});
