// A ROUTER socket in TypeScript: accepts ZMTP 3.0/3.1 peers (DEALER, REQ, ROUTER) on tcp:// and ipc:// endpoints,
// gives each a routing id (its Identity property, or 0x00 and 4 random bytes) and a Peer (a serial never reused),
// delivers every message as [routing id, ...frames] with its Peer, and sends [routing id, ...frames] to a Peer.
// Unlike libzmq it says when a peer's connection ends, and a send to a gone or full peer fails at once, never
// silently. A send goes to the connection its Peer names, never to whoever holds that routing id now.
//
// Identities (RFC 37): at most 255 octets, and none starting with a zero octet (reserved for the ROUTER's own ids);
// a peer announcing such a one is told ERROR and closed. A second peer claiming a live identity is refused.
//
// Liveness: PING to every peer silent for one interval (ZMTP 3.0 peers too, as libzmq does), close after `liveness`
// silent intervals; a peer that says nothing within the handshake timeout is closed, and so is one silent past the
// TTL its own PING asked for. libzmq answers PING from its I/O thread, so a peer whose application is blocked in a
// long handler stays connected.

import { connect, createServer, type ListenOptions, type Server, type Socket } from 'node:net';
import { unlinkSync, statSync } from 'node:fs';
import { randomFillSync } from 'node:crypto';
import { Peer, nextSerial, type Rights } from '../core/peer.js';
import type { RawKeyPair } from './curve.js';
import { acceptedConnection, descriptorConnection } from './net-stream.js';
import { ZmtpConnection, type CloseReason, type ConnectionOwner, type ConnectionOptions } from './connection.js';
import { ROUTER_PEERS } from './wire.js';
import { creditOffer, grantedCredit } from '../protocol/extensions.js';
import { formatEndpoint, listenOptions, parseEndpoint } from './endpoint.js';

export interface ZmtpRouterOptions {
  maxFrameBytes: number;
  /** Frames per message, routing id included. */
  maxFrames: number;
  /** Bytes queued for one peer before sends to it fail as 'full' (the send high-water mark, in bytes). */
  maxQueuedBytes: number;
  /** Bytes of one message a peer may send (all its frames); a bigger one closes its connection. Default: none. */
  maxMessageBytes?: number;
  /** PING a peer silent this long (ms); 0 turns heartbeating off. */
  heartbeatInterval: number;
  /** Close a peer silent for this many intervals. */
  heartbeatLiveness: number;
  /** Close a peer that has not finished the handshake within this many ms. */
  handshakeTimeout: number;
  /** Frames delivered as shared Buffers when they arrive (see ConnectionOptions.intern). */
  intern?: readonly Buffer[];
  /**
   * CURVE on every endpoint: the broker's key pair (raw) and the keys allowed to connect (hex of the raw keys;
   * null: any). What each key may then do is the broker's business (curveKeyOf).
   */
  curve?: { keys: RawKeyPair; allow: ReadonlySet<string> | null };
  /** CURVE: the rights of a client's permanent key, resolved once when its handshake ends and kept on its Peer. */
  rightsOf?: (key: Buffer) => Rights;
  /**
   * Worker credit (protocol/extensions.ts): the most requests one worker connection may hold at once, offered in our
   * READY; a peer that asks for credit gets the smaller of its figure and this on its Peer. 0 or 1: none offered.
   */
  credit?: number;
  placement?: Placement;
  /** Large frames read come from frame-pool.ts; the owner releases them (see ConnectionOptions.pooled). */
  pooled?: boolean;
}

export interface ZmtpRouterEvents {
  message(frames: Buffer[], peer: Peer): void;
  /** A peer that had finished its handshake is gone. */
  peerClosed(peer: Peer): void;
  /** A connection was closed for a reason worth a log line (not a plain peer close). */
  closed?(reason: CloseReason, conn: ZmtpConnection): void;
}

/** Where accepted connections are served (--shards: one of several threads accepting on the same socket). */
export interface Placement {
  /** Return true to hand the connection to another thread (its socket, not yet read from, is then not ours). */
  placed(sock: Socket): boolean;
  /** A connection served here ended (handshake done or not). */
  released(): void;
}

/** The longest Identity a peer may announce (RFC 37: 255 octets; the first may not be zero). */
const MAX_IDENTITY = 255;

