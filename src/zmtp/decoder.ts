// The ZMTP 3.x decoder: bytes in, greeting, commands and whole messages out, with no socket (libzmq's v2_decoder).
//
// Bytes come two ways. feed() takes a chunk: one the caller owns (frames are delivered as views of it), or one in a
// read buffer the caller reuses (`transient`): then each run of small complete frames is copied once into a buffer
// of its own size and delivered as views of that copy. A large frame (LARGE_FRAME_BYTES and up) gets a buffer of its
// own size as soon as its header is read; what of it arrived is copied there once, and readTarget() names the rest of
// that buffer, so the caller's next reads land in it and filled() completes it: a 1 MiB body costs one allocation and
// no assembly. Only small units (a header, a small frame, the greeting) split across reads are assembled from pieces.
// Size limits are checked from the header, before anything is allocated. After a CURVE handshake every wire frame is
// a MESSAGE box, opened in place in the buffer that holds it.

import { FLAG_COMMAND, FLAG_LONG, FLAG_MORE, FLAG_RESERVED, GREETING_BYTES, GREETING_HEAD, checkGreetingHead } from './wire.js';
import { CURVE_COMMAND, CURVE_MORE, sealedBytes, type CurveSession } from './curve.js';
import type { CloseReason } from './connection.js';
import { unpooled } from '../protocol/unpooled.js';
import { LARGE_FRAME_BYTES, takeFrame } from './frame-pool.js';

/** Where the decoder's output goes. A false return from command() or message() stops decoding at that point. */
export interface DecoderSink {
  /** Octets 0-10 say ZMTP 3 or later: the rest of our greeting may go. */
  greetingHead(): void;
  /** The peer's whole greeting; false stops (refused). */
  greeting(g: Buffer): boolean;
  /** A command frame (plain, or opened from a box); false stops (closed). */
  command(body: Buffer): boolean;
  /** A whole message (after the prefix, if any); false stops (closed, or reading paused: the rest is returned). */
  message(frames: Buffer[]): boolean;
  /** The stream broke the protocol or a limit; decoding stops. `peerMajor` for a peer older than ZMTP 3. */
  fail(reason: CloseReason, tell?: string, peerMajor?: number): void;
}

export interface DecoderLimits {
  /** Largest message frame (what a CURVE box holds, under CURVE). */
  maxFrameBytes: number;
  /** Frames kept per message (the prefix included); one more is delivered so the owner can refuse. */
  maxFrames: number;
  /** Bytes of one message held while it is read (default none). */
  maxMessageBytes?: number;
  /** Frames that arrive often: one equal to these is delivered as that shared Buffer (see internedFrame). */
  intern?: readonly Buffer[];
  /** Large frames' buffers come from frame-pool.ts (the owner releases them); else each is a new allocation. */
  pooled?: boolean;
}

const EMPTY_FRAME = Buffer.alloc(0);
const BYTE_FRAMES: Buffer[] = Array.from({ length: 256 }, (_, i) => unpooled([i]));

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
/**
 * Bytes allocated for large frames and not yet arrived, at most, across this thread's connections. A frame's buffer
 * is taken at its header, so a peer that announces a 16 MiB frame and trickles it would otherwise make us hold 16 MiB
 * per connection for nothing; past this budget a large frame is assembled from what arrives, as small units are.
 */
export const READ_AHEAD_BYTES = 128 * 1024 * 1024;
let readAhead = 0;

/** Bytes allocated for large frames whose rest has not arrived yet, on this thread. */
export function readAheadBytes(): number {
  return readAhead;
}

/** A copy of b[from..to] in a buffer of its own size (not a slab of Node's pool: see unpooled.ts). */
function ownCopy(b: Buffer, from: number, to: number): Buffer {
  const c = Buffer.allocUnsafeSlow(to - from);
  b.copy(c, 0, from, to);
  return c;
}

/** Where the run of small, complete frames starting at b[o] ends (o if the unit there is large or incomplete). */
function smallRunEnd(b: Buffer, o: number): number {
  const len = b.length;
  for (;;) {
    let size: number;
    let hdr: number;
    if (len - o < 2) return o;
    if ((b[o] & FLAG_LONG) !== 0) {
      if (len - o < 9 || b.readUInt32BE(o + 1) !== 0) return o;
      size = b.readUInt32BE(o + 5);
      hdr = 9;
    } else {
      size = b[o + 1];
      hdr = 2;
    }
    if (size >= LARGE_FRAME_BYTES || len - o - hdr < size) return o;
    o += hdr + size;
  }
}

