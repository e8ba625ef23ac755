// A link on the project's own ZMTP (src/zmtp/): one node:net connection at a time to one broker endpoint, dialled
// again after a failure with exponential back-off and jitter, ZMTP heartbeats (RFC 37 PING with a TTL) to find a
// dead broker, NULL or CURVE as the client (RFC 26). Writes are batched per event-loop turn.
//
// What is sent while no connection is up waits here and goes out on the next one that completes its handshake (as a
// libzmq DEALER keeps it in its pipe). What was queued on a connection that then dropped is lost with it: the owner
// hears `disconnected` and decides what to resend.

import type { Socket } from 'node:net';
import { SHUTTING_DOWN, type ZmtpConnection, type CloseReason, type ConnectionOptions, type ConnectionOwner } from '../zmtp/connection.js';
import { dialledConnection } from '../zmtp/net-stream.js';
import { flushThisTurn } from '../zmtp/flush-turn.js';
import { DEALER_PEERS } from '../zmtp/wire.js';
import { parseEndpoint, type Endpoint } from '../zmtp/endpoint.js';
import { z85Decode } from '../zmtp/z85.js';
import type { CurveClientMechanism } from '../zmtp/mechanism.js';
import { EndpointError, MdpError } from './errors.js';
import { MDPC01, MDPC02, MDPW01, MDPW02 } from '../protocol/codec.js';
import type { BrokerLink, LinkHandler, LinkOptions } from './broker-link.js';
import { creditOffer, grantedCredit } from '../protocol/extensions.js';

/** Largest frame and message taken from a broker, and what may wait unwritten before reading stops (per link). */
const MAX_FRAME_BYTES = 256 * 1024 * 1024;
const MAX_MESSAGE_BYTES = 512 * 1024 * 1024;
const MAX_FRAMES = 65536;
const MAX_QUEUED_BYTES = 64 * 1024 * 1024;

const HEADERS = [MDPC01, MDPC02, MDPW01, MDPW02];

function rawKey(text: string, what: string): Buffer {
  const key = z85Decode(text);
  if (key === null || key.length !== 32) throw new MdpError(`curve.${what}: expected a 40-character Z85 key`);
  return key;
}

export class ZmtpLink implements BrokerLink, ConnectionOwner {
  private conn: ZmtpConnection<Socket> | null = null;
  /** Sent while no connection was up: goes out on the next one. */
  private backlog: Buffer[][] = [];
  private up = false;
  private closing = false;
  private delay: number;
  private readonly minDelay: number;
  private readonly maxDelay: number;
  private retryTimer: NodeJS.Timeout | null = null;
  private readonly beat: NodeJS.Timeout;
  /** Heartbeat ticks in a row with nothing heard (a stalled event loop counts as one tick, not its duration). */
  private silentTicks = 0;
  private readonly deadAfterTicks: number;
  private readonly ep: Endpoint;
  private readonly connOpts: ConnectionOptions;

  constructor(endpoint: string, private readonly opts: LinkOptions, private readonly handler: LinkHandler) {
    const ep = parseEndpoint(endpoint);
    if (ep === null || (ep.kind === 'tcp' && (ep.port === 0 || ep.host === '0.0.0.0'))) {
      throw new EndpointError(endpoint, `cannot connect to "${endpoint}": the zmtp transport dials tcp://HOST:PORT or ipc://PATH (other schemes: transport 'libzmq')`);
    }
    this.ep = ep;
    this.connOpts = {
      socketType: 'DEALER',
      peers: DEALER_PEERS,
      maxFrameBytes: MAX_FRAME_BYTES,
      maxFrames: MAX_FRAMES,
      maxMessageBytes: MAX_MESSAGE_BYTES,
      maxQueuedBytes: MAX_QUEUED_BYTES,
      // Protocol headers arrive in every message: delivered as shared Buffers, not a new view each.
      intern: HEADERS,
    };
    this.connOpts.properties = creditOffer(opts.credit);
    const curve = opts.curve;
    if (curve !== undefined) {
      this.connOpts.curveClient = {
        keys: { publicKey: rawKey(curve.publicKey, 'publicKey'), secretKey: rawKey(curve.secretKey, 'secretKey') },
        serverKey: rawKey(curve.serverKey, 'serverKey'),
      };
    }
    this.minDelay = opts.reconnectMin ?? 100;
    this.maxDelay = Math.max(this.minDelay, opts.reconnectMax ?? 5000);
    this.delay = this.minDelay;
    this.deadAfterTicks = Math.max(2, Math.ceil(opts.heartbeatTimeout / opts.heartbeatInterval));
    this.beat = setInterval(() => this.tick(), opts.heartbeatInterval);
    this.beat.unref();
    this.dial();
  }

  get closed(): boolean {
    return this.closing;
  }

