// The frame stream between a shard thread and the main thread: an inproc PAIR in the shared ZeroMQ context.
//
// zeromq.js sends frames over 128 bytes without copying and, once libzmq is done with them, hands the reference back
// to the *sending* thread's module. A shard thread that has ended can no longer take it back, and the process
// aborts (seen here: "free(): invalid pointer" when a shard's replies sat in a slow client's pipe, and a SIGSEGV
// with the zmtp transport, whose frames are views of the main thread's read chunks). So both ends send their large
// frames as latin1 strings, which zeromq.js copies into memory of its own, and the receiver turns them back into
// bytes. A frame of 128 bytes or less is always copied and travels as is; a converted frame is always longer than
// 128 bytes, so the receiver can tell them apart by length alone.

import type { Pair } from 'zeromq';
import type { FrameIO, FrameSink } from '../frame-io.js';
import { errorCode, receiveLoop } from '../../sockets/receive-loop.js';
const COPY_LIMIT = 128;

/**
 * Either end of the pipe: large frames go out as strings and come back as bytes. zeromq.js runs at most 512 sends
 * synchronously; the next is left pending and a send while one is pending throws EBUSY. On the pipe that is not a
 * full peer but a busy binding, so the message waits in a backlog, in order, until the pending send settles. (Told to
 * the core as 'full', it deleted live workers; dropped, a burst of READYs was lost.)
 */
export function shardIO(pair: Pair): FrameIO & { drained(): Promise<void> } {
  let sink: FrameSink | null = null;
  let last: Promise<void> = Promise.resolve();
  const backlog: Wire[] = [];
  let draining = false;
  const fail = (err: unknown) => {
    if (!pair.closed) sink?.error(err);
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
  return {
    start(s) {
      sink = s;
      return receiveLoop(pair, (frames) => s.message(fromPipeFrames(frames)), (err) => s.error(err));
    },
    send(msg) {
      const wire = msg.map((f) => (f.length > COPY_LIMIT ? f.toString('latin1') : f));
      if (backlog.length > 0 || !put(wire)) {
        backlog.push(wire);
        drain();
      }
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

/** Undoes the conversion on frames received from the other end. */
function fromPipeFrames(frames: Buffer[]): Buffer[] {
  for (let i = 0; i < frames.length; i++) {
    if (frames[i].length > COPY_LIMIT) frames[i] = Buffer.from(frames[i].toString('utf8'), 'latin1');
  }
  return frames;
}
