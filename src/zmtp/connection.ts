// One ZMTP 3.x connection, for either end, with no socket of its own: the greeting, the handshake (through a
// Mechanism: NULL, or CURVE as server or client), PING/PONG, read pausing and the write budget. Bytes come in through
// receive() (decoder.ts turns them into commands and messages); what is queued goes out on flush() (encoder.ts), once
// per event-loop turn, to a ByteStream. net-stream.ts attaches a node:net socket; a test can attach anything.

import {
  GREETING_HEAD, errorCommand, greeting, parseCommand, parseGreeting, pingCommand, pongCommand,
} from './wire.js';
import type { RawKeyPair } from './curve.js';
import { Decoder, type DecoderSink } from './decoder.js';
import { encode, type Writer } from './encoder.js';
import { CurveClientMechanism, CurveServerMechanism, NullMechanism, type Mechanism, type PeerInfo } from './mechanism.js';
import type { Peer } from '../core/peer.js';
import { LARGE_FRAME_BYTES, hold, unhold } from './frame-pool.js';

/** Why a connection ended; each is counted by the owner. */
export type CloseReason =
  | 'peer-closed'
  | 'socket-error'
  | 'bad-greeting'
  | 'mechanism'
  | 'socket-type'
  | 'bad-command'
  | 'protocol-error'
  | 'frame-too-large'
  | 'message-too-large'
  | 'handshake-timeout'
  | 'heartbeat-timeout'
  | 'duplicate-identity'
  | 'bad-identity'
  | 'old-version'
  | 'peer-ttl'
  | 'peer-error'
  | 'curve-handshake'
  | 'curve-denied'
  | 'shutdown';

export interface ConnectionOwner {
  /** The handshake is done. Returns null to accept, or why the connection is refused (it is then closed). */
  onReady(conn: ZmtpConnection, socketType: string, identity: Buffer, properties: ReadonlyMap<string, Buffer>): CloseReason | null;
  /** A whole message; for a ROUTER owner frames[0] is the routing id (the connection's prefix). */
  onMessage(conn: ZmtpConnection, frames: Buffer[]): void;
  /** The connection is gone (after onReady or not); `unsent` messages queued for it were never written. */
  onClose(conn: ZmtpConnection, reason: CloseReason, unsent: number): void;
  /** Something was queued: call flush() on this connection before the event loop turns. */
  needsFlush(conn: ZmtpConnection): void;
  /** Reading stopped: the peer has not taken maxQueuedBytes of what we wrote (counted by the owner). */
  writeBlocked?(conn: ZmtpConnection): void;
}

export interface ConnectionOptions {
  /** Our socket type, sent in READY. */
  socketType: 'ROUTER' | 'DEALER';
  /** Peer socket types we accept. */
  peers: ReadonlySet<string>;
  /** Largest message frame accepted; a bigger one closes the connection before its body is read. */
  maxFrameBytes: number;
  /** Frames kept per message (frames[0], the prefix, included); one more is delivered so the owner can refuse. */
  maxFrames: number;
  /** DEALER: the Identity to announce (empty: none). */
  identity?: Buffer;
  /** Application properties (names begin `X-`, RFC 37) to announce in our READY. */
  properties?: Readonly<Record<string, string>>;
  /**
   * Frames that arrive often (protocol headers): a received frame equal to one of these is delivered as that shared
   * Buffer instead of a new view. Empty and one-byte frames are always shared. The owner must never write to a
   * received frame.
   */
  intern?: readonly Buffer[];
  /** ROUTER: speak CURVE as the server with these keys; `authorize` is asked about each client's permanent key. */
  curve?: { keys: RawKeyPair; authorize(clientKey: Buffer): boolean };
  /** DEALER: speak CURVE as the client with this key pair, to a server with this permanent public key. */
  curveClient?: { keys: RawKeyPair; serverKey: Buffer };
  /**
   * Bytes queued for the peer and not yet taken by the kernel (commands included) past which we stop reading it,
   * until its side drains: a peer that sends and never reads (a PING flood) holds at most this much. Default: none.
   */
  maxQueuedBytes?: number;
  /** Bytes of one message (all its frames) held while it is read; a bigger one closes the connection. Default: none. */
  maxMessageBytes?: number;
  /**
   * Large frames read from the peer come from frame-pool.ts, and the owner releases them when done (the broker's
   * ROUTER). Without it each is a new allocation the GC takes (the client libraries: the application keeps them).
   */
  pooled?: boolean;
}


