// MDP extensions our broker offers and our client uses, announced through MMI (RFC 8's namespace for broker
// services) so that a client never sends one to a broker that did not list it.

/** The MMI service a client asks; a broker without it answers 501 (the Guide's brokers) or nothing. */
export const MMI_EXTENSIONS = 'mmi.extensions';

/**
 * Frames before the empty delimiter of a client request are an envelope the broker returns verbatim on every reply
 * to that request. Our client puts a 4-byte request id there to pipeline many requests per service.
 */
export const EXT_REQUEST_ID = 'request-id';
