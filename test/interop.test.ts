// Plain MDP peers in another language (Python, pyzmq), written from the RFCs, against our broker.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { startBroker } from './helpers.js';

const PY = process.env.MDP_PYTHON ?? '/usr/bin/python3';
const hasPyzmq = spawnSync(PY, ['-c', 'import zmq'], { timeout: 10000 }).status === 0;
const SCRIPT = fileURLToPath(new URL('../../test/interop/mdp_peers.py', import.meta.url));

test('pyzmq MDP/0.1, MDP/0.2 and MMI peers work unchanged', { skip: hasPyzmq ? false : `no pyzmq for ${PY} (apt-get install python3-zmq)` }, async (t) => {
  const { broker, endpoint } = await startBroker({ heartbeatInterval: 100, heartbeatLiveness: 3 });
  t.after(() => broker.close());
  const child = spawn(PY, [SCRIPT, endpoint, '100'], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.after(() => child.kill('SIGKILL'));
  let output = '';
  child.stdout.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr.on('data', (d: Buffer) => (output += d.toString()));
  const code = await new Promise<number | null>((r) => child.on('exit', r));
  assert.equal(code, 0, output);
  assert.match(output, /python peers: ok/);
});
