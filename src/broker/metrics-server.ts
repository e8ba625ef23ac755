// --metrics-port: Prometheus text on GET /metrics. The broker's own families are rendered by the stats aggregation
// (inline or in the pool); the process families (CPU, memory, event-loop lag, GC: prom-client's default collectors)
// come from a registry here, on the main thread, where the event loop they describe runs.

import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type * as PromClient from 'prom-client';

export class MetricsServer {
  private server: Server | null = null;
  private process: PromClient.Registry | null = null;

  constructor(private readonly render: () => Promise<string>) {}

  async listen(port: number, host: string): Promise<number> {
    const prom = (await import('prom-client')) as typeof PromClient;
    this.process = new prom.Registry();
    prom.collectDefaultMetrics({ register: this.process });
    const server = createServer((req, res) => {
      if (req.method !== 'GET' || (req.url !== '/metrics' && req.url !== '/')) {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics\n');
        return;
      }
      Promise.all([this.render(), (this.process as PromClient.Registry).metrics()]).then(
        ([own, proc]) => `${own}\n${proc}`,
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
