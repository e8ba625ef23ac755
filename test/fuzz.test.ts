// Property-based fuzzing of the core (fast-check): random and mutated frame sequences, clock ticks and send
// failures. Seeded and bounded here; FUZZ_RUNS=200000 FUZZ_SEED=... npm run test:fuzz for a long run.
// Properties: the core never throws; every valid request is answered exactly once (a reply or an error) by the
// time the broker has shut down, to the client that sent it, with its own envelope, version and service, and either
// the reply to its own body or a well-formed error reply; and every table returns to empty. A second property runs
// without faults: there every request is served, with no error reply at all.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { TestCore } from './support/test-core.js';
import { ERROR_CODES, isErrorMark } from '../src/protocol/errors.js';

const RUNS = Number(process.env.FUZZ_RUNS ?? 300);
const SEED = Number(process.env.FUZZ_SEED ?? 20261128);

const B = (s: string | number[]) => (typeof s === 'string' ? Buffer.from(s, 'latin1') : Buffer.from(s));
const E = Buffer.alloc(0);
const clientId = (c: number) => Buffer.from([0, 0, 0, 1, c]);
const workerId = (w: number) => Buffer.from([0, 0, 0, 2, w]);
const SERVICES = ['s0', 's1', 's2', 'mmi.service', 'mmi.services', 'mmi.x'];

type Action =
  | { k: 'request'; c: number; v: 1 | 2; s: number; dt: number }
  | { k: 'ready'; w: number; v: 1 | 2; s: number; dt: number }
  | { k: 'heartbeat'; w: number; dt: number }
  | { k: 'reply'; w: number; partial: boolean; dt: number }
  | { k: 'disconnect'; w: number; dt: number }
  | { k: 'garbage'; peer: number; frames: Uint8Array[]; dt: number }
  | { k: 'mutate'; base: number; at: number; how: number; byte: number; dt: number }
  | { k: 'tick'; dt: number }
  | { k: 'workerGone'; w: number; dt: number };

const dt = fc.integer({ min: 0, max: 250 });
const action: fc.Arbitrary<Action> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ k: fc.constant('request' as const), c: fc.nat(3), v: fc.constantFrom(1 as const, 2 as const), s: fc.nat(SERVICES.length - 1), dt }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('ready' as const), w: fc.nat(4), v: fc.constantFrom(1 as const, 2 as const), s: fc.nat(3), dt }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('heartbeat' as const), w: fc.nat(4), dt }) },
  { weight: 5, arbitrary: fc.record({ k: fc.constant('reply' as const), w: fc.nat(4), partial: fc.boolean(), dt }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('disconnect' as const), w: fc.nat(4), dt }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('garbage' as const), peer: fc.nat(9), frames: fc.array(fc.uint8Array({ maxLength: 8 }), { maxLength: 12 }), dt }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('mutate' as const), base: fc.nat(5), at: fc.nat(8), how: fc.nat(3), byte: fc.nat(255), dt }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('tick' as const), dt }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('workerGone' as const), w: fc.nat(4), dt }) },
);

/** Valid messages of each kind, used as the base of mutations. */
function baseMessage(i: number): Buffer[] {
  switch (i) {
    case 0: return [clientId(0), E, B('MDPC01'), B('s0'), B('x')];
    case 1: return [clientId(1), B('MDPC02'), B([1]), B('s1'), B('y')];
    case 2: return [workerId(0), E, B('MDPW01'), B([1]), B('s0')];
    case 3: return [workerId(1), B('MDPW02'), B([5])];
    case 4: return [workerId(2), E, B('MDPW01'), B([3]), clientId(0), E, B('r')];
    default: return [workerId(3), B('MDPW02'), B([4]), clientId(1), E, B('f')];
  }
}

function mutate(m: Buffer[], at: number, how: number, byte: number): Buffer[] {
  const f = m.map((x) => Buffer.from(x));
  const i = at % f.length;
  if (how === 0 && f[i].length > 0) f[i][byte % f[i].length] ^= byte | 1; // flip bits in a byte
  else if (how === 1 && i > 0) f.splice(i, 1); // drop a frame (never the routing id)
  else if (how === 2) f.splice(i + 1, 0, Buffer.from([byte])); // insert a frame
  else f[Math.max(1, i)] = Buffer.alloc(0); // empty a frame
  return f;
}

