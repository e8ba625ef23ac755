// Titanic (RFC 9) pieces on their own: the TSP frames, and the embedded store (durable across kill -9, byte budget,
// one broker per directory).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TITANIC_CLOSE, TITANIC_REPLY, TITANIC_REQUEST, answer, parseAsk, parseUuid } from '../src/titanic/tsp.js';
import { StoreError, TitanicStore } from '../src/titanic/store.js';

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

test('store: a request stored, answered, read back and removed; budgets in bytes; pending lists the unanswered, oldest first', async (t) => {
  const dir = tempDir();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const s = TitanicStore.open(dir, { maxBytes: 400 });
  await s.store('a'.repeat(32), B('echo'), [B('one'), Buffer.alloc(3, 0)], 2000);
  await s.store('b'.repeat(32), B('echo'), [B('two')], 1000);
  assert.equal(s.count, 2);
  assert.deepEqual(s.pending().map((p) => p.uuid), ['b'.repeat(32), 'a'.repeat(32)]);
  assert.equal(await s.answer('a'.repeat(32), [B('ONE')]), true);
  assert.equal(await s.answer('c'.repeat(32), [B('x')]), false, 'no reply for a request never stored');
  const a = s.get('a'.repeat(32));
  assert.deepEqual(a?.body.map((f) => f.toString('hex')), [B('one').toString('hex'), '000000']);
  assert.deepEqual(a?.reply?.map(String), ['ONE']);
  assert.deepEqual(s.pending().map((p) => p.uuid), ['b'.repeat(32)]);
  const before = s.bytes;
  await assert.rejects(s.store('d'.repeat(32), B('echo'), [Buffer.alloc(400)], 3000), (err: unknown) => err instanceof StoreError && /budget of 400/.test(err.message));
  assert.equal(s.bytes, before, 'nothing half-stored');
  assert.equal(s.get('d'.repeat(32)), undefined);
  assert.deepEqual(s.storedBefore(1500), ['b'.repeat(32)]);
  assert.equal(await s.remove('a'.repeat(32)), true);
  assert.equal(await s.remove('a'.repeat(32)), true, 'idempotent');
  assert.equal(s.count, 1);
  await s.close();
  const again = TitanicStore.open(dir, { maxBytes: 400 });
  t.after(() => again.close());
  assert.equal(again.count, 1);
  assert.equal(again.bytes, s.bytes, 'the budget is counted again from what is on disk');
});

test('store: what store() resolved survives kill -9; a live broker\'s lock refuses a second, a dead one\'s is taken over', async (t) => {
  const dir = tempDir();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const script = `
    import { TitanicStore } from ${JSON.stringify(new URL('../src/titanic/store.js', import.meta.url).href)};
    const s = TitanicStore.open(${JSON.stringify(dir)}, { maxBytes: 1 << 30 });
    await Promise.all(Array.from({ length: 300 }, (_, i) => s.store(i.toString(16).padStart(32, '0'), Buffer.from('echo'), [Buffer.from('body-' + i)], Date.now())));
    process.stdout.write('stored\\n');
    setInterval(() => {}, 1000);
  `;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.after(() => child.kill('SIGKILL'));
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => { if (d.toString().includes('stored')) resolve(); });
    child.once('exit', (code) => reject(new Error(`child exited ${code}`)));
  });
  assert.throws(() => TitanicStore.open(dir, { maxBytes: 1 << 30 }), (err: unknown) => err instanceof StoreError && new RegExp(`in use by another broker \\(pid ${child.pid}\\)`).test(err.message));
  child.kill('SIGKILL');
  await new Promise((r) => child.once('exit', r));
  const s = TitanicStore.open(dir, { maxBytes: 1 << 30 });
  t.after(() => s.close());
  assert.equal(s.pending().length, 300);
  assert.deepEqual(s.get((299).toString(16).padStart(32, '0'))?.body.map(String), ['body-299']);
});

test('store: a path that is not a directory is a readable error, and nothing is left locked', () => {
  const dir = tempDir();
  try {
    const file = join(dir, 'plain-file');
    writeFileSync(file, 'not a store');
    assert.throws(() => TitanicStore.open(file, { maxBytes: 100 }), (err: unknown) => err instanceof StoreError && /plain-file: not a writable directory \((EEXIST|ENOTDIR)\)/.test(err.message));
    assert.throws(() => TitanicStore.open(join(file, 'below'), { maxBytes: 100 }), /not a writable directory \(ENOTDIR\)/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
