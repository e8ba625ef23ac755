// Buffers for large frames (LARGE_FRAME_BYTES and up) that the broker reads, reused once they are done with.
//
// Why: a broker moving 1 MiB bodies allocates 2 MiB per request (request and reply), ~1 GB/s. V8 counts that memory
// and, every 64 MB or so of it, runs a scavenge and starts a full collection: measured at 1 MiB x 40 in flight, ~10
// full collections a second, about a quarter of the broker's busy time, and ~64 MB of dead bodies waiting for the
// next one (peak RSS 207 MiB). A body whose last use is known goes back to a free list here instead.
//
// A buffer is reused only when all of these hold, so nobody can read one after it is reused:
// - its owner released it (release(): the core, once the request or reply that carried it has ended);
// - every write that carries it has finished (hold() when a connection queues it, unhold() when the socket's write
//   completes, when CURVE has sealed it into its own output, or when the connection ends with it unsent);
// - it never went anywhere else (escape(): frames handed to Titanic, another shard, or any sender that keeps them).
// Anything else is left to the garbage collector, as before: a missed release costs memory, never correctness.

/**
 * Frames at least this big are read into a buffer of their own (decoder.ts), and only those come from here. Below
 * it a frame is a view of a read: sharing one allocation per read with its neighbours costs less than one per frame.
 */
export const LARGE_FRAME_BYTES = 16384;

/** Free buffers kept at most, in bytes; more are left to the GC. */
const MAX_FREE_BYTES = 32 * 1024 * 1024;

class Slot {
  holds = 0;
  released = false;
  escaped = false;
  /** The write callback for this buffer, made once (a socket write of the frame calls it when done). */
  readonly written: () => void;
  constructor(readonly buffer: ArrayBuffer) {
    this.written = () => unholdSlot(this);
  }
}

const slots = new WeakMap<ArrayBuffer, Slot>();
/** Free buffers by capacity. */
const free = new Map<number, Slot[]>();
let freeBytes = 0;
/** Counters, for the metrics and the tests. */
export const framePoolStats = { taken: 0, reused: 0, recycled: 0, dropped: 0 };

/** The capacity a frame of `size` gets: rounded up to 1/8 of its power of two (at most 12.5% unused). */
function capacityFor(size: number): number {
  const step = 2 ** Math.max(0, Math.floor(Math.log2(size)) - 3);
  return Math.ceil(size / step) * step;
}

/** A Buffer of exactly `size` bytes for a large frame, from the free list when one fits. */
export function takeFrame(size: number): Buffer {
  const cap = capacityFor(size);
  framePoolStats.taken++;
  const list = free.get(cap);
  let slot = list === undefined ? undefined : list.pop();
  if (slot !== undefined) {
    freeBytes -= cap;
    slot.holds = 0;
    slot.released = false;
    slot.escaped = false;
    framePoolStats.reused++;
  } else {
    slot = new Slot(new ArrayBuffer(cap));
    slots.set(slot.buffer, slot);
  }
  return Buffer.from(slot.buffer, 0, size);
}

function slotOf(f: Buffer): Slot | undefined {
  // Pooled frames are all large: the length check keeps small frames off the WeakMap.
  return f.length < LARGE_FRAME_BYTES ? undefined : slots.get(f.buffer as ArrayBuffer);
}

/** A connection queued `f` to be written. */
export function hold(f: Buffer): void {
  const s = slotOf(f);
  if (s !== undefined) s.holds++;
}

/** The write callback for `f` (its write ends its hold), or undefined for a frame not from the pool. */
export function writtenCallback(f: Buffer): (() => void) | undefined {
  return slotOf(f)?.written;
}

/** A queued write of `f` is over (written, sealed into another buffer, or dropped unsent). */
export function unhold(f: Buffer): void {
  const s = slotOf(f);
  if (s !== undefined) unholdSlot(s);
}

function unholdSlot(s: Slot): void {
  if (s.holds > 0) s.holds--;
  if (s.holds === 0 && s.released) recycle(s);
}

/** `f` went somewhere that may keep it: it is never reused. */
export function escape(f: Buffer): void {
  const s = slotOf(f);
  if (s !== undefined) s.escaped = true;
}

/** The owner is done with these frames: each goes back to the free list once its writes are over. */
export function release(frames: readonly Buffer[]): void {
  for (let i = 0; i < frames.length; i++) {
    const s = slotOf(frames[i]);
    if (s === undefined || s.released) continue;
    s.released = true;
    if (s.holds === 0) recycle(s);
  }
}

function recycle(s: Slot): void {
  if (s.escaped) return;
  const cap = s.buffer.byteLength;
  if (freeBytes + cap > MAX_FREE_BYTES) {
    framePoolStats.dropped++;
    return;
  }
  // Marked free so a second release or a late write callback cannot put it on the list twice.
  s.released = false;
  s.holds = -1;
  let list = free.get(cap);
  if (list === undefined) free.set(cap, (list = []));
  list.push(s);
  freeBytes += cap;
  framePoolStats.recycled++;
}

/** Lets the free buffers go (after a burst, so their memory can be returned). */
export function dropFreeFrames(): void {
  free.clear();
  freeBytes = 0;
}

/** Bytes in free buffers now. */
export function freeFrameBytes(): number {
  return freeBytes;
}
