// The calling thread's event-loop delay, reported with the stats (the bench's 'loop p99' column).

import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';

/**
 * Event-loop delay of the calling thread since the last call, in microseconds: how long ready work (a received
 * message, a timer) waited because the thread was busy. The direct measure of "the main thread is blocked".
 */
const LOOP_RESOLUTION_MS = 5;

export class LoopDelay {
  private readonly h: IntervalHistogram = monitorEventLoopDelay({ resolution: LOOP_RESOLUTION_MS });
  constructor() {
    this.h.enable();
  }
  take(into: Record<string, number>): void {
    // The sampling timer's own period is part of each sample; what is left is the delay.
    const us = (ns: number) => Math.max(0, Math.round(ns / 1000 - LOOP_RESOLUTION_MS * 1000));
    into.loopDelayP99Us = us(this.h.percentile(99));
    into.loopDelayMaxUs = us(this.h.max);
    this.h.reset();
  }
  close(): void {
    this.h.disable();
  }
}