/**
 * Runs one sequence; returns the error replies by code. `clean`: no faults, as a healthy deployment runs: workers
 * 0-2 serve s0-s2 from the start, each heartbeats after every step and answers what it holds at once.
 */
export function run(actions: Action[], clean = false): Record<string, number> {
  const core = new TestCore({ heartbeatInterval: 100, heartbeatLiveness: 3, busyTimeout: 1000, requestTtl: 700, maxAttempts: 2, maxQueue: 5, maxHeldBytes: 600, maxClientBytes: 300 });
  let now = 0;
  let nextReq = 1;
  const answers = new Map<number, number>(); // request id -> final answers seen
  const asked = new Map<number, { c: number; v: 1 | 2; svc: string }>(); // request id -> who asked what
  const held = new Map<number, { client: Buffer; body: Buffer }>(); // worker -> the request it holds (address, body)
  const errors: Record<string, number> = {};
  const workerVersion = new Map<number, 1 | 2>();

  const drain = () => {
    for (const m of core.out.splice(0)) {
      assert.ok(m.length >= 2 && m[0].length > 0, 'every message starts with a routing id');
      if (m[0][3] === 1) {
        // To a client: [id, envelope(4), "", header, (cmd), service, ...body]
        assert.equal(m[1].length, 4, 'the envelope comes back');
        assert.equal(m[2].length, 0);
        const id = m[1].readUInt32BE(0);
        const req = asked.get(id);
        assert.ok(req !== undefined, `an answer to request ${id}, which was never sent`);
        assert.ok(m[0].equals(clientId(req.c)), `request ${id}'s answer went to the client that sent it`);
        const header = m[3].toString();
        assert.equal(header, req.v === 1 ? 'MDPC01' : 'MDPC02', 'answered in the version it was asked in');
        const cmd = req.v === 2 ? m[4][0] : 3;
        assert.ok(cmd === 2 || cmd === 3, 'a 0.2 answer is PARTIAL or FINAL');
        const at = req.v === 2 ? 5 : 4;
        assert.equal(m[at].toString(), req.svc, 'the answer names the service asked');
        const body = m.slice(at + 1);
        if (body.length === 3 && isErrorMark(body[0])) {
          const code = body[1].toString();
          assert.ok((ERROR_CODES as readonly string[]).includes(code), `error code ${code}`);
          assert.ok(body[2].length > 0, 'an error reply says why');
          assert.equal(cmd, 3, 'an error reply is final');
          errors[code] = (errors[code] ?? 0) + 1;
        } else if (req.svc === 'mmi.services') {
          assert.ok(body.every((f) => f.length > 0), 'mmi.services answers service names');
        } else if (req.svc.startsWith('mmi.')) {
          assert.ok(body.length === 1 && /^\d{3}$/.test(body[0].toString()), 'an MMI answer is one status code');
        } else {
          assert.deepEqual(body.map(String), [`reply:body-${id}`], `request ${id} got the reply to its own body`);
        }
        if (cmd === 3) answers.set(id, (answers.get(id) ?? 0) + 1);
      } else {
        const w = m[0][4];
        const at = m[1].length === 0 ? 2 : 1;
        const cmd = m[at + 1][0];
        if (cmd === 2) held.set(w, { client: m[at + 2], body: m[at + 4] });
        const disconnect = (m[at].toString() === 'MDPW01' && cmd === 5) || (m[at].toString() === 'MDPW02' && cmd === 6);
        if (disconnect) held.delete(w);
      }
    }
  };
  const feed = (frames: Buffer[]) => {
    core.handle(frames, now);
    drain();
  };

  const heartbeat = (w: number) => feed((workerVersion.get(w) ?? 1) === 1 ? [workerId(w), E, B('MDPW01'), B([4])] : [workerId(w), B('MDPW02'), B([5])]);
  const reply = (w: number, partial: boolean) => {
    // A reply for a request it does not hold goes to client 0's address: the broker must not deliver it.
    const job = held.get(w) ?? { client: clientId(0), body: B('stray') };
    const body = B(`reply:${job.body.toString()}`);
    if ((workerVersion.get(w) ?? 1) === 1) feed([workerId(w), E, B('MDPW01'), B([3]), job.client, E, body]);
    else feed([workerId(w), B('MDPW02'), B([partial ? 3 : 4]), job.client, E, body]);
    if (!partial || workerVersion.get(w) !== 2) held.delete(w);
  };
  const ready = (w: number, v: 1 | 2, s: number) => {
    workerVersion.set(w, v);
    feed(v === 1 ? [workerId(w), E, B('MDPW01'), B([1]), B(SERVICES[s])] : [workerId(w), B('MDPW02'), B([1]), B(SERVICES[s])]);
  };
  if (clean) for (let w = 0; w < 3; w++) ready(w, w === 1 ? 2 : 1, w);

  for (const a of actions) {
    now += a.dt;
    if (clean) {
      for (const w of workerVersion.keys()) heartbeat(w);
      for (const w of [...held.keys()]) reply(w, false);
    }
    switch (a.k) {
      case 'request': {
        const id = nextReq++;
        const env = Buffer.alloc(4);
        env.writeUInt32BE(id);
        answers.set(id, 0);
        asked.set(id, { c: a.c, v: a.v, svc: SERVICES[a.s] });
        const svc = B(SERVICES[a.s]);
        feed(a.v === 1 ? [clientId(a.c), env, E, B('MDPC01'), svc, B(`body-${id}`)] : [clientId(a.c), env, E, B('MDPC02'), B([1]), svc, B(`body-${id}`)]);
        break;
      }
      case 'ready':
        ready(a.w, a.v, a.s);
        break;
      case 'heartbeat':
        heartbeat(a.w);
        break;
      case 'reply':
        reply(a.w, a.partial);
        break;
      case 'disconnect':
        feed((workerVersion.get(a.w) ?? 1) === 1 ? [workerId(a.w), E, B('MDPW01'), B([5])] : [workerId(a.w), B('MDPW02'), B([6])]);
        held.delete(a.w);
        break;
      case 'garbage':
        feed([Buffer.from([0, 0, 0, 3, a.peer]), ...a.frames.map((f) => Buffer.from(f))]);
        break;
      case 'mutate':
        // Mutated messages come from their own peers, so they cannot fake a tracked request's answer.
        feed([Buffer.from([0, 0, 0, 4, a.base]), ...mutate(baseMessage(a.base), a.at, a.how, a.byte).slice(1)]);
        break;
      case 'tick':
        core.tick(now);
        drain();
        break;
      case 'workerGone':
        core.sendFailed(workerId(a.w), 'unreachable', now);
        drain();
        break;
    }
  }
  if (clean) for (const w of [...held.keys()]) reply(w, false);
  core.beginShutdown(now);
  drain();
  core.finishShutdown(now);
  drain();
  for (const [id, n] of answers) assert.equal(n, 1, `request ${id} answered ${n} times`);
  assert.deepEqual(core.snapshot(), { services: 0, workers: 0, idleWorkers: 0, busyWorkers: 0, queued: 0 });
  assert.equal(core.heldBytes, 0, 'every request that ended gave its bytes back to the budget');
  return errors;
}

test(`fuzz: random and mutated frame sequences (${RUNS} runs, seed ${SEED}): no throw, every request answered once, tables empty`, () => {
  fc.assert(fc.property(fc.array(action, { maxLength: 150 }), (actions) => {
    run(actions);
  }), { numRuns: RUNS, seed: SEED });
});

// Without faults nothing may fail: a broker that answered with error replies (say, `overloaded` to everything)
// passes the property above, which only asks that each request be answered once, and fails this one.
const calm: fc.Arbitrary<Action> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ k: fc.constant('request' as const), c: fc.nat(3), v: fc.constantFrom(1 as const, 2 as const), s: fc.nat(3), dt }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('tick' as const), dt }) },
);

test(`fuzz, no faults (${RUNS} runs, seed ${SEED}): every request served with the reply to its own body, no error reply`, () => {
  fc.assert(fc.property(fc.array(calm, { minLength: 1, maxLength: 150 }), (actions) => {
    assert.deepEqual(run(actions, true), {}, 'no error replies');
  }), { numRuns: RUNS, seed: SEED });
});
