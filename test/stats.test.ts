// Stats: Prometheus text on /metrics, mmi.stats over MDP, shard merging, under each place aggregation can run.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { get } from 'node:http';
import { spawnSync } from 'node:child_process';
import { Client } from '../src/client/client.js';
import { Worker } from '../src/client/worker.js';
import { aggregate } from '../src/broker/stats-report.js';
import { newHistogram, snapshotHistogram, type StatsSnapshot } from '../src/core/stats.js';
import { startBroker, until } from './helpers.js';
import { Dealer } from 'zeromq';

const HB = { heartbeatInterval: 100, heartbeatLiveness: 3 };

function fetchText(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    get(url, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    }).on('error', reject);
  });
}

for (const offload of ['none', 'stats'] as const) {
  test(`/metrics shows per-service series and mmi.stats answers over MDP (aggregation: ${offload === 'none' ? 'inline' : 'pool'})`, async (t) => {
    const { broker, endpoint } = await startBroker({ ...HB, offload, metricsPort: 0, statsInterval: 0 });
    const worker = new Worker({ endpoint, service: 'echo', ...HB, handler: async (b) => { await new Promise((r) => setTimeout(r, 2)); return b; } });
    const client = new Client({ endpoints: endpoint });
    t.after(async () => {
      client.close();
      await worker.close();
      await broker.close();
    });
    assert.ok(await until(() => broker.snapshot().workers === 1));
    await Promise.all(Array.from({ length: 20 }, (_, i) => client.request('echo', String(i))));
    await assert.rejects(client.request('nobody', 'x', { timeout: 50, retries: 0 })); // queued, never served

    const { status, body } = await fetchText(`http://127.0.0.1:${broker.metricsPort}/metrics`);
    assert.equal(status, 200);
    assert.match(body, /^mdbroker_requests_total\{service="echo"\} 20$/m);
    assert.match(body, /^mdbroker_replies_total\{service="echo"\} 20$/m);
    assert.match(body, /^mdbroker_requests_total\{service="nobody"\} 1$/m);
    assert.match(body, /^mdbroker_queue_depth\{service="nobody"\} 1$/m);
    assert.match(body, /^mdbroker_workers\{service="echo",state="idle"\} 1$/m);
    // Prometheus conventions: counters are counters, latency is a histogram with _bucket, _sum and _count.
    assert.match(body, /^# TYPE mdbroker_requests_total counter$/m);
    assert.match(body, /^# TYPE mdbroker_service_time_seconds histogram$/m);
    assert.match(body, /^mdbroker_service_time_seconds_count\{service="echo"\} 20$/m);
    assert.match(body, /^mdbroker_service_time_seconds_bucket\{service="echo",le="\+Inf"\} 20$/m);
    const under1ms = /^mdbroker_service_time_seconds_bucket\{service="echo",le="0.001"\} (\d+)$/m.exec(body);
    assert.equal(under1ms?.[1], '0', 'no reply of the 2 ms handler took under 1 ms');
    const sum = /^mdbroker_service_time_seconds_sum\{service="echo"\} ([\d.e-]+)$/m.exec(body);
    assert.ok(sum && Number(sum[1]) >= 0.04, `service time sum covers 20 x 2 ms: ${sum?.[1]}`);
    assert.match(body, /^# TYPE mdbroker_malformed_total counter$/m);
    assert.doesNotMatch(body, /mdbroker_broker\{/, 'no catch-all family mixing counters and gauges');
    // Process metrics from prom-client's default collectors.
    assert.match(body, /^process_cpu_user_seconds_total \d/m);
    assert.match(body, /^nodejs_eventloop_lag_p99_seconds \d/m);
    assert.equal((await fetchText(`http://127.0.0.1:${broker.metricsPort}/nope`)).status, 404);

    const all = JSON.parse((await client.request('mmi.stats'))[0].toString()) as { services: Record<string, { requests: number; replies: number }> };
    assert.equal(all.services.echo.requests, 20);
    assert.equal(all.services.echo.replies, 20);
    const one = JSON.parse((await client.request('mmi.stats', 'echo'))[0].toString()) as { service: string; replies: number };
    assert.equal(one.service, 'echo');
    assert.equal(one.replies, 20);
    assert.deepEqual((await client.request('mmi.stats', 'no-such-service')).map(String), ['404']);
  });
}

test('/healthz: 200 while serving, 503 from the first moment of a drain (a request still running)', async (t) => {
  const { broker, endpoint } = await startBroker({ ...HB, metricsPort: 0, statsInterval: 0, shutdownGrace: 3000 });
  const url = `http://127.0.0.1:${broker.metricsPort}/healthz`;
  let release: () => void = () => undefined;
  const worker = new Worker({ endpoint, service: 'slow', ...HB, handler: () => new Promise<string>((r) => (release = () => r('done'))) });
  const client = new Client({ endpoints: endpoint });
  t.after(async () => {
    client.close();
    await worker.close();
  });
  assert.deepEqual(await fetchText(url), { status: 200, body: '{"status":"serving"}\n' });
  assert.ok(await until(() => broker.snapshot().workers === 1));
  const reply = client.request('slow', 'x');
  assert.ok(await until(() => broker.snapshot().busyWorkers === 1));
  const closed = broker.close();
  assert.deepEqual(await fetchText(url), { status: 503, body: '{"status":"draining"}\n' }, 'draining: the load balancer stops sending');
  assert.equal((await fetchText(`http://127.0.0.1:${broker.metricsPort}/metrics`)).status, 200, '/metrics still answers during the drain');
  release();
  assert.deepEqual((await reply).map(String), ['done'], 'the request running at the drain is answered');
  await closed;
});

test('/metrics: promtool check metrics is clean; every family has a help text that says what it counts; build info', async (t) => {
  const { broker, endpoint } = await startBroker({ ...HB, metricsPort: 0, statsInterval: 0 });
  const worker = new Worker({ endpoint, service: 'echo', ...HB, handler: (b) => b });
  const client = new Client({ endpoints: endpoint });
  t.after(async () => {
    client.close();
    await worker.close();
    await broker.close();
  });
  await Promise.all(Array.from({ length: 10 }, (_, i) => client.request('echo', String(i))));
  await assert.rejects(client.request('nobody', 'x', { timeout: 50, retries: 0 }));
  const { body } = await fetchText(`http://127.0.0.1:${broker.metricsPort}/metrics`);
  // Debian's prometheus package has promtool; CI installs it (MDBROKER_REQUIRE_PROMTOOL=1 makes its absence a failure).
  const promtool = spawnSync('promtool', ['check', 'metrics'], { input: body, encoding: 'utf8' });
  if (promtool.error === undefined || process.env.MDBROKER_REQUIRE_PROMTOOL === '1') {
    assert.equal(promtool.status, 0, `promtool check metrics: ${promtool.stdout}${promtool.stderr}${String(promtool.error ?? '')}`);
  } else {
    t.diagnostic('promtool not installed (apt-get install prometheus): only the checks below ran');
  }
  assert.match(body, /^mdbroker_build_info\{version="\d+\.\d+\.\d+",node="v\d+\.\d+\.\d+"\} 1$/m);
  const helps = body.split('\n').filter((l) => l.startsWith('# HELP mdbroker_'));
  assert.ok(helps.length >= 20, `${helps.length} mdbroker families`);
  for (const h of helps) assert.match(h, /^# HELP mdbroker_\w+ [A-Z][^\n]{10,}$/, h);
  assert.ok(!helps.some((h) => /Broker-wide: [a-z]+[A-Z]/.test(h)), 'no raw camelCase stats keys as help');
  assert.match(body, /^# TYPE mdbroker_event_loop_delay_p99_seconds gauge$/m);
});

test('mmi.stats answers current figures with --stats-interval 0 and no /metrics scrape', async (t) => {
  const { broker, endpoint } = await startBroker({ ...HB, statsInterval: 0 });
  const worker = new Worker({ endpoint, service: 'echo', ...HB, handler: (b) => b });
  const client = new Client({ endpoints: endpoint });
  t.after(async () => {
    client.close();
    await worker.close();
    await broker.close();
  });
  assert.ok(await until(() => broker.snapshot().workers === 1));
  const asked = async () => (JSON.parse((await client.request('mmi.stats', 'echo'))[0].toString()) as { replies: number }).replies;
  for (const total of [5, 12]) {
    const before = total === 5 ? 0 : 5;
    await Promise.all(Array.from({ length: total - before }, (_, i) => client.request('echo', String(i))));
    assert.equal(await asked(), total, 'the answer includes every reply sent before the question');
  }
  // Many questions at once share one aggregation and all get answered.
  const answers = await Promise.all(Array.from({ length: 50 }, () => asked()));
  assert.ok(answers.every((n) => n === 12));
});

test('mmi.stats is answered in the turn it is asked: asked before mmi.service in one write, its reply comes first', { skip: Number(process.env.MDBROKER_TEST_SHARDS ?? 1) > 1 ? 'shards: figures come from other threads, a turn later' : false }, async (t) => {
  const { broker, endpoint } = await startBroker({ ...HB });
  const dealer = new Dealer();
  t.after(async () => {
    dealer.close();
    await broker.close();
  });
  dealer.connect(endpoint);
  for (let round = 0; round < 5; round++) {
    await Promise.all([
      dealer.send(['', 'MDPC01', 'mmi.stats', '']),
      dealer.send(['', 'MDPC01', 'mmi.service', 'echo']),
    ]);
    const first = (await dealer.receive()).map(String);
    const second = (await dealer.receive()).map(String);
    assert.deepEqual([first[2], second[2]], ['mmi.stats', 'mmi.service'], `round ${round}: the replies in the order asked`);
    assert.ok(JSON.parse(first[3]).global !== undefined, 'a whole report');
    assert.equal(second[3], '404');
  }
});

test('aggregation merges shard snapshots: counters add up, percentiles come from the merged histogram', async () => {
  const shard = (name: string, values: number[], requests: number): StatsSnapshot => {
    const wait = newHistogram();
    const svc = newHistogram();
    for (const v of values) svc.recordValue(v);
    return {
      at: 1000, uptimeMs: 1000, global: { requests, replies: values.length },
      services: [{
        name, requests, replies: values.length, requeued: 0,
        errors: { expired: 0, overloaded: 0, failed: 1, invalid: 0, shutdown: 0, rejected: 0, denied: 0 },
        queued: 0, workers: 2, idle: 1, wait: snapshotHistogram(wait), service: snapshotHistogram(svc),
      }],
    };
  };
  // Two shards that each saw the "_other" bucket, and one service per shard.
  const a = shard('_other', Array.from({ length: 99 }, () => 1000), 100);
  const b = shard('_other', [500_000], 1);
  const out = await aggregate({ current: [a, b], previous: null });
  const other = out.report.services._other;
  assert.equal(other.requests, 101);
  assert.equal(other.replies, 100);
  assert.equal(other.errors.failed, 2);
  assert.equal(other.workers, 4);
  assert.equal(out.report.global.requests, 101);
  assert.ok(Math.abs(other.serviceTimeMs.p50 - 1) < 0.02, `p50 ${other.serviceTimeMs.p50}`);
  assert.ok(other.serviceTimeMs.max >= 499, `max ${other.serviceTimeMs.max}`);
  assert.match(out.prometheus, /mdbroker_errors_total\{service="_other",reason="failed"\} 2/);
});