/** The byte pipe a connection runs over (a node:net Socket is one). */
export interface ByteStream extends Writer {
  end(b: Buffer): unknown;
  destroy(): unknown;
  pause(): unknown;
  resume(): unknown;
  readonly writableLength: number;
  readonly destroyed: boolean;
}

/**
 * The buffer this thread's connections read into when no large frame is being read (see readBuffer()): every read is
 * decoded before the next one lands, and what is kept of it is copied, so one buffer serves them all and an idle
 * connection holds none. 64 KiB, as Node's own reads.
 */
const READ_BUFFER = Buffer.allocUnsafeSlow(65536);

/** The ERROR reason a ROUTER gives a peer it closes because it is going away (a dialling peer just tries again). */
export const SHUTTING_DOWN = 'shutting down';

/** What a refused peer is told in its ERROR command (RFC 37), by reason; others are closed without a word. */
const TELL: Partial<Record<CloseReason, string>> = {
  'bad-identity': 'invalid identity',
  shutdown: SHUTTING_DOWN,
};

const enum State {
  Greeting,
  Handshake,
  Ready,
  Closed,
}

/** RFC 23: send the signature and major version first, read the peer's, and only then the rest of the greeting. */
const GREETING_START = greeting().subarray(0, GREETING_HEAD);

function mechanismFor(opts: ConnectionOptions): Mechanism {
  const ours = { socketType: opts.socketType, identity: opts.identity, extra: opts.properties };
  if (opts.curve !== undefined) return new CurveServerMechanism(opts.curve.keys, opts.curve.authorize, ours);
  if (opts.curveClient !== undefined) return new CurveClientMechanism(opts.curveClient.keys, opts.curveClient.serverKey, ours);
  return new NullMechanism(ours, opts.socketType === 'ROUTER');
}

export class ZmtpConnection<S extends ByteStream = ByteStream> implements DecoderSink {
  /** The routing id a ROUTER gave this peer (frames[0] of every message it delivers); null for a DEALER's. */
  id: Buffer | null = null;
  /** The owner's key for `id`. */
  key: number | string = 0;
  /** The core's handle on this connection, once its handshake is done (ROUTER). */
  peer: Peer | null = null;
  /** The peer's PING asked us to close if nothing arrives within this many ms (0: it did not ask). */
  ttlMs = 0;
  /** Owner ticks since the last PING that asked for a TTL. */
  ttlTicks = 0;
  /** What the peer said it speaks, from its greeting: ZMTP major and minor version (3.0 peers know no PING). */
  peerMajor = 0;
  peerMinor = 0;
  /** The reason text of an ERROR command the peer sent (RFC 23), for the owner's log line or refusal. */
  peerError: string | null = null;
  /** Traffic arrived since the owner last looked (any data counts as a sign of life). */
  heard = true;
  lastHeard = 0;
  lastPing = 0;
  /** Owner ticks in a row that found nothing heard (a stalled event loop counts as one, not as its duration). */
  silentTicks = 0;
  readonly openedAt: number;
  /** The peer's address, for log lines (a closed socket no longer knows it): HOST:PORT, or ipc. */
  readonly address: string;
  /** The peer's host (ipc for a unix socket). */
  readonly host: string;
  /** In the owner's list of connections to flush. */
  flushQueued = false;
  readonly mechanism: Mechanism;
  private state = State.Greeting;
  private reason: CloseReason = 'peer-closed';
  private readonly decoder: Decoder;
  /** The context of the one PONG owed (RFC 37); a PING flood leaves one PONG pending, not one per PING. */
  private pong: Buffer | null = null;
  /** Why reading is stopped: the owner asked (pause()), or the peer does not take what we write. */
  private ownerPaused = false;
  private writePaused = false;
  /** The rest of a chunk not yet decoded because reading was paused after a message in it. */
  private held: Buffer | null = null;
  private resuming = false;
  private readonly out: Buffer[][] = [];
  /** Index of the first frame to write in each queued message (1 for a ROUTER: the routing id is not sent). */
  private readonly outFrom: number;
  private outBytes = 0;
  private readonly cmds: Buffer[] = [];
  private readonly maxQueued: number;

