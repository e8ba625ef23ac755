// The typed errors the client library throws.

import type { ErrorCode } from '../protocol/errors.js';

/** Base of every error the client library throws. */
export class MdpError extends Error {
  override name = 'MdpError';
}

/** The broker answered the request with an error reply. */
export class BrokerError extends MdpError {
  override name = 'BrokerError';
  constructor(
    readonly code: ErrorCode | string,
    message: string,
    readonly service: string,
  ) {
    super(`${service}: ${code}: ${message}`);
  }
}

/** No reply came within the timeout, after every retry and every endpoint. */
export class TimeoutError extends MdpError {
  override name = 'TimeoutError';
}

/** The client was closed while the request was pending. */
export class ClosedError extends MdpError {
  override name = 'ClosedError';
}

/** A broker error reply (see protocol/errors.ts) as the error the client throws. */
export function decodeError(body: readonly Buffer[], service: string): BrokerError {
  return new BrokerError(body[1].toString('latin1'), body[2].toString('utf8'), service);
}

/** The request was withdrawn through its AbortSignal (or its stream was left early); `cause` is the signal's reason. */
export class AbortError extends MdpError {
  override name = 'AbortError';
  readonly code = 'ABORT_ERR';
}

/**
 * The ZMTP handshake failed for good: the broker refused this peer's CURVE key, or one side speaks CURVE and the other
 * does not. Resending cannot help; the message says which.
 */
export class RefusedError extends MdpError {
  override name = 'RefusedError';
  constructor(readonly endpoint: string, message: string) {
    super(message);
  }
}

/** failFast: the broker says no worker serves this service (mmi.service answered 404), so the request was not sent. */
export class UnavailableError extends MdpError {
  override name = 'UnavailableError';
  constructor(readonly service: string, message: string) {
    super(message);
  }
}

/** ready(): no endpoint could be connected to (nothing listening there, a wrong port, a host that refuses). */
export class UnreachableError extends MdpError {
  override name = 'UnreachableError';
  constructor(readonly endpoints: string[], message: string) {
    super(message);
  }
}

/** An endpoint the library cannot connect to as written (bad scheme, no port, a name that does not parse). */
export class EndpointError extends MdpError {
  override name = 'EndpointError';
  constructor(readonly endpoint: string, message: string) {
    super(message);
  }
}
