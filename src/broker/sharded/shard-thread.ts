// One shard: a whole broker on its own worker thread for the connections it accepted (every shard accepts on the
// same listening socket; board.ts keeps the counts even), with its neighbours, the other shards' cores (spread.ts).
// A request crosses to another shard only when that one can serve it and this one cannot; its reply comes back
// here, to the client's connection. A moved request's client is a stand-in Peer there, one per remote connection.

import { parentPort, workerData } from 'node:worker_threads';
import type { LogLevel } from '../../core/broker-core.js';
import { Peer } from '../../core/peer.js';
import { CoreHost } from '../core-host.js';
import { Listeners } from '../listeners.js';
import { LoopDelay } from '../loop-delay.js';
import { Offload } from '../offload.js';
import { parseValidateFlags } from '../validation.js';
import { mmiStatsReplies } from '../stats-service.js';
import type { AggregateOutput } from '../stats-report.js';
import { withStandIns } from '../frame-io.js';
import type { Placement, ZmtpRouter } from '../../zmtp/router.js';
import { Board } from './board.js';
import { Exchange, Rec } from './exchange.js';
import { Spread } from './spread.js';
import { closeDescriptor, dupDescriptor } from './descriptors.js';
import { LEVELS, REPORT_MS, type FromShard, type ShardInit, type ToShard } from './shard-protocol.js';

const init = workerData as ShardInit;
const me = init.index;
const port = parentPort as NonNullable<typeof parentPort>;
const o = init.opts;
const post = (m: FromShard) => port.postMessage(m);
const minLevel = LEVELS[o.logLevel];
const log = (level: LogLevel, msg: string, fields?: Record<string, unknown>) => {
  if (LEVELS[level] >= minLevel) post({ type: 'log', level, msg, fields: { shard: me, ...fields } });
};

const board = new Board(init.board, me, init.ports.length);
const exchange = new Exchange(me, init.ports);
const spread = new Spread(board, exchange);

/** Accepted connections go to the shard serving the fewest, as a duplicate of their descriptor. */
const placement: Placement = {
  placed(sock) {
    // Counted here first, then compared: two shards accepting at once both see the other's count.
    const mine = board.addConnections(me, 1);
    const to = board.leastLoaded();
    const fd = (sock as unknown as { _handle: { fd?: number } | null })._handle?.fd;
    if (to === me || mine <= board.connections(to) + 1 || typeof fd !== 'number' || fd < 0) return false;
    let copy: number;
    try {
      copy = dupDescriptor(fd);
    } catch {
      return false;
    }
    board.addConnections(me, -1);
    board.addConnections(to, 1);
    sock.destroy();
    exchange.put(to, Rec.Handoff, 0, copy, null);
    return true;
  },
  released() {
    board.addConnections(me, -1);
  },
};

const listeners = new Listeners({ ...o, log }, placement);
const router = listeners.router as ZmtpRouter;
const inner = listeners.io;

/** Stand-ins for the clients of other shards whose requests were moved here: per shard, by connection serial. */
const proxies: Map<number, Peer>[] = init.ports.map(() => new Map());
function proxy(home: number, serial: number): Peer {
  const map = proxies[home];
  let p = map.get(serial);
  if (p === undefined) {
    p = new Peer(serial);
    p.home = home;
    map.set(serial, p);
  }
  return p;
}

/** Replies that came back for a connection that had already ended. */
let repliesUnrouted = 0;

/** The core's frame stream: this shard's connections, and through the exchange, the clients of the others. */
const io = withStandIns(
  inner,
  (peer) => peer.home >= 0,
  (msg, peer) => exchange.put(peer.home, Rec.Reply, me, peer.serial, msg),
  (sink) => ({
    message: (frames, peer) => sink.message(frames, peer),
    sendFailed: (peer, why, tag) => sink.sendFailed(peer, why, tag),
    peerClosed: (peer) => {
      // Shards that were handed its requests drop them (and their replies) as they would for their own.
      if (peer.spread) exchange.broadcast(Rec.Gone, me, peer.serial, null);
      sink.peerClosed(peer);
    },
    error: (err) => sink.error(err),
  }),
);

// Stats aggregation happens on the main thread; a shard's pool, if any, is for validation only.
const offload = new Offload(o.offload === 'all' || o.offload === 'validation' ? 'validation' : 'none', parseValidateFlags(o.validate), o.offloadThreads);
const host = new CoreHost(o, io, offload, log, { neighbours: spread });
const core = host.core;
const transport = host.transport;
const loopDelay = new LoopDelay();

/** Shards that have said End (shutdown barrier). */
let ends = 0;
let allEnded: (() => void) | null = null;

