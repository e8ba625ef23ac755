// One ZMTP 3.x connection over a node:net socket, for either end: the greeting, the NULL handshake, the frame
// parser, PING/PONG, and a writer that encodes everything queued for the connection in one write per flush.
//
// Reading: a frame that arrived whole in one read chunk is delivered as a subarray of that chunk, never copied. Only
// a frame (or header) split across reads is assembled: the pieces are collected and concatenated once, when the
// last one arrives. Size limits are checked from the header, before anything is buffered.
// Writing: send() only queues; the owner calls flush() once per event-loop turn, which encodes headers and small
// bodies into one buffer (one write syscall), and passes large bodies to the kernel without a copy. The buffer is
// sized to what is written (under 4 KiB it comes from Node's shared pool), so a peer whose writes are pending
// holds only its own bytes.

import type { Socket } from 'node:net';
import {
  FLAG_COMMAND, FLAG_LONG, FLAG_MORE, FLAG_RESERVED, GREETING_BYTES, GREETING_HEAD,
  checkGreetingHead, errorCommand, greeting, headerBytes, parseCommand, parseGreeting, parseProperties, pingCommand,
  pongCommand, readyCommand, writeHeader, commandFrame, metadata,
} from './wire.js';
import { CURVE_COMMAND, CURVE_MORE, CurveServer, type RawKeyPair } from './curve.js';
import type { Peer } from '../core/peer.js';

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
  onReady(conn: ZmtpConnection, socketType: string, identity: Buffer): CloseReason | null;
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
  /**
   * Frames that arrive often (protocol headers): a received frame equal to one of these is delivered as that shared
   * Buffer instead of a new view. Empty and one-byte frames are always shared. The owner must never write to a
   * received frame.
   */
  intern?: readonly Buffer[];
  /** ROUTER: speak CURVE as the server with these keys; `authorize` is asked about each client's permanent key. */
  curve?: { keys: RawKeyPair; authorize(clientKey: Buffer): boolean };
  /**
   * Bytes queued for the peer and not yet taken by the kernel (commands included) past which we stop reading it,
   * until its side drains: a peer that sends and never reads (a PING flood) holds at most this much. Default: none.
   */
  maxQueuedBytes?: number;
  /** Bytes of one message (all its frames) held while it is read; a bigger one closes the connection. Default: none. */
  maxMessageBytes?: number;
}

/** What a refused peer is told in its ERROR command (RFC 37), by reason; others are closed without a word. */
const TELL: Partial<Record<CloseReason, string>> = {
  'bad-identity': 'invalid identity',
  shutdown: 'shutting down',
};

const EMPTY_FRAME = Buffer.alloc(0);
const BYTE_FRAMES: Buffer[] = Array.from({ length: 256 }, (_, i) => Buffer.from([i]));

/** A shared Buffer equal to b[at..at+size], or null; for frames of up to 8 bytes. */
function internedFrame(b: Buffer, at: number, size: number, intern: readonly Buffer[]): Buffer | null {
  if (size === 0) return EMPTY_FRAME;
  if (size === 1) return BYTE_FRAMES[b[at]];
  for (let k = 0; k < intern.length; k++) {
    const c = intern[k];
    if (c.length !== size) continue;
    let i = 0;
    while (i < size && c[i] === b[at + i]) i++;
    if (i === size) return c;
  }
  return null;
}

/** Command frames are small (READY with a 255-byte identity, PING); anything bigger is hostile. */
const MAX_COMMAND_BYTES = 65536;
/**
 * Pieces of a split unit smaller than this are copied into a buffer of ours rather than kept as they came: a frame
 * trickled one byte per TCP segment arrives as one Buffer per byte, ~550 bytes of memory each (measured), so it
 * would hold hundreds of times its size. Larger pieces cost at most a few percent kept as they are.
 */
const SMALL_PIECE = 4096;
/** Bodies at least this big are written as they are (no copy) instead of being encoded into the write buffer. */
const ZERO_COPY_BYTES = 16384;

const enum State {
  Greeting,
  Handshake,
  Ready,
  Closed,
}

const GREETING = greeting();
const CURVE_GREETING = greeting('CURVE');
/** RFC 23: send the signature and major version first, read the peer's, and only then the rest of the greeting. */
const GREETING_START = GREETING.subarray(0, GREETING_HEAD);
/** What a refused key is told (a ZAP-style status code: libzmq reports it as an authentication failure). */
const CURVE_DENIED = '400';