export class Decoder {
  private pending: Buffer[] = [];
  private pendingLen = 0;
  /** Our buffer that small pieces of the pending unit are copied into (see SMALL_PIECE), and how far it is used. */
  private acc: Buffer | null = null;
  private accUsed = 0;
  private need = GREETING_HEAD;
  private inGreeting = true;
  private headSeen = false;
  /** The handshake is done: message frames are allowed (and boxed when `box` is set). */
  private established = false;
  private box: CurveSession | null = null;
  private prefix: Buffer | null = null;
  private frames: Buffer[] = [];
  /** Bytes of the message being read so far. */
  private messageBytes = 0;
  /** Decoding stopped (sink said so, or failed): parse() returns at once. */
  private halted = false;
  /** The chunk being decoded sits in a buffer its owner reuses: what is kept of it is copied. */
  private transient = false;
  /** The large frame being read into its own buffer (see the header), how much of it has arrived, its flags. */
  private body: Buffer | null = null;
  private bodyFilled = 0;
  private bodyFlags = 0;
  private readonly intern: readonly Buffer[];
  private readonly maxMessage: number;

  constructor(private readonly sink: DecoderSink, private readonly limits: DecoderLimits) {
    this.intern = limits.intern ?? [];
    this.maxMessage = limits.maxMessageBytes ?? Infinity;
  }

  /**
   * The handshake is done: from now on message frames are delivered, each message starting with `prefix` (a
   * ROUTER's routing id), and under CURVE every frame is a box opened with `box`.
   */
  establish(prefix: Buffer | null, box: CurveSession | null): void {
    this.established = true;
    this.prefix = prefix;
    this.box = box;
    this.frames = prefix === null ? [] : [prefix];
  }

  /** Where the next bytes should be read to: the rest of the large frame being read, or null (anywhere). */
  readTarget(): Buffer | null {
    const body = this.body;
    return body === null ? null : body.subarray(this.bodyFilled);
  }

  /** Whether `b` is what readTarget() names now (the bytes read into it belong to the large frame being read). */
  isReadTarget(b: Buffer): boolean {
    const body = this.body;
    return body !== null && b.buffer === body.buffer && b.byteOffset === body.byteOffset + this.bodyFilled;
  }

  /** `n` bytes were read into readTarget(). */
  filled(n: number): void {
    this.halted = false;
    this.bodyArrived(n);
  }

  /** The stream is gone: the buffer of a large frame still being read leaves the read-ahead budget. */
  dispose(): void {
    if (this.body !== null) readAhead -= this.body.length - this.bodyFilled;
    this.body = null;
  }

  /**
   * Decodes a chunk (`transient`: it sits in a buffer the caller reuses, so nothing may keep a view of it). Returns
   * the part not yet decoded when the sink stopped decoding after a message (reading paused: the caller feeds it
   * again on resume; a copy if the chunk was transient), else null (what is incomplete is kept for the next chunk).
   */
  feed(chunk: Buffer, transient = false): Buffer | null {
    this.halted = false;
    this.transient = transient;
    let o = 0;
    for (;;) {
      const body = this.body;
      if (body !== null) {
        // The rest of a large frame, as far as this chunk holds it (the caller reads into readTarget() otherwise).
        const n = Math.min(chunk.length - o, body.length - this.bodyFilled);
        chunk.copy(body, this.bodyFilled, o, o + n);
        o += n;
        this.bodyArrived(n);
        if (this.halted) return this.rest(chunk, o);
        if (this.body !== null) return null;
        continue;
      }
      if (this.pendingLen === 0) break;
      // Complete a unit (greeting, frame header or small frame) split across reads: copy only that unit, then go
      // on reading the rest of this chunk in place.
      const want = this.need - this.pendingLen;
      if (chunk.length - o < want) {
        this.addPending(o === 0 ? chunk : chunk.subarray(o));
        return null;
      }
      this.addPending(chunk.subarray(o, o + want));
      o += want;
      const unit = this.pending.length === 1 ? this.pending[0] : Buffer.concat(this.pending, this.need);
      this.pending = [];
      this.pendingLen = 0;
      this.acc = null;
      // The unit is ours now (pieces of a transient chunk were copied), whatever the chunk is.
      this.transient = false;
      const used = this.parse(unit, 0);
      this.transient = transient;
      if (used < 0) return null;
      // Only the header was complete (or the greeting's first part); `need` now covers the rest.
      if (used < unit.length) this.addPending(unit.subarray(used));
      if (this.halted) return this.rest(chunk, o);
    }
    if (transient && this.inGreeting) {
      // The greeting and the handshake come once per connection: their chunk is simply copied.
      chunk = ownCopy(chunk, o, chunk.length);
      o = 0;
      this.transient = transient = false;
    }
    const used = this.parse(chunk, o);
    if (used < 0) return null;
    if (this.halted) return this.rest(chunk, used);
    if (used < chunk.length && this.body === null) this.addPending(chunk.subarray(used));
    return null;
  }

