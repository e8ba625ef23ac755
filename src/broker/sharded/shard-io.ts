// The frame stream between a shard thread and the main thread: a MessageChannel carrying batches. What one end sends
// in an event-loop turn is packed into one ArrayBuffer at the end of the turn and transferred (moved, not copied);
// the receiver reads every frame as a view of it. One postMessage per turn per direction, no binding call per
// message, and no frame that lives in memory the other thread must give back (the inproc PAIR this replaces sent
// large frames as latin1 strings for that reason: zeromq.js hands a zero-copy frame back to the sending thread).
//
// Every record names the connection it came from or is for, by the serial of the main thread's Peer: a message
// [routing id, ...frames]; the end of that connection, in order with its messages, so a shard's core ties requests
// and workers to connections as on one thread; and the shard's end marker, after its last output. Record layout:
// kind (1 byte: message, closed, end), serial (float64), frame count (uint32), then each frame's length (uint32)
// and bytes.

import type { MessagePort } from 'node:worker_threads';
import { Peer } from '../../core/peer.js';
import type { FrameIO, FrameSink } from '../frame-io.js';

const MESSAGE = 0;
const CLOSED = 1;
const END = 2;
/** kind, serial, frame count. */
const HEAD = 1 + 8 + 4;

export interface Pipe {
  /** Queues [routing id, ...frames] with the serial of the connection it is for (or came from). */
  send(msg: Buffer[], serial: number): void;
  /** Main thread: the connection with this serial has ended (in order with the messages before it). */
  sendClosed(serial: number): void;
  /** Shard thread: the end marker (all sent before it has reached the main thread when it arrives). */
  sendEnd(): void;
  /** Reads until closed: each message with its serial; a closed-connection notice as (serial, null). */
  start(on: (serial: number, frames: Buffer[] | null) => void, onEnd: () => void, onError: (err: unknown) => void): Promise<void>;
  /** Resolves when everything sent so far has been posted. */
  drained(): Promise<void>;
  close(): Promise<void>;
}

/** Either end of the pipe, on its MessagePort. */
export function pipe(port: MessagePort): Pipe {
  // This turn's records: kinds, serials and frames side by side (no object per record).
  let kinds: number[] = [];
  let serials: number[] = [];
  let frames: (Buffer[] | null)[] = [];
  let bytes = 0;
  let scheduled = false;
  let closed = false;
  const flush = () => {
    scheduled = false;
    const n = kinds.length;
    if (n === 0 || closed) return;
    const batch = Buffer.allocUnsafeSlow(bytes);
    let at = 0;
    for (let i = 0; i < n; i++) {
      batch[at] = kinds[i];
      batch.writeDoubleLE(serials[i], at + 1);
      const f = frames[i];
      const count = f === null ? 0 : f.length;
      batch.writeUInt32LE(count, at + 9);
      at += HEAD;
      for (let j = 0; j < count; j++) {
        const fr = (f as Buffer[])[j];
        batch.writeUInt32LE(fr.length, at);
        fr.copy(batch, at + 4);
        at += 4 + fr.length;
      }
    }
    kinds = [];
    serials = [];
    frames = [];
    bytes = 0;
    const ab = batch.buffer as ArrayBuffer;
    port.postMessage(ab, [ab]);
  };
  const put = (kind: number, serial: number, msg: Buffer[] | null) => {
    if (closed) return;
    kinds.push(kind);
    serials.push(serial);
    frames.push(msg);
    let size = HEAD;
    if (msg !== null) for (let i = 0; i < msg.length; i++) size += 4 + msg[i].length;
    bytes += size;
    if (!scheduled) {
      scheduled = true;
      // After every read of this turn: one batch for all of them.
      setImmediate(flush);
    }
  };
  return {
    send: (msg, serial) => put(MESSAGE, serial, msg),
    sendClosed: (serial) => put(CLOSED, serial, null),
    sendEnd: () => put(END, -1, null),
    start(on, onEnd, onError) {
      port.on('message', (ab: ArrayBuffer) => {
        try {
          read(Buffer.from(ab), on, onEnd);
        } catch (err) {
          onError(err);
        }
      });
      return new Promise<void>((r) => port.once('close', () => r()));
    },
    async drained() {
      flush();
    },
    async close() {
      flush();
      closed = true;
      port.close();
    },
  };
}

/** Delivers one batch's records in order; frames are views of the batch. */
function read(b: Buffer, on: (serial: number, frames: Buffer[] | null) => void, onEnd: () => void): void {
  let at = 0;
  while (at < b.length) {
    const kind = b[at];
    const serial = b.readDoubleLE(at + 1);
    const count = b.readUInt32LE(at + 9);
    at += HEAD;
    if (kind === END) {
      onEnd();
      continue;
    }
    if (kind === CLOSED) {
      on(serial, null);
      continue;
    }
    const msg: Buffer[] = new Array(count);
    for (let j = 0; j < count; j++) {
      const len = b.readUInt32LE(at);
      msg[j] = b.subarray(at + 4, at + 4 + len);
      at += 4 + len;
    }
    on(serial, msg);
  }
}

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
