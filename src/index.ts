// The public surface of mdbroker: the broker, its core, and the client-side libraries (also at `mdbroker/client`).
export { Broker } from './broker/broker.js';
export { DEFAULT_BROKER_OPTIONS, type BrokerOptions } from './broker/options.js';
export { ConfigError } from './broker/config-error.js';
export { consoleLog } from './broker/console-log.js';
export type { LogFn, LogLevel } from './core/broker-core.js';
export { BrokerCore, DEFAULT_CORE_OPTIONS, type CoreOptions, type CoreStats, type CoreSnapshot } from './core/broker-core.js';
export * from './client/index.js';
export { DEFAULT_LIMITS, type Limits } from './protocol/codec.js';
export { keygen, readAccessFile, readAllowList, readSecretKeyFile, type KeyPair, type WorkerGroup } from './broker/security.js';
