// A broker, a worker and a client in one process: what docs/running-from-code.md walks through.
// Run from the repository (after `npm run build`): node docs/examples/from-code.mjs
import { Broker, Client, Worker, consoleLog } from 'mdbroker';

const broker = new Broker({
  bind: ['tcp://127.0.0.1:*'],   // a free port; broker.endpoints says which
  heartbeatInterval: 1000,
  metricsPort: 0,                // /metrics, /healthz and the status page on a free port
  log: consoleLog('info'),       // JSON lines on stderr; a Broker is silent without a log
});
await broker.start();
const [endpoint] = broker.endpoints;
console.log(`broker on ${endpoint}, status page on http://127.0.0.1:${broker.metricsPort}/`);

const worker = new Worker({ endpoint, service: 'upper', handler: (body) => body.map((f) => f.toString().toUpperCase()) });
const client = new Client({ endpoints: endpoint });
const reply = await client.request('upper', ['hello', 'world']);
console.log(reply.map(String).join(' '));

client.close();
await worker.close();
await broker.close();            // the same drain as SIGTERM
console.log('closed');