/** Wire bytes of one frame of `size` sealed in a CURVE MESSAGE box: the frame header and the box. */
function wireBytes(size: number): number {
  const box = CurveServer.sealedBytes(size);
  return headerBytes(box) + box;
}

export class ZmtpConnection {
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
  /** What the peer said it speaks, for log lines: its major version from the greeting. */
  peerMajor = 0;
  /** Traffic arrived since the owner last looked (any data counts as a sign of life). */
  heard = true;
  lastHeard = 0;
  lastPing = 0;
  /** Owner ticks in a row that found nothing heard (a stalled event loop counts as one, not as its duration). */
  silentTicks = 0;
  readonly openedAt: number;
  /** The peer's address, for log lines (a closed socket no longer knows it). */
  readonly address: string;
  /** In the owner's list of connections to flush. */
  flushQueued = false;
  private state = State.Greeting;
  private reason: CloseReason = 'peer-closed';
  private pending: Buffer[] = [];
  private pendingLen = 0;
  /** Our buffer that small pieces of the pending unit are copied into (see SMALL_PIECE), and how far it is used. */
  private acc: Buffer | null = null;
  private accUsed = 0;
  /** The rest of our greeting has been sent (after the peer's first 11 octets said ZMTP 3 or later). */
  private greeted = false;
  /** The context of the one PONG owed (RFC 37); a PING flood leaves one PONG pending, not one per PING. */
  private pong: Buffer | null = null;
  /** Why reading is stopped: the owner asked (pause()), or the peer does not take what we write. */
  private ownerPaused = false;
  private writePaused = false;
  /** Parsing stopped at a message's end because reading was paused meanwhile; `held` is the rest of that chunk. */
  private stopped = false;
  private held: Buffer | null = null;
  private resuming = false;
  private need = GREETING_BYTES;
  private frames: Buffer[] = [];
  private readonly out: Buffer[][] = [];
  /** Index of the first frame to write in each queued message (1 for a ROUTER: the routing id is not sent). */
  private readonly outFrom: number;
  private outBytes = 0;
  private readonly cmds: Buffer[] = [];
  private readonly intern: readonly Buffer[];
  /** The CURVE session, when the connection speaks CURVE. */
  private curve: CurveServer | null = null;
  /** CURVE: HELLO was answered; a second one closes the connection (each costs X25519 operations). */
  private welcomed = false;
  private readonly maxQueued: number;
  private readonly maxMessage: number;
  /** Bytes of the message being read so far. */
  private messageBytes = 0;

  constructor(
    readonly sock: Socket,
    private readonly owner: ConnectionOwner,
    private readonly opts: ConnectionOptions,
    now: number,
  ) {
    this.openedAt = now;
    this.lastHeard = now;
    this.outFrom = opts.socketType === 'ROUTER' ? 1 : 0;
    this.intern = opts.intern ?? [];
    this.maxQueued = opts.maxQueuedBytes ?? Infinity;
    this.maxMessage = opts.maxMessageBytes ?? Infinity;
    this.address = sock.remoteAddress === undefined ? 'ipc' : `${sock.remoteAddress}:${sock.remotePort}`;
    sock.setNoDelay(true);
    sock.on('data', (chunk: Buffer) => this.onData(chunk));
    // The kernel took what was waiting: reading a peer stopped for its unwritten bytes can go on.
    sock.on('drain', () => this.checkWriteBudget());
    sock.on('error', () => {
      if (this.state !== State.Closed) this.reason = 'socket-error';
    });
    sock.on('close', () => {
      this.state = State.Closed;
      const unsent = this.out.length;
      this.out.length = 0;
      this.outBytes = 0;
      this.owner.onClose(this, this.reason, unsent);
    });
    sock.write(GREETING_START);
  }

  /** The client's permanent CURVE public key (raw), once its handshake is done; null on NULL connections. */
  get curveKey(): Buffer | null {
    return this.curve?.clientKey ?? null;
  }

  get ready(): boolean {
    return this.state === State.Ready;
  }

  get closed(): boolean {
    return this.state === State.Closed;
  }

