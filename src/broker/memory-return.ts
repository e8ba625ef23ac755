// Giving memory back after a burst. Once the requests a storm left in the queues are gone, what held them is
// garbage, but a broker that then idles allocates too little to make V8 collect it, and the Buffers' memory (outside
// the V8 heap) stays with the process. So when the bytes held in queues fall from a high mark to a small part of it,
// one full collection runs, at most once per `minGapMs`. The pause (tens of ms) comes when the load has just fallen.

import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/** A full, synchronous collection; V8 gives it to new contexts once --expose-gc is set. */
function fullGc(): (() => void) | null {
  try {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as unknown;
    return typeof gc === 'function' ? (gc as () => void) : null;
  } catch {
    return null;
  }
}

export class MemoryReturn {
  private high = 0;
  private lowSince = -1;
  private lastGc = -Infinity;
  private gc: (() => void) | null | undefined;
  /** Collections run so far. */
  collections = 0;

  constructor(
    /** The collection to run (default: V8's full GC); tests give their own. */
    collect?: () => void,
    /** Held bytes that count as a burst worth collecting after. */
    private readonly burstBytes = 16 * 1024 * 1024,
    /** How long the held bytes must stay low first (ms). */
    private readonly quietMs = 1000,
    private readonly minGapMs = 30000,
  ) {
    this.gc = collect;
  }

  /** Called on every clock tick with the bytes held now; true when it collected. */
  tick(now: number, held: number): boolean {
    if (held > this.high) this.high = held;
    if (this.high < this.burstBytes || held > this.high / 8) {
      this.lowSince = -1;
      return false;
    }
    if (this.lowSince < 0) this.lowSince = now;
    if (now - this.lowSince < this.quietMs || now - this.lastGc < this.minGapMs) return false;
    if (this.gc === undefined) this.gc = fullGc();
    if (this.gc === null) return false;
    this.gc();
    this.collections++;
    this.lastGc = now;
    this.high = held;
    this.lowSince = -1;
    return true;
  }
}
