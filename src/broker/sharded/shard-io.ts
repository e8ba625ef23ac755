// The frame stream between a shard thread and the main thread: an inproc PAIR in the shared ZeroMQ context.
//
// zeromq.js sends frames over 128 bytes without copying and, once libzmq is done with them, hands the reference back
// to the *sending* thread's module. A shard thread that has ended can no longer take it back, and the process
// aborts (seen here: "free(): invalid pointer" when a shard's replies sat in a slow client's pipe, and a SIGSEGV
// with the zmtp transport, whose frames are views of the main thread's read chunks). So both ends send their large
// frames as latin1 strings, which zeromq.js copies into memory of its own, and the receiver turns them back into
// bytes. A frame of 128 bytes or less is always copied and travels as is; a converted frame is always longer than
// 128 bytes, so the receiver can tell them apart by length alone.
//
// Every message names the connection it came from or is for: [serial (8 bytes), routing id, ...frames], the serial
// of the main thread's Peer for that connection. The main thread also says on this pipe, in order with the messages,
// when a connection ends: [serial] alone. So a shard's core ties requests and workers to connections, as on one
// thread, and the main thread sends a shard's output to the connection it names, never to a later holder of its id.

import type { Pair } from 'zeromq';
import { Peer } from '../../core/peer.js';
import type { FrameIO, FrameSink } from '../frame-io.js';
import { errorCode, receiveLoop } from '../../sockets/receive-loop.js';
const COPY_LIMIT = 128;
const SERIAL_BYTES = 8;

function serialFrame(serial: number): Buffer {
  const b = Buffer.allocUnsafe(SERIAL_BYTES);
  b.writeDoubleBE(serial);
  return b;
}

export interface Pipe {
  /** Queues [routing id, ...frames] with the serial of the connection it is for (or came from). */
  send(msg: Buffer[], serial: number): void;
  /** Main thread: the connection with this serial has ended (in order with the messages before it). */
  sendClosed(serial: number): void;
  /** Shard thread: the end marker (all sent before it has reached the main thread when it arrives). */
  sendEnd(): void;
  /** Reads until closed: each message with its serial; a closed-connection notice as (serial, null). */
  start(on: (serial: number, frames: Buffer[] | null) => void, onEnd: () => void, onError: (err: unknown) => void): Promise<void>;
  /** Resolves when everything sent so far has been handed to the binding. */
  drained(): Promise<void>;
  close(): Promise<void>;
}

/**
 * Either end of the pipe: large frames go out as strings and come back as bytes. zeromq.js runs at most 512 sends
 * synchronously; the next is left pending and a send while one is pending throws EBUSY. On the pipe that is not a
 * full peer but a busy binding, so the message waits in a backlog, in order, until the pending send settles. (Told to
 * the core as 'full', it deleted live workers; dropped, a burst of READYs was lost.)
 */
export function pipe(pair: Pair): Pipe {
  let onError: ((err: unknown) => void) | null = null;
  let last: Promise<void> = Promise.resolve();
  const backlog: Wire[] = [];
  let draining = false;
  const fail = (err: unknown) => {
    if (!pair.closed) onError?.(err);
  };
  /** False when the binding is busy (the message was not taken). */
  const put = (wire: Wire): boolean => {
    try {
      last = pair.send(wire);
      last.then(undefined, fail);
      return true;
    } catch (err) {
      if (errorCode(err) === 'EBUSY') return false;
      fail(err);
      return true;
    }
  };
  const drain = () => {
    if (draining) return;
    draining = true;
    const resume = () => {
      draining = false;
      while (backlog.length > 0 && !pair.closed) {
        if (!put(backlog[0])) return drain();
        backlog.shift();
      }
    };
    last.then(resume, resume);
  };
  const write = (wire: Wire) => {
    if (backlog.length > 0 || !put(wire)) {
      backlog.push(wire);
      drain();
    }
  };
  return {
    start(on, onEnd, err) {
      onError = err;
      return receiveLoop(pair, (frames) => {
        const head = frames[0];
        if (head.length === 0) return onEnd();
        const serial = head.readDoubleBE(0);
        if (frames.length === 1) return on(serial, null);
        frames.shift();
        on(serial, fromPipeFrames(frames));
      }, err);
    },
    send(msg, serial) {
      const wire: Wire = [serialFrame(serial)];
      for (let i = 0; i < msg.length; i++) wire.push(msg[i].length > COPY_LIMIT ? msg[i].toString('latin1') : msg[i]);
      write(wire);
    },
    sendClosed(serial) {
      write([serialFrame(serial)]);
    },
    sendEnd() {
      write([Buffer.alloc(0)]);
    },
    /** Resolves when everything sent so far has been handed to the binding. */
    async drained() {
      // The backlog empties as pending sends settle (see drain); wait for that, then for the last send.
      while (backlog.length > 0 && !pair.closed) await new Promise((r) => setImmediate(r));
      await last.then(undefined, () => undefined);
    },
    async close() {
      if (!pair.closed) pair.close();
    },
  };
}

type Wire = (Buffer | string)[];

/**
 * The shard's end of the pipe as its core's frame stream: a Peer per connection serial the main thread names,
 * forgotten when it says the connection ended. Rights are not needed here: the main thread checks every request
 * and READY against the connection's rights before it routes them (sharded-broker.ts).
 */
export function shardIO(p: Pipe): FrameIO & { readonly pipe: Pipe; drained(): Promise<void> } {
  const peers = new Map<number, Peer>();
  return {
    pipe: p,
    start(sink: FrameSink) {
      return p.start((serial, frames) => {
        let peer = peers.get(serial);
        if (frames === null) {
          if (peer === undefined) return;
          peers.delete(serial);
          return sink.peerClosed(peer);
        }
        if (peer === undefined) {
          peer = new Peer(serial);
          peers.set(serial, peer);
        }
        sink.message(frames, peer);
      }, () => undefined /* end markers travel the other way */, (err) => sink.error(err));
    },
    send(msg, peer) {
      p.send(msg, peer.serial);
    },
    peer: (serial) => peers.get(serial) ?? null,
    drained: () => p.drained(),
    close: () => p.close(),
  };
}

/** Undoes the conversion on frames received from the other end. */
function fromPipeFrames(frames: Buffer[]): Buffer[] {
  for (let i = 0; i < frames.length; i++) {
    if (frames[i].length > COPY_LIMIT) frames[i] = Buffer.from(frames[i].toString('utf8'), 'latin1');
  }
  return frames;
}
