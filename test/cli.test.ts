// The mdbroker command: flags, logs, and a clean stop on SIGTERM/SIGINT that tells workers DISCONNECT.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawnSync, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createServer, type AddressInfo } from 'node:net';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RawPeer, modeFlags, show } from './helpers.js';
import { spawnBroker } from './support/spawn-broker.js';

const CLI = fileURLToPath(new URL('../src/cli.js', import.meta.url));

function run(args: string[]) {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 10000 });
}

/** Starts the broker and resolves with its bound endpoint and its log lines. */
function startCli(args: string[]): Promise<{ child: ChildProcess; endpoint: string; lines: string[] }> {
  return spawnBroker(['--bind', 'tcp://127.0.0.1:*', ...modeFlags(), ...args]);
}

test('--help and --version print and exit 0; a bad flag exits 2 with a readable message', () => {
  const help = run(['--help']);
  assert.equal(help.status, 0);
  for (const flag of ['--bind', '--heartbeat-interval', '--heartbeat-liveness', '--busy-timeout', '--max-attempts', '--request-ttl', '--max-queue', '--log-level']) {
    assert.ok(help.stdout.includes(flag), `help mentions ${flag}`);
  }
  assert.match(run(['--version']).stdout, /^\d+\.\d+\.\d+\n$/);
  const bad = run(['--heartbeat-interval', 'soon']);
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /--heartbeat-interval must be an integer/);
  const unknown = run(['--frobnicate']);
  assert.equal(unknown.status, 2);
  assert.match(unknown.stderr, /frobnicate/);
  const port = run(['--metrics-port', '99999']);
  assert.equal(port.status, 2, 'a port out of range is a usage error, not a failure to bind');
  assert.match(port.stderr, /--metrics-port must be an integer from 0 to 65535, got '99999'/);
  assert.doesNotMatch(help.stdout, /CURVE[^\n]*always use libzmq/, '--help: the zmtp transport speaks CURVE itself');
});

test('SIGTERM: workers are told DISCONNECT and the broker exits 0', async (t) => {
  const { child, endpoint, lines } = await startCli(['--heartbeat-interval', '200', '--stats-interval', '100']);
  t.after(() => child.kill('SIGKILL'));
  const w = new RawPeer(endpoint);
  t.after(() => w.close());
  await w.send(['', 'MDPW01', [1], 'svc']);
  assert.deepEqual(show(await w.recv(2000)), ['', 'MDPW01', '\x04'], 'registered: heartbeats flow');
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  child.kill('SIGTERM');
  assert.deepEqual(show(await w.recvSkippingHeartbeats(3000)), ['', 'MDPW01', '\x05']);
  assert.equal(await exited, 0);
  const at = (msg: string) => lines.findIndex((l) => l.includes(`"msg":"${msg}"`));
  assert.ok(at('stopped') > at('shutting down') && at('shutting down') >= 0, 'the stopped line comes after shutting down');
  // The periodic stats line: its figures are fields a log pipeline can read, not words in msg.
  const stats = lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.msg === 'stats');
  assert.ok(stats, 'a stats line within the run');
  for (const f of ['reqPerSec', 'repliesPerSec', 'workers', 'queued', 'errors', 'waitP99Ms', 'serviceP99Ms']) assert.equal(typeof stats[f], 'number', f);
  assert.equal(stats.workers, 1);
});

test('a port already in use: a clear error and exit 1', async (t) => {
  const { child, endpoint } = await startCli([]);
  t.after(() => child.kill('SIGKILL'));
  const second = run(['--bind', endpoint]);
  assert.equal(second.status, 1);
  assert.match(second.stdout, /cannot bind/);
});

test('startup failures name their real cause', async () => {
  const blocker = createServer();
  await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', () => r()));
  const port = (blocker.address() as AddressInfo).port;
  try {
    const metrics = run(['--bind', 'tcp://127.0.0.1:*', '--metrics-port', String(port)]);
    assert.equal(metrics.status, 1);
    assert.match(metrics.stdout, new RegExp(`cannot bind 127\\.0\\.0\\.1:${port}: in use`));
  } finally {
    blocker.close();
  }
  const missing = run(['--bind', 'tcp://127.0.0.1:*', '--validate', 'module=/no/such/validator.js']);
  assert.equal(missing.status, 1);
  assert.match(missing.stdout, /cannot start: Cannot find module '\/no\/such\/validator\.js'/);
  const scheme = run(['--bind', 'udp://127.0.0.1:5555']);
  assert.equal(scheme.status, 2);
  assert.match(scheme.stderr, /--bind udp:\/\/127\.0\.0\.1:5555: the broker binds tcp:\/\/HOST:PORT, ipc:\/\/PATH or inproc:\/\/NAME/);
  const noPort = run(['--bind', 'tcp://127.0.0.1']);
  assert.equal(noPort.status, 2);
  assert.match(noPort.stderr, /needs a port/);
});

