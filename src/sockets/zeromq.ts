// zeromq, loaded on first use: a broker on the zmtp transport without CURVE or shards never touches the binding, and
// does not pay for loading it (~9 MB of RSS, measured). The package is CommonJS, so a synchronous require works.

import { createRequire } from 'node:module';

type Zeromq = typeof import('zeromq');

const require = createRequire(import.meta.url);

export function zeromq(): Zeromq {
  return require('zeromq') as Zeromq;
}