  /** What is left of the chunk from `o` when decoding stopped there, for the caller to hold (null: nothing). */
  private rest(chunk: Buffer, o: number): Buffer | null {
    if (o >= chunk.length) return null;
    return this.transient ? ownCopy(chunk, o, chunk.length) : chunk.subarray(o);
  }

  /** Keeps a piece of the unit being assembled: small pieces are copied together (see SMALL_PIECE). */
  private addPending(piece: Buffer): void {
    const n = piece.length;
    this.pendingLen += n;
    if (n >= SMALL_PIECE && !this.transient) {
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

  private fail(reason: CloseReason, tell?: string, major?: number): number {
    this.halted = true;
    this.sink.fail(reason, tell, major);
    return -1;
  }

  /**
   * Decodes whole units from b[o..]. Returns where the first incomplete one starts (setting `need`), where decoding
   * stopped after a message (`halted`), the end of b when a large frame's buffer took the rest (`body`), or -1 when
   * the stream ended (failed, or the sink closed it).
   */
  private parse(b: Buffer, o: number): number {
    const len = b.length;
    while (o < len) {
      if (this.inGreeting) {
        const rem = len - o;
        if (!this.headSeen) {
          // Octet 0 already tells a ZMTP 1.0 peer; octets 9 and 10, a broken signature or a ZMTP 2.0 peer.
          const bad = checkGreetingHead(b.subarray(o, o + Math.min(rem, GREETING_HEAD)));
          if (bad !== null) return this.fail(typeof bad === 'number' ? 'old-version' : 'bad-greeting', undefined, typeof bad === 'number' ? bad : undefined);
          if (rem < GREETING_HEAD) {
            this.need = GREETING_HEAD;
            return o;
          }
          this.headSeen = true;
          this.sink.greetingHead();
        }
        if (rem < GREETING_BYTES) {
          this.need = GREETING_BYTES;
          return o;
        }
        this.inGreeting = false;
        if (!this.sink.greeting(b.subarray(o, o + GREETING_BYTES))) return this.stop();
        o += GREETING_BYTES;
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
      if ((flags & FLAG_RESERVED) !== 0) return this.fail('protocol-error', 'reserved flag bits set');
      const isCommand = (flags & FLAG_COMMAND) !== 0;
      // Under CURVE a message frame is a box around the frame: the limit is on what it holds (the plaintext).
      const box = this.box;
      if (size > (isCommand ? MAX_COMMAND_BYTES : box !== null ? sealedBytes(this.limits.maxFrameBytes) : this.limits.maxFrameBytes)) {
        return this.fail('frame-too-large', 'frame too large');
      }
      const have = len - o - hdr;
      if (size >= LARGE_FRAME_BYTES && (have < size || this.transient)) {
        // A large frame: into a buffer of its own, if the read-ahead budget has room for what has not arrived.
        // Under CURVE the frame is a box: what it holds is its size less the box's own bytes.
        if (!isCommand && this.messageBytes + size - (box === null ? 0 : sealedBytes(0)) > this.maxMessage) {
          return this.fail('message-too-large', 'message too large');
        }
        const missing = have < size ? size - have : 0;
        if (readAhead + missing <= READ_AHEAD_BYTES) {
          const own = this.limits.pooled === true ? takeFrame(size) : Buffer.allocUnsafeSlow(size);
          const n = size - missing;
          b.copy(own, 0, o + hdr, o + hdr + n);
          o += hdr + n;
          if (missing > 0) {
            readAhead += missing;
            this.body = own;
            this.bodyFilled = n;
            this.bodyFlags = flags;
            return o;
          }
          const r = this.frame(flags, own);
          if (r !== 0) return r < 0 ? -1 : this.stopAt(o);
          continue;
        }
      }
      if (have < size) {
        this.need = hdr + size;
        return o;
      }
      if (this.transient) {
        // A small frame in a read buffer that will be reused: copy the run of small frames it starts, once, and
        // decode that copy.
        const end = smallRunEnd(b, o);
        const run = ownCopy(b, o, end);
        this.transient = false;
        const used = this.parse(run, 0);
        this.transient = true;
        if (used < 0) return -1;
        o += used;
        if (this.halted) return o;
        continue;
      }
      // Creating a view costs more than comparing a few bytes: headers, delimiters and command bytes are shared.
      const body = (size <= 8 ? internedFrame(b, o + hdr, size, this.intern) : null) ?? b.subarray(o + hdr, o + hdr + size);
      o += hdr + size;
      const r = this.frame(flags, body);
      if (r !== 0) return r < 0 ? -1 : this.stopAt(o);
    }
    return o;
  }

  /** `n` more bytes of the large frame being read arrived; when it is whole it is decoded. */
  private bodyArrived(n: number): void {
    this.bodyFilled += n;
    readAhead -= n;
    const body = this.body as Buffer;
    if (this.bodyFilled < body.length) return;
    this.body = null;
    if (this.frame(this.bodyFlags, body) > 0) this.halted = true;
  }

  /**
   * One whole wire frame (flags, body): a command, or a frame of the message being read. 0: go on; 1: the sink
   * stopped after a message; -1: the stream ended.
   */
  private frame(flags: number, body: Buffer): number {
    const inMessage = this.frames.length > (this.prefix === null ? 0 : 1);
    const box = this.box;
    if (box !== null) {
      // CURVE: every frame is its own MESSAGE box; MORE and COMMAND travel inside it.
      if ((flags & (FLAG_COMMAND | FLAG_MORE)) !== 0) return this.fail('protocol-error', 'plain frame on a CURVE connection');
      const data = box.openFrame(body);
      if (data === null) return this.fail('protocol-error', 'MESSAGE box does not open');
      const inner = box.openedFlags;
      if ((inner & CURVE_COMMAND) !== 0) {
        if ((inner & CURVE_MORE) !== 0 || inMessage) return this.fail('protocol-error', 'command frame inside a message');
        return this.sink.command(data) ? 0 : this.stop();
      }
      return this.deliverFrame(data, (inner & CURVE_MORE) !== 0);
    }
    if ((flags & FLAG_COMMAND) !== 0) {
      if ((flags & FLAG_MORE) !== 0 || inMessage) return this.fail('protocol-error', 'command frame inside a message');
      return this.sink.command(body) ? 0 : this.stop();
    }
    if (!this.established) return this.fail('protocol-error', 'message before READY');
    return this.deliverFrame(body, (flags & FLAG_MORE) !== 0);
  }

  /** The sink ended the stream (closed). */
  private stop(): number {
    this.halted = true;
    return -1;
  }

  /** The sink stopped after a message (closed, or reading paused): decoding goes on from `o` when fed again. */
  private stopAt(o: number): number {
    this.halted = true;
    return o;
  }

  /**
   * Adds a frame to the message being read; at its last frame hands the message over. 0: go on; 1: the sink stopped
   * after it; -1: the message was too large.
   */
  private deliverFrame(body: Buffer, more: boolean): number {
    const frames = this.frames;
    // Past the limit the frames are dropped (nothing more is held), and the message still ends where it ends.
    if (frames.length <= this.limits.maxFrames) {
      frames.push(body);
      this.messageBytes += body.length;
      if (this.messageBytes > this.maxMessage) {
        return this.fail('message-too-large', 'message too large');
      }
    }
    if (!more) {
      this.messageBytes = 0;
      this.frames = this.prefix === null ? [] : [this.prefix];
      if (!this.sink.message(frames)) return 1;
    }
    return 0;
  }
}