exchange.start((kind, from, thread, n, frames) => {
  switch (kind) {
    case Rec.Request: {
      let bytes = 0;
      for (let i = 0; i < frames.length; i++) bytes += frames[i].length;
      board.take(from, bytes);
      const client = thread === me ? inner.peer(n) : proxy(thread, n);
      if (client !== null) transport.moved(frames, client);
      return;
    }
    case Rec.Reply: {
      const client = inner.peer(n);
      if (client === null || client.gone) repliesUnrouted++;
      else inner.send(frames, client);
      return;
    }
    case Rec.Gone: {
      const p = proxies[thread].get(n);
      if (p === undefined) return;
      proxies[thread].delete(n);
      transport.peerClosed(p);
      return;
    }
    case Rec.Pull:
      core.give(frames[0].toString('latin1'), n, from, host.now());
      transport.flush();
      return;
    case Rec.Service:
      board.told(from, frames[0], n);
      return;
    case Rec.Handoff:
      try {
        router.serveDescriptor(n);
      } catch (err) {
        closeDescriptor(n);
        board.addConnections(me, -1);
        log('warn', 'a connection handed over by another shard could not be served', { err: String(err) });
      }
      return;
    case Rec.End:
      if (++ends === init.ports.length - 1) allEnded?.();
      return;
  }
}, (err) => log('warn', 'shard exchange error', { err: String(err) }));

// Stand-ins that hold nothing are forgotten (a later request from the same client makes a new one).
const sweep = setInterval(() => {
  for (const map of proxies) for (const [serial, p] of map) if (p.heldBytes === 0) map.delete(serial);
}, 1000);

const report = setInterval(() => {
  post({ type: 'report', snapshot: core.snapshot(), stats: core.stats, denied: listeners.denied, connections: router.connections });
}, REPORT_MS);

// mmi.stats is answered once an aggregation that holds this shard's figures from after the question is installed.
core.statsReplies.deferred = true;
let statsAsking = false;
core.statsReplies.refresh = () => {
  if (statsAsking) return;
  statsAsking = true;
  post({ type: 'statsWanted' });
};
/** Held questions that the snapshot last sent covers. */
let statsCovered = 0;

function statsSnapshot(): FromShard {
  statsCovered = core.statsWaiting;
  const snap = core.statsSnapshot(Date.now(), host.now());
  loopDelay.take(snap.global);
  Object.assign(snap.global, listeners.counters());
  snap.global.repliesUnrouted = repliesUnrouted;
  listeners.addDenials(snap);
  return { type: 'stats', seq: 0, snapshot: snap };
}

async function drain(): Promise<void> {
  clearInterval(report);
  // Questions still waiting for figures get the last report.
  core.answerStats(core.statsWaiting);
  transport.flush();
  await host.drain();
  exchange.flush();
  post({ type: 'drained' });
}

async function close(): Promise<void> {
  clearInterval(sweep);
  // Every shard's last replies for our clients are in before the connections close: each says End after them.
  const barrier = new Promise<void>((r) => (ends === init.ports.length - 1 ? r() : (allEnded = r)));
  exchange.broadcast(Rec.End, me, 0, null);
  exchange.flush();
  let t: NodeJS.Timeout | undefined;
  await Promise.race([barrier, new Promise((r) => (t = setTimeout(r, 2000)))]);
  clearTimeout(t);
  await host.close();
  await listeners.close();
  exchange.close();
  loopDelay.close();
  post({ type: 'report', snapshot: core.snapshot(), stats: core.stats, denied: listeners.denied, connections: 0 });
  post({ type: 'closed' });
  port.close();
}

port.on('message', (m: ToShard) => {
  switch (m.type) {
    case 'bind':
      listeners.bind().then(
        () => post({ type: 'bound', endpoints: listeners.endpoints, fds: router.listeningDescriptors() }),
        (err: unknown) => {
          throw err;
        },
      );
      return;
    case 'adopt':
      Promise.all(m.fds.map((fd) => router.adopt(dupDescriptor(fd)))).then(
        () => post({ type: 'adopted' }),
        (err: unknown) => {
          throw err;
        },
      );
      return;
    case 'stats':
      post({ ...statsSnapshot(), seq: m.seq } as FromShard);
      return;
    case 'statsReplies':
      core.statsReplies.set(...mmiStatsReplies({ mmiOverall: m.overall, mmiPerService: m.perService } as AggregateOutput));
      if (statsCovered > 0) {
        core.answerStats(statsCovered);
        statsCovered = 0;
        transport.flush();
      }
      statsAsking = false;
      // Questions asked after the snapshot went out wait for the next aggregation.
      if (core.statsWaiting > 0) core.statsReplies.fresh();
      return;
    case 'reload':
      listeners.reload(m.lists);
      return;
    case 'drain':
      void drain();
      return;
    case 'close':
      void close();
      return;
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
