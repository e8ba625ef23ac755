// One shard: a BrokerCore on its own worker thread, fed over an inproc PAIR by the main thread, which owns the
// ROUTER socket. It owns the services whose names hash to it, their queues and their workers.

import { parentPort, workerData } from 'node:worker_threads';
import { Pair } from 'zeromq';
import { BrokerCore, type LogLevel } from './broker-core.js';
import { RouterTransport } from './transport.js';
import { shardIO } from './peer-sockets.js';
import { accessPolicy } from './security.js';
import { Offload } from './offload.js';
import { AdmissionPump, drainCore } from './admission.js';
import { appliesTo, parseValidateFlags } from './validation.js';
import { LEVELS, REPORT_MS, type FromShard, type ShardInit, type ToShard } from './shard-protocol.js';

const init = workerData as ShardInit;
const port = parentPort as NonNullable<typeof parentPort>;
const o = init.opts;
const post = (m: FromShard) => port.postMessage(m);
const minLevel = LEVELS[o.logLevel];
const log = (level: LogLevel, msg: string, fields?: Record<string, unknown>) => {
  if (LEVELS[level] >= minLevel) post({ type: 'log', level, msg, fields: { shard: init.index, ...fields } });
};

const t0 = performance.now();
const now = () => performance.now() - t0;
const rules = parseValidateFlags(o.validate);
const core = new BrokerCore({ ...o, validates: rules.length > 0 ? (name) => appliesTo(rules, name) : null, mayRegister: accessPolicy(o.workerGroups) }, log);
let departed: Uint8Array[] = [];
core.departed = (id) => departed.push(new Uint8Array(id));
// Stats aggregation happens on the main thread; a shard's pool, if any, is for validation only.
const offload = new Offload(o.offload === 'all' || o.offload === 'validation' ? 'validation' : 'none', rules, o.offloadThreads);
const pair = new Pair({ linger: 1000, sendHighWaterMark: 0, receiveHighWaterMark: 0, sendTimeout: 0 });
const transport = new RouterTransport(shardIO(pair), core, now, (err) => log('warn', 'shard socket error', { err: String(err) }));
const admission = new AdmissionPump(core, offload, now, () => transport.flush());
if (rules.length > 0) transport.afterHandle = () => admission.pump();

const tick = setInterval(() => {
  core.tick(now());
  transport.flush();
}, Math.max(5, Math.min(1000, o.heartbeatInterval / 2)));

const report = setInterval(() => {
  post({ type: 'report', snapshot: core.snapshot(), stats: core.stats, served: core.servedServices(), departed });
  departed = [];
}, REPORT_MS);

async function close(): Promise<void> {
  clearInterval(report);
  await drainCore(core, () => transport.flush(), admission, now, o.shutdownGrace);
  clearInterval(tick);
  // End marker on the data path itself (a routing id is never empty): when the main thread reads it, everything
  // we sent before it (the last replies, the DISCONNECTs) has been handed to its ROUTER.
  await pair.send([Buffer.alloc(0)]);
  // Close our socket here, before the thread ends: a thread stopped with a receive pending aborts the process.
  await transport.close();
  await offload.close();
  post({ type: 'report', snapshot: core.snapshot(), stats: core.stats, served: [], departed });
  post({ type: 'closed' });
  port.close();
}

port.on('message', (m: ToShard) => {
  if (m.type === 'sendFailed') {
    core.sendFailed(Buffer.from(m.id), m.why, now());
    transport.flush();
  } else if (m.type === 'stats') {
    post({ type: 'stats', seq: m.seq, snapshot: core.statsSnapshot(Date.now(), now()) });
  } else if (m.type === 'close') {
    void close();
  }
});

async function main(): Promise<void> {
  await offload.init();
  pair.connect(init.endpoint);
  transport.start();
  post({ type: 'ready' });
}
main().catch((err: unknown) => {
  log('warn', 'shard failed to start', { err: String(err) });
  throw err;
});