test('errors about files name the file and what it is for, in words', () => {
  const dir = mkdtempSync(join(tmpdir(), 'mdbroker-files-'));
  try {
    const key = join(dir, 'broker');
    assert.equal(run(['keygen', key]).status, 0);
    const noKey = run(['--curve-secret-key', join(dir, 'missing.key')]);
    assert.equal(noKey.status, 2);
    assert.match(noKey.stderr, new RegExp(`key file ${join(dir, 'missing.key')}: cannot read: no such file`));
    const noList = run(['--curve-secret-key', `${key}.key`, '--allow-clients', join(dir, 'clients.txt')]);
    assert.match(noList.stderr, new RegExp(`allow-list ${join(dir, 'clients.txt')}: cannot read: no such file`));
    const access = join(dir, 'access.json');
    writeFileSync(access, '{ "workerGroups": [ }');
    const badJson = run(['--curve-secret-key', `${key}.key`, '--access', access]);
    assert.equal(badJson.status, 2);
    assert.match(badJson.stderr, new RegExp(`access file ${access}: not JSON: `));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('--config FILE: the flags as JSON, the command line over them; an unknown key or bad JSON is a usage error naming it', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mdbroker-config-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'mdbroker.json');
  writeFileSync(file, JSON.stringify({ bind: ['tcp://127.0.0.1:*'], 'metrics-port': 0, 'stats-interval': 0, 'log-level': 'warn' }));
  // log-level from the file would hide the listening line: the command line's info wins.
  const { child, endpoint, lines } = await spawnBroker(['--config', file, '--log-level', 'info']);
  t.after(() => child.kill('SIGKILL'));
  assert.match(endpoint, /^tcp:\/\/127\.0\.0\.1:\d+$/);
  const listening = JSON.parse(lines.find((l) => l.includes('mdbroker listening')) as string) as { metricsPort?: number };
  assert.ok((listening.metricsPort ?? 0) > 0, 'metrics-port from the file');
  writeFileSync(file, JSON.stringify({ 'heartbeat-intervall': 100 }));
  const typo = run(['--config', file]);
  assert.equal(typo.status, 2);
  assert.match(typo.stderr, /unknown key "heartbeat-intervall"/);
  writeFileSync(file, '{ "bind": ');
  const bad = run(['--config', file]);
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /is not valid JSON/);
  writeFileSync(file, JSON.stringify({ 'heartbeat-interval': 'soon' }));
  assert.match(run(['--config', file]).stderr, /--heartbeat-interval must be an integer/);
  assert.match(run(['--config', join(dir, 'missing.json')]).stderr, /cannot read --config .*missing\.json: ENOENT/);
});

test('mdbroker status ENDPOINT: services, workers and queue depths over MDP; --json for scripts; a clear error when nothing answers', async (t) => {
  const { child, endpoint } = await startCli(['--heartbeat-interval', '200', '--stats-interval', '0']);
  t.after(() => child.kill('SIGKILL'));
  const { Worker } = await import('../src/client/worker.js');
  const { Client } = await import('../src/client/client.js');
  const w = new Worker({ endpoint, service: 'echo', heartbeatInterval: 200, handler: (b) => b });
  const c = new Client({ endpoints: endpoint });
  t.after(async () => {
    c.close();
    await w.close();
  });
  await c.request('echo', 'x');
  await assert.rejects(c.request('nobody', 'x', { timeout: 100, retries: 0 })); // queued: no worker
  const status = (args: string[]) => new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    execFile(process.execPath, [CLI, 'status', ...args], { timeout: 10000 }, (err, stdout, stderr) => resolve({ code: err ? (err as { code?: number }).code ?? 1 : 0, stdout, stderr }));
  });
  const table = await status([endpoint]);
  assert.equal(table.code, 0, table.stderr);
  assert.match(table.stdout, /^tcp:\/\/127\.0\.0\.1:\d+: up \d+s(, \d+ shards)?; 2 services, 1 worker \(1 idle\), 1 queued; [\d.]+ requests\/s/);
  assert.match(table.stdout, /^SERVICE +WORKERS +IDLE +BUSY +QUEUED +REQUESTS/m);
  assert.match(table.stdout, /^echo +1 +1 +0 +0 +1 +1 /m);
  assert.match(table.stdout, /^nobody +0 +0 +0 +1 +1 +0 /m);
  const json = await status([endpoint, '--json']);
  assert.equal(json.code, 0, json.stderr);
  const report = JSON.parse(json.stdout) as { services: Record<string, { workers: number; queued: number }> };
  assert.deepEqual([report.services.echo.workers, report.services.nobody.queued], [1, 1]);
  const port = await new Promise<number>((r) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as AddressInfo).port;
      s.close(() => r(p));
    });
  });
  const none = await status([`tcp://127.0.0.1:${port}`, '--timeout', '500']);
  assert.equal(none.code, 1);
  assert.match(none.stderr, /^mdbroker status: no answer from tcp:\/\/127\.0\.0\.1:\d+ within 500 ms: is a broker running there/);
  assert.equal((await status([])).code, 2);
});

