// The broker's error replies on the wire (the client library turns them into BrokerError, see client/errors.ts).
//
// Wire format (documented in the README): an error reply is an ordinary REPLY (0.1) or FINAL (0.2) on the
// request's own service frame, whose body is exactly three frames:
//   1. the 6 bytes "\0error" (a NUL byte, then "error"); the broker never forwards a worker reply that starts
//      with this frame, so it cannot be forged by a worker or mistaken for a real reply,
//   2. a reason code in ASCII (one of ErrorCode),
//   3. a human-readable UTF-8 message.

export const ERROR_MARK = Buffer.from('\0error', 'latin1');

/**
 * Every reason code, in one place: the stats, the metrics and the client's BrokerError all derive from this list.
 * expired: waited longer than --request-ttl for a worker; overloaded: the service queue was full (--max-queue);
 * failed: workers died holding it --max-attempts times; invalid: it broke a limit (frames, frame size, service name);
 * shutdown: the broker is stopping; rejected: a --validate check refused the body (the message says which);
 * denied: the client's CURVE key is not on --allow-clients.
 */
export const ERROR_CODES = ['expired', 'overloaded', 'failed', 'invalid', 'shutdown', 'rejected', 'denied'] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

/** A zeroed count per error code. */
export function errorCounts(): Record<ErrorCode, number> {
  const c = {} as Record<ErrorCode, number>;
  for (const code of ERROR_CODES) c[code] = 0;
  return c;
}

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
