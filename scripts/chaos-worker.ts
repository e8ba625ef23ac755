// A worker process for the chaos suite. echo: answers each request after 0-4 ms and writes "done <id>" to stdout
// (synchronously, so a SIGKILL loses nothing already written). hang: takes requests and never answers.
import { writeSync } from 'node:fs';
import { Worker } from '../src/client/worker.js';
import { prng } from '../test/support/prng.js';

const [endpointList, mode, hb, seed] = process.argv.slice(2);
const random = prng(Number(seed ?? 1));
// One endpoint, or several separated by commas: the worker registers with every broker.
const endpoints = endpointList.split(',');
const interval = Number(hb ?? 250);
new Worker({
  endpoints, service: 'chaos', heartbeatInterval: interval, heartbeatLiveness: 3, reconnectMin: 50, reconnectMax: 500, concurrency: 2,
  handler: async (body) => {
    if (mode === 'hang') return new Promise<never>(() => {});
    await new Promise((r) => setTimeout(r, Math.floor(random() * 5)));
    writeSync(1, `done ${body[0].toString()}\n`);
    return body;
  },
});
process.on('SIGTERM', () => process.exit(0));
