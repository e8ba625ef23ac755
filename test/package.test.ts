// The package as npm would publish it: what it holds, what it needs, and that `mdbroker/client` stays light.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Broker } from '../src/broker/broker.js';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const pkg = JSON.parse(readFileSync(`${ROOT}package.json`, 'utf8')) as {
  dependencies: Record<string, string>; scripts: Record<string, string>; engines: { node: string }; files: string[];
};

test('npm pack holds the built library, its sources and LICENSE; no tests, bench results or orphan source maps', () => {
  // --ignore-scripts: the suite runs from dist/, which prepack would rebuild under it.
  const out = spawnSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: ROOT, encoding: 'utf8', timeout: 60000 });
  assert.equal(out.status, 0, out.stderr);
  const files = new Set((JSON.parse(out.stdout) as { files: { path: string }[] }[])[0].files.map((f) => f.path));
  for (const f of ['LICENSE', 'README.md', 'package.json', 'dist/src/index.js', 'dist/src/index.d.ts', 'dist/src/cli.js', 'dist/src/client/index.js', 'dist/src/broker/offload-worker.js']) {
    assert.ok(files.has(f), `${f} is in the package`);
  }
  const stray = [...files].filter((f) => /^(dist\/)?(test|bench|scripts)\//.test(f) || f.startsWith('.ci/'));
  assert.deepEqual(stray, [], 'no tests, bench code or results, scripts or CI files');
  for (const f of files) {
    if (f.endsWith('.js.map')) assert.ok(files.has(f.replace(/^dist\//, '').replace(/\.js\.map$/, '.ts')), `${f} ships with its source`);
  }
  assert.match(readFileSync(`${ROOT}LICENSE`, 'utf8'), /^Mozilla Public License Version 2\.0/);
});

test('package.json: a prepack build, runtime dependencies only, engines where require() of the package works', () => {
  assert.match(pkg.scripts.prepack, /npm run build/);
  for (const dev of ['chartscii', 'tinybench', 'fast-check', 'typescript']) assert.equal(pkg.dependencies[dev], undefined, `${dev} is not a runtime dependency`);
  // require() of an ES module works unflagged from Node 20.19 and 22.12; engines admits nothing older, and only the
  // majors CI runs the suite on (20, 22, 24).
  assert.equal(pkg.engines.node, '^20.19.0 || ^22.12.0 || ^24.0.0');
  const req = spawnSync(process.execPath, ['-e', "const m = require('mdbroker'); const c = require('mdbroker/client'); process.stdout.write(typeof m.Broker + ' ' + typeof c.Client)"], { cwd: ROOT, encoding: 'utf8', timeout: 30000 });
  assert.equal(req.status, 0, req.stderr);
  assert.equal(req.stdout, 'function function');
});

test('mdbroker/client loads none of the broker-only dependencies, nor a native addon (zeromq, sodium-native)', () => {
  const script = `
    import { createRequire } from 'node:module';
    await import('mdbroker/client');
    const cache = createRequire(import.meta.url)('module')._cache;
    const pkgs = new Set(Object.keys(cache).map((k) => /node_modules\\/((@[^/]+\\/)?[^/]+)/.exec(k)?.[1]).filter(Boolean));
    process.stdout.write(JSON.stringify([...pkgs]));`;
  const out = spawnSync(process.execPath, ['--input-type=module', '-e', script], { cwd: ROOT, encoding: 'utf8', timeout: 30000 });
  assert.equal(out.status, 0, out.stderr);
  const loaded = JSON.parse(out.stdout) as string[];
  assert.ok(loaded.includes('mnemonist'), 'the check sees CommonJS packages loaded from ESM');
  for (const heavy of ['piscina', 'pino', 'prom-client', 'hdr-histogram-js', 'zeromq', 'sodium-native']) assert.ok(!loaded.includes(heavy), `${heavy} not loaded: ${loaded.join(', ')}`);
});

test('TypeScript on moduleResolution node10 finds the types of mdbroker/client (typesVersions), every error class among them', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mdb-node10-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(join(dir, 'node_modules'));
  symlinkSync(ROOT, join(dir, 'node_modules', 'mdbroker'), 'dir');
  writeFileSync(join(dir, 'app.ts'), [
    "import { Client, Worker, BrokerError, TimeoutError, RefusedError, AbortError, EndpointError, ClosedError, MdpError } from 'mdbroker/client';",
    'const classes: (new (...a: never[]) => Error)[] = [BrokerError, TimeoutError, RefusedError, AbortError, EndpointError, ClosedError, MdpError];',
    'export const used = [Client, Worker, classes];',
  ].join('\n'));
  const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
  const out = spawnSync(process.execPath, [tsc, '--noEmit', '--strict', '--skipLibCheck', '--moduleResolution', 'node10', '--module', 'commonjs', '--target', 'es2022', '--types', 'node', '--typeRoots', join(ROOT, 'node_modules', '@types'), 'app.ts'], { cwd: dir, encoding: 'utf8', timeout: 60000 });
  assert.equal(out.status, 0, out.stdout + out.stderr);
});

test("the README's first code example compiles (strict, nodenext) and runs against two live brokers", async (t) => {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## Client and worker libraries'));
  const code = /```ts\n([\s\S]*?)```/.exec(section)?.[1];
  assert.ok(code !== undefined, 'the example is there');
  const a = new Broker({ bind: ['tcp://127.0.0.1:*'], statsInterval: 0, shutdownGrace: 200 });
  const b = new Broker({ bind: ['tcp://127.0.0.1:*'], statsInterval: 0, shutdownGrace: 200 });
  await a.start();
  await b.start();
  t.after(async () => {
    await a.close();
    await b.close();
  });
  const dir = mkdtempSync(join(tmpdir(), 'mdb-readme-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(join(dir, 'node_modules'));
  symlinkSync(ROOT, join(dir, 'node_modules', 'mdbroker'), 'dir');
  writeFileSync(join(dir, 'package.json'), '{ "type": "module" }');
  // The example's fixed ports become the two brokers' (the OS picked them); nothing else changes.
  writeFileSync(join(dir, 'example.ts'), code.replaceAll('tcp://127.0.0.1:5555', a.endpoints[0]).replaceAll('tcp://127.0.0.1:5556', b.endpoints[0]));
  const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
  const built = spawnSync(process.execPath, [tsc, '--strict', '--skipLibCheck', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--target', 'es2022', '--types', 'node', '--typeRoots', join(ROOT, 'node_modules', '@types'), 'example.ts'], { cwd: dir, encoding: 'utf8', timeout: 60000 });
  assert.equal(built.status, 0, built.stdout + built.stderr);
  // Not spawnSync: the brokers run in this process and must keep serving while the example runs.
  const child = spawn(process.execPath, ['example.js'], { cwd: dir });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const killer = setTimeout(() => child.kill('SIGKILL'), 30000);
  const exit = await new Promise<number | null>((r) => child.once('exit', r));
  clearTimeout(killer);
  assert.equal(exit, 0, stderr);
  assert.match(stdout, /\[ 'hello', 'world' \]/, stderr);
});
