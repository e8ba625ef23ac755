// One client or worker connection to one broker endpoint, as the libraries see it: send, receive, and what happens to
// the connection. Two implementations: the project's own ZMTP (the default: no native addon, about a third of the
// zeromq binding's CPU per request in the client and in the worker, README "What an app gets") and libzmq through the zeromq binding (`transport:
// 'libzmq'`, for inproc:// and other libzmq-only endpoints or socket options). The binding is loaded (a synchronous
// require) only when such a link opens: an app on the default transport never loads the native zeromq addon.

import { ZmtpLink } from './zmtp-link.js';
import { LibzmqLink } from './libzmq-link.js';
import type { CurveClientKeys, DealerOptions } from '../sockets/dealer.js';

/** What a link reports, in the order things happen. */
export interface LinkHandler {
  /** A whole message from the broker. */
  message(frames: Buffer[]): void;
  /**
   * The handshake completed: messages flow. `credit`: how many requests the broker may send a worker on this link at
   * once (above 1 only where the worker offered credit and the broker granted it; protocol/extensions.ts).
   */
  connected(credit: number): void;
  /** A connection that had completed its handshake is gone; what was unwritten on it is lost. */
  disconnected(): void;
  /** A connection attempt failed (nothing listening, the host refuses): the link dials again after a back-off. */
  retrying(): void;
  /** The broker refused us during the handshake (our CURVE key, or a mechanism mismatch); the link dials again later. */
  refused(reason: string): void;
}

export interface BrokerLink {
  /** Queues a message: written when the connection is up (kept across failed attempts until the first is). */
  send(frames: Buffer[]): void;
  /** Writes what is queued (waiting up to `lingerMs` for it to leave), then closes. Resolves when closed. */
  close(lingerMs?: number): Promise<void>;
  readonly closed: boolean;
  /** Starts reporting connection events where that costs something (libzmq: a monitor socket); else always on. */
  watch?(): void;
}

export type Transport = 'zmtp' | 'libzmq';

export interface LinkOptions {
  /** `zmtp` (default for tcp:// and ipc://) or `libzmq` (the default for every other scheme). */
  transport?: Transport;
  curve?: CurveClientKeys;
  /** ZMTP heartbeats: PING every heartbeatInterval ms; silence for heartbeatTimeout ms ends the connection. */
  heartbeatInterval: number;
  heartbeatTimeout: number;
  /** Re-dial back-off bounds in ms (zmtp; libzmq re-dials on its own schedule). */
  reconnectMin?: number;
  reconnectMax?: number;
  /** Who we are, for refusal reasons ("this client's CURVE key"). */
  role?: 'client' | 'worker';
  /** zmtp, a worker: offer to hold up to this many requests at once (X-MDP-Credit in our READY); 1 or none: MDP's one. */
  credit?: number;
  /** libzmq only: socket options. */
  socketOptions?: DealerOptions;
  /** libzmq only: report connection events (a monitor costs one more libzmq socket). */
  watch?: boolean;
}

/** The transport an endpoint gets unless one is chosen: node:net dials tcp:// and ipc:// only. */
export function transportFor(endpoint: string, chosen: Transport | undefined): Transport {
  if (chosen !== undefined) return chosen;
  return /^(tcp|ipc):\/\//.test(endpoint) ? 'zmtp' : 'libzmq';
}

/**
 * Opens a link to `endpoint` (dialling starts at once). Throws EndpointError when it cannot be dialled at all (the
 * zmtp transport chosen for a scheme node:net cannot dial, say).
 */
export function openLink(endpoint: string, opts: LinkOptions, handler: LinkHandler): BrokerLink {
  return transportFor(endpoint, opts.transport) === 'zmtp' ? new ZmtpLink(endpoint, opts, handler) : new LibzmqLink(endpoint, opts, handler);
}
