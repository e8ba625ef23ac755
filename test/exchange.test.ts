// The shards' exchange (src/broker/sharded/exchange.ts) and board (board.ts) on their own: what one shard sends
// another in a turn arrives in order, byte for byte, as one batch per receiver; the board's counts and service slots
// as another thread reads them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MessageChannel } from 'node:worker_threads';
import { Exchange, Rec } from '../src/broker/sharded/exchange.js';
import { Board, BOARD_SLOTS, boardBytes } from '../src/broker/sharded/board.js';
import { MAX_MOVING_BYTES, Spread } from '../src/broker/sharded/spread.js';
import { Peer } from '../src/core/peer.js';

type Seen = [Rec, number, number, number, string[]];

/** Three exchanges (three shards) wired as the broker wires them; what shard 1 and 2 receive. */
function mesh(): { ex: Exchange[]; seen: Seen[][]; batches: number[]; close: () => void } {
  const ports: (import('node:worker_threads').MessagePort | null)[][] = [[null, null, null], [null, null, null], [null, null, null]];
  for (let i = 0; i < 3; i++) {
    for (let j = i + 1; j < 3; j++) {
      const { port1, port2 } = new MessageChannel();
      ports[i][j] = port1;
      ports[j][i] = port2;
    }
  }
  const ex = ports.map((p, i) => new Exchange(i, p));
  const seen: Seen[][] = [[], [], []];
  const batches = [0, 0, 0];
  ex.forEach((e, i) => {
    for (const p of ports[i]) p?.on('message', () => batches[i]++);
    e.start((kind, from, thread, n, frames) => seen[i].push([kind, from, thread, n, frames.map((f) => f.toString('latin1'))]), (err) => assert.fail(String(err)));
  });
  return { ex, seen, batches, close: () => ex.forEach((e) => e.close()) };
}

const settle = () => new Promise((r) => setTimeout(r, 20));

test('a turn\'s records reach each shard in order, in one batch per receiver, byte for byte', async (t) => {
  const { ex, seen, batches, close } = mesh();
  t.after(close);
  ex[0].put(1, Rec.Request, 0, 7, [Buffer.from('id-1'), Buffer.alloc(0), Buffer.from('MDPC01'), Buffer.from('echo'), Buffer.from('body')]);
  ex[0].put(1, Rec.Gone, 0, 7, null);
  ex[0].put(2, Rec.Reply, 0, 2 ** 40, [Buffer.from('id-2'), Buffer.from([0, 255, 1])]);
  ex[0].broadcast(Rec.Service, 0, -1, [Buffer.from('svc')]);
  await settle();
  assert.deepEqual(seen[1], [
    [Rec.Request, 0, 0, 7, ['id-1', '', 'MDPC01', 'echo', 'body']],
    [Rec.Gone, 0, 0, 7, []],
    [Rec.Service, 0, 0, -1, ['svc']],
  ]);
  assert.deepEqual(seen[2], [[Rec.Reply, 0, 0, 2 ** 40, ['id-2', '\x00\xff\x01']], [Rec.Service, 0, 0, -1, ['svc']]]);
  assert.deepEqual(batches, [0, 1, 1], 'one postMessage per receiver for the turn');
});

test('a 1 MiB frame and a view into a larger buffer arrive whole, with nothing around them; turns are separate batches', async (t) => {
  const { ex, seen, batches, close } = mesh();
  t.after(close);
  const big = Buffer.alloc(1 << 20, 0x5a);
  const chunk = Buffer.from('xxxxHELLOyyyy');
  ex[2].put(0, Rec.Request, 1, 3, [Buffer.from('id'), big, chunk.subarray(4, 9)]);
  await settle();
  ex[2].put(0, Rec.Pull, 2, 5, [Buffer.from('echo')]);
  await settle();
  assert.equal(seen[0][0][4][1].length, 1 << 20);
  assert.ok(Buffer.from(seen[0][0][4][1], 'latin1').equals(big));
  assert.equal(seen[0][0][4][2], 'HELLO');
  assert.deepEqual(seen[0][1], [Rec.Pull, 2, 2, 5, ['echo']]);
  assert.equal(batches[0], 2);
});

test('board: a shard\'s counts at the slot it told of, as the others read them; slots are reused after release', () => {
  const sab = new SharedArrayBuffer(boardBytes(2));
  const a = new Board(sab, 0, 2);
  const b = new Board(sab, 1, 2);
  const e = a.open('echo');
  assert.ok(e);
  a.publish(e, 3, 0, 5);
  b.told(0, Buffer.from('echo'), e.slot);
  const seen = b.find('echo');
  assert.ok(seen);
  assert.deepEqual([b.idle(seen, 0), b.queued(seen, 0), b.workers(seen, 0)], [3, 0, 5]);
  assert.equal(b.workers(seen, 1), 0, 'nothing at a shard that never told');
  const slot = e.slot;
  a.close(e);
  assert.equal(b.workers(seen, 0), 0, 'zeroed when released');
  b.told(0, Buffer.from('echo'), -1);
  assert.equal(b.find('echo'), undefined, 'forgotten when no shard has it');
  const again = a.open('other');
  assert.equal(again?.slot, slot, 'the released slot is reused');
  b.addConnections(0, 2);
  assert.equal(a.leastLoaded(), 1);
  assert.equal(b.leastLoaded(), 1);
});

test('board: past BOARD_SLOTS services a shard keeps new ones to itself (open is null), never overwrites', () => {
  const a = new Board(new SharedArrayBuffer(boardBytes(1)), 0, 1);
  for (let i = 0; i < BOARD_SLOTS; i++) assert.ok(a.open(`s${i}`));
  assert.equal(a.open('one-too-many'), null);
});

test('spread: requests go to a shard with an idle worker until 64 MiB moved there is not yet taken in (a stalled shard gets no more)', (t) => {
  const { port1, port2 } = new MessageChannel();
  t.after(() => {
    port1.close();
    port2.close();
  });
  const sab = new SharedArrayBuffer(boardBytes(2));
  const here = new Board(sab, 0, 2);
  const there = new Board(sab, 1, 2);
  const spread = new Spread(here, new Exchange(0, [null, port1]));
  const theirs = there.open('echo');
  assert.ok(theirs);
  there.publish(theirs, 4, 0, 4);
  here.told(1, Buffer.from('echo'), theirs.slot);
  const mine = spread.open('echo');
  assert.ok(mine);
  assert.equal(spread.target(mine, 1), 1, 'the other shard has an idle worker and nothing queued');
  const client = new Peer(9);
  spread.move(1, [Buffer.from('id'), Buffer.alloc(MAX_MOVING_BYTES)], client);
  assert.equal(spread.target(mine, 1), -1, 'held here while the other shard has not taken in what it was sent');
  there.take(0, 2 + MAX_MOVING_BYTES);
  assert.equal(spread.target(mine, 1), 1, 'and again once it has');
  there.publish(theirs, 0, 3, 4);
  assert.equal(spread.target(mine, 1), -1, 'no idle worker there: kept here (this shard has workers)');
  assert.equal(spread.target(mine, 0), 1, 'this shard has no worker: to the shard with workers, busy or not');
});
