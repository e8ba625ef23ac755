// The frame stream between the core and its peers, whatever carries it: the zmtp transport's ROUTER, libzmq ROUTER
// sockets, or a shard's pipe to the main thread. Every message comes with the Peer (the connection) it came from,
// and every send names the Peer it is for. Sends are never awaited: a send to a peer that is gone or full fails at
// once (ROUTER mandatory, sendTimeout 0, or the zmtp transport's own check) and is told to the sink, so nothing is
// dropped without being counted and answered.

import type { Router } from 'zeromq';
import { createRequire } from 'node:module';
import type * as LRUCacheWithDeleteModule from 'mnemonist/lru-cache-with-delete';
import type { SendFailure } from '../core/broker-core.js';
import { Peer, nextSerial } from '../core/peer.js';
import { peerKey, type Key } from '../core/peer-id.js';
import { errorCode, receiveLoop } from '../sockets/receive-loop.js';
import { escape } from '../zmtp/frame-pool.js';

// The one module, not mnemonist's index (which loads every structure it has: 7 MiB of RSS).
const LRUCacheWithDelete = createRequire(import.meta.url)('mnemonist/lru-cache-with-delete') as typeof LRUCacheWithDeleteModule.default.default;

export interface FrameSink {
  message(frames: Buffer[], peer: Peer): void;
  /** A send failed; `tag` is what the sender passed to send(). */
  sendFailed(peer: Peer, why: SendFailure, tag: number): void;
  /** A peer's connection ended (only transports that can tell: zmtp, a shard's pipe). */
  peerClosed(peer: Peer): void;
  error(err: unknown): void;
}

export interface FrameIO {
  /** Reads until closed; resolves then. */
  start(sink: FrameSink): Promise<void>;
  /** Queues [routing id, ...frames] for `peer`; a failure reaches the sink's sendFailed, with `tag`. */
  send(msg: Buffer[], peer: Peer, tag?: number): void;
  /** The live peer with this serial, or null (the sharded broker routes its shards' output by serial). */
  peer(serial: number): Peer | null;
  /** Stops and restarts reading from one peer (transports that can: zmtp). */
  pause?(peer: Peer): void;
  resume?(peer: Peer): void;
  /** CURVE role lists or key grants are in force: each Peer carries its key's Rights, and none means none. */
  readonly requireRights?: boolean;
  /** The core is done with these frames (after sending what it sends of them): their memory may be reused. */
  release?(frames: Buffer[]): void;
  close(): Promise<void>;
}

/**
 * `io` serving some peers that are none of its connections (a shard's stand-ins for other shards' clients, Titanic's
 * internal client): what the core sends them goes to `elsewhere`, and they are never paused. `sink` may wrap what
 * `io` delivers to the core.
 */
export function withStandIns(
  io: FrameIO,
  isStandIn: (peer: Peer) => boolean,
  elsewhere: (msg: Buffer[], peer: Peer) => void,
  sink: (s: FrameSink) => FrameSink = (s) => s,
): FrameIO {
  return {
    start: (s) => io.start(sink(s)),
    send: (msg, peer, tag) => {
      if (!isStandIn(peer)) return io.send(msg, peer, tag);
      // Whoever takes them there may keep them: their memory is never reused.
      for (let i = 0; i < msg.length; i++) escape(msg[i]);
      elsewhere(msg, peer);
    },
    release: io.release?.bind(io),
    peer: (serial) => io.peer(serial),
    pause: (peer) => (isStandIn(peer) ? undefined : io.pause?.(peer)),
    resume: (peer) => (isStandIn(peer) ? undefined : io.resume?.(peer)),
    requireRights: io.requireRights,
    close: () => io.close(),
  };
}

/** What a failed libzmq send means for the core: the peer is gone, its pipe is full, or (null) neither. */
export function sendFailure(err: unknown): SendFailure | null {
  const code = errorCode(err);
  return code === 'EHOSTUNREACH' ? 'unreachable' : code === 'EAGAIN' || code === 'EBUSY' ? 'full' : null;
}

/** Peers remembered by a libzmq socket at most; see PeerBook. */
const MAX_LIBZMQ_PEERS = 65536;

/**
 * Peers of a libzmq ROUTER, by routing id. libzmq never says when a peer leaves, so a Peer here lives until a send
 * to it fails (then the next message from that routing id is a new Peer) or until it is the least recently heard
 * of MAX_LIBZMQ_PEERS (a Peer evicted while live is replaced by a new one at its next message: its worker, if any,
 * is told DISCONNECT by the core and registers again). Bounded in entries, and routing ids are at most 255 bytes.
 */
export class PeerBook {
  private readonly byId = new LRUCacheWithDelete<Key, Peer>(MAX_LIBZMQ_PEERS);
  private readonly bySerial = new Map<number, Peer>();

  of(id: Buffer): Peer {
    const key = peerKey(id);
    let p = this.byId.get(key);
    if (p !== undefined && !p.gone) return p;
    if (p !== undefined) this.bySerial.delete(p.serial);
    p = new Peer(nextSerial());
    const evicted = this.byId.setpop(key, p);
    if (evicted !== null && evicted.evicted) this.bySerial.delete(evicted.value.serial);
    this.bySerial.set(p.serial, p);
    return p;
  }

  peer(serial: number): Peer | null {
    return this.bySerial.get(serial) ?? null;
  }
}

/** One libzmq ROUTER socket as a frame stream (the libzmq transport without access groups). */
export function zmqIO(sock: Router): FrameIO {
  let sink: FrameSink | null = null;
  const book = new PeerBook();
  const failed = (peer: Peer, err: unknown, tag: number) => {
    if (sink === null || sock.closed) return;
    const why = sendFailure(err);
    if (why !== null) sink.sendFailed(peer, why, tag);
    else sink.error(err);
  };
  return {
    start(s) {
      sink = s;
      return receiveLoop(sock, (frames) => s.message(frames, book.of(frames[0])), (err) => s.error(err));
    },
    send(msg, peer, tag = -1) {
      try {
        sock.send(msg).then(undefined, (err: unknown) => failed(peer, err, tag));
      } catch (err) {
        failed(peer, err, tag);
      }
    },
    peer: (serial) => book.peer(serial),
    async close() {
      if (!sock.closed) sock.close();
    },
  };
}
