// The mdbroker command: flags, logs, and a clean stop on SIGTERM/SIGINT that tells workers DISCONNECT.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
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
});

test('SIGTERM: workers are told DISCONNECT and the broker exits 0', async (t) => {
  const { child, endpoint, lines } = await startCli(['--heartbeat-interval', '200']);
  t.after(() => child.kill('SIGKILL'));
  const w = new RawPeer(endpoint);
  t.after(() => w.close());
  await w.send(['', 'MDPW01', [1], 'svc']);
  assert.deepEqual(show(await w.recv(2000)), ['', 'MDPW01', '\x04'], 'registered: heartbeats flow');
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  child.kill('SIGTERM');
  assert.deepEqual(show(await w.recvSkippingHeartbeats(3000)), ['', 'MDPW01', '\x05']);
  assert.equal(await exited, 0);
  assert.ok(lines.some((l) => l.includes('"msg":"stopped"')));
});

test('a port already in use: a clear error and exit 1', async (t) => {
  const { child, endpoint } = await startCli([]);
  t.after(() => child.kill('SIGKILL'));
  const second = run(['--bind', endpoint]);
  assert.equal(second.status, 1);
  assert.match(second.stdout, /cannot bind/);
});
