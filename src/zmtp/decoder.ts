// The ZMTP 3.x decoder: bytes in, greeting, commands and whole messages out, with no socket (libzmq's v2_decoder).
//
// A frame that arrived whole in one read chunk is delivered as a subarray of that chunk, never copied. Only a frame
// (or header) split across reads is assembled: the pieces are collected and concatenated once, when the last one
// arrives. Size limits are checked from the header, before anything is buffered. After a CURVE handshake every wire
// frame is a MESSAGE box, opened in place (the data is a view into the read chunk).

import { FLAG_COMMAND, FLAG_LONG, FLAG_MORE, FLAG_RESERVED, GREETING_BYTES, GREETING_HEAD, checkGreetingHead } from './wire.js';
import { CURVE_COMMAND, CURVE_MORE, sealedBytes, type CurveSession } from './curve.js';
import type { CloseReason } from './connection.js';
import { unpooled } from '../protocol/unpooled.js';

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

  /**
   * Decodes a chunk. Returns the part not yet decoded when the sink stopped decoding after a message (reading
   * paused: the caller feeds it again on resume), else null (what is incomplete is kept for the next chunk).
   */
  feed(chunk: Buffer): Buffer | null {
    this.halted = false;
    let o = 0;
    // Complete a unit (greeting, frame header or frame) split across reads: copy only that unit, then go on
    // reading the rest of this chunk in place.
    while (this.pendingLen > 0) {
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
      const used = this.parse(unit, 0);
      if (used < 0) return null;
      // Only the header was complete (or the greeting's first part); `need` now covers the rest.
      if (used < unit.length) this.addPending(unit.subarray(used));
      if (this.halted) return o < chunk.length ? chunk.subarray(o) : null;
    }
    const used = this.parse(chunk, o);
    if (used < 0) return null;
    if (this.halted) return used < chunk.length ? chunk.subarray(used) : null;
    if (used < chunk.length) this.addPending(chunk.subarray(used));
    return null;
  }

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

  private fail(reason: CloseReason, tell?: string, major?: number): number {
    this.halted = true;
    this.sink.fail(reason, tell, major);
    return -1;
  }

  /**
   * Decodes whole units from b[o..]. Returns where the first incomplete one starts (setting `need`), where decoding
   * stopped after a message (`halted`), or -1 when the stream ended (failed, or the sink closed it).
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
      if (len - o - hdr < size) {
        this.need = hdr + size;
        return o;
      }
      // Creating a view costs more than comparing a few bytes: headers, delimiters and command bytes are shared.
      const body = (size <= 8 ? internedFrame(b, o + hdr, size, this.intern) : null) ?? b.subarray(o + hdr, o + hdr + size);
      o += hdr + size;
      const inMessage = this.frames.length > (this.prefix === null ? 0 : 1);
      if (box !== null) {
        // CURVE: every frame is its own MESSAGE box; MORE and COMMAND travel inside it.
        if (isCommand || (flags & FLAG_MORE) !== 0) return this.fail('protocol-error', 'plain frame on a CURVE connection');
        const data = box.openFrame(body);
        if (data === null) return this.fail('protocol-error', 'MESSAGE box does not open');
        const inner = box.openedFlags;
        if ((inner & CURVE_COMMAND) !== 0) {
          if ((inner & CURVE_MORE) !== 0 || inMessage) return this.fail('protocol-error', 'command frame inside a message');
          if (!this.sink.command(data)) return this.stop();
          continue;
        }
        const r = this.deliverFrame(data, (inner & CURVE_MORE) !== 0);
        if (r !== 0) return r < 0 ? -1 : this.stopAt(o);
        continue;
      }
      if (isCommand) {
        if ((flags & FLAG_MORE) !== 0 || inMessage) return this.fail('protocol-error', 'command frame inside a message');
        if (!this.sink.command(body)) return this.stop();
        continue;
      }
      if (!this.established) return this.fail('protocol-error', 'message before READY');
      const r = this.deliverFrame(body, (flags & FLAG_MORE) !== 0);
      if (r !== 0) return r < 0 ? -1 : this.stopAt(o);
    }
    return o;
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
