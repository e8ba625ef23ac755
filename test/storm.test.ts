// Hostile input against memory: 30,000 mutated, junk and large-bodied messages from 50 unauthenticated peers at a
// broker process with default flags. It must keep serving a real client and worker throughout, hold no more than
// its byte budget, stay under 400 MB at its peak (VmHWM), and come back within 100 MB of its idle RSS once the
// queues drain.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Client } from '../src/client/client.js';
import { Worker } from '../src/client/worker.js';
import { junkPeers, modeFlags, prng } from './helpers.js';
import { brokerMetric, spawnBroker } from './support/spawn-broker.js';

const COUNT = Number(process.env.STORM_COUNT ?? 30000);
const PEERS = 50;
const VOID = ['void0', 'void1', 'void2', 'void3', 'void4'];

const statusKiB = (pid: number, field: string) => Number(new RegExp(`${field}:\\s+(\\d+)`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);

test(`storm: ${COUNT} mutated, junk and large messages from ${PEERS} peers; served throughout, peak RSS bounded`, async (t) => {
  const { child, endpoint, metricsPort } = await spawnBroker(['--bind', 'tcp://127.0.0.1:*', '--metrics-port', '0', '--stats-interval', '0', ...modeFlags()]);
  t.after(() => child.kill('SIGKILL'));
  const pid = child.pid as number;
  const worker = new Worker({ endpoint, service: 'echo', handler: (b) => b });
  const client = new Client({ endpoints: endpoint, timeout: 10000 });
  const peers = junkPeers(endpoint, PEERS);
  t.after(async () => {
    client.close();
    await worker.close();
    for (const d of peers) d.close();
  });
  assert.deepEqual((await client.request('echo', 'warm')).map(String), ['warm']);
  await new Promise((r) => setTimeout(r, 500));
  const idle = statusKiB(pid, 'VmRSS');
  const external = async () => Number(/^nodejs_external_memory_bytes (\d+)/m.exec(await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text())?.[1] ?? -1);
  const external0 = await external();

  const rnd = prng(Number(process.env.STORM_SEED ?? 777));
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(rnd() * xs.length)];
  const headers = ['', 'MDPC01', 'MDPC02', 'MDPW01', 'MDPW02', 'echo', 'mmi.service', ...VOID];
  const small = (): Buffer => {
    const r = rnd();
    if (r < 0.4) return Buffer.from(pick(headers));
    if (r < 0.7) return Buffer.from([Math.floor(rnd() * 8)]);
    return Buffer.from(Array.from({ length: Math.floor(rnd() * 40) }, () => Math.floor(rnd() * 256)));
  };
  const body64k = Buffer.alloc(64 * 1024, 0x61);
  const body1m = Buffer.alloc(1024 * 1024, 0x62);
  let sent = 0;
  let large = 0;
  const valid: Promise<Buffer[]>[] = [];
  for (let i = 0; i < COUNT; i++) {
    const r = rnd();
    let frames: Buffer[];
    if (r < 0.005) frames = [Buffer.alloc(0), Buffer.from('MDPC01'), Buffer.from(pick(VOID)), body1m];
    else if (r < 0.06) frames = [Buffer.alloc(0), Buffer.from(pick(['MDPC01', 'MDPW01', 'MDPC02'])), Buffer.from(pick(VOID)), body64k];
    else frames = Array.from({ length: 1 + Math.floor(rnd() * 12) }, small);
    try {
      await pick(peers).send(frames);
      sent++;
      if (frames[frames.length - 1].length >= 65536) large++;
    } catch {
      // a full pipe: skip
    }
    if (i % 100 === 0) valid.push(client.request('echo', `v${i}`));
    if (i % 200 === 0) await new Promise((r2) => setImmediate(r2));
  }
  const replies = await Promise.all(valid);
  replies.forEach((rep, k) => assert.equal(rep[0].toString(), `v${k * 100}`));
  const peak = statusKiB(pid, 'VmHWM');
  const held = (await brokerMetric(metricsPort as number, 'heldBytes')) ?? -1;

  // The storm's peers leave (some had registered as workers by chance, and hold requests they will never answer:
  // their connections' end hands those back), and workers for the storm's services drain what the budget let in.
  for (const d of peers) d.close();
  const drainers = VOID.map((service) => new Worker({ endpoint, service, handler: () => 'ok' }));
  t.after(async () => {
    for (const d of drainers) await d.close();
  });
  // (Small junk requests for services nobody serves, e.g. "MDPW01", wait out --request-ttl: a few KiB.)
  const heldNow = async () => (await brokerMetric(metricsPort as number, 'heldBytes')) ?? -1;
  const drainedBy = Date.now() + 30000;
  while ((await heldNow()) > 1048576 && Date.now() < drainedBy) await new Promise((r) => setTimeout(r, 100));
  const left = await heldNow();
  assert.ok(left >= 0 && left < 1048576, `the queues drained: ${left} bytes held`);
  // The broker gives memory back once its queues have stayed low for a second (a full GC, then malloc_trim half a
  // second later, on its 1 s clock ticks): allow it a few seconds.
  const drainedAt = Date.now();
  let after = statusKiB(pid, 'VmRSS');
  // 100 MB; 120 MB on Node 24, which keeps more after the same collection and trim: measured 95-98 MiB above idle
  // on both transports there, before issue 22's changes too (Node 20: 56-67 MiB). docs/memory.md.
  const nodeMajor = Number(process.versions.node.split('.')[0]);
  const nearIdleKiB = ((nodeMajor >= 24 ? 120 : 100) * 1000 * 1000) / 1024;
  while (after - idle >= nearIdleKiB && Date.now() - drainedAt < 8000) {
    await new Promise((r) => setTimeout(r, 250));
    after = statusKiB(pid, 'VmRSS');
  }
  const returnedInMs = Date.now() - drainedAt;
  const external1 = await external();
  const mib = (k: number) => (k / 1024).toFixed(0);
  t.diagnostic(`${sent} sent (${large} with 64 KiB or 1 MiB bodies), ${valid.length} valid requests served; broker RSS idle ${mib(idle)} MiB, peak ${mib(peak)} MiB, held at the end of the storm ${(held / 1048576).toFixed(0)} MiB, after draining ${mib(after)} MiB within ${returnedInMs} ms (${left} bytes still held); Buffers outside the V8 heap ${mib(external0 / 1024)} -> ${mib(external1 / 1024)} MiB`);
  assert.equal(child.exitCode, null, 'broker still running');
  // The target is for default flags. With --shards (a heap and a malloc arena per shard thread) the peak measured
  // 386 MiB (2 shards) and 449 MiB (4); with --offload all (each request is also copied to the pool for validation)
  // ~450 MiB: reported, not asserted.
  if (modeFlags().length === 0) assert.ok(peak < 400 * 1024, `peak RSS ${mib(peak)} MiB`);
  // Back near idle: within 100 MB (Node 24: 120) of the idle RSS once the queues drained (memory-return.ts: a full GC, then
  // malloc_trim). Asserted where the peak is (default flags, either transport); with shards measured 102-104 MiB above
  // idle (2 and 4 shards), with offload 84-88: reported.
  if (!process.env.MDBROKER_TEST_SHARDS && !process.env.MDBROKER_TEST_OFFLOAD) {
    assert.ok(after - idle < nearIdleKiB, `RSS ${mib(after)} MiB after the drain, idle ${mib(idle)} MiB`);
  }
});
