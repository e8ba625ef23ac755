// One peer connection as the core sees it. A routing id names a peer on the wire, but a routing id can be claimed
// again by the next peer once its owner leaves; a Peer cannot. The transport makes one per connection (a serial
// never reused) and marks it gone when the connection ends; the core ties every held request and every registered
// worker to the Peer it came from, so a reply goes only to the connection that asked, whoever holds its routing id
// later. Whatever the core keeps about a peer (bytes held, pause state, the DISCONNECT it was told, when it was last
// warned about) lives here and goes with the connection: nothing is remembered of a departed peer but the Peer
// objects its still-held requests point to.

/** What one connection may do, resolved once when its handshake ends (its CURVE key's rights). */
export interface Rights {
  /** The key as Z85, for log lines. */
  readonly name: string;
  /** Why this peer may not send this request (said in the `denied` reply), or null when it may. */
  mayRequest(service: Buffer): string | null;
  /** Why this peer may not serve this service (it is told DISCONNECT), or null when it may. */
  mayServe(service: string): string | null;
}

export class Peer {
  /** The connection ended: nothing more is sent to it and nothing it asked for is served. */
  gone = false;
  /** The core's worker on this connection, if it registered (owned by the core). */
  worker: object | null = null;
  /** Bytes of this peer's requests the core holds (its share of --max-client-bytes). */
  heldBytes = 0;
  /** The core asked the transport to stop reading this peer. */
  paused = false;
  /** Told DISCONNECT (or said it): anything but a fresh READY from it is ignored. */
  disconnected = false;
  /** When it last got a warning in the log (ms on the core's clock). */
  lastWarned = -Infinity;
  /** Requests a worker on this connection may hold at once: above 1 only when both ends offered worker credit. */
  credit = 1;
  /**
   * --shards: -1 for a connection of this thread; for a client on another thread, that thread's index (this Peer
   * stands for it there, and `serial` is its serial on that thread).
   */
  home = -1;
  /** Some of its requests were moved to other threads (they are told when it leaves). */
  spread = false;

  constructor(
    /** Unique among this thread's connections for the life of the process, never reused (unlike a routing id). */
    readonly serial: number,
    /** Its CURVE key's rights; null on a connection without a key (then only a core with no policy serves it). */
    readonly rights: Rights | null = null,
  ) {}
}

/** What a connection without resolved rights is told where rights are required (fail closed). */
export const NO_RIGHTS = 'no CURVE rights for this connection';

let lastSerial = 0;

/** The next connection serial (process-wide, so peers of several transports never share one). */
export function nextSerial(): number {
  return ++lastSerial;
}