  /** Bytes queued and not yet taken by the kernel: the send high-water mark is checked against this. */
  get queuedBytes(): number {
    return this.outBytes + this.sock.writableLength;
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

  private applyPause(): void {
    if (this.state === State.Closed) return;
    if (this.ownerPaused || this.writePaused) this.sock.pause();
    else if (this.held === null) this.sock.resume();
    else if (!this.resuming) {
      // The socket stays paused until the held rest of a chunk is parsed, so nothing overtakes it.
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
    for (let i = this.outFrom; i < msg.length; i++) this.outBytes += msg[i].length + 9;
    if (!this.writePaused && this.outBytes + this.sock.writableLength >= this.maxQueued) this.checkWriteBudget();
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
    const plain = this.curve === null || this.state !== State.Ready;
    this.state = State.Closed;
    this.reason = reason;
    if (tell !== undefined && plain && !this.sock.destroyed) {
      this.sock.end(errorCommand(tell));
      // A peer that does not close its side is not waited for.
      setTimeout(() => this.sock.destroy(), 1000).unref();
    } else this.sock.destroy();
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
    if (this.curve !== null) this.flushCurve();
    else this.flushPlain();
    this.checkWriteBudget();
  }

  private flushPlain(): void {
    const out = this.out;
    const from = this.outFrom;
    let total = 0;
    let big = false;
    for (let c = 0; c < this.cmds.length; c++) total += this.cmds[c].length;
    for (let m = 0; m < out.length; m++) {
      const msg = out[m];
      for (let i = from; i < msg.length; i++) {
        const n = msg[i].length;
        total += headerBytes(n) + n;
        if (n >= ZERO_COPY_BYTES) big = true;
      }
    }
    if (total === 0) return;
    if (big) return this.flushWithLargeBodies(total);
    const buf = Buffer.allocUnsafe(total);
    let at = 0;
    for (let c = 0; c < this.cmds.length; c++) at += this.cmds[c].copy(buf, at);
    this.cmds.length = 0;
    for (let m = 0; m < out.length; m++) {
      const msg = out[m];
      const last = msg.length - 1;
      for (let i = from; i <= last; i++) {
        const f = msg[i];
        at = writeHeader(buf, at, i < last ? FLAG_MORE : 0, f.length);
        at += f.copy(buf, at);
      }
    }
    out.length = 0;
    this.outBytes = 0;
    this.sock.write(buf);
  }

  /**
   * CURVE: each frame sealed in its own MESSAGE box, each box its own wire frame (flags 0), all sealed in place into
   * one buffer, one write.
   */
  private flushCurve(): void {
    const curve = this.curve as CurveServer;
    const out = this.out;
    const from = this.outFrom;
    // Commands (PING, PONG) were encoded as plain command frames: their bodies go in boxes marked COMMAND.
    const cmds = this.cmds.map((c) => c.subarray((c[0] & FLAG_LONG) !== 0 ? 9 : 2));
    this.cmds.length = 0;
    let total = 0;
    for (const c of cmds) total += wireBytes(c.length);
    for (let m = 0; m < out.length; m++) {
      const msg = out[m];
      for (let i = from; i < msg.length; i++) total += wireBytes(msg[i].length);
    }
    if (total === 0) return;
    const buf = Buffer.allocUnsafe(total);
    let at = 0;
    for (const c of cmds) {
      at = writeHeader(buf, at, 0, CurveServer.sealedBytes(c.length));
      at = curve.sealInto(buf, at, CURVE_COMMAND, c);
    }
    for (let m = 0; m < out.length; m++) {
      const msg = out[m];
      const last = msg.length - 1;
      for (let i = from; i <= last; i++) {
        at = writeHeader(buf, at, 0, CurveServer.sealedBytes(msg[i].length));
        at = curve.sealInto(buf, at, i < last ? CURVE_MORE : 0, msg[i]);
      }
    }
    out.length = 0;
    this.outBytes = 0;
    this.sock.write(buf);
  }

  private flushWithLargeBodies(total: number): void {
    const sock = this.sock;
    sock.cork();
    // Headers and small bodies go into runs of a fresh buffer; large bodies are written as they are.
    const buf = Buffer.allocUnsafe(total);
    let runStart = 0;
    let at = 0;
    for (let c = 0; c < this.cmds.length; c++) at += this.cmds[c].copy(buf, at);
    this.cmds.length = 0;
    for (const msg of this.out) {
      const last = msg.length - 1;
      for (let i = this.outFrom; i <= last; i++) {
        const f = msg[i];
        at = writeHeader(buf, at, i < last ? FLAG_MORE : 0, f.length);
        if (f.length >= ZERO_COPY_BYTES) {
          sock.write(buf.subarray(runStart, at));
          sock.write(f);
          runStart = at;
        } else at += f.copy(buf, at);
      }
    }
    if (at > runStart) sock.write(buf.subarray(runStart, at));
    this.out.length = 0;
    this.outBytes = 0;
    sock.uncork();
  }

  private onData(chunk: Buffer): void {
    this.heard = true;
    // Traffic after a PING that asked for a TTL: the peer's deadline is met.
    this.ttlMs = 0;
    if (this.closed) return;
    this.consume(chunk);
  }

  /** Parses a chunk; a part left when reading stops mid-chunk (pause) is held until reading resumes. */
  private consume(chunk: Buffer): void {
    let o = 0;
    // Complete a unit (greeting, frame header or frame) split across reads: copy only that unit, then go on
    // reading the rest of this chunk in place.
    while (this.pendingLen > 0) {
      const want = this.need - this.pendingLen;
      if (chunk.length - o < want) {
        this.addPending(o === 0 ? chunk : chunk.subarray(o));
        return;
      }
      this.addPending(chunk.subarray(o, o + want));
      o += want;
      const unit = this.pending.length === 1 ? this.pending[0] : Buffer.concat(this.pending, this.need);
      this.pending = [];
      this.pendingLen = 0;
      this.acc = null;
      const used = this.parse(unit, 0);
      if (this.closed) return;
      if (used < unit.length) {
        // Only the header was complete (or the greeting's first part); `need` now covers the rest.
        this.addPending(unit.subarray(used));
      }
      if (this.stopped) return this.hold(chunk.subarray(o));
    }
    const used = this.parse(chunk, o);
    if (this.closed) return;
    if (this.stopped) this.hold(chunk.subarray(used));
    else if (used < chunk.length) this.addPending(chunk.subarray(used));
  }

  /** Reading stopped after a whole message: the rest of this chunk waits, unparsed, until it resumes. */
  private hold(rest: Buffer): void {
    this.stopped = false;
    this.held = rest.length > 0 ? rest : null;
  }

  /** Reading resumed: what was held is parsed first, and only then does the socket deliver more. */
  private readonly resumeHeld = (): void => {
    this.resuming = false;
    if (this.closed || this.paused) return;
    const rest = this.held;
    this.held = null;
    if (rest !== null) this.consume(rest);
    if (!this.closed && !this.paused && this.held === null) this.sock.resume();
  };

  /** Keeps a piece of the unit being assembled: small pieces are copied together (see SMALL_PIECE). */
  private addPending(piece: Buffer): void {
    const n = piece.length;
    this.pendingLen += n;
    if (n >= SMALL_PIECE) {
      this.pending.push(piece);
      this.acc = null;
      return;
    }
    const acc = this.acc;
    if (acc !== null && acc.length - this.accUsed >= n) {
      const start = this.accUsed - this.pending[this.pending.length - 1].length;
      piece.copy(acc, this.accUsed);
      this.accUsed += n;
      this.pending[this.pending.length - 1] = acc.subarray(start, this.accUsed);
      return;
    }
    // A new buffer about as big as what is pending already (so the copies double, amortized), never more than
    // the unit still needs: a peer that announces a large frame and trickles it cannot make us allocate ahead.
    const cap = Math.max(n, Math.min(this.need - this.pendingLen + n, Math.max(256, this.pendingLen)));
    const fresh = Buffer.allocUnsafeSlow(cap);
    piece.copy(fresh, 0);
    this.acc = fresh;
    this.accUsed = n;
    this.pending.push(fresh.subarray(0, n));
  }

  /** Parses whole units from b[o..]; returns where the first incomplete one starts (setting `need`). */
  private parse(b: Buffer, o: number): number {
    const len = b.length;
    while (o < len) {
      if (this.state === State.Greeting) {
        const rem = len - o;
        if (!this.greeted) {
          // Octet 0 already tells a ZMTP 1.0 peer; octets 9 and 10, a broken signature or a ZMTP 2.0 peer.
          const bad = checkGreetingHead(b.subarray(o, o + Math.min(rem, GREETING_HEAD)));
          if (bad !== null) {
            if (typeof bad === 'number') this.peerMajor = bad;
            this.close(typeof bad === 'number' ? 'old-version' : 'bad-greeting');
            return len;
          }
          if (rem < GREETING_HEAD) {
            this.need = GREETING_HEAD;
            return o;
          }
          this.greeted = true;
          this.sock.write((this.opts.curve ? CURVE_GREETING : GREETING).subarray(GREETING_HEAD));
        }
        if (rem < GREETING_BYTES) {
          this.need = GREETING_BYTES;
          return o;
        }
        this.onGreeting(b.subarray(o, o + GREETING_BYTES));
        o += GREETING_BYTES;
        if (this.closed) return len;
        continue;
      }
      const flags = b[o];
      let size: number;
      let hdr: number;
      if ((flags & FLAG_LONG) !== 0) {
        if (len - o < 9) {
          this.need = 9;
          return o;
        }
        // Sizes past 4 GiB are over every limit we have.
        size = b.readUInt32BE(o + 1) !== 0 ? Number.MAX_SAFE_INTEGER : b.readUInt32BE(o + 5);
        hdr = 9;
      } else {
        if (len - o < 2) {
          this.need = 2;
          return o;
        }
        size = b[o + 1];
        hdr = 2;
      }
      if ((flags & FLAG_RESERVED) !== 0) {
        this.close('protocol-error', 'reserved flag bits set');
        return len;
      }
      const isCommand = (flags & FLAG_COMMAND) !== 0;
      // Under CURVE a message frame is a box around the frame: the limit is on what it holds (the plaintext).
      const boxed = this.curve !== null && this.state === State.Ready;
      if (size > (isCommand ? MAX_COMMAND_BYTES : boxed ? CurveServer.sealedBytes(this.opts.maxFrameBytes) : this.opts.maxFrameBytes)) {
        this.close('frame-too-large', 'frame too large');
        return len;
      }
      if (len - o - hdr < size) {
        this.need = hdr + size;
        return o;
      }
      // Creating a view costs more than comparing a few bytes: headers, delimiters and command bytes are shared.
      const body = (size <= 8 ? internedFrame(b, o + hdr, size, this.intern) : null) ?? b.subarray(o + hdr, o + hdr + size);
      o += hdr + size;
      if (this.curve !== null && this.state === State.Ready) {
        // CURVE: every frame is its own MESSAGE box; MORE and COMMAND travel inside it.
        if (isCommand || (flags & FLAG_MORE) !== 0) {
          this.close('protocol-error', 'plain frame on a CURVE connection');
          return len;
        }
        const opened = this.curve.open(body);
        if (opened === null) {
          this.close('protocol-error', 'MESSAGE box does not open');
          return len;
        }
        if ((opened.flags & CURVE_COMMAND) !== 0) {
          if ((opened.flags & CURVE_MORE) !== 0 || this.frames.length > this.outFrom) {
            this.close('protocol-error', 'command frame inside a message');
            return len;
          }
          this.onCommand(opened.data);
          if (this.closed) return len;
          continue;
        }
        if (this.deliverFrame(opened.data, (opened.flags & CURVE_MORE) !== 0)) return this.stopped ? o : len;
        continue;
      }
      if (isCommand) {
        const inMessage = this.frames.length > this.outFrom;
        if ((flags & FLAG_MORE) !== 0 || inMessage) {
          this.close('protocol-error', 'command frame inside a message');
          return len;
        }
        this.onCommand(body);
        if (this.closed) return len;
        continue;
      }
      if (this.state !== State.Ready) {
        this.close('protocol-error', 'message before READY');
        return len;
      }
      if (this.deliverFrame(body, (flags & FLAG_MORE) !== 0)) return this.stopped ? o : len;
    }
    return o;
  }

  /**
   * Adds a frame to the message being read; at its last frame hands the message over. True if parsing stops here:
   * the connection closed, or reading was paused while the message was handled (`stopped`: the rest waits).
   */
  private deliverFrame(body: Buffer, more: boolean): boolean {
    const frames = this.frames;
    // Past the limit the frames are dropped (nothing more is held), and the message still ends where it ends.
    if (frames.length <= this.opts.maxFrames) {
      frames.push(body);
      this.messageBytes += body.length;
      if (this.messageBytes > this.maxMessage) {
        this.close('message-too-large', 'message too large');
        return true;
      }
    }
    if (!more) {
      this.messageBytes = 0;
      this.frames = this.id === null ? [] : [this.id];
      this.owner.onMessage(this, frames);
      if (this.closed) return true;
      if (this.paused) {
        this.stopped = true;
        return true;
      }
    }
    return false;
  }

  private onGreeting(g: Buffer): void {
    const peer = parseGreeting(g);
    this.peerMajor = peer.major;
    if (peer.mechanism !== (this.opts.curve ? 'CURVE' : 'NULL')) {
      this.close('mechanism');
      return;
    }
    this.state = State.Handshake;
    // CURVE: the client speaks first (HELLO).
    if (this.opts.curve) {
      this.curve = new CurveServer(this.opts.curve.keys);
      return;
    }
    // NULL: the client (connecting side) sends READY first; the server answers it.
    if (this.opts.socketType === 'DEALER') this.sock.write(this.readyFrame());
  }

  /**
   * The peer's half of the handshake is done: the owner accepts it or says why not. Our READY (`ready`, null for the
   * side that spoke first) goes only to an accepted peer; a refused one gets ERROR (where TELL has words for it),
   * which RFC 23 lets stand in for READY, on both mechanisms.
   */
  private becomeReady(type: string, identity: Buffer, ready: Buffer | null): void {
    const refused = this.owner.onReady(this, type, identity);
    if (refused !== null) return this.close(refused);
    if (ready !== null) this.sock.write(ready);
    this.state = State.Ready;
    if (this.id !== null) this.frames = [this.id];
    // Anything queued before the handshake finished goes now.
    if (this.out.length > 0 || this.cmds.length > 0) this.owner.needsFlush(this);
  }

  /** The CURVE handshake, server side: HELLO -> WELCOME, INITIATE -> READY (or ERROR for a refused key). */
  private onCurveCommand(name: string, body: Buffer): void {
    const curve = this.curve as CurveServer;
    if (name === 'ERROR') return this.close('peer-error');
    if (name === 'HELLO') {
      // libzmq takes one HELLO per connection, then only INITIATE: each HELLO costs three X25519 operations.
      if (this.welcomed) return this.close('curve-handshake');
      this.welcomed = true;
      const welcome = curve.hello(body);
      if (typeof welcome === 'string') return this.close('curve-handshake');
      this.sock.write(commandFrame(welcome));
      return;
    }
    if (name !== 'INITIATE') return this.close('curve-handshake');
    const init = curve.initiate(body);
    if (typeof init === 'string') return this.close('curve-handshake');
    if (!(this.opts.curve as { authorize(k: Buffer): boolean }).authorize(init.clientKey)) return this.close('curve-denied', CURVE_DENIED);
    const props = parseProperties(init.metadata);
    if (props === null) return this.close('curve-handshake');
    const type = props.get('socket-type')?.toString('latin1') ?? '';
    if (!this.opts.peers.has(type)) return this.close('socket-type', `invalid socket type ${type || '(none)'} for ${this.opts.socketType}`);
    const identity = Buffer.from(props.get('identity') ?? Buffer.alloc(0));
    this.becomeReady(type, identity, commandFrame(curve.ready(metadata({ 'Socket-Type': this.opts.socketType }))));
  }

  private readyFrame(): Buffer {
    const props: Record<string, Buffer | string> = { 'Socket-Type': this.opts.socketType };
    if (this.opts.identity && this.opts.identity.length > 0) props.Identity = this.opts.identity;
    return readyCommand(props);
  }

  private onCommand(body: Buffer): void {
    const c = parseCommand(body);
    if (c === null) return this.close('bad-command', 'malformed command');
    if (this.state === State.Handshake && this.curve !== null) return this.onCurveCommand(c.name, body);
    if (this.state === State.Handshake) {
      if (c.name === 'ERROR') return this.close('peer-error');
      if (c.name !== 'READY') return this.close('bad-command', `expected READY, got ${c.name}`);
      const props = parseProperties(c.data);
      if (props === null) return this.close('bad-command', 'malformed READY metadata');
      const type = props.get('socket-type')?.toString('latin1') ?? '';
      if (!this.opts.peers.has(type)) return this.close('socket-type', `invalid socket type ${type || '(none)'} for ${this.opts.socketType}`);
      const identity = Buffer.from(props.get('identity') ?? Buffer.alloc(0));
      this.becomeReady(type, identity, this.opts.socketType === 'ROUTER' ? this.readyFrame() : null);
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
      case 'ERROR':
        return this.close('peer-error');
      case 'READY':
        return this.close('bad-command', 'second READY');
      default:
        // SUBSCRIBE, CANCEL, JOIN, LEAVE and unknown commands mean nothing to a ROUTER or DEALER.
        return;
    }
  }
}
