// Titanic (RFC 9) pieces on their own: the TSP frames, and the embedded store (durable across kill -9, byte budget,
// one broker per directory).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TITANIC_CLOSE, TITANIC_REPLY, TITANIC_REQUEST, answer, parseAsk, parseUuid } from '../src/titanic/tsp.js';
import { StoreError, type DurableStore, type Stored } from '../src/titanic/durable-store.js';
import { LmdbStore } from '../src/titanic/lmdb-store.js';

const B = (s: string) => Buffer.from(s, 'latin1');
const UUID = '0123456789abcdef0123456789ABCDEF';

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'mdb-titanic-'));
}

test('TSP: titanic.request takes a printable service name and body frames; anything else is a 400 with the reason', () => {
  assert.deepEqual(parseAsk(TITANIC_REQUEST, [B('echo'), B('a'), B('b')], 255), { kind: 'request', service: B('echo'), body: [B('a'), B('b')] });
  const bad = (body: Buffer[]) => {
    const a = parseAsk(TITANIC_REQUEST, body, 8);
    return a.kind === 'bad' ? a.why : a.kind;
  };
  assert.equal(bad([]), 'no service frame');
  assert.equal(bad([B(''), B('x')]), 'no service frame');
  assert.equal(bad([B('echo')]), 'no request body frame');
  assert.equal(bad([B('much-too-long'), B('x')]), 'service name over 8 bytes');
  assert.equal(bad([B('a\x00b'), B('x')]), 'service name is not printable');
  assert.equal(bad([B('mmi.x'), B('x')]), 'titanic.* and mmi.* cannot be stored');
});

test('TSP: titanic.reply and titanic.close take one UUID frame of 32 hex characters, in either case', () => {
  assert.deepEqual(parseAsk(TITANIC_REPLY, [B(UUID)], 255), { kind: 'reply', uuid: UUID.toLowerCase() });
  assert.deepEqual(parseAsk(TITANIC_CLOSE, [B(UUID)], 255), { kind: 'close', uuid: UUID.toLowerCase() });
  for (const frames of [[], [B(UUID), B('x')], [B(UUID.slice(1))], [B(`${UUID.slice(1)}g`)], [B(`${UUID}0`)]]) {
    assert.equal(parseAsk(TITANIC_REPLY, frames, 255).kind, 'bad', frames.map(String).join('|'));
  }
  assert.equal(parseUuid(undefined), null);
  assert.deepEqual(answer(300).map(String), ['300']);
  assert.deepEqual(answer(200, [B('x'), B('y')]).map(String), ['200', 'x', 'y']);
  assert.deepEqual(answer(400, [], 'not a UUID').map(String), ['400 not a UUID']);
});

const rec = (uuid: string, storedAt: number, body: Buffer[], service = 'echo'): Stored => ({ uuid, storedAt, service: B(service), body, reply: null });
const U = (c: string) => c.repeat(32);

/**
 * What either store must do, as Titanic uses it: stored requests claimed once, oldest first; the first reply stays;
 * a request given back runs again only after its pause; the byte budget refuses at once; expiry; idempotent removal.
 */