export type SendResult = 'unreachable' | 'full' | null;

/** Map key of a routing id: generated ids (0x00 + uint32) as numbers, cheap to hash; others as strings. */
function keyOf(id: Buffer): number | string {
  return id.length === 5 && id[0] === 0 ? id.readUInt32BE(1) : id.toString('latin1');
}

/** Random bytes for generated routing ids, drawn from the system's CSPRNG a block at a time. */
const RANDOM = Buffer.alloc(4096);
let randomAt = RANDOM.length;
function randomId(): Buffer {
  if (randomAt + 4 > RANDOM.length) {
    randomFillSync(RANDOM);
    randomAt = 0;
  }
  // Its own backing store, not a slab of Node's pool (64 KiB on Node 24): see unpooled() in protocol/codec.ts.
  const id = Buffer.allocUnsafeSlow(5);
  id[0] = 0;
  RANDOM.copy(id, 1, randomAt, randomAt + 4);
  randomAt += 4;
  return id;
}

export class ZmtpRouter implements ConnectionOwner {
  /** Connections closed, by reason; handshakes completed. */
  readonly counters: Record<string, number> = { accepted: 0, handshakes: 0, unsent: 0, paused: 0 };
  private readonly servers: { server: Server; path: string | null }[] = [];
  /** Live connections by routing id (to refuse a second claim) and by their Peer's serial (to send). */
  private readonly byId = new Map<number | string, ZmtpConnection>();
  private readonly bySerial = new Map<number, ZmtpConnection>();
  private readonly all = new Set<ZmtpConnection<Socket>>();
  private dirty: ZmtpConnection[] = [];
  private flushScheduled = false;
  private readonly connOpts: ConnectionOptions;
  private timer: NodeJS.Timeout | null = null;
  private period = 1000;
  private closing = false;
  private allow: ReadonlySet<string> | null = null;
  private readonly flushAll = () => this.flushNow();

  constructor(
    private readonly opts: ZmtpRouterOptions,
    private readonly events: ZmtpRouterEvents,
  ) {
    this.connOpts = {
      socketType: 'ROUTER', peers: ROUTER_PEERS, maxFrameBytes: opts.maxFrameBytes, maxFrames: opts.maxFrames, intern: opts.intern,
      properties: creditOffer(opts.credit),
      maxQueuedBytes: opts.maxQueuedBytes, maxMessageBytes: opts.maxMessageBytes, pooled: opts.pooled,
    };
    const curve = opts.curve;
    if (curve !== undefined) {
      this.allow = curve.allow;
      this.connOpts.curve = { keys: curve.keys, authorize: (key) => this.allow === null || this.allow.has(key.toString('hex')) };
    }
  }

  /** CURVE: the keys (hex of the raw keys) that may connect from now on (null: any); connections made stay. */
  setAllow(allow: ReadonlySet<string> | null): void {
    this.allow = allow;
  }

  /** Bytes queued for every peer and not yet taken by the kernel (each connection's share is bounded). */
  unwrittenBytes(): number {
    let n = 0;
    for (const c of this.all) n += c.queuedBytes;
    return n;
  }

  /** Peers connected now (handshake done or not). */
  get connections(): number {
    return this.all.size;
  }

  /** Binds one endpoint; resolves with it as bound (a wildcard port resolved). */
  async bind(endpoint: string): Promise<string> {
    const ep = parseEndpoint(endpoint);
    if (ep === null) throw new Error(`${endpoint}: the zmtp transport serves tcp://HOST:PORT and ipc://PATH endpoints`);
    if (this.closing) throw new Error('router is closed');
    if (ep.kind === 'ipc' && !ep.path.startsWith('\0')) await removeStaleSocket(ep.path);
    this.startTimer();
    const server = await this.listen(listenOptions(ep));
    this.servers.push({ server, path: ep.kind === 'ipc' && !ep.path.startsWith('\0') ? ep.path : null });
    const addr = server.address();
    return formatEndpoint(ep, typeof addr === 'object' && addr !== null ? addr.port : 0);
  }

  /** Accepts on a listening descriptor another router bound (--shards); this router owns `fd` (a dup) from now. */
  async adopt(fd: number): Promise<void> {
    if (this.closing) throw new Error('router is closed');
    this.startTimer();
    this.servers.push({ server: await this.listen({ fd }), path: null });
  }

