// npm run bench:micro: the broker's hot-path pieces with tinybench, each beside a plain baseline where one exists.
// CPU-only, no sockets. Ratios within a group come from the same run; absolute ns/op drift with machine load.

import { Bench } from 'tinybench';
import { LRUMapWithDelete } from 'mnemonist';
import { DEFAULT_LIMITS, parseInbound } from '../src/protocol/codec.js';
import { Peer, nextSerial } from '../src/core/peer.js';
import { BrokerCore } from '../src/core/broker-core.js';
import { ServiceQueue } from '../src/core/service-queue.js';
import { IdleList, type IdleNode } from '../src/core/idle-list.js';

const TIME = Number(process.env.MICRO_TIME_MS ?? 300);
const B = (s: string | number[]) => (typeof s === 'string' ? Buffer.from(s) : Buffer.from(s));
const E = Buffer.alloc(0);
const CLIENT = B([0, 0, 0, 0, 1]);
const WORKER = B([0, 0, 0, 0, 2]);
const body = Buffer.alloc(100, 1);
const request = [CLIENT, E, B('MDPC01'), B('echo'), body];
const reply = [WORKER, E, B('MDPW01'), B([3]), CLIENT, E, body];

interface Row { group: string; name: string; nsPerOp: number; opsPerSec: number; vs: string }
const rows: Row[] = [];

async function group(name: string, tasks: [string, () => void][]): Promise<void> {
  const bench = new Bench({ time: TIME, warmupTime: 50 });
  for (const [n, fn] of tasks) bench.add(n, fn);
  await bench.run();
  const base = bench.tasks[0].result as { latency?: { mean: number } } | undefined;
  const baseNs = (base?.latency?.mean ?? NaN) * 1e6;
  for (const t of bench.tasks) {
    const r = t.result as { latency?: { mean: number } } | undefined;
    const ns = (r?.latency?.mean ?? NaN) * 1e6;
    rows.push({ group: name, name: t.name, nsPerOp: ns, opsPerSec: 1e9 / ns, vs: t === bench.tasks[0] ? 'baseline' : `${(baseNs / ns).toFixed(1)}x` });
  }
}

// Frame parsing: in-place byte comparison vs the obvious toString/equals version.
function naiveParse(frames: Buffer[]): string {
  const header = frames[2].toString();
  if (header === 'MDPC01') return frames[3].toString();
  if (frames[2].equals(B('MDPW01'))) return 'worker';
  return '';
}

// Building the REQUEST to a worker: pushing shared constant frames vs creating them per message.
const MDPW01 = B('MDPW01');
const REQ = B([2]);
function buildShared(): Buffer[] {
  return [WORKER, E, MDPW01, REQ, CLIENT, E, body];
}
function buildFresh(): Buffer[] {
  return [WORKER, Buffer.alloc(0), Buffer.from('MDPW01'), Buffer.from([2]), CLIENT, Buffer.alloc(0), body];
}

function queueBench(depth: number): [string, () => void][] {
  const arr: number[] = Array.from({ length: depth }, (_, i) => i);
  const q = new ServiceQueue<number>();
  for (let i = 0; i < depth; i++) q.push(i);
  return [
    [`Array push+shift @${depth}`, () => { arr.push(1); arr.shift(); }],
    [`ServiceQueue push+shift @${depth}`, () => { q.push(1); q.shift(); }],
  ];
}

class Node implements IdleNode {
  idlePrev: IdleNode | null = null;
  idleNext: IdleNode | null = null;
  idleIn: IdleList<IdleNode> | null = null;
  constructor(readonly id: number) {}
}

function lruBench(n: number): [string, () => void][] {
  // Baseline: mnemonist LRUMapWithDelete. It has no "take least recent": the oldest is the last in iteration order.
  const lru = new LRUMapWithDelete<number, true>(n + 1);
  for (let i = 0; i < n; i++) lru.set(i, true);
  const map = new Map<number, true>();
  for (let i = 0; i < n; i++) map.set(i, true);
  const list = new IdleList<Node>();
  for (let i = 0; i < n; i++) list.push(new Node(i));
  return [
    [`mnemonist LRUMap pick-oldest @${n}`, () => {
      let oldest = -1;
      for (const k of lru.keys()) oldest = k;
      lru.delete(oldest);
      lru.set(oldest, true);
    }],
    [`Map insertion-order pick @${n}`, () => {
      const k = map.keys().next().value as number;
      map.delete(k);
      map.set(k, true);
    }],
    [`IdleList (intrusive) pick @${n}`, () => {
      const w = list.shift() as Node;
      list.push(w);
    }],
  ];
}

function coreRoundTrip(): () => void {
  const core = new BrokerCore();
  const worker = new Peer(nextSerial());
  const client = new Peer(nextSerial());
  core.handle([WORKER, E, B('MDPW01'), B([1]), B('echo')], 0, worker);
  return () => {
    core.handle(request, 1, client);
    core.handle(reply, 2, worker);
    core.out.length = 0;
    core.to.length = 0;
  };
}

async function main(): Promise<void> {
  await group('parse a client REQUEST', [
    ['toString/equals', () => naiveParse(request)],
    ['parseInbound (in place)', () => parseInbound(request, DEFAULT_LIMITS)],
  ]);
  await group('parse a worker REPLY', [
    ['toString/equals', () => naiveParse(reply)],
    ['parseInbound (in place)', () => parseInbound(reply, DEFAULT_LIMITS)],
  ]);
  await group('build a worker REQUEST', [
    ['fresh constant frames', buildFresh],
    ['shared constant frames', buildShared],
  ]);
  await group('request queue, depth 1,000', queueBench(1000));
  await group('request queue, depth 100,000', queueBench(100000));
  await group('idle-worker LRU pick, 10,000 idle', lruBench(10000));
  await group('broker core: one request + reply', [['BrokerCore.handle x2', coreRoundTrip()]]);

  const w = [34, 38, 14, 12, 10];
  const line = (c: string[]) => c.map((x, i) => (i < 2 ? x.padEnd(w[i]) : x.padStart(w[i]))).join('  ');
  console.log(`node ${process.version}, ${TIME} ms per task (MICRO_TIME_MS to change)\n`);
  console.log(line(['group', 'task', 'ops/s', 'ns/op', 'vs baseline']));
  for (const r of rows) console.log(line([r.group, r.name, Math.round(r.opsPerSec).toLocaleString('en-US'), r.nsPerOp.toFixed(1), r.vs]));
}

void main();
