// Drives --validate: takes the requests the core holds back, gets verdicts (inline, or from the piscina pool in
// batches), and hands them back to the core strictly in arrival order, even when pool batches finish out of order.

import type { Admission, BrokerCore } from '../core/broker-core.js';
import type { Offload } from './offload.js';

/** Requests per pool task at most; a burst is otherwise sent as one batch when the event loop turns. */
const MAX_BATCH = 256;

interface InFlight {
  batch: Admission[];
  verdicts: (string | null)[] | null;
}

export class AdmissionPump {
  private pending: Admission[] = [];
  private scheduled = false;
  private readonly inflight: InFlight[] = [];
  private idleWaiters: (() => void)[] = [];

  constructor(
    private readonly core: BrokerCore,
    private readonly offload: Offload,
    private readonly now: () => number,
    private readonly flush: () => void,
  ) {}

  /** Call after core.handle(): picks up whatever the core held back. */
  pump(): void {
    const held = this.core.toValidate;
    if (held.length === 0) return;
    const inline = this.offload.validateInline();
    if (inline !== null) {
      // Inline: nothing is ever in flight, so order is arrival order by construction.
      const batch = held.splice(0);
      const verdicts = batch.map((r) => (r.needsCheck ? inline(r.serviceName, r.body()) : null));
      this.core.admit(batch, verdicts, this.now());
      return;
    }
    for (const r of held) this.pending.push(r);
    held.length = 0;
    if (this.pending.length >= MAX_BATCH) this.send();
    else if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.send());
    }
  }

  /** Resolves when no batch is pending or in flight. */
  idle(): Promise<void> {
    if (this.pending.length === 0 && this.inflight.length === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  private send(): void {
    this.scheduled = false;
    while (this.pending.length > 0) {
      const batch = this.pending.splice(0, MAX_BATCH);
      const slot: InFlight = { batch, verdicts: null };
      this.inflight.push(slot);
      const checked: number[] = [];
      const items = [];
      for (let i = 0; i < batch.length; i++) {
        if (!batch[i].needsCheck) continue;
        checked.push(i);
        items.push({ service: batch[i].serviceName, body: batch[i].body() });
      }
      const verdicts: (string | null)[] = new Array<string | null>(batch.length).fill(null);
      const done = items.length === 0 ? Promise.resolve<[number, string][]>([]) : this.offload.validateBatch(items);
      done.then(
        (rejected) => {
          for (const [k, reason] of rejected) verdicts[checked[k]] = reason;
          slot.verdicts = verdicts;
          this.drain();
        },
        (err: unknown) => {
          // Fail closed: a request we could not check is refused, with the reason, never dropped.
          for (const k of checked) verdicts[k] = `validator failed: ${(err as Error).message ?? String(err)}`;
          slot.verdicts = verdicts;
          this.drain();
        },
      );
    }
  }

  private drain(): void {
    while (this.inflight.length > 0 && this.inflight[0].verdicts !== null) {
      const slot = this.inflight.shift() as InFlight;
      this.core.admit(slot.batch, slot.verdicts as (string | null)[], this.now());
    }
    this.flush();
    if (this.pending.length === 0 && this.inflight.length === 0) {
      const w = this.idleWaiters;
      this.idleWaiters = [];
      for (const f of w) f();
    }
  }
}
