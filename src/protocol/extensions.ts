// MDP extensions our broker offers and our client uses, announced through MMI (RFC 8's namespace for broker
// services) so that a client never sends one to a broker that did not list it.

/** The MMI service a client asks; a broker without it answers 501 (the Guide's brokers) or nothing. */
export const MMI_EXTENSIONS = 'mmi.extensions';

/**
 * Frames before the empty delimiter of a client request are an envelope the broker returns verbatim on every reply
 * to that request. Our client puts a 4-byte request id there to pipeline many requests per service.
 */
export const EXT_REQUEST_ID = 'request-id';

/**
 * Worker credit, offered in the ZMTP handshake rather than in MDP (RFC 37 lets a peer add `X-` properties to READY;
 * libzmq and the Guide's brokers ignore them), so that the MDP frames stay exactly RFC 7/18 whoever is on the other
 * side. A worker puts `X-MDP-Credit: n` (ASCII decimal) in its READY: it takes up to n requests at once on this
 * connection. A broker that honours it puts its own cap in its READY; the credit is then the smaller of the two, and
 * each REQUEST's client address frame carries a CREDIT_TAG_BYTES tag at its end, which the worker echoes back
 * unchanged (the address frame is opaque to a worker) so the broker knows which of the requests a reply ends. Without
 * the property on both sides a worker holds one request at a time, as MDP has it. Why: one request per connection
 * is one read and one write system call per request on each side, the most of a worker's CPU (bench/apps.ts).
 */
export const CREDIT_PROPERTY = 'X-MDP-Credit';

/** CREDIT_PROPERTY as parsed READY metadata names it (RFC 37 names are case-insensitive). */
const PROPERTY_KEY = CREDIT_PROPERTY.toLowerCase();

/** Bytes of the slot tag at the end of a credited worker's client address frame (big-endian slot number). */
export const CREDIT_TAG_BYTES = 2;

/** The largest credit a tag can number. */
export const MAX_CREDIT = 1 << (8 * CREDIT_TAG_BYTES);

/** A credit property's value: a decimal 1..MAX_CREDIT, else 0 (absent or malformed: no credit offered). */
export function parseCredit(value: Buffer | undefined): number {
  if (value === undefined || value.length === 0 || value.length > 6) return 0;
  let n = 0;
  for (let i = 0; i < value.length; i++) {
    const d = value[i] - 48;
    if (d < 0 || d > 9) return 0;
    n = n * 10 + d;
  }
  return n >= 1 && n <= MAX_CREDIT ? n : 0;
}

/** Our READY's properties offering `credit` (above 1), or none. */
export function creditOffer(credit: number | undefined): Record<string, string> | undefined {
  return credit !== undefined && credit > 1 ? { [CREDIT_PROPERTY]: String(credit) } : undefined;
}

/**
 * The credit a connection has once both READYs are in: the smaller of ours and the peer's figure, or 1 (MDP's one
 * request at a time) when either side offered none. `properties`: the peer's READY, names lower-cased.
 */
export function grantedCredit(ours: number | undefined, properties: ReadonlyMap<string, Buffer>): number {
  if (ours === undefined || ours <= 1) return 1;
  return Math.max(1, Math.min(ours, parseCredit(properties.get(PROPERTY_KEY))));
}
