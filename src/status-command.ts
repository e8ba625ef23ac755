// `mdbroker status ENDPOINT`: what a running broker serves, asked over MDP itself (MMI, RFC 8, and mdbroker's
// mmi.stats), so it needs no metrics port: services, their workers (idle, busy), queue depths, request counts and
// latency. `--json` prints the broker's report as it came, for scripts.

import { parseArgs } from 'node:util';
import { Client } from './client/client.js';
import { Z85_KEY, readAllowList, readSecretKeyFile } from './broker/security.js';
import { TimeoutError } from './client/errors.js';
import { zeromq } from './sockets/zeromq.js';
import type { StatsReport } from './broker/stats-report.js';

export const STATUS_HELP = `Usage: mdbroker status ENDPOINT [options]

Asks a running broker what it serves (over MDP: mmi.stats), and prints its services, their workers (idle and
busy), queue depths, requests and latency.

  ENDPOINT                   the broker's endpoint, e.g. tcp://127.0.0.1:5555
  --json                     print the broker's report as JSON (for scripts)
  --timeout MS               how long to wait for an answer (default 3000)
  --curve-server-key KEY     the broker's CURVE public key (Z85), or a file holding it (NAME.pub)
  --curve-key FILE           this command's key pair (from 'mdbroker keygen'); default: a new one each run
                             (enough where the broker has no --allow-clients list)
  -h, --help                 this text

Exit status: 0 when the broker answered, 1 when nothing answered or the answer was not mdbroker's report, 2 for
a usage error.
`;

/** A key given as Z85 text or as a file holding one. */
function serverKey(arg: string): string {
  if (Z85_KEY.test(arg)) return arg;
  const keys = [...readAllowList(arg)];
  if (keys.length !== 1) throw new Error(`${arg} holds ${keys.length} keys; give the broker's one public key`);
  return keys[0];
}

/** A rate as a person reads it: whole numbers from 10 up, one decimal below. */
function rate(x: number): number {
  return x >= 10 ? Math.round(x) : Math.round(x * 10) / 10;
}

function duration(ms: number): string {
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${s % 60}s`;
  return `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m`;
}

/** The report as a table a person reads. */
export function formatStatus(endpoint: string, r: StatsReport): string {
  const names = Object.keys(r.services).sort();
  const g = r.global;
  const sum = (k: 'workers' | 'idle' | 'queued') => names.reduce((a, n) => a + r.services[n][k], 0);
  const head = `${endpoint}: up ${duration(r.uptimeMs)}${r.shards > 1 ? `, ${r.shards} shards` : ''}; ${names.length} service${names.length === 1 ? '' : 's'}, ` +
    `${sum('workers')} worker${sum('workers') === 1 ? '' : 's'} (${sum('idle')} idle), ${sum('queued')} queued; ` +
    `${rate(r.rates.requestsPerSec)} requests/s; ${g.connections ?? '?'} connections`;
  if (names.length === 0) return `${head}\n(no services: no worker has registered and no request was sent)\n`;
  const rows = [['SERVICE', 'WORKERS', 'IDLE', 'BUSY', 'QUEUED', 'REQUESTS', 'REPLIES', 'ERRORS', 'REQ/S', 'WAIT P99 MS', 'SERVICE P99 MS']];
  for (const n of names) {
    const s = r.services[n];
    const errors = Object.values(s.errors).reduce((a, x) => a + x, 0);
    rows.push([n, s.workers, s.idle, s.busy, s.queued, s.requests, s.replies, errors, rate(s.requestsPerSec), s.queueWaitMs.p99, s.serviceTimeMs.p99].map(String));
  }
  const widths = rows[0].map((_, i) => Math.max(...rows.map((row) => row[i].length)));
  const lines = rows.map((row) => row.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  '));
  return `${head}\n${lines.join('\n')}\n`;
}

/** Runs the command; resolves the exit status. */
export async function statusCommand(argv: string[], out: (s: string) => void, err: (s: string) => void): Promise<number> {
  let values: Record<string, string | boolean | undefined>;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: argv, allowPositionals: true, strict: true,
      options: { json: { type: 'boolean' }, timeout: { type: 'string' }, 'curve-server-key': { type: 'string' }, 'curve-key': { type: 'string' }, help: { type: 'boolean', short: 'h' } },
    }));
  } catch (e) {
    err(`mdbroker status: ${(e as Error).message}\nTry 'mdbroker status --help'.\n`);
    return 2;
  }
  if (values.help) {
    out(STATUS_HELP);
    return 0;
  }
  const timeout = values.timeout === undefined ? 3000 : Number(values.timeout);
  if (positionals.length !== 1 || !Number.isInteger(timeout) || timeout < 1) {
    err(`mdbroker status: ${positionals.length !== 1 ? 'give one ENDPOINT' : `--timeout must be a positive integer of ms, got '${String(values.timeout)}'`}\nTry 'mdbroker status --help'.\n`);
    return 2;
  }
  const endpoint = positionals[0];
  let curve: { serverKey: string; publicKey: string; secretKey: string } | undefined;
  try {
    if (typeof values['curve-server-key'] === 'string') {
      const own = typeof values['curve-key'] === 'string' ? readSecretKeyFile(values['curve-key']) : zeromq().curveKeyPair();
      curve = { serverKey: serverKey(values['curve-server-key']), publicKey: own.publicKey, secretKey: own.secretKey };
    } else if (values['curve-key'] !== undefined) {
      throw new Error('--curve-key needs --curve-server-key');
    }
  } catch (e) {
    err(`mdbroker status: ${(e as Error).message}\n`);
    return 2;
  }
  const client = new Client({ endpoints: endpoint, timeout, retries: 0, curve });
  try {
    const reply = await client.request('mmi.stats', [], { timeout, retries: 0 });
    const text = reply[0]?.toString() ?? '';
    let report: StatsReport;
    try {
      report = JSON.parse(text) as StatsReport;
      if (typeof report.services !== 'object' || report.services === null) throw new Error('no services');
    } catch {
      err(`mdbroker status: ${endpoint} answered mmi.stats with ${JSON.stringify(text.slice(0, 60))}, not mdbroker's report (another MDP broker? it may still answer mmi.service)\n`);
      return 1;
    }
    out(values.json ? `${JSON.stringify(report, null, 2)}\n` : formatStatus(endpoint, report));
    return 0;
  } catch (e) {
    const why = e instanceof TimeoutError
      ? `no answer from ${endpoint} within ${timeout} ms: is a broker running there${curve === undefined ? ' (and without CURVE; else give --curve-server-key)' : ', and is this key allowed'}?`
      : `${endpoint}: ${(e as Error).message}`;
    err(`mdbroker status: ${why}\n`);
    return 1;
  } finally {
    client.close();
  }
}
