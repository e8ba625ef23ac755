// Starting the mdbroker CLI as a child process and reading back what it bound, for the bench, the chaos and soak
// scripts and the tests. The broker logs its endpoints (and metrics port) in its "mdbroker listening" line, so
// callers bind to port * and learn the port the OS picked.

import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { brokerWideMetric } from '../../src/broker/stats-report.js';

const CLI = fileURLToPath(new URL('../../src/cli.js', import.meta.url));

export interface BrokerProcess {
  child: ChildProcess;
  endpoint: string;
  metricsPort: number | null;
  /** Every stdout line so far, and later ones as they come. */
  lines: string[];
}

/** Spawns `mdbroker FLAGS` (log level info or lower, so the listening line is printed). */
export function spawnBroker(flags: string[], timeoutMs = 10000): Promise<BrokerProcess> {
  // MDBROKER_NODE_FLAGS: V8/Node flags for the broker process (e.g. --max-semi-space-size=4), for experiments.
  const nodeFlags = (process.env.MDBROKER_NODE_FLAGS ?? '').split(' ').filter(Boolean);
  const child = spawn(process.execPath, [...nodeFlags, CLI, ...flags], { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`broker did not start within ${timeoutMs} ms`));
    }, timeoutMs);
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
      lines.push(line);
      let rec: { msg?: string; endpoints?: string[]; metricsPort?: number };
      try {
        rec = JSON.parse(line) as typeof rec;
      } catch {
        return; // not a log line
      }
      if (rec.msg === 'mdbroker listening' && rec.endpoints) {
        clearTimeout(timer);
        resolve({ child, endpoint: rec.endpoints[0], metricsPort: rec.metricsPort ?? null, lines });
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`broker exited with ${code}: ${stderr.trim()}`));
    });
  });
}

/** One broker-wide value, by its stats key, from a running broker's /metrics, or null. */
export async function brokerMetric(port: number, key: string): Promise<number | null> {
  return metricValue(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text(), key);
}

/** A broker-wide stats key's value in Prometheus text (where brokerWideMetric puts it), or null. */
export function metricValue(text: string, key: string): number | null {
  const m = brokerWideMetric(key);
  if (m === null) throw new Error(`${key} is not a broker-wide metric of its own`);
  const labels = Object.entries(m.labels).map(([k, v]) => `${k}="${v}"`).join(',');
  const line = new RegExp(`^${m.name}${labels ? `\\{${labels}\\}` : ''} ([0-9.eE+-]+)$`, 'm').exec(text);
  return line ? Number(line[1]) / (m.scale ?? 1) : null;
}
