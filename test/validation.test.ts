// --validate: bodies checked before queueing, inline or in the piscina pool; rejections are typed errors; the
// order of requests is kept.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from '../src/client/client.js';
import { Worker } from '../src/client/worker.js';
import { BrokerError } from '../src/client/errors.js';
import { parseValidateFlags } from '../src/broker/validation.js';
import { startBroker, until } from './helpers.js';
import { TestCore } from './support/test-core.js';

const HB = { heartbeatInterval: 100, heartbeatLiveness: 3 };
const E = Buffer.alloc(0);
const B = (s: string | number[]) => (typeof s === 'string' ? Buffer.from(s) : Buffer.from(s));

test('core: requests wait for their verdict, in arrival order, also those of services without checks', () => {
  const core = new TestCore({ validates: (s) => s === 'checked' });
  const W = B([0, 0, 0, 0, 9]);
  const C = B([0, 0, 0, 0, 1]);
  core.handle([W, E, B('MDPW01'), B([1]), B('free')], 0);
  core.handle([C, E, B('MDPC01'), B('checked'), B('{bad')], 1);
  core.handle([C, E, B('MDPC01'), B('free'), B('after')], 2); // must not overtake the one before it
  assert.equal(core.out.length, 0);
  assert.deepEqual(core.toValidate.map((a) => [a.serviceName, a.needsCheck]), [['checked', true], ['free', false]]);
  const batch = core.toValidate.splice(0);
  core.admit(batch, ['not JSON', null], 3);
  const out = core.out.splice(0).map((m) => m.map(String));
  assert.deepEqual(out[0].slice(2), ['MDPC01', 'checked', '\0error', 'rejected', 'not JSON']);
  assert.deepEqual(out[1].slice(-1), ['after']);
  assert.equal(core.stats.errors.rejected, 1);
  // Nothing pending: the next request goes straight through.
  core.handle([W, E, B('MDPW01'), B([3]), C, E, B('ok')], 4);
  core.out.length = 0;
  core.handle([C, E, B('MDPC01'), B('free'), B('direct')], 5);
  assert.equal(core.out.length, 1);
});

test('--validate flags are parsed, and bad ones are refused with the reason', () => {
  assert.deepEqual(parseValidateFlags(['json@orders', 'max-body=10']), [
    { check: 'json', service: 'orders' },
    { check: 'max-body', service: null, maxBody: 10 },
  ]);
  assert.throws(() => parseValidateFlags(['xml']), /expected utf8, json/);
  assert.throws(() => parseValidateFlags(['json@']), /empty service/);
});

for (const offload of ['none', 'validation'] as const) {
  test(`json, max-body and a validator module (${offload === 'none' ? 'inline' : 'in the pool'})`, async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'mdval-'));
    const mod = join(dir, 'no-evil.mjs');
    writeFileSync(mod, "export default (service, body) => body.some((f) => f.includes('evil')) ? 'no evil in ' + service : null;\n");
    const { broker, endpoint } = await startBroker({
      ...HB, offload, validate: ['json@orders', 'max-body=64@orders', `module=${mod}`],
    });
    const seen: string[] = [];
    const orders = new Worker({ endpoint, service: 'orders', ...HB, handler: (b) => { seen.push(b[0].toString()); return 'ok'; } });
    const other = new Worker({ endpoint, service: 'other', ...HB, handler: () => 'ok' });
    const client = new Client({ endpoints: endpoint });
    t.after(async () => {
      client.close();
      await orders.close();
      await other.close();
      await broker.close();
      rmSync(dir, { recursive: true, force: true });
    });
    assert.ok(await until(() => broker.snapshot().workers === 2));
    assert.deepEqual((await client.request('orders', '{"n":1}')).map(String), ['ok']);
    const rejected = async (service: string, body: string, reason: RegExp) => {
      await assert.rejects(client.request(service, body), (err: unknown) => {
        assert.ok(err instanceof BrokerError);
        assert.equal(err.code, 'rejected');
        assert.match(err.message, reason);
        return true;
      });
    };
    await rejected('orders', '{"n":', /not valid JSON/);
    await rejected('orders', JSON.stringify({ pad: 'x'.repeat(100) }), /limit 64/);
    await rejected('other', 'evil plan', /no evil in other/);
    assert.deepEqual((await client.request('other', 'not json, fine')).map(String), ['ok']);

    // Pipelined valid and invalid requests: the valid ones reach the worker in the order sent.
    seen.length = 0;
    const results = await Promise.allSettled(Array.from({ length: 40 }, (_, i) => client.request('orders', i % 3 === 0 ? `{"i":${i}` : `{"i":${i}}`)));
    assert.equal(results.filter((r) => r.status === 'rejected').length, 14);
    assert.deepEqual(seen, Array.from({ length: 40 }, (_, i) => i).filter((i) => i % 3 !== 0).map((i) => `{"i":${i}}`));
    assert.ok(await until(() => broker.stats().errors.rejected === 17));
  });
}
