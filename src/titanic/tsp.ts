// The Titanic Service Protocol (RFC 9) as frames: what a titanic.request, titanic.reply or titanic.close request
// body says, and the replies, each a status frame ("200", "300", "400", "500", optionally with a space and text a
// client must not rely on) and content frames. No I/O.

/** The three services RFC 9 defines. */
export const TITANIC_REQUEST = 'titanic.request';
export const TITANIC_REPLY = 'titanic.reply';
export const TITANIC_CLOSE = 'titanic.close';

export type TitanicService = typeof TITANIC_REQUEST | typeof TITANIC_REPLY | typeof TITANIC_CLOSE;

export function isTitanic(service: string): service is TitanicService {
  return service === TITANIC_REQUEST || service === TITANIC_REPLY || service === TITANIC_CLOSE;
}

/** RFC 9's status codes; none other may be used. */
export type Status = 200 | 300 | 400 | 500;

/** A titanic.* request as parsed; a bad one carries the 400 it is answered with. */
export type TitanicAsk =
  | { kind: 'request'; service: Buffer; body: Buffer[] }
  | { kind: 'reply'; uuid: string }
  | { kind: 'close'; uuid: string }
  | { kind: 'bad'; why: string };

/** A UUID as RFC 9 writes it: 32 hexadecimal characters. */
const UUID = /^[0-9a-fA-F]{32}$/;

/** The UUID in a frame, lower-cased (the same request whichever case a client echoes), or null. */
export function parseUuid(frame: Buffer | undefined): string | null {
  if (frame === undefined || frame.length !== 32) return null;
  const s = frame.toString('latin1');
  return UUID.test(s) ? s.toLowerCase() : null;
}

/**
 * A titanic.* request's body frames. titanic.request: the service name, then at least one body frame (RFC 9: "2 or
 * more frames"); titanic.reply and titanic.close: one UUID frame.
 */
export function parseAsk(service: TitanicService, body: readonly Buffer[], maxServiceName: number): TitanicAsk {
  if (service === TITANIC_REQUEST) {
    const name = body[0];
    if (name === undefined || name.length === 0) return { kind: 'bad', why: 'no service frame' };
    if (name.length > maxServiceName) return { kind: 'bad', why: `service name over ${maxServiceName} bytes` };
    for (let i = 0; i < name.length; i++) {
      if (name[i] < 0x20 || name[i] > 0x7e) return { kind: 'bad', why: 'service name is not printable' };
    }
    if (name.toString('latin1').startsWith('titanic.') || name.toString('latin1').startsWith('mmi.')) {
      return { kind: 'bad', why: 'titanic.* and mmi.* cannot be stored' };
    }
    if (body.length < 2) return { kind: 'bad', why: 'no request body frame' };
    return { kind: 'request', service: name, body: body.slice(1) };
  }
  if (body.length !== 1) return { kind: 'bad', why: `expected one UUID frame, got ${body.length}` };
  const uuid = parseUuid(body[0]);
  if (uuid === null) return { kind: 'bad', why: 'not a UUID (32 hexadecimal characters)' };
  return service === TITANIC_REPLY ? { kind: 'reply', uuid } : { kind: 'close', uuid };
}

const CODES: Record<Status, Buffer> = {
  200: Buffer.from('200'),
  300: Buffer.from('300'),
  400: Buffer.from('400'),
  500: Buffer.from('500'),
};

/** A reply: the status frame (with text after a space, when given), then the content frames. */
export function answer(status: Status, content: readonly Buffer[] = [], text?: string): Buffer[] {
  const head = text === undefined ? CODES[status] : Buffer.from(`${status} ${text}`, 'latin1');
  return [head, ...content];
}