  constructor(
    readonly stream: S,
    private readonly owner: ConnectionOwner,
    private readonly opts: ConnectionOptions,
    now: number,
    peerAddress?: { host: string; port: number },
  ) {
    this.openedAt = now;
    this.lastHeard = now;
    this.host = peerAddress?.host ?? 'ipc';
    this.address = peerAddress === undefined ? 'ipc' : `${peerAddress.host}:${peerAddress.port}`;
    this.outFrom = opts.socketType === 'ROUTER' ? 1 : 0;
    this.maxQueued = opts.maxQueuedBytes ?? Infinity;
    this.mechanism = mechanismFor(opts);
    this.decoder = new Decoder(this, opts);
    stream.write(GREETING_START);
  }

  /** The client's permanent CURVE public key (raw), once its handshake is done; null on NULL connections. */
  get curveKey(): Buffer | null {
    return this.mechanism.peerKey;
  }

  get ready(): boolean {
    return this.state === State.Ready;
  }

  get closed(): boolean {
    return this.state === State.Closed;
  }

  /** Bytes queued and not yet taken by the kernel: the send high-water mark is checked against this. */
  get queuedBytes(): number {
    return this.outBytes + this.stream.writableLength;
  }

  /** Whether reading is stopped (pause(), or the peer not taking our writes): TCP pushes back on the peer. */
  get paused(): boolean {
    return this.ownerPaused || this.writePaused;
  }

  /** Stops reading from the peer: what it sends waits in the kernel, then in the peer, which blocks. */
  pause(): void {
    this.ownerPaused = true;
    this.applyPause();
  }

  resume(): void {
    this.ownerPaused = false;
    this.applyPause();
  }

  // The stream's side: bytes, drain, error, end.

  /** Bytes from the peer, in a Buffer the connection may keep views of. */
  receive(chunk: Buffer): void {
    this.heard = true;
    // Traffic after a PING that asked for a TTL: the peer's deadline is met.
    this.ttlMs = 0;
    if (this.state === State.Closed) return;
    this.consume(chunk, false);
  }

  /**
   * Where the stream should read next: the rest of a large frame's own buffer while one is being read (so its bytes
   * land where they stay), else the thread's shared read buffer.
   */
  readBuffer(): Buffer {
    return this.decoder.readTarget() ?? READ_BUFFER;
  }

  /** `n` bytes were read into `buf`, a Buffer readBuffer() returned. */
  receiveInto(n: number, buf: Buffer): void {
    this.heard = true;
    this.ttlMs = 0;
    if (this.state === State.Closed) return;
    if (buf.buffer === READ_BUFFER.buffer) this.consume(buf.subarray(0, n), true);
    else if (this.decoder.isReadTarget(buf)) this.decoder.filled(n);
    else this.consume(buf.subarray(0, n), false);
  }

  /** The kernel took what was waiting: reading a peer stopped for its unwritten bytes can go on. */
  drained(): void {
    this.checkWriteBudget();
  }

  /** The stream failed; the end follows. */
  errored(): void {
    if (this.state !== State.Closed) this.reason = 'socket-error';
  }

  /** The stream is gone: the owner hears why, and how many queued messages were never written. */
  ended(): void {
    this.state = State.Closed;
    this.decoder.dispose();
    const unsent = this.out.length;
    for (let m = 0; m < unsent; m++) {
      const msg = this.out[m];
      for (let i = this.outFrom; i < msg.length; i++) if (msg[i].length >= LARGE_FRAME_BYTES) unhold(msg[i]);
    }
    this.out.length = 0;
    this.outBytes = 0;
    this.owner.onClose(this, this.reason, unsent);
  }

