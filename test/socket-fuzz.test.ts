// Socket-level fuzzing: malformed multipart messages thrown at a running broker process while real traffic flows.
// The broker must keep serving every valid request, count the junk, and not grow.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Client } from '../src/client/client.js';
import { Worker } from '../src/client/worker.js';
import { junkPeers, modeFlags, prng } from './helpers.js';
import { brokerMetric, spawnBroker } from './support/spawn-broker.js';

const COUNT = Number(process.env.SOCKET_FUZZ_COUNT ?? 4000);

const rssKiB = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);

test(`socket fuzz: ${COUNT} malformed messages at a live broker; valid traffic is all served`, async (t) => {
  const { child, endpoint, metricsPort } = await spawnBroker(['--bind', 'tcp://127.0.0.1:*', '--heartbeat-interval', '200', '--max-frame-bytes', '65536', '--log-level', 'info', '--stats-interval', '0', '--metrics-port', '0', ...modeFlags()]);
  t.after(() => child.kill('SIGKILL'));
  const worker = new Worker({ endpoint, service: 'echo', heartbeatInterval: 200, handler: (b) => b });
  const client = new Client({ endpoints: endpoint, timeout: 10000 });
  const junk = junkPeers(endpoint, 5);
  t.after(async () => {
    client.close();
    await worker.close();
    for (const d of junk) d.close();
  });
  await new Promise((r) => setTimeout(r, 300));
  const rss0 = rssKiB(child.pid as number);

  const seed = Number(process.env.SOCKET_FUZZ_SEED ?? 424242);
  const rnd = prng(seed);
  const pick = <T>(xs: T[]) => xs[Math.floor(rnd() * xs.length)];
  const headers = ['', 'MDPC01', 'MDPC02', 'MDPW01', 'MDPW02', 'MDPX01', 'echo', 'mmi.service'];
  const frame = (): Buffer => {
    const r = rnd();
    if (r < 0.4) return Buffer.from(pick(headers));
    if (r < 0.7) return Buffer.from([Math.floor(rnd() * 8)]);
    return Buffer.from(Array.from({ length: Math.floor(rnd() * 40) }, () => Math.floor(rnd() * 256)));
  };
  let sent = 0;
  const valid: Promise<Buffer[]>[] = [];
  for (let i = 0; i < COUNT; i++) {
    const frames = Array.from({ length: 1 + Math.floor(rnd() * 12) }, frame);
    try {
      await pick(junk).send(frames);
      sent++;
    } catch {
      // a full pipe: skip
    }
    if (i % 20 === 0) valid.push(client.request('echo', `v${i}`));
    if (i % 200 === 0) await new Promise((r) => setImmediate(r));
  }
  const replies = await Promise.all(valid);
  replies.forEach((r, k) => assert.equal(r[0].toString(), `v${k * 20}`));
  const malformed = (await brokerMetric(metricsPort as number, 'malformed')) ?? 0;
  assert.ok(sent > COUNT / 2, `sent ${sent}`);
  assert.ok(malformed > sent / 4, `junk was counted as malformed: ${malformed} of ${sent}`);
  const rss1 = rssKiB(child.pid as number);
  t.diagnostic(`seed ${seed}: ${sent} junk messages, ${valid.length} valid requests served; broker RSS ${(rss0 / 1024).toFixed(0)} -> ${(rss1 / 1024).toFixed(0)} MiB; ${malformed} counted malformed`);
  assert.ok(rss1 - rss0 < 64 * 1024, `RSS grew by ${(rss1 - rss0) / 1024} MiB`);
  assert.equal(child.exitCode, null, 'broker still running');
});