async function contract(s: DurableStore): Promise<void> {
  const now = Date.now();
  assert.equal(await s.store(rec(U('a'), 2000, [B('one'), Buffer.alloc(3, 0)]), false), false, 'stored unclaimed');
  await s.store(rec(U('b'), 1000, [B('two')]), false);
  assert.deepEqual((await s.claim(10, now, null)).map((p) => p.uuid), [U('b'), U('a')], 'oldest first');
  assert.deepEqual(await s.claim(10, now, null), [], 'claimed once');
  assert.equal(await s.answer(U('a'), [B('ONE')]), true);
  assert.equal(await s.answer(U('a'), [B('AGAIN')]), false, 'the first reply stays');
  assert.equal(await s.answer(U('c'), [B('x')]), false, 'no reply for a request never stored');
  const a = await s.lookup(U('a'));
  assert.deepEqual(a?.body.map((f) => f.toString('hex')), [B('one').toString('hex'), '000000']);
  assert.deepEqual(a?.reply?.map(String), ['ONE']);
  assert.equal(a?.service.toString(), 'echo');
  assert.equal(a?.storedAt, 2000);
  await s.unclaim(U('b'), now + 60000);
  assert.deepEqual(await s.claim(10, now, null), [], 'given back: not before its pause');
  assert.deepEqual((await s.claim(10, now + 60000, null)).map((p) => p.uuid), [U('b')]);
  await assert.rejects(s.store(rec(U('d'), 3000, [Buffer.alloc(400)]), true), (err: unknown) => err instanceof StoreError && /budget of 400/.test(err.message));
  assert.equal(await s.lookup(U('d')), undefined, 'nothing half-stored');
  assert.deepEqual(await s.expire(1500), [U('b')]);
  assert.equal(await s.lookup(U('b')), undefined);
  await s.remove(U('a'));
  await s.remove(U('a'));
  assert.equal(await s.lookup(U('a')), undefined, 'removed (idempotent)');
}

test('store (LMDB): the store contract; counts, and the budget counted again from disk at open', async (t) => {
  const dir = tempDir();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const s = LmdbStore.open(dir, { maxBytes: 400 });
  await contract(s);
  await s.store(rec(U('e'), 5000, [B('kept')]), true);
  assert.deepEqual(s.counts(), { bytes: s.counts().bytes, records: 1, pending: 1 });
  const bytes = s.counts().bytes;
  await s.close();
  const again = LmdbStore.open(dir, { maxBytes: 400 });
  t.after(() => again.close());
  assert.deepEqual(again.counts(), { bytes, records: 1, pending: 1 }, 'counted again from what is on disk');
  assert.deepEqual((await again.claim(10, Date.now(), null)).map((p) => p.uuid), [U('e')], 'what had no reply runs after a restart');
});

test('store: what store() resolved survives kill -9; a live broker\'s lock refuses a second, a dead one\'s is taken over', async (t) => {
  const dir = tempDir();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const script = `
    import { LmdbStore } from ${JSON.stringify(new URL('../src/titanic/lmdb-store.js', import.meta.url).href)};
    const s = LmdbStore.open(${JSON.stringify(dir)}, { maxBytes: 1 << 30 });
    await Promise.all(Array.from({ length: 300 }, (_, i) => s.store({ uuid: i.toString(16).padStart(32, '0'), service: Buffer.from('echo'), body: [Buffer.from('body-' + i)], storedAt: Date.now(), reply: null }, true)));
    process.stdout.write('stored\\n');
    setInterval(() => {}, 1000);
  `;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.after(() => child.kill('SIGKILL'));
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => { if (d.toString().includes('stored')) resolve(); });
    child.once('exit', (code) => reject(new Error(`child exited ${code}`)));
  });
  assert.throws(() => LmdbStore.open(dir, { maxBytes: 1 << 30 }), (err: unknown) => err instanceof StoreError && new RegExp(`in use by another broker \\(pid ${child.pid}\\)`).test(err.message));
  child.kill('SIGKILL');
  await new Promise((r) => child.once('exit', r));
  const s = LmdbStore.open(dir, { maxBytes: 1 << 30 });
  t.after(() => s.close());
  assert.equal(s.pending().length, 300);
  assert.deepEqual(s.get((299).toString(16).padStart(32, '0'))?.body.map(String), ['body-299']);
});

test('store: a path that is not a directory is a readable error, and nothing is left locked', () => {
  const dir = tempDir();
  try {
    const file = join(dir, 'plain-file');
    writeFileSync(file, 'not a store');
    assert.throws(() => LmdbStore.open(file, { maxBytes: 100 }), (err: unknown) => err instanceof StoreError && /plain-file: not a writable directory \((EEXIST|ENOTDIR)\)/.test(err.message));
    assert.throws(() => LmdbStore.open(join(file, 'below'), { maxBytes: 100 }), /not a writable directory \(ENOTDIR\)/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
