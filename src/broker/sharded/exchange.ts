// What the shard threads say to each other: a MessagePort to every other thread, and on each, one batch per event-loop
// turn. What one thread sends another in a turn is packed into one ArrayBuffer at the end of the turn and transferred
// (moved, not copied); the receiver reads every frame as a view of it. One postMessage per turn per pair of threads,
// and ports keep order, so a client's request and the notice that it left arrive in the order they were sent.
//
// Record layout: kind (1 byte), thread (1 byte: the client's thread for a request), a number (float64: a connection
// serial, a count, a slot or a descriptor), frame count (uint32), then each frame's length (uint32) and bytes.

import type { MessagePort } from 'node:worker_threads';

export const enum Rec {
  /** A client's request, moved: thread and serial name the client's connection. */
  Request = 0,
  /** A message for a client on the receiving thread (serial: its connection). */
  Reply = 1,
  /** A client that had requests moved has left (serial: its connection on the sending thread). */
  Gone = 2,
  /** Send me up to `n` of your queued requests for the service named in frame 0. */
  Pull = 3,
  /** The sender's counts for the service named in frame 0 are at slot `n` of its board (-1: no longer). */
  Service = 4,
  /** An accepted connection for the receiver to serve: `n` is a descriptor (a dup) it now owns. */
  Handoff = 5,
  /** The sender has nothing more to say (shutdown): everything it sent before has arrived. */
  End = 6,
}

/** kind, thread, number, frame count. */
const HEAD = 1 + 1 + 8 + 4;

export type RecordHandler = (kind: Rec, from: number, thread: number, n: number, frames: Buffer[]) => void;

/** This turn's records for one other thread: kinds, numbers and frames side by side (no object per record). */
class Outbox {
  kinds: number[] = [];
  threads: number[] = [];
  nums: number[] = [];
  frames: (Buffer[] | null)[] = [];
  bytes = 0;
}

const NO_FRAMES: Buffer[] = [];

export class Exchange {
  private readonly out: (Outbox | null)[];
  private dirty: number[] = [];
  private scheduled = false;
  private closed = false;
  private readonly flushAll = () => this.flush();

  constructor(
    /** This thread's index. */
    readonly index: number,
    /** A port to every other thread, by index; null at our own. */
    private readonly ports: readonly (MessagePort | null)[],
  ) {
    this.out = ports.map((p) => (p === null ? null : new Outbox()));
  }

  /** Delivers every record from every other thread, in order per sender; frames are views of the batch. */
  start(on: RecordHandler, onError: (err: unknown) => void): void {
    this.ports.forEach((port, from) => {
      port?.on('message', (ab: ArrayBuffer) => {
        try {
          read(Buffer.from(ab), from, on);
        } catch (err) {
          onError(err);
        }
      });
    });
  }

  put(to: number, kind: Rec, thread: number, n: number, frames: Buffer[] | null): void {
    const box = this.out[to];
    if (box === null || this.closed) return;
    if (box.kinds.length === 0) this.dirty.push(to);
    box.kinds.push(kind);
    box.threads.push(thread);
    box.nums.push(n);
    box.frames.push(frames);
    let size = HEAD;
    if (frames !== null) for (let i = 0; i < frames.length; i++) size += 4 + frames[i].length;
    box.bytes += size;
    if (!this.scheduled) {
      this.scheduled = true;
      // After every read of this turn: one batch per thread for all of them.
      setImmediate(this.flushAll);
    }
  }

  /** The same record to every other thread. */
  broadcast(kind: Rec, thread: number, n: number, frames: Buffer[] | null): void {
    for (let t = 0; t < this.out.length; t++) if (t !== this.index) this.put(t, kind, thread, n, frames);
  }

  /** Posts what this turn queued, now. */
  flush(): void {
    this.scheduled = false;
    const dirty = this.dirty;
    this.dirty = [];
    for (const to of dirty) {
      const box = this.out[to] as Outbox;
      this.out[to] = new Outbox();
      const ab = pack(box);
      (this.ports[to] as MessagePort).postMessage(ab, [ab]);
    }
  }

  close(): void {
    this.flush();
    this.closed = true;
    for (const p of this.ports) p?.close();
  }
}

function pack(box: Outbox): ArrayBuffer {
  const batch = Buffer.allocUnsafeSlow(box.bytes);
  let at = 0;
  for (let i = 0; i < box.kinds.length; i++) {
    batch[at] = box.kinds[i];
    batch[at + 1] = box.threads[i];
    batch.writeDoubleLE(box.nums[i], at + 2);
    const f = box.frames[i];
    const count = f === null ? 0 : f.length;
    batch.writeUInt32LE(count, at + 10);
    at += HEAD;
    for (let j = 0; j < count; j++) {
      const fr = (f as Buffer[])[j];
      batch.writeUInt32LE(fr.length, at);
      fr.copy(batch, at + 4);
      at += 4 + fr.length;
    }
  }
  return batch.buffer as ArrayBuffer;
}

function read(b: Buffer, from: number, on: RecordHandler): void {
  let at = 0;
  while (at < b.length) {
    const kind = b[at] as Rec;
    const thread = b[at + 1];
    const n = b.readDoubleLE(at + 2);
    const count = b.readUInt32LE(at + 10);
    at += HEAD;
    let frames = NO_FRAMES;
    if (count > 0) {
      frames = new Array<Buffer>(count);
      for (let j = 0; j < count; j++) {
        const len = b.readUInt32LE(at);
        frames[j] = b.subarray(at + 4, at + 4 + len);
        at += 4 + len;
      }
    }
    on(kind, from, thread, n, frames);
  }
}
