// The frame stream between a shard thread and the main thread: an inproc PAIR in the shared ZeroMQ context.
//
// zeromq.js sends frames over 128 bytes without copying and, once libzmq is done with them, hands the reference back
// to the *sending* thread's module. A shard thread that has ended can no longer take it back, and the process
// aborts (seen here: "free(): invalid pointer" when a shard's replies sat in a slow client's pipe). So a shard sends
// its large frames as latin1 strings, which zeromq.js copies into memory of its own, and the main thread turns
// them back into bytes. A frame of 128 bytes or less is always copied and travels as is; a converted frame is
// always longer than 128 bytes, so the receiver can tell them apart by length alone.

import type { Pair } from 'zeromq';
import { zmqIO, type FrameIO } from '../frame-io.js';
const COPY_LIMIT = 128;

export function shardIO(pair: Pair): FrameIO {
  return zmqIO(pair, (msg) => msg.map((f) => (f.length > COPY_LIMIT ? f.toString('latin1') : f)));
}

/** Undoes shardIO's conversion on frames received from a shard. */
export function fromShardFrames(frames: Buffer[]): Buffer[] {
  for (let i = 0; i < frames.length; i++) {
    if (frames[i].length > COPY_LIMIT) frames[i] = Buffer.from(frames[i].toString('utf8'), 'latin1');
  }
  return frames;
}
