// --metrics-port: Prometheus text on GET /metrics, GET /healthz (200 serving, 503 starting or draining), and the live
// status page on GET / (status-page.ts) with the JSON it polls on GET /status.json. The broker's own families are rendered by the stats aggregation
// (inline or in the pool); the process families (CPU, memory, event-loop lag, GC: prom-client's default collectors)
// come from a registry here, on the main thread, where the event loop they describe runs.

import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type * as PromClient from 'prom-client';
import { STATUS_PAGE, statusAsset } from './status-page.js';

/**
 * prom-client's gauges that end in `_total` (a suffix Prometheus keeps for counters; `promtool check metrics` exits
 * 3 on them): each is the sum of the labelled family of the same name without `_total`, which stays.
 */
const DROPPED = new Set(['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']);

/** The process families without DROPPED. */
function withoutDropped(text: string): string {
  return text.split('\n').filter((line) => {
    const name = line.startsWith('# ') ? line.split(' ')[2] : line.split(/[{ ]/)[0];
    return !DROPPED.has(name);
  }).join('\n');
}

export const VERSION = (JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

/** mdbroker_build_info: which build is running (a constant 1, labelled), as Prometheus exporters conventionally do. */
const BUILD_INFO = `# HELP mdbroker_build_info The running mdbroker build: its version and the Node.js version it runs on (always 1)
# TYPE mdbroker_build_info gauge
mdbroker_build_info{version="${VERSION}",node="${process.version}"} 1
`;

export class MetricsServer {
  private server: Server | null = null;
  private process: PromClient.Registry | null = null;

  constructor(
    private readonly render: () => Promise<string>,
    private readonly health: () => 'starting' | 'serving' | 'draining',
    /** What the status page polls: the stats report, the threads, the process. */
    private readonly status: () => Promise<object>,
  ) {}

  async listen(port: number, host: string): Promise<number> {
    const prom = (await import('prom-client')) as typeof PromClient;
    this.process = new prom.Registry();
    prom.collectDefaultMetrics({ register: this.process });
    const server = createServer((req, res) => {
      if (req.method === 'GET' && req.url === '/healthz') {
        // For load balancers and orchestrators: 200 while the broker serves, 503 while it starts or drains.
        const status = this.health();
        res.writeHead(status === 'serving' ? 200 : 503, { 'content-type': 'application/json' }).end(`${JSON.stringify({ status })}\n`);
        return;
      }
      if (req.method === 'GET' && (req.url === '/' || req.url === '/index.html')) {
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(STATUS_PAGE);
        return;
      }
      if (req.method === 'GET' && req.url === '/favicon.ico') {
        res.writeHead(204).end();
        return;
      }
      if (req.method === 'GET' && req.url === '/status.json') {
        this.status().then(
          (body) => res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' }).end(JSON.stringify(body)),
          (err: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`stats unavailable: ${String(err)}\n`),
        );
        return;
      }
      const asset = req.method === 'GET' && req.url?.startsWith('/assets/') ? statusAsset(req.url.slice(8)) : null;
      if (asset !== null) {
        res.writeHead(200, { 'content-type': asset[0], 'cache-control': 'max-age=3600' }).end(asset[1]);
        return;
      }
      if (req.method !== 'GET' || req.url !== '/metrics') {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try / (status page), /metrics or /healthz\n');
        return;
      }
      Promise.all([this.render(), (this.process as PromClient.Registry).metrics()]).then(
        ([own, proc]) => `${BUILD_INFO}${own}\n${withoutDropped(proc)}`,
      ).then(
        (text) => res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' }).end(text),
        (err: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`stats unavailable: ${String(err)}\n`),
      );
    });
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
    return (server.address() as AddressInfo).port;
  }

  close(): Promise<void> {
    const s = this.server;
    this.server = null;
    if (!s) return Promise.resolve();
    s.closeAllConnections();
    return new Promise((r) => s.close(() => r()));
  }
}