test('SIGHUP under load (config file re-read three times): nothing lost, no connection dropped, the broker keeps serving', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mdbroker-hup-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'mdbroker.json');
  writeFileSync(file, JSON.stringify({ 'heartbeat-interval': 200, 'stats-interval': 0, 'log-level': 'info' }));
  const { child, endpoint, lines } = await startCli(['--config', file]);
  t.after(() => child.kill('SIGKILL'));
  const { Worker } = await import('../src/client/worker.js');
  const { Client } = await import('../src/client/client.js');
  const workers = [0, 1].map(() => new Worker({ endpoint, service: 'echo', heartbeatInterval: 200, handler: (b) => [`ok:${b[0].toString()}`] }));
  let reconnects = 0;
  const c = new Client({ endpoints: endpoint, timeout: 10000 });
  c.on('disconnected', () => reconnects++);
  t.after(async () => {
    c.close();
    await Promise.all(workers.map((w) => w.close()));
  });
  const N = 3000;
  let sent = 0;
  const load = Promise.all(Array.from({ length: 32 }, async () => {
    const got: string[] = [];
    while (sent < N) {
      const i = sent++;
      got.push(`${i}=${(await c.request('echo', String(i)))[0].toString()}`);
    }
    return got;
  }));
  for (let k = 0; k < 3; k++) {
    await new Promise((r) => setTimeout(r, 150));
    // The log level changes each time: a reloadable setting, logged as changed.
    writeFileSync(file, JSON.stringify({ 'heartbeat-interval': 200, 'stats-interval': 0, 'log-level': k % 2 === 0 ? 'debug' : 'info' }));
    child.kill('SIGHUP');
  }
  const replies = (await load).flat();
  assert.equal(replies.length, N);
  assert.ok(replies.every((r) => r === `${r.split('=')[0]}=ok:${r.split('=')[0]}`), 'each request got its own reply');
  assert.equal(reconnects, 0, 'no connection dropped');
  const reloads = async () => lines.filter((l) => l.includes('SIGHUP: reloaded')).length;
  for (let i = 0; i < 50 && (await reloads()) < 3; i++) await new Promise((r) => setTimeout(r, 100));
  assert.equal(await reloads(), 3, 'every SIGHUP logged');
  assert.match(lines.find((l) => l.includes('SIGHUP: reloaded')) as string, /"changed":\["log-level"\]/);
  assert.equal(child.exitCode, null);
});

test('keygen writes a key pair and refuses to overwrite one unless told --force', () => {
  const dir = mkdtempSync(join(tmpdir(), 'mdbroker-keygen-'));
  try {
    const name = join(dir, 'broker');
    const first = run(['keygen', name]);
    assert.equal(first.status, 0, first.stderr);
    const key = readFileSync(`${name}.key`, 'utf8');
    const again = run(['keygen', name]);
    assert.equal(again.status, 2);
    assert.match(again.stderr, /already exist; add --force to replace the key pair/);
    assert.equal(readFileSync(`${name}.key`, 'utf8'), key, 'the existing secret key is untouched');
    const forced = run(['keygen', name, '--force']);
    assert.equal(forced.status, 0, forced.stderr);
    assert.notEqual(readFileSync(`${name}.key`, 'utf8'), key);
    const nowhere = run(['keygen', join(dir, 'missing', 'broker')]);
    assert.equal(nowhere.status, 1);
    assert.equal(nowhere.stderr, `mdbroker: cannot write ${join(dir, 'missing', 'broker')}.key: no directory ${JSON.stringify(join(dir, 'missing'))}\n`, 'one line, no stack trace');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('Broker.close() leaves nothing running: a script that starts and closes a broker exits at once', () => {
  const broker = fileURLToPath(new URL('../src/broker/broker.js', import.meta.url));
  const script = `import { Broker } from ${JSON.stringify(broker)};
const b = new Broker({ bind: ['tcp://127.0.0.1:*'], statsInterval: 0 });
await b.start();
const t0 = Date.now();
await b.close();
process.on('exit', () => console.log('exit after ' + (Date.now() - t0) + ' ms'));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 20000 });
  assert.equal(r.status, 0, r.stderr);
  const ms = Number(/exit after (\d+) ms/.exec(r.stdout)?.[1]);
  // The default shutdown grace is 5 s; nothing may wait it out once close() has resolved.
  assert.ok(ms < 2000, `process exited ${ms} ms after close()`);
});
