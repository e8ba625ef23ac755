// The connecting side of ZMTP, as a DEALER: one node:net connection to a ROUTER (or DEALER/REP), messages queued
// until the handshake is done, writes batched per event-loop turn. The benchmark's simulated peers use it to
// measure the broker without paying for the zeromq binding in the generator (`npm run bench -- --peers zmtp`).
// It does not reconnect: a closed connection is reported and the caller decides.

import { ZmtpConnection, type CloseReason, type ConnectionOwner } from './connection.js';
import { DEALER_PEERS } from './wire.js';
import { dialledConnection } from './net-stream.js';
import { flushThisTurn } from './flush-turn.js';
import { parseEndpoint } from './endpoint.js';

export interface ZmtpDealerOptions {
  /** Largest frame accepted from the peer (default 256 MiB). */
  maxFrameBytes?: number;
  /** Frames kept per message (default 1024). */
  maxFrames?: number;
  /** Identity announced to a ROUTER (default none: the ROUTER makes one up). */
  identity?: Buffer;
  /** Frames delivered as shared Buffers (see ConnectionOptions.intern). */
  intern?: readonly Buffer[];
}

export class ZmtpDealer implements ConnectionOwner {
  private readonly conn: ZmtpConnection;
  /** Resolves when the handshake is done; rejects if the connection ends first. */
  readonly ready: Promise<void>;
  private settle: ((err?: Error) => void) | null = null;

  constructor(
    endpoint: string,
    private readonly onMessage_: (frames: Buffer[]) => void,
    private readonly onClosed: (reason: CloseReason) => void = () => undefined,
    opts: ZmtpDealerOptions = {},
  ) {
    const ep = parseEndpoint(endpoint.replace('tcp://*:', 'tcp://127.0.0.1:'));
    if (ep === null) throw new Error(`${endpoint}: ZmtpDealer connects to tcp://HOST:PORT or ipc://PATH`);
    this.ready = new Promise((resolve, reject) => {
      this.settle = (err) => (err ? reject(err) : resolve());
    });
    this.ready.catch(() => undefined);
    this.conn = dialledConnection(ep.kind === 'tcp' ? { host: ep.host, port: ep.port } : { path: ep.path }, this, {
      socketType: 'DEALER',
      peers: DEALER_PEERS,
      maxFrameBytes: opts.maxFrameBytes ?? 256 * 1024 * 1024,
      maxFrames: opts.maxFrames ?? 1024,
      identity: opts.identity,
      intern: opts.intern,
    }, performance.now());
  }

  /** Queues a message; it goes out when the event loop turns (after the handshake). */
  send(frames: Buffer[]): void {
    if (!this.conn.closed) this.conn.send(frames);
  }

  get closed(): boolean {
    return this.conn.closed;
  }

  close(): void {
    this.conn.close('shutdown');
  }

  onReady(): CloseReason | null {
    this.settle?.();
    this.settle = null;
    return null;
  }

  onMessage(_conn: ZmtpConnection, frames: Buffer[]): void {
    this.onMessage_(frames);
  }

  onClose(_conn: ZmtpConnection, reason: CloseReason, _unsent: number): void {
    this.settle?.(new Error(`connection closed before the handshake: ${reason}`));
    this.settle = null;
    this.onClosed(reason);
  }

  needsFlush(conn: ZmtpConnection): void {
    flushThisTurn(conn);
  }
}
