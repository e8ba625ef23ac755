// Giving memory back after a burst. Once the requests a storm left in the queues are gone, what held them is
// garbage, but a broker that then idles allocates too little to make V8 collect it; and the memory the Buffers had
// (outside the V8 heap) stays with the process even once freed, because glibc keeps freed blocks in its heap
// (docs/memory.md has the measurements). So when the bytes held in queues fall from a high mark to a small part of
// it (1/32), the broker runs one full collection, and half a second later (V8 frees Buffer memory on a background thread)
// asks glibc to return its free pages (malloc_trim, called through koffi). At most once per `minGapMs`; the pauses
// (tens of ms) come when the load has just fallen. The frame pool's free buffers (large bodies' memory kept for
// reuse, zmtp/frame-pool.ts) are let go just before the collection, so they are returned too.

import { createRequire } from 'node:module';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { dropFreeFrames } from '../zmtp/frame-pool.js';

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

/** glibc's malloc_trim(0): returns free heap pages to the system. Null off glibc (musl, macOS) or without koffi. */
function mallocTrim(): (() => void) | null {
  if (process.platform !== 'linux') return null;
  try {
    const koffi = createRequire(import.meta.url)('koffi') as typeof import('koffi');
    const trim = koffi.load('libc.so.6').func('int malloc_trim(size_t pad)') as (pad: number) => number;
    return () => void trim(0);
  } catch {
    return null;
  }
}

export interface MemoryReturnOptions {
  /** The collection to run (default: V8's full GC). */
  collect?: () => void;
  /** What returns freed memory to the system afterwards (default: glibc's malloc_trim, where there is one). */
  trim?: () => void;
  /** Lets go of what the process keeps for reuse, just before the collection (default: the frame pool's free buffers). */
  letGo?: () => void;
  /** Held bytes that count as a burst worth collecting after (default 16 MiB). */
  burstBytes?: number;
  /** How long the held bytes must stay low first (ms, default 1000). */
  quietMs?: number;
  /** Least time between two collections (ms, default 30 s). */
  minGapMs?: number;
}

/** Delay between the collection and the trim: V8 frees Buffer memory on a background thread after its GC. */
const TRIM_AFTER_MS = 500;

export class MemoryReturn {
  private high = 0;
  private lowSince = -1;
  private lastGc = -Infinity;
  private trimAt = -1;
  private collect: (() => void) | null | undefined;
  private trim: (() => void) | null | undefined;
  private readonly letGo: () => void;
  private readonly burstBytes: number;
  private readonly quietMs: number;
  private readonly minGapMs: number;
  /** Collections and trims run so far. */
  collections = 0;
  trims = 0;

  constructor(opts: MemoryReturnOptions = {}) {
    this.collect = opts.collect;
    this.trim = opts.trim;
    this.letGo = opts.letGo ?? dropFreeFrames;
    this.burstBytes = opts.burstBytes ?? 16 * 1024 * 1024;
    this.quietMs = opts.quietMs ?? 1000;
    this.minGapMs = opts.minGapMs ?? 30000;
  }

  /** Called on every clock tick with the bytes held now; says what it did, if anything. */
  tick(now: number, held: number): 'collected' | 'trimmed' | null {
    if (this.trimAt >= 0 && now >= this.trimAt) {
      this.trimAt = -1;
      if (this.trim === undefined) this.trim = mallocTrim();
      if (this.trim !== null) {
        this.trim();
        this.trims++;
        return 'trimmed';
      }
    }
    if (held > this.high) this.high = held;
    if (this.high < this.burstBytes || held > this.high / 32) {
      this.lowSince = -1;
      return null;
    }
    if (this.lowSince < 0) this.lowSince = now;
    if (now - this.lowSince < this.quietMs || now - this.lastGc < this.minGapMs) return null;
    if (this.collect === undefined) this.collect = fullGc();
    if (this.collect === null) return null;
    this.letGo();
    this.collect();
    this.collections++;
    this.lastGc = now;
    this.trimAt = now + TRIM_AFTER_MS;
    this.high = held;
    this.lowSince = -1;
    return 'collected';
  }
}
