// One shard: a BrokerCore on its own worker thread, fed in batches over a MessagePort (shard-io.ts) by the main
// thread, which owns the sockets. It owns the services whose names hash to it, their queues and their workers.

import { parentPort, workerData } from 'node:worker_threads';
import type { LogLevel } from '../../core/broker-core.js';
import { CoreHost } from '../core-host.js';
import { pipe as portPipe, shardIO } from './shard-io.js';
import { Offload } from '../offload.js';
import { parseValidateFlags } from '../validation.js';
import { LEVELS, REPORT_MS, type FromShard, type ShardInit, type ToShard } from './shard-protocol.js';

const init = workerData as ShardInit;
const port = parentPort as NonNullable<typeof parentPort>;
const o = init.opts;
const post = (m: FromShard) => port.postMessage(m);
const minLevel = LEVELS[o.logLevel];
const log = (level: LogLevel, msg: string, fields?: Record<string, unknown>) => {
  if (LEVELS[level] >= minLevel) post({ type: 'log', level, msg, fields: { shard: init.index, ...fields } });
};

// Stats aggregation happens on the main thread; a shard's pool, if any, is for validation only.
const offload = new Offload(o.offload === 'all' || o.offload === 'validation' ? 'validation' : 'none', parseValidateFlags(o.validate), o.offloadThreads);
const pipe = shardIO(portPipe(init.port));
const host = new CoreHost(o, pipe, offload, log);
const core = host.core;
const now = () => host.now();
let departed: number[] = [];
core.departed = (peer) => departed.push(peer.serial);

const report = setInterval(() => {
  post({ type: 'report', snapshot: core.snapshot(), stats: core.stats, served: core.servedServices(), departed });
  departed = [];
}, REPORT_MS);

async function close(): Promise<void> {
  clearInterval(report);
  await host.drain();
  // End marker on the data path itself (a routing id is never empty): when the main thread reads it, everything
  // we sent before it (the last replies, the DISCONNECTs) has been handed to its ROUTER.
  pipe.pipe.sendEnd();
  await pipe.drained();
  await host.close();
  post({ type: 'report', snapshot: core.snapshot(), stats: core.stats, served: [], departed });
  post({ type: 'closed' });
  port.close();
}

port.on('message', (m: ToShard) => {
  if (m.type === 'sendFailed') {
    const peer = pipe.peer(m.serial);
    if (peer === null) return; // its connection's end has already come through the pipe
    core.sendFailed(peer, m.why, now());
    host.transport.flush();
  } else if (m.type === 'stats') {
    post({ type: 'stats', seq: m.seq, snapshot: core.statsSnapshot(Date.now(), now()) });
  } else if (m.type === 'close') {
    void close();
  }
});

async function main(): Promise<void> {
  await host.start();
  post({ type: 'ready' });
}
main().catch((err: unknown) => {
  log('warn', 'shard failed to start', { err: String(err) });
  throw err;
});
