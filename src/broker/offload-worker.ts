// The piscina pool's entry point: stats aggregation and --validate checks, off the main thread.
import { workerData } from 'piscina';
import { aggregate, type AggregateInput, type AggregateOutput } from './stats-report.js';
import { buildValidator, validatePacked, type PackedBatch, type ValidateRule, type Validator } from './validation.js';

const rules = ((workerData as { rules?: ValidateRule[] } | undefined)?.rules ?? []) as ValidateRule[];
let validator: Promise<Validator> | null = null;

export async function validate(batch: PackedBatch): Promise<[number, string][]> {
  validator ??= buildValidator(rules);
  return validatePacked(await validator, batch);
}

export function stats(input: AggregateInput): Promise<AggregateOutput> {
  return aggregate(input);
}
