// Where CPU-side work runs: inline on the main thread, or in a piscina pool (--offload). The same functions run in
// both places; only the call differs. Work goes to the pool in batches (validation) or on a timer (stats), never
// per message: a pool task costs ~55-65 us of CPU here (shared/node-perf-facts.md).

import type { Piscina } from 'piscina';
import { aggregate, type AggregateInput, type AggregateOutput } from './stats-report.js';
import { buildValidator, packBatch, type ValidateRule, type Validator } from './validation.js';

export type OffloadMode = 'none' | 'stats' | 'validation' | 'all';
export const OFFLOAD_MODES: readonly OffloadMode[] = ['none', 'stats', 'validation', 'all'];

export interface BatchItem {
  service: string;
  body: Buffer[];
}

export class Offload {
  /** Started on first use: a broker that offloads nothing never loads piscina (~10 MB of RSS, measured). */
  private pool: Promise<Piscina> | null = null;
  private inlineValidator: Validator | null = null;
  readonly statsInPool: boolean;
  readonly validationInPool: boolean;

  constructor(
    readonly mode: OffloadMode,
    private readonly rules: readonly ValidateRule[],
    private readonly threads: number,
  ) {
    this.statsInPool = mode === 'stats' || mode === 'all';
    this.validationInPool = (mode === 'validation' || mode === 'all') && rules.length > 0;
  }

  private getPool(): Promise<Piscina> {
    this.pool ??= import('piscina').then(({ Piscina }) => new Piscina({
      filename: new URL('./offload-worker.js', import.meta.url).href,
      minThreads: this.threads,
      maxThreads: this.threads,
      // Batches are small and independent; let a thread take several at once instead of queueing.
      concurrentTasksPerWorker: 4,
      idleTimeout: 60_000,
      workerData: { rules: this.rules },
    }));
    return this.pool;
  }

  /** Loads the user validator module for inline validation; call before serving. */
  async init(): Promise<void> {
    if (this.statsInPool || this.validationInPool) await this.getPool();
    if (this.rules.length > 0 && !this.validationInPool) this.inlineValidator = await buildValidator(this.rules);
  }

  aggregate(input: AggregateInput): Promise<AggregateOutput> {
    if (this.statsInPool) return this.getPool().then((pool) => pool.run(input, { name: 'stats' }) as Promise<AggregateOutput>);
    return aggregate(input);
  }

  /** Inline validation, synchronous; null when validation goes to the pool. */
  validateInline(): Validator | null {
    return this.inlineValidator;
  }

  /** Pool validation of one batch: [index, reason] for each rejected item. */
  validateBatch(items: readonly BatchItem[]): Promise<[number, string][]> {
    const packed = packBatch(items);
    return this.getPool().then((pool) => pool.run(packed, { name: 'validate', transferList: [packed.data.buffer as ArrayBuffer] }) as Promise<[number, string][]>);
  }

  async close(): Promise<void> {
    const pool = this.pool;
    this.pool = null;
    if (pool) await (await pool).destroy();
  }
}