  private applyPause(): void {
    if (this.state === State.Closed) return;
    if (this.ownerPaused || this.writePaused) this.stream.pause();
    else if (this.held === null) this.stream.resume();
    else if (!this.resuming) {
      // The stream stays paused until the held rest of a chunk is decoded, so nothing overtakes it.
      this.resuming = true;
      setImmediate(this.resumeHeld);
    }
  }

  /**
   * Unwritten bytes (queued messages and commands, and what the kernel has not taken) past the budget: stop
   * reading the peer, after the message being handled, until they fall below it (after a flush, or on 'drain').
   */
  private checkWriteBudget(): void {
    if (this.writePaused) {
      if (this.queuedBytes < this.maxQueued) {
        this.writePaused = false;
        this.applyPause();
      }
    } else if (this.queuedBytes >= this.maxQueued) {
      this.writePaused = true;
      this.applyPause();
      this.owner.writeBlocked?.(this);
    }
  }

  /** Queues msg[from..] (from: 1 for a ROUTER's [id, ...frames], else 0). Written on the next flush(). */
  send(msg: Buffer[]): void {
    this.out.push(msg);
    for (let i = this.outFrom; i < msg.length; i++) {
      const n = msg[i].length;
      this.outBytes += n + 9;
      // A pooled frame is not reused while a write of it is queued (frame-pool.ts).
      if (n >= LARGE_FRAME_BYTES) hold(msg[i]);
    }
    if (!this.writePaused && this.outBytes + this.stream.writableLength >= this.maxQueued) this.checkWriteBudget();
    if (!this.flushQueued) this.owner.needsFlush(this);
  }

  /** Queues a PING (TTL in tenths of a second: how long the peer should wait for traffic before giving up). */
  ping(now: number, ttlDeciseconds: number): void {
    this.lastPing = now;
    this.cmds.push(pingCommand(ttlDeciseconds));
    if (!this.flushQueued) this.owner.needsFlush(this);
  }

  /** Ends the connection: counted as `reason`; with `tell`, an ERROR command goes first (RFC 37). */
  close(reason: CloseReason, tell: string | undefined = TELL[reason]): void {
    if (this.state === State.Closed) return;
    // After a CURVE handshake a command would have to go in a box; the peer is just closed then.
    const plain = this.mechanism.session === null || this.state !== State.Ready;
    this.state = State.Closed;
    this.reason = reason;
    if (tell !== undefined && plain && !this.stream.destroyed) {
      this.stream.end(errorCommand(tell));
      // A peer that does not close its side is not waited for.
      const stream = this.stream;
      setTimeout(() => stream.destroy(), 1000).unref();
    } else this.stream.destroy();
  }

  /** Writes everything queued, in one write where the bodies are small. */
  flush(): void {
    this.flushQueued = false;
    if (this.state !== State.Ready) {
      if (this.state === State.Closed) this.cmds.length = 0;
      return; // messages wait for the handshake; commands too (nothing is sent before READY but READY)
    }
    if (this.pong !== null) {
      this.cmds.push(pongCommand(this.pong));
      this.pong = null;
    }
    if (this.cmds.length > 0 || this.out.length > 0) {
      encode(this.stream, this.cmds, this.out, this.outFrom, this.mechanism.session);
      this.cmds.length = 0;
      this.out.length = 0;
      this.outBytes = 0;
    }
    this.checkWriteBudget();
  }

  /**
   * Decodes a chunk (`transient`: in the shared read buffer); a part left when reading stops mid-chunk (pause) is
   * held until reading resumes.
   */
  private consume(chunk: Buffer, transient: boolean): void {
    const rest = this.decoder.feed(chunk, transient);
    if (rest !== null && this.state !== State.Closed) this.held = rest;
  }

