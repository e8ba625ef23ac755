// A real PostgreSQL server for the tests, the chaos script and the bench: Debian's `postgresql` package (.ci/run
// installs it), a fresh cluster in a temporary directory, on a port the OS picked, run as the `postgres` user when
// this process is root (initdb refuses root). No mock: the Titanic store's claims are row locks, and only a server
// shows what they do when a broker dies.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './free-port.js';

export interface PostgresServer {
  /** postgres://postgres@127.0.0.1:PORT/postgres */
  url: string;
  port: number;
  /** Stops the server (fast shutdown) and deletes its cluster. */
  stop(): Promise<void>;
  /** Stops the server at once (immediate shutdown: no checkpoint, every session cut, as a crash) keeping its cluster; start() brings it back on the same port. */
  kill(): Promise<void>;
  start(): Promise<void>;
  /** The postmaster and its sessions' processes now (for CPU accounting). */
  pids(): number[];
  /** A new, empty database on this server (one per test or bench round); resolves its URL. */
  database(name: string): Promise<string>;
}

/** The directory holding Debian's PostgreSQL binaries (the newest version installed), or null. */
export function postgresBin(): string | null {
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return null;
  const versions = readdirSync(root).filter((v) => existsSync(join(root, v, 'bin', 'initdb'))).sort((a, b) => Number(b) - Number(a));
  return versions.length > 0 ? join(root, versions[0], 'bin') : null;
}

/** Why the PostgreSQL tests cannot run here, or null when they can. */
export function postgresMissing(): string | null {
  return postgresBin() === null ? 'PostgreSQL is not installed (apt-get install postgresql; .ci/run does)' : null;
}

const asRoot = typeof process.getuid === 'function' && process.getuid() === 0;

/** argv for running a PostgreSQL binary, as `postgres` when this process is root. */
function command(bin: string, args: string[]): [string, string[]] {
  return asRoot ? ['runuser', ['-u', 'postgres', '--', bin, ...args]] : [bin, args];
}

async function ready(port: number, timeoutMs: number): Promise<void> {
  const bin = postgresBin() as string;
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (spawnSync(join(bin, 'pg_isready'), ['-h', '127.0.0.1', '-p', String(port), '-q']).status === 0) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`PostgreSQL on port ${port} did not accept connections within ${timeoutMs} ms`);
}

/** initdb + postgres on 127.0.0.1 and a free port; resolves once it accepts connections. */
export async function startPostgres(): Promise<PostgresServer> {
  const bin = postgresBin();
  if (bin === null) throw new Error(postgresMissing() as string);
  const dir = mkdtempSync(join(tmpdir(), 'mdb-pg-'));
  if (asRoot) chownSync(dir, Number(spawnSync('id', ['-u', 'postgres']).stdout.toString()), Number(spawnSync('id', ['-g', 'postgres']).stdout.toString()));
  const data = join(dir, 'data');
  const [initCmd, initArgs] = command(join(bin, 'initdb'), ['-D', data, '-A', 'trust', '-U', 'postgres', '--no-sync', '-E', 'UTF8']);
  const init = spawnSync(initCmd, initArgs, { encoding: 'utf8' });
  if (init.status !== 0) throw new Error(`initdb failed: ${init.stderr || init.stdout}`);
  const port = await freePort();
  let child: ChildProcess | null = null;
  const start = async () => {
    // fsync stays on (the default): the bench's PostgreSQL row is measured with a synced commit per group.
    const [cmd, args] = command(join(bin, 'postgres'), ['-D', data, '-p', String(port), '-k', dir, '-c', 'listen_addresses=127.0.0.1', '-c', 'max_connections=200']);
    const c = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    child = c;
    let err = '';
    c.stderr?.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-4000)));
    const exited = new Promise<never>((_, reject) => c.once('exit', (code) => reject(new Error(`postgres exited with ${code}: ${err.trim()}`))));
    exited.catch(() => undefined);
    await Promise.race([ready(port, 20000), exited]);
  };
  const exit = async (signal: NodeJS.Signals) => {
    const c = child;
    child = null;
    if (c === null || c.exitCode !== null) return;
    const gone = new Promise((r) => c.once('exit', r));
    // Signalled through its pid file: runuser stands between us and the postmaster.
    const pid = postmasterPid(data);
    if (pid !== null) process.kill(pid, signal);
    else c.kill(signal);
    await gone;
  };
  await start();
  const url = `postgres://postgres@127.0.0.1:${port}/postgres`;
  return {
    url,
    port,
    start,
    kill: () => exit('SIGQUIT'),
    database: async (name) => {
      const { default: pg } = await import('pg');
      const c = new pg.Client({ connectionString: url });
      await c.connect();
      try {
        await c.query(`CREATE DATABASE ${name}`);
      } finally {
        await c.end();
      }
      return url.replace(/\/postgres$/, `/${name}`);
    },
    pids: () => {
      const main = postmasterPid(data);
      if (main === null) return [];
      const kids = spawnSync('pgrep', ['-P', String(main)], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean).map(Number);
      return [main, ...kids];
    },
    stop: async () => {
      await exit('SIGINT');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function postmasterPid(data: string): number | null {
  const r = spawnSync('head', ['-1', join(data, 'postmaster.pid')], { encoding: 'utf8' });
  const pid = Number(r.stdout.trim());
  return r.status === 0 && Number.isInteger(pid) && pid > 0 ? pid : null;
}
