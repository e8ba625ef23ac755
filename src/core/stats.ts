// What the broker counts, on the hot path: counters bumped and values recorded into preallocated HDR histograms.
// Nothing here aggregates: snapshot() copies the raw counts (a few KiB per histogram, once per stats interval) and
// stats-report.ts turns them into percentiles, rates and text, inline or in the piscina pool.

import type { DeniedCounts } from './broker-core.js';
import { createRequire } from 'node:module';
import { errorCounts, type ErrorCode } from '../protocol/errors.js';
import type { Histogram } from 'hdr-histogram-js';

// The package's index also loads its WebAssembly build, ~16 MB of RSS in every broker process (measured); the
// plain 32-bit JS histogram is all we use.
const { default: Int32Histogram } = createRequire(import.meta.url)('hdr-histogram-js/dist/Int32Histogram') as {
  default: new (lowest: number, highest: number, digits: 1 | 2 | 3 | 4 | 5) => Histogram;
};

/** Microseconds, 1 us .. 10 min, 2 significant digits (1%): 2,688 32-bit counts, ~10.5 KiB per histogram. */
const HIST = { lowestDiscernibleValue: 1, highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: 2 as const };

export function newHistogram(): Histogram {
  return new Int32Histogram(HIST.lowestDiscernibleValue, HIST.highestTrackableValue, HIST.numberOfSignificantValueDigits);
}

/** Raw histogram state, as copied out of the hot path. */
export interface HistogramSnapshot {
  counts: Uint32Array;
  total: number;
  min: number;
  max: number;
}

interface RawHistogram {
  _counts: Uint32Array;
  _totalCount: number;
  minNonZeroValue: number;
  maxValue: number;
}

export function snapshotHistogram(h: Histogram): HistogramSnapshot {
  const r = h as unknown as RawHistogram;
  return { counts: r._counts.slice(), total: r._totalCount, min: r.minNonZeroValue, max: r.maxValue };
}

/** Rebuilds a histogram from a snapshot and adds it into `into` (merging shards). */
export function addSnapshot(into: Histogram, s: HistogramSnapshot): void {
  if (s.total === 0) return;
  const h = newHistogram();
  const r = h as unknown as RawHistogram;
  r._counts.set(s.counts);
  r._totalCount = s.total;
  r.minNonZeroValue = s.min;
  r.maxValue = s.max;
  into.add(h);
}


export class ServiceStats {
  requests = 0;
  replies = 0;
  requeued = 0;
  readonly errors: Record<ErrorCode, number> = errorCounts();
  /** Enqueue to dispatch, microseconds (the last dispatch of a retried request). */
  readonly wait = newHistogram();
  /** Dispatch to final reply, microseconds. */
  readonly service = newHistogram();
}

export interface ServiceSnapshot {
  name: string;
  requests: number;
  replies: number;
  requeued: number;
  errors: Record<ErrorCode, number>;
  queued: number;
  workers: number;
  idle: number;
  wait: HistogramSnapshot;
  service: HistogramSnapshot;
}

/** One shard's (or the whole single-threaded broker's) state at one moment. */
export interface StatsSnapshot {
  /** Wall-clock ms. */
  at: number;
  uptimeMs: number;
  global: Record<string, number>;
  services: ServiceSnapshot[];
  /** Requests and READYs denied by the key policy, by key (Z85); main thread only. */
  deniedKeys?: Record<string, DeniedCounts>;
}

/** Names past this many get folded into one "_other" entry, so a flood of service names cannot grow memory. */
const MAX_TRACKED_SERVICES = 10000;

export class StatsRecorder {
  private readonly byName = new Map<string, ServiceStats>();
  private other: ServiceStats | null = null;

  /** The stats of a service, created on first use. Called once per service object, not per message. */
  service(name: string): ServiceStats {
    let s = this.byName.get(name);
    if (s === undefined) {
      if (this.byName.size >= MAX_TRACKED_SERVICES) return (this.other ??= new ServiceStats());
      s = new ServiceStats();
      this.byName.set(name, s);
    }
    return s;
  }

  entries(): IterableIterator<[string, ServiceStats]> {
    return this.byName.entries();
  }

  otherEntry(): ServiceStats | null {
    return this.other;
  }
}