  send(frames: Buffer[]): void {
    if (this.closing) return;
    if (this.up && this.conn !== null) this.conn.send(frames);
    else this.backlog.push(frames);
  }

  close(lingerMs = 0): Promise<void> {
    if (this.closing) return Promise.resolve();
    this.closing = true;
    clearInterval(this.beat);
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.backlog = [];
    const conn = this.conn;
    this.conn = null;
    if (conn === null || conn.closed) return Promise.resolve();
    const sock = conn.stream;
    return new Promise<void>((resolve) => {
      sock.once('close', () => resolve());
      if (conn.ready && lingerMs > 0) {
        // What is queued goes now, then our side ends; a broker that does not close its side is not waited for.
        conn.flush();
        sock.end();
        setTimeout(() => sock.destroy(), lingerMs).unref();
      } else sock.destroy();
    });
  }

  private dial(): void {
    this.retryTimer = null;
    if (this.closing) return;
    const ep = this.ep;
    this.silentTicks = 0;
    this.conn = dialledConnection(ep.kind === 'tcp' ? { host: ep.host, port: ep.port } : { path: ep.path }, this, this.connOpts, performance.now());
  }

  /** Dials again after the back-off (with jitter: links that lost the same broker do not all return at once). */
  private redial(): void {
    if (this.closing || this.retryTimer !== null) return;
    const wait = this.delay * (0.5 + Math.random() / 2);
    this.delay = Math.min(this.delay * 2, this.maxDelay);
    this.retryTimer = setTimeout(() => this.dial(), wait);
  }

  /** Heartbeat: PING the broker (TTL: how long it may wait for us), and end a connection that stays silent. */
  private tick(): void {
    const conn = this.conn;
    if (conn === null || conn.closed) return;
    // A ZMTP 3.0 broker (libzmq 4.1) knows no PING: its silence proves nothing, and it is not asked.
    const pings = !conn.ready || conn.peerMajor > 3 || conn.peerMinor >= 1;
    // A connection we stopped reading (its broker does not take our writes) cannot be heard: not silent.
    if (conn.heard || conn.paused || !pings) {
      conn.heard = false;
      this.silentTicks = 0;
    } else if (++this.silentTicks >= this.deadAfterTicks) {
      conn.close(conn.ready ? 'heartbeat-timeout' : 'handshake-timeout');
      return;
    }
    if (conn.ready && pings) conn.ping(performance.now(), this.opts.heartbeatTimeout / 100);
  }

  // ---- ConnectionOwner ----

  onReady(conn: ZmtpConnection, _type: string, _identity: Buffer, properties: ReadonlyMap<string, Buffer>): CloseReason | null {
    this.up = true;
    // Ours was our offer; the broker's READY carries its cap, if it grants any.
    const credit = grantedCredit(this.opts.credit, properties);
    this.delay = this.minDelay;
    const backlog = this.backlog;
    this.backlog = [];
    for (let i = 0; i < backlog.length; i++) conn.send(backlog[i]);
    this.handler.connected(credit);
    return null;
  }

  onMessage(conn: ZmtpConnection, frames: Buffer[]): void {
    if (conn !== this.conn) return;
    // A message the owner chokes on must not end the process from inside a socket event (the libzmq link's receive
    // loop drops it the same way); the owner's windows and liveness decide what happens to its request.
    try {
      this.handler.message(frames);
    } catch {
      // dropped
    }
  }

  onClose(conn: ZmtpConnection, reason: CloseReason): void {
    if (conn !== this.conn) return;
    this.conn = null;
    if (this.up) {
      this.up = false;
      this.handler.disconnected();
    } else {
      const refusal = this.refusal(conn, reason);
      if (refusal !== null) this.handler.refused(refusal);
      else this.handler.retrying();
    }
    this.redial();
  }

  needsFlush(conn: ZmtpConnection): void {
    flushThisTurn(conn);
  }

  /** Why the broker refused us during the handshake, or null when the attempt just failed (and is worth repeating). */
  private refusal(conn: ZmtpConnection, reason: CloseReason): string | null {
    const who = this.opts.role ?? 'client';
    if (reason === 'mechanism') return `the handshake failed (the broker speaks another mechanism): a CURVE broker and a plain ${who}, or the reverse`;
    if (reason === 'curve-handshake') {
      const problem = (conn.mechanism as CurveClientMechanism).problem ?? 'the broker broke the CURVE handshake';
      return `the handshake failed (${problem})`;
    }
    // ERROR in place of READY is a refusal (a ZAP status code such as 400 for a key), unless the broker is going away.
    if (reason === 'peer-error' && conn.peerError !== SHUTTING_DOWN) {
      if (this.opts.curve !== undefined) return `the broker refused this ${who}'s CURVE key (ERROR ${conn.peerError ?? ''})`;
      return `the broker refused the connection (ERROR ${conn.peerError ?? ''})`;
    }
    return null;
  }
}
