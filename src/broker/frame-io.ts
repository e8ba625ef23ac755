// The frame stream between the core and its peers, whatever carries it: the zmtp transport's ROUTER, libzmq ROUTER
// sockets, or a shard's pipe to the main thread. Sends are never awaited: a send to a peer that is gone or full fails
// at once (ROUTER mandatory, sendTimeout 0, or the zmtp transport's own check) and is told to the sink, so nothing is
// dropped without being counted and answered.

import type { PeerPolicy } from '../core/broker-core.js';
import type { Pair, Router } from 'zeromq';
import type { SendFailure } from '../core/broker-core.js';
import { errorCode, receiveLoop } from '../sockets/receive-loop.js';

export interface FrameSink {
  message(frames: Buffer[]): void;
  /** A send failed; `tag` is what the sender passed to send(). */
  sendFailed(id: Buffer, why: SendFailure, tag: number): void;
  /** A peer's connection ended (only transports that can tell: zmtp). */
  peerClosed(id: Buffer): void;
  error(err: unknown): void;
}

export interface FrameIO {
  /** Reads until closed; resolves then. */
  start(sink: FrameSink): Promise<void>;
  /** Queues [routing id, ...frames]; a failure reaches the sink's sendFailed, with `tag`. */
  send(msg: Buffer[], tag?: number): void;
  /** Stops and restarts reading from one peer (transports that can: zmtp). */
  pause?(id: Buffer): void;
  resume?(id: Buffer): void;
  /** Transports that know each peer's CURVE key: what each key may do (role lists, --access key grants). */
  readonly policy?: PeerPolicy | null;
  close(): Promise<void>;
}

/** What a failed libzmq send means for the core: the peer is gone, its pipe is full, or (null) neither. */
export function sendFailure(err: unknown): SendFailure | null {
  const code = errorCode(err);
  return code === 'EHOSTUNREACH' ? 'unreachable' : code === 'EAGAIN' || code === 'EBUSY' ? 'full' : null;
}

/**
 * One zeromq socket as a frame stream (the libzmq transport without access groups, or a shard's PAIR). `encode`
 * may turn frames into what goes to zeromq instead (see shard-io.ts).
 */
export function zmqIO(sock: Router | Pair, encode?: (msg: Buffer[]) => (Buffer | string)[]): FrameIO {
  let sink: FrameSink | null = null;
  const failed = (id: Buffer, err: unknown, tag: number) => {
    if (sink === null || sock.closed) return;
    const why = sendFailure(err);
    if (why !== null) sink.sendFailed(id, why, tag);
    else sink.error(err);
  };
  return {
    start(s) {
      sink = s;
      return receiveLoop(sock, (frames) => s.message(frames), (err) => s.error(err));
    },
    send(msg, tag = -1) {
      try {
        sock.send(encode ? encode(msg) : msg).then(undefined, (err: unknown) => failed(msg[0], err, tag));
      } catch (err) {
        failed(msg[0], err, tag);
      }
    },
    async close() {
      if (!sock.closed) sock.close();
    },
  };
}
