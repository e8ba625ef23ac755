// The requests one worker holds, by slot. A worker without credit has one slot (MDP's one request at a time); a
// credited one (protocol/extensions.ts) has up to its credit, and the slot number is the tag its replies carry back.
// Slots are made only as they are first needed, so a large credit costs nothing until it is used. All O(1) but
// oldest() and drain(), which the clock tick and a worker's end call.

export interface HeldRequest {
  /** When the worker last showed progress on it (dispatch, or a PARTIAL), ms on the core's clock. */
  progressAt: number;
}

export class HeldRequests<R extends HeldRequest> {
  private readonly slots: (R | null)[] = [];
  private readonly free: number[] = [];
  /** Requests held now. */
  size = 0;

  constructor(readonly credit: number) {}

  get full(): boolean {
    return this.size >= this.credit;
  }

  /** Holds `r` in a free slot and returns the slot. The caller checks `full` first. */
  add(r: R): number {
    const slot = this.free.length > 0 ? (this.free.pop() as number) : this.slots.length;
    this.slots[slot] = r;
    this.size++;
    return slot;
  }

  /** The request in `slot`, or null (a slot never used, or free again). */
  at(slot: number): R | null {
    return slot < this.slots.length ? this.slots[slot] : null;
  }

  /** Frees `slot` (which holds a request). */
  remove(slot: number): void {
    this.slots[slot] = null;
    this.free.push(slot);
    this.size--;
  }

  /** The earliest progressAt among the held requests (Infinity when none). */
  oldest(): number {
    let t = Infinity;
    for (const r of this.slots) if (r !== null && r.progressAt < t) t = r.progressAt;
    return t;
  }

  /** Lets go of every held request and returns them (in slot order). */
  drain(): R[] {
    const out: R[] = [];
    for (const r of this.slots) if (r !== null) out.push(r);
    this.slots.length = 0;
    this.free.length = 0;
    this.size = 0;
    return out;
  }
}
