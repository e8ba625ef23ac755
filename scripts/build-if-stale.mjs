// Builds (tsc -p .) only when a TypeScript source, tsconfig.json or package.json is newer than the last build, so
// `npm run bench -- --help` answers at once instead of after a 7 s compile. The build stamps dist/.build-stamp.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const ROOT = new URL('..', import.meta.url).pathname;
const STAMP = join(ROOT, 'dist', '.build-stamp');

function newest(dir) {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) t = Math.max(t, newest(p));
    else if (e.name.endsWith('.ts') || e.name.endsWith('.mjs') || e.name.endsWith('.json')) t = Math.max(t, statSync(p).mtimeMs);
  }
  return t;
}

const sources = Math.max(...['src', 'bench', 'test', 'scripts'].map((d) => newest(join(ROOT, d))), ...['tsconfig.json', 'package.json'].map((f) => statSync(join(ROOT, f)).mtimeMs));
if (!existsSync(STAMP) || statSync(STAMP).mtimeMs < sources) {
  const r = spawnSync(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', ROOT], { stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
  writeFileSync(STAMP, `${new Date().toISOString()}\n`);
}