  /** The listening descriptors of the endpoints bound here, in bind order. */
  listeningDescriptors(): number[] {
    return this.servers.map(({ server }) => (server as unknown as { _handle: { fd: number } })._handle.fd);
  }

  /** Serves a connection accepted here and kept. */
  serve(sock: Socket): void {
    if (this.closing) {
      sock.destroy();
      return;
    }
    this.startTimer();
    this.counters.accepted++;
    this.all.add(acceptedConnection(sock, this, this.connOpts, performance.now()));
  }

  /** Serves a connection another thread accepted and handed over as a descriptor (--shards); throws if it cannot. */
  serveDescriptor(fd: number): void {
    this.startTimer();
    this.counters.accepted++;
    const conn = descriptorConnection(fd, this, this.connOpts, performance.now());
    this.all.add(conn);
    if (this.closing) conn.stream.destroy();
  }

  private startTimer(): void {
    if (this.timer !== null) return;
    this.period = Math.max(5, Math.min(1000, (this.opts.heartbeatInterval || this.opts.handshakeTimeout) / 2));
    this.timer = setInterval(() => this.tick(performance.now()), this.period);
  }

  private async listen(where: ListenOptions | { fd: number }): Promise<Server> {
    // Nothing is read from an accepted socket before it is built again with our reader (net-stream.ts), and, with a
    // placement hook, before it is known to stay on this thread.
    const server = createServer({ pauseOnConnect: true }, (sock) => this.accept(sock));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(where as ListenOptions, () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', () => undefined);
    return server;
  }

  /** Queues [routing id, ...frames] for the connection `peer` names; written when the event loop turns. */
  send(msg: Buffer[], peer: Peer): SendResult {
    const conn = this.bySerial.get(peer.serial);
    if (conn === undefined || conn.closed) return 'unreachable';
    if (conn.queuedBytes >= this.opts.maxQueuedBytes) return 'full';
    conn.send(msg);
    return null;
  }

  /** The live peer with this serial. */
  peer(serial: number): Peer | null {
    return this.bySerial.get(serial)?.peer ?? null;
  }

  /** Stops reading from a peer (it is told nothing; TCP pushes back on it). */
  pause(peer: Peer): void {
    const conn = this.bySerial.get(peer.serial);
    if (conn === undefined || conn.paused) return;
    this.counters.paused++;
    conn.pause();
  }

  resume(peer: Peer): void {
    this.bySerial.get(peer.serial)?.resume();
  }

  /** Writes what is queued, sends nothing more, closes every connection (waiting up to lingerMs for writes). */
  async close(lingerMs = 1000): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    this.flushNow();
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    // A server's close callback waits for its connections, so it is awaited after they are gone.
    const stopped = Promise.all(this.servers.map(({ server }) => new Promise((r) => server.close(r))));
    const open = [...this.all];
    const gone = open.map((c) => new Promise<void>((r) => (c.stream.closed ? r() : c.stream.once('close', () => r()))));
    for (const c of open) c.stream.end();
    let t: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(gone), new Promise((r) => (t = setTimeout(r, lingerMs)))]);
    clearTimeout(t);
    for (const c of open) c.stream.destroy();
    await stopped;
    for (const { path } of this.servers) if (path) unlinkSocket(path);
  }

  // ---- ConnectionOwner ----

  onReady(conn: ZmtpConnection, _type: string, identity: Buffer, properties: ReadonlyMap<string, Buffer>): CloseReason | null {
    if (this.closing) return 'shutdown';
    let id: Buffer;
    if (identity.length > 0) {
      if (identity.length > MAX_IDENTITY || identity[0] === 0) return 'bad-identity';
      // libzmq's ROUTER, by default, refuses a second peer claiming an identity in use; the first keeps it.
      if (this.byId.has(keyOf(identity))) return 'duplicate-identity';
      id = identity;
    } else {
      // Unguessable, so no peer can aim at another's; and even a peer that claimed a departed peer's id would get
      // nothing of its (sends go by Peer).
      do id = randomId();
      while (this.byId.has(keyOf(id)));
    }
    const key = conn.curveKey;
    const rightsOf = this.opts.rightsOf;
    conn.id = id;
    conn.key = keyOf(id);
    conn.peer = new Peer(nextSerial(), key !== null && rightsOf !== undefined ? rightsOf(key) : null);
    conn.peer.credit = grantedCredit(this.opts.credit, properties);
    this.byId.set(conn.key, conn);
    this.bySerial.set(conn.peer.serial, conn);
    this.counters.handshakes++;
    return null;
  }

  onMessage(conn: ZmtpConnection, frames: Buffer[]): void {
    this.events.message(frames, conn.peer as Peer);
  }

  onClose(conn: ZmtpConnection, reason: CloseReason, unsent: number): void {
    if (this.all.delete(conn as ZmtpConnection<Socket>)) this.opts.placement?.released();
    this.counters[reason] = (this.counters[reason] ?? 0) + 1;
    // Messages accepted by send() but not yet written when the peer went: counted, never silent. (The core has
    // already re-queued what a gone worker held; what a gone client was owed has nobody left to take it.)
    if (unsent > 0) this.counters.unsent = (this.counters.unsent ?? 0) + unsent;
    if (reason !== 'peer-closed' && reason !== 'socket-error' && reason !== 'shutdown') this.events.closed?.(reason, conn);
    const peer = conn.peer;
    if (peer !== null && this.bySerial.get(peer.serial) === conn) {
      this.bySerial.delete(peer.serial);
      if (this.byId.get(conn.key) === conn) this.byId.delete(conn.key);
      if (!this.closing) this.events.peerClosed(peer);
    }
  }

  writeBlocked(): void {
    this.counters['write-paused'] = (this.counters['write-paused'] ?? 0) + 1;
  }

  needsFlush(conn: ZmtpConnection): void {
    conn.flushQueued = true;
    this.dirty.push(conn);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      // After every read of this event-loop turn: one write per connection for all it was sent meanwhile.
      setImmediate(this.flushAll);
    }
  }

  private flushNow(): void {
    this.flushScheduled = false;
    const list = this.dirty;
    this.dirty = [];
    for (let i = 0; i < list.length; i++) list[i].flush();
  }

  private accept(sock: Socket): void {
    if (this.closing) {
      sock.destroy();
      return;
    }
    if (this.opts.placement?.placed(sock) === true) {
      this.counters['handed-off'] = (this.counters['handed-off'] ?? 0) + 1;
      return;
    }
    this.serve(sock);
  }

  private tick(now: number): void {
    const interval = this.opts.heartbeatInterval;
    const ttl = interval * this.opts.heartbeatLiveness;
    // Silence is counted in ticks, not read off the clock: after the event loop stalls, this timer runs before the
    // reads that were waiting, and every peer would look silent for the length of the stall.
    const deadAfter = Math.ceil(ttl / this.period);
    for (const c of this.all) {
      // A connection we stopped reading cannot be heard; it is not silent, we are not listening.
      if (c.heard || c.paused) {
        c.heard = false;
        c.lastHeard = now;
        c.silentTicks = 0;
      } else c.silentTicks++;
      if (!c.ready) {
        if (!c.closed && now - c.openedAt > this.opts.handshakeTimeout) c.close('handshake-timeout');
        continue;
      }
      // The TTL the peer's own PING asked for (RFC 37), in ticks as above; not while we are not listening.
      if (c.ttlMs > 0 && !c.paused && ++c.ttlTicks * this.period > c.ttlMs + this.period) {
        c.close('peer-ttl');
        continue;
      }
      if (interval <= 0) continue;
      if (c.silentTicks >= deadAfter) c.close('heartbeat-timeout');
      else if (now - c.lastHeard >= interval && now - c.lastPing >= interval) c.ping(now, ttl / 100);
    }
  }
}

/**
 * A socket file left by a broker that did not exit cleanly would make listen() fail with EADDRINUSE, so it is
 * removed; but one that a live process still accepts on is left alone (listen() then fails: the endpoint is taken).
 */
async function removeStaleSocket(path: string): Promise<void> {
  let isSocket = false;
  try {
    isSocket = statSync(path).isSocket();
  } catch {
    return; // not there
  }
  if (!isSocket) return;
  const live = await new Promise<boolean>((resolve) => {
    const probe = connect({ path });
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (!live) unlinkSocket(path);
}

function unlinkSocket(path: string): void {
  try {
    if (statSync(path).isSocket()) unlinkSync(path);
  } catch {
    // already gone
  }
}
