// The public surface of mdbroker.
export { Broker, DEFAULT_BROKER_OPTIONS, type BrokerOptions } from './broker.js';
export { BrokerCore, DEFAULT_CORE_OPTIONS, type CoreOptions, type CoreStats, type CoreSnapshot } from './broker-core.js';
export { Client, type ClientOptions, type RequestOptions, type StreamChunk } from './client.js';
export { Worker, type WorkerOptions, type Handler, type RequestContext } from './worker.js';
export { BrokerError, TimeoutError, ClosedError, MdpError, ERROR_MARK, type ErrorCode } from './errors.js';
export { DEFAULT_LIMITS, type Limits, type Version } from './codec.js';
export { keygen, readAccessFile, readAllowList, readSecretKeyFile, type KeyPair, type CurveClientKeys, type WorkerGroup } from './security.js';