  /** Reading resumed: what was held is decoded first, and only then does the stream deliver more. */
  private readonly resumeHeld = (): void => {
    this.resuming = false;
    if (this.state === State.Closed || this.paused) return;
    const rest = this.held;
    this.held = null;
    if (rest !== null) this.consume(rest, false);
    if (!this.closed && !this.paused && this.held === null) this.stream.resume();
  };

  // The decoder's side (DecoderSink).

  greetingHead(): void {
    const m = this.mechanism;
    this.stream.write(greeting(m.name, m.asServer).subarray(GREETING_HEAD));
  }

  greeting(g: Buffer): boolean {
    const peer = parseGreeting(g);
    this.peerMajor = peer.major;
    this.peerMinor = peer.minor;
    if (peer.mechanism !== this.mechanism.name) {
      this.close('mechanism');
      return false;
    }
    this.state = State.Handshake;
    const first = this.mechanism.start();
    if (first !== null) this.stream.write(first);
    return true;
  }

  command(body: Buffer): boolean {
    this.onCommand(body);
    return this.state !== State.Closed;
  }

  message(frames: Buffer[]): boolean {
    this.owner.onMessage(this, frames);
    return this.state !== State.Closed && !this.paused;
  }

  fail(reason: CloseReason, tell?: string, peerMajor?: number): void {
    if (peerMajor !== undefined) this.peerMajor = peerMajor;
    this.close(reason, tell);
  }

  /**
   * The peer's half of the handshake is done: the owner accepts it or says why not. Our answer (`reply`, null for
   * the side that spoke first) goes only to an accepted peer; a refused one gets ERROR (where TELL has words for
   * it), which RFC 23 lets stand in for READY, on both mechanisms.
   */
  private becomeReady(peer: PeerInfo, reply: Buffer | null): void {
    if (!this.opts.peers.has(peer.socketType)) {
      return this.close('socket-type', `invalid socket type ${peer.socketType || '(none)'} for ${this.opts.socketType}`);
    }
    const refused = this.owner.onReady(this, peer.socketType, peer.identity, peer.properties);
    if (refused !== null) return this.close(refused);
    if (reply !== null) this.stream.write(reply);
    this.state = State.Ready;
    this.decoder.establish(this.id, this.mechanism.session);
    // Anything queued before the handshake finished goes now.
    if (this.out.length > 0 || this.cmds.length > 0) this.owner.needsFlush(this);
  }

  private onCommand(body: Buffer): void {
    const c = parseCommand(body);
    if (c === null) return this.close('bad-command', 'malformed command');
    if (c.name === 'ERROR') {
      // RFC 23: a reason of up to 255 octets after its length.
      const n = c.data.length > 0 ? Math.min(c.data[0], c.data.length - 1) : 0;
      this.peerError = c.data.toString('latin1', 1, 1 + n);
      return this.close('peer-error');
    }
    if (this.state === State.Handshake) {
      const step = this.mechanism.command(c.name, body, c.data);
      if (step.kind === 'send') this.stream.write(step.frame);
      else if (step.kind === 'fail') this.close(step.reason, step.tell);
      else this.becomeReady(step.peer, step.reply);
      return;
    }

    switch (c.name) {
      case 'PING': {
        // RFC 37: answer with PONG echoing the context (at most 16 bytes, after the 2-byte TTL). One PONG is owed
        // at a time, for the latest PING, as libzmq does.
        if (c.data.length < 2) return this.close('bad-command', 'malformed PING');
        this.pong = c.data.subarray(2, 18);
        // The TTL (tenths of a second): close if nothing more arrives within it. Any later traffic clears it.
        const ttl = c.data.readUInt16BE(0);
        if (ttl > 0) {
          this.ttlMs = ttl * 100;
          this.ttlTicks = 0;
        }
        if (!this.flushQueued) this.owner.needsFlush(this);
        return;
      }
      case 'PONG':
        return;
      case 'READY':
        return this.close('bad-command', 'second READY');
      default:
        // SUBSCRIBE, CANCEL, JOIN, LEAVE and unknown commands mean nothing to a ROUTER or DEALER.
        return;
    }
  }
}
