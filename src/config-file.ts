// --config FILE: the broker's flags as a JSON object, keys being the flags' long names ("heartbeat-interval": 2500,
// "bind": ["tcp://*:5555"]). Flags on the command line override the file. A key that is not a flag is an error that
// names it, so a typo is not silently ignored. docs/operations.md has an example file.

import { readFileSync } from 'node:fs';
import { ConfigError } from './broker/config-error.js';

/** The flags as parseArgs declares them. */
export type FlagSpec = Record<string, { type: 'string' | 'boolean'; multiple?: boolean }>;

/** Keys a config file may not hold: they are about this command line, not the broker. */
const NOT_IN_FILE = new Set(['config', 'help', 'version']);

/** The file's settings in the shape parseArgs gives flags (strings, string arrays for repeatable flags). */
export function readConfigFile(path: string, spec: FlagSpec): Record<string, string | string[]> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError('config', `cannot read --config ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new ConfigError('config', `${path} is not valid JSON: ${(err as Error).message}`);
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new ConfigError('config', `${path} must hold one JSON object of flag names and values`);
  const out: Record<string, string | string[]> = {};
  for (const [key, value] of Object.entries(raw as Record<string, unknown>)) {
    const flag = spec[key];
    if (flag === undefined || NOT_IN_FILE.has(key) || flag.type !== 'string') {
      throw new ConfigError('config', `${path}: unknown key "${key}" (keys are the long names of the flags in --help, without the dashes)`);
    }
    const scalar = (v: unknown): string => {
      if (typeof v === 'string') return v;
      if (typeof v === 'number' && Number.isFinite(v)) return String(v);
      throw new ConfigError('config', `${path}: "${key}" must be a ${flag.multiple ? 'string or a list of strings' : 'string or a number'}, got ${JSON.stringify(v)}`);
    };
    if (flag.multiple) out[key] = Array.isArray(value) ? value.map(scalar) : [scalar(value)];
    else out[key] = scalar(value);
  }
  return out;
}
