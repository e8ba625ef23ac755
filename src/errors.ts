// The broker's error replies, and the typed errors the client library turns them into.
//
// Wire format (documented in the README): an error reply is an ordinary REPLY (0.1) or FINAL (0.2) on the
// request's own service frame, whose body is exactly three frames:
//   1. the 6 bytes "\0error" (a NUL byte, then "error"); the broker never forwards a worker reply that starts
//      with this frame, so it cannot be forged by a worker or mistaken for a real reply,
//   2. a reason code in ASCII (one of ErrorCode),
//   3. a human-readable UTF-8 message.

export const ERROR_MARK = Buffer.from('\0error', 'latin1');

export type ErrorCode =
  /** The request waited longer than --request-ttl for a worker. */
  | 'expired'
  /** The service queue was full (--max-queue). */
  | 'overloaded'
  /** Workers died holding the request --max-attempts times. */
  | 'failed'
  /** The request broke a limit (frames, frame size, service name) and was not queued. */
  | 'invalid'
  /** The broker is shutting down and took no new work. */
  | 'shutdown'
  /** A --validate check refused the request body (the message says which). */
  | 'rejected';

/** True when a reply body is a broker error reply. */
export function isErrorReply(body: readonly Buffer[]): boolean {
  return body.length === 3 && isErrorMark(body[0]);
}

export function isErrorMark(b: Buffer): boolean {
  return b.length === 6 && b[0] === 0 && b[1] === 0x65 && b[2] === 0x72 && b[3] === 0x72 && b[4] === 0x6f && b[5] === 0x72;
}

export function errorBody(code: ErrorCode, message: string): Buffer[] {
  return [ERROR_MARK, Buffer.from(code, 'latin1'), Buffer.from(message, 'utf8')];
}

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

export function decodeError(body: readonly Buffer[], service: string): BrokerError {
  return new BrokerError(body[1].toString('latin1'), body[2].toString('utf8'), service);
}
