// The shard threads' shared counters, on one SharedArrayBuffer: how many connections each thread serves (so accepted
// connections are spread evenly), and per service, each thread's idle workers, queued requests and workers. Each
// thread writes only its own cells; the others read them as hints. A hint may be a turn old: a request moved on a
// stale one is queued where it lands, and served there or asked back (Neighbours.want), never lost.
//
// Services are dynamic, so each thread puts its services at slots it chooses and tells the others which name is at
// which slot (an Rec.Service record); a slot is reused only after its release has been told, in order, on the same
// port.

import type { SharedService } from '../../core/neighbours.js';

/** Services one thread shares at once; past this a new service is served on its own thread only. */
export const BOARD_SLOTS = 16384;
/** Per slot: idle workers, queued requests, workers. */
const CELLS = 3;

export function boardBytes(threads: number): number {
  return 4 * (threads + threads * BOARD_SLOTS * CELLS + threads * threads);
}

/** A service's entry: its slot on this thread's board, and its slot on each other thread's (-1: none there). */
export class BoardEntry implements SharedService {
  slot = -1;
  readonly remote: Int32Array;
  constructor(readonly name: string, readonly frame: Buffer, threads: number) {
    this.remote = new Int32Array(threads).fill(-1);
  }
}

export class Board {
  private readonly cells: Int32Array;
  private readonly free: number[] = [];
  private next = 0;
  private readonly entries = new Map<string, BoardEntry>();
  /** For each other thread, the entry at each of its slots it told us of. */
  private readonly bySlot: Map<number, BoardEntry>[];

  constructor(sab: SharedArrayBuffer, readonly index: number, readonly threads: number) {
    this.cells = new Int32Array(sab);
    this.bySlot = Array.from({ length: threads }, () => new Map());
  }

  // ---- connections ----

  connections(t: number): number {
    return Atomics.load(this.cells, t);
  }

  /** Adds to a thread's count; returns the count after. */
  addConnections(t: number, n: number): number {
    return Atomics.add(this.cells, t, n) + n;
  }

  /** The thread serving the fewest connections (this one on a tie). */
  leastLoaded(): number {
    let best = this.index;
    let min = this.connections(best);
    for (let t = 0; t < this.threads; t++) {
      const c = this.connections(t);
      if (c < min) {
        min = c;
        best = t;
      }
    }
    return best;
  }

  // ---- moved requests ----

  /** Bytes of moved requests thread `to` has taken in from thread `from` (uint32 arithmetic: it wraps). */
  taken(from: number, to: number): number {
    return Atomics.load(this.cells, this.threads + this.threads * BOARD_SLOTS * CELLS + from * this.threads + to);
  }

  /** This thread took in `bytes` of requests moved here by `from`. */
  take(from: number, bytes: number): void {
    Atomics.add(this.cells, this.threads + this.threads * BOARD_SLOTS * CELLS + from * this.threads + this.index, bytes);
  }

  // ---- services ----

  private base(t: number, slot: number): number {
    return this.threads + (t * BOARD_SLOTS + slot) * CELLS;
  }

  private entry(name: string, frame: Buffer | null): BoardEntry {
    let e = this.entries.get(name);
    if (e === undefined) {
      e = new BoardEntry(name, frame ?? Buffer.from(name, 'latin1'), this.threads);
      this.entries.set(name, e);
    }
    return e;
  }

  /** A slot on this thread's board for the service; null when every slot is taken. */
  open(name: string): BoardEntry | null {
    const slot = this.free.length > 0 ? (this.free.pop() as number) : this.next < BOARD_SLOTS ? this.next++ : -1;
    if (slot < 0) return null;
    const e = this.entry(name, null);
    e.slot = slot;
    return e;
  }

  /** Zeroes and frees the service's slot here. */
  close(e: BoardEntry): void {
    if (e.slot < 0) return;
    this.publish(e, 0, 0, 0);
    this.free.push(e.slot);
    e.slot = -1;
    this.forget(e);
  }

  publish(e: BoardEntry, idle: number, queued: number, workers: number): void {
    const at = this.base(this.index, e.slot);
    const c = this.cells;
    c[at] = idle;
    c[at + 1] = queued;
    c[at + 2] = workers;
  }

  /** Another thread put the service at a slot (or, at -1, released the slot it had). */
  told(t: number, name: Buffer, slot: number): void {
    const map = this.bySlot[t];
    if (slot >= 0) {
      const e = this.entry(name.toString('latin1'), Buffer.from(name));
      e.remote[t] = slot;
      map.set(slot, e);
      return;
    }
    const key = name.toString('latin1');
    const e = this.entries.get(key);
    if (e === undefined || e.remote[t] < 0) return;
    map.delete(e.remote[t]);
    e.remote[t] = -1;
    this.forget(e);
  }

  private forget(e: BoardEntry): void {
    if (e.slot >= 0) return;
    for (let t = 0; t < this.threads; t++) if (e.remote[t] >= 0) return;
    this.entries.delete(e.name);
  }

  idle(e: BoardEntry, t: number): number {
    const slot = e.remote[t];
    return slot < 0 ? 0 : this.cells[this.base(t, slot)];
  }

  queued(e: BoardEntry, t: number): number {
    const slot = e.remote[t];
    return slot < 0 ? 0 : this.cells[this.base(t, slot) + 1];
  }

  workers(e: BoardEntry, t: number): number {
    const slot = e.remote[t];
    return slot < 0 ? 0 : this.cells[this.base(t, slot) + 2];
  }

  /** The entry for a name (known here or told of by another thread). */
  find(name: string): BoardEntry | undefined {
    return this.entries.get(name);
  }

  /** Every service some other thread has told of. */
  known(): IterableIterator<BoardEntry> {
    return this.entries.values();
  }
}
