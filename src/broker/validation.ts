// --validate: CPU-heavy checks of request bodies, run before a request is queued. The cheap structural checks
// (frames, sizes, headers) stay in codec.ts; these are the ones worth moving off the main thread.
//
// Flag forms (repeatable; '@SERVICE' limits a check to one service, else it applies to all):
//   utf8[@S]          every body frame is well-formed UTF-8
//   json[@S]          every body frame is well-formed JSON (UTF-8)
//   max-body=N[@S]    the body (all frames) is at most N bytes
//   module=PATH       a module whose default export is (service: string, body: Buffer[]) => string | null | undefined;
//                     a string is the rejection reason

import { isUtf8 } from 'node:buffer';
import { pathToFileURL } from 'node:url';
import { resolve } from 'node:path';
import { ConfigError } from './config-error.js';

export interface ValidateRule {
  check: 'utf8' | 'json' | 'max-body' | 'module';
  service: string | null;
  maxBody?: number;
  module?: string;
}

export type Validator = (service: string, body: Buffer[]) => string | null;

export function parseValidateFlags(flags: readonly string[]): ValidateRule[] {
  return flags.map((raw) => {
    if (raw.startsWith('module=')) {
      const path = raw.slice('module='.length);
      if (!path) throw new ConfigError('validate', `--validate ${raw}: module needs a path`);
      return { check: 'module', service: null, module: pathToFileURL(resolve(path)).href };
    }
    const at = raw.indexOf('@');
    const spec = at < 0 ? raw : raw.slice(0, at);
    const service = at < 0 ? null : raw.slice(at + 1);
    if (service === '') throw new ConfigError('validate', `--validate ${raw}: empty service after '@'`);
    if (spec === 'utf8' || spec === 'json') return { check: spec, service };
    const m = /^max-body=(\d+)$/.exec(spec);
    if (m) return { check: 'max-body', service, maxBody: Number(m[1]) };
    throw new ConfigError('validate', `--validate ${raw}: expected utf8, json, max-body=N (each optionally @SERVICE) or module=PATH`);
  });
}

/** Whether any rule applies to requests for `service`. Asked once per service, not per request. */
export function appliesTo(rules: readonly ValidateRule[], service: string): boolean {
  return rules.some((r) => r.service === null || r.service === service);
}

/** Builds the validator (loading the user module, if any). Runs on the main thread or in a pool thread. */
export async function buildValidator(rules: readonly ValidateRule[]): Promise<Validator> {
  const modules: ((service: string, body: Buffer[]) => unknown)[] = [];
  for (const r of rules) {
    if (r.check !== 'module') continue;
    const mod = (await import(r.module as string)) as { default?: unknown };
    if (typeof mod.default !== 'function') throw new ConfigError('validate', `--validate module=${r.module}: default export is not a function`);
    modules.push(mod.default as (service: string, body: Buffer[]) => unknown);
  }
  return (service, body) => {
    for (const r of rules) {
      if (r.service !== null && r.service !== service) continue;
      switch (r.check) {
        case 'max-body': {
          let n = 0;
          for (const f of body) n += f.length;
          if (n > (r.maxBody as number)) return `body is ${n} bytes, limit ${r.maxBody}`;
          break;
        }
        case 'utf8':
          for (let i = 0; i < body.length; i++) if (!isUtf8(body[i])) return `body frame ${i + 1} is not valid UTF-8`;
          break;
        case 'json':
          for (let i = 0; i < body.length; i++) {
            if (!isUtf8(body[i])) return `body frame ${i + 1} is not valid UTF-8`;
            try {
              JSON.parse(body[i].toString('utf8'));
            } catch (err) {
              return `body frame ${i + 1} is not valid JSON: ${(err as Error).message}`;
            }
          }
          break;
        default:
          break;
      }
    }
    for (const m of modules) {
      let verdict: unknown;
      try {
        verdict = m(service, body);
      } catch (err) {
        return `validator threw: ${(err as Error).message ?? String(err)}`;
      }
      if (typeof verdict === 'string' && verdict.length > 0) return verdict;
    }
    return null;
  };
}

/** A batch of bodies packed into one buffer, so the pool gets one transfer instead of many clones. */
export interface PackedBatch {
  services: string[];
  /** Per request: number of frames. */
  frameCounts: Uint32Array;
  /** Per frame: byte length. */
  frameLengths: Uint32Array;
  data: Uint8Array;
}

export function packBatch(items: readonly { service: string; body: Buffer[] }[]): PackedBatch {
  let frames = 0;
  let bytes = 0;
  for (const it of items) {
    frames += it.body.length;
    for (const f of it.body) bytes += f.length;
  }
  const frameCounts = new Uint32Array(items.length);
  const frameLengths = new Uint32Array(frames);
  const data = new Uint8Array(bytes);
  let fi = 0;
  let off = 0;
  items.forEach((it, i) => {
    frameCounts[i] = it.body.length;
    for (const f of it.body) {
      frameLengths[fi++] = f.length;
      data.set(f, off);
      off += f.length;
    }
  });
  return { services: items.map((it) => it.service), frameCounts, frameLengths, data };
}

/** Runs the validator over a packed batch: [index, reason] for each rejected request. */
export function validatePacked(validate: Validator, b: PackedBatch): [number, string][] {
  const rejected: [number, string][] = [];
  const buf = Buffer.from(b.data.buffer, b.data.byteOffset, b.data.byteLength);
  let fi = 0;
  let off = 0;
  for (let i = 0; i < b.frameCounts.length; i++) {
    const body: Buffer[] = [];
    for (let k = 0; k < b.frameCounts[i]; k++) {
      const len = b.frameLengths[fi++];
      body.push(buf.subarray(off, off + len));
      off += len;
    }
    const reason = validate(b.services[i], body);
    if (reason !== null) rejected.push([i, reason]);
  }
  return rejected;
}
