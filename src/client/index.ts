// The client-side package entry (`mdbroker/client`): the MDP client and worker libraries, with none of the broker's
// dependencies (no piscina, pino, prom-client or hdr-histogram-js).
export { Client, type ClientOptions, type RequestOptions, type StreamChunk } from './client.js';
export { Worker, type WorkerOptions, type Handler, type RequestContext } from './worker.js';
export { TitanicError, type TitanicWaitOptions } from './titanic-calls.js';
export { BrokerError, TimeoutError, ClosedError, AbortError, RefusedError, EndpointError, UnreachableError, UnavailableError, MdpError } from './errors.js';
export { ERROR_MARK, ERROR_CODES, type ErrorCode } from '../protocol/errors.js';
export type { Version } from '../protocol/codec.js';
export type { CurveClientKeys } from '../sockets/dealer.js';
