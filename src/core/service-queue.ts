import { createRequire } from 'node:module';
import type * as FixedDequeModule from 'mnemonist/fixed-deque';

// The one module, not mnemonist's index: the index loads every structure it has (7 MiB of RSS, measured at startup).
const FixedDeque = createRequire(import.meta.url)('mnemonist/fixed-deque') as typeof FixedDequeModule.default.default;
type FixedDeque<T> = InstanceType<typeof FixedDeque<T>>;

// A request queue with O(1) push, shift and unshift (requeue at the front). mnemonist's FixedDeque is a ring buffer
// of fixed capacity; this grows it by doubling and shrinks it back when it drains, so an idle service holds a small
// ring and a burst costs amortised O(1) per request. Array#shift is O(n) and is never used.

const MIN_CAPACITY = 16;

/** The ring's storage, as mnemonist's FixedDeque keeps it (not in its typings). */
interface RingInternals<T> {
  items: (T | undefined)[];
  start: number;
}

export class ServiceQueue<T> {
  private ring: FixedDeque<T>;

  constructor() {
    this.ring = new FixedDeque<T>(Array, MIN_CAPACITY);
  }

  get size(): number {
    return this.ring.size;
  }

  push(item: T): void {
    if (this.ring.size === this.ring.capacity) this.resize(this.ring.capacity * 2);
    this.ring.push(item);
  }

  /** Puts an item back at the front, ahead of everything queued. */
  unshift(item: T): void {
    if (this.ring.size === this.ring.capacity) this.resize(this.ring.capacity * 2);
    this.ring.unshift(item);
  }

  shift(): T | undefined {
    const item = this.take();
    const cap = this.ring.capacity;
    if (cap > MIN_CAPACITY && this.ring.size < cap >>> 3) this.resize(cap >>> 1);
    return item;
  }

  /** Removes every item for which `drop` returns true, keeping the order of the rest. O(n). */
  removeWhere(drop: (item: T) => boolean): number {
    let removed = 0;
    for (let i = this.ring.size; i > 0; i--) {
      const item = this.take() as T;
      if (drop(item)) removed++;
      else this.ring.push(item);
    }
    return removed;
  }

  /**
   * mnemonist's shift leaves the item in its slot until the ring wraps over it: a service that served a burst of
   * 1 MiB requests kept them all alive (measured: ~50 MB still referenced after a storm drained). So the slot is
   * cleared here.
   */
  private take(): T | undefined {
    const ring = this.ring as unknown as RingInternals<T>;
    const at = ring.start;
    const item = this.ring.shift();
    if (item !== undefined) ring.items[at] = undefined;
    return item;
  }

  private resize(capacity: number): void {
    const next = new FixedDeque<T>(Array, Math.max(MIN_CAPACITY, capacity));
    for (let item = this.ring.shift(); item !== undefined; item = this.ring.shift()) next.push(item);
    this.ring = next;
  }
}
