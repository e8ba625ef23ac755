// The ZMTP 3.x encoder: queued commands and messages to wire bytes, in as few writes as the bodies allow (libzmq's
// v2_encoder). No socket: it writes to whatever takes Buffers.
//
// Headers and small bodies are encoded into one buffer (one write syscall); large bodies are passed on without a copy.
// The buffer is sized to what is written (under 4 KiB it comes from Node's shared pool), so a peer whose writes are
// pending holds only its own bytes. Under CURVE each frame is sealed in place into its own MESSAGE box.

import { FLAG_LONG, FLAG_MORE, headerBytes, writeHeader } from './wire.js';
import { CURVE_COMMAND, CURVE_MORE, sealedBytes, type CurveSession } from './curve.js';
import { LARGE_FRAME_BYTES, unhold, writtenCallback } from './frame-pool.js';

/** What the encoder writes to (a node:net Socket is one). */
export interface Writer {
  /** `done`, when given, is called once the Writer no longer needs `b` (written, or the stream failed). */
  write(b: Buffer, done?: () => void): unknown;
  cork(): void;
  uncork(): void;
}

/**
 * Bodies at least this big are written as they are (no copy) instead of being encoded into the write buffer. Every
 * pooled frame (frame-pool.ts) is this big, so its hold ends in its write's callback.
 */
const ZERO_COPY_BYTES = LARGE_FRAME_BYTES;

/** Wire bytes of one frame of `size` sealed in a CURVE MESSAGE box: the frame header and the box. */
function boxedWireBytes(size: number): number {
  const box = sealedBytes(size);
  return headerBytes(box) + box;
}

/**
 * Writes `cmds` (whole command frames) then every message of `out` (frames from `from`: 1 skips a ROUTER's routing
 * id), sealed with `box` when there is one. The caller empties both lists after.
 */
export function encode(w: Writer, cmds: readonly Buffer[], out: readonly Buffer[][], from: number, box: CurveSession | null): void {
  if (box !== null) encodeBoxed(w, cmds, out, from, box);
  else encodePlain(w, cmds, out, from);
}

function encodePlain(w: Writer, cmds: readonly Buffer[], out: readonly Buffer[][], from: number): void {
  let total = 0;
  let big = false;
  for (let c = 0; c < cmds.length; c++) total += cmds[c].length;
  for (let m = 0; m < out.length; m++) {
    const msg = out[m];
    for (let i = from; i < msg.length; i++) {
      const n = msg[i].length;
      total += headerBytes(n) + n;
      if (n >= ZERO_COPY_BYTES) big = true;
    }
  }
  if (total === 0) return;
  if (big) return encodeWithLargeBodies(w, cmds, out, from);
  const buf = Buffer.allocUnsafe(total);
  let at = 0;
  for (let c = 0; c < cmds.length; c++) at += cmds[c].copy(buf, at);
  for (let m = 0; m < out.length; m++) {
    const msg = out[m];
    const last = msg.length - 1;
    for (let i = from; i <= last; i++) {
      const f = msg[i];
      at = writeHeader(buf, at, i < last ? FLAG_MORE : 0, f.length);
      at += f.copy(buf, at);
    }
  }
  w.write(buf);
}

function encodeWithLargeBodies(w: Writer, cmds: readonly Buffer[], out: readonly Buffer[][], from: number): void {
  // Headers and small bodies go into runs of a fresh buffer, sized for them alone; large bodies are written as they
  // are (a buffer sized for them too would be an unused allocation as big as the bodies, for the GC to account).
  let copied = 0;
  for (let c = 0; c < cmds.length; c++) copied += cmds[c].length;
  for (let m = 0; m < out.length; m++) {
    const msg = out[m];
    for (let i = from; i < msg.length; i++) {
      const n = msg[i].length;
      copied += headerBytes(n) + (n >= ZERO_COPY_BYTES ? 0 : n);
    }
  }
  w.cork();
  const buf = Buffer.allocUnsafe(copied);
  let runStart = 0;
  let at = 0;
  for (let c = 0; c < cmds.length; c++) at += cmds[c].copy(buf, at);
  for (const msg of out) {
    const last = msg.length - 1;
    for (let i = from; i <= last; i++) {
      const f = msg[i];
      at = writeHeader(buf, at, i < last ? FLAG_MORE : 0, f.length);
      if (f.length >= ZERO_COPY_BYTES) {
        w.write(buf.subarray(runStart, at));
        w.write(f, writtenCallback(f));
        runStart = at;
      } else at += f.copy(buf, at);
    }
  }
  if (at > runStart) w.write(buf.subarray(runStart, at));
  w.uncork();
}

/** CURVE: each frame sealed in its own MESSAGE box, each box its own wire frame (flags 0), all into one buffer. */
function encodeBoxed(w: Writer, cmds: readonly Buffer[], out: readonly Buffer[][], from: number, box: CurveSession): void {
  // Commands (PING, PONG) come as plain command frames: their bodies go in boxes marked COMMAND.
  let total = 0;
  for (let c = 0; c < cmds.length; c++) total += boxedWireBytes(cmds[c].length - commandHeader(cmds[c]));
  for (let m = 0; m < out.length; m++) {
    const msg = out[m];
    for (let i = from; i < msg.length; i++) total += boxedWireBytes(msg[i].length);
  }
  if (total === 0) return;
  const buf = Buffer.allocUnsafe(total);
  let at = 0;
  for (let c = 0; c < cmds.length; c++) {
    const body = cmds[c].subarray(commandHeader(cmds[c]));
    at = writeHeader(buf, at, 0, sealedBytes(body.length));
    at = box.sealInto(buf, at, CURVE_COMMAND, body);
  }
  for (let m = 0; m < out.length; m++) {
    const msg = out[m];
    const last = msg.length - 1;
    for (let i = from; i <= last; i++) {
      const f = msg[i];
      at = writeHeader(buf, at, 0, sealedBytes(f.length));
      at = box.sealInto(buf, at, i < last ? CURVE_MORE : 0, f);
      // Sealed into our buffer: the frame itself is no longer needed for this write.
      if (f.length >= LARGE_FRAME_BYTES) unhold(f);
    }
  }
  w.write(buf);
}

/** Header bytes of a whole command frame. */
function commandHeader(frame: Buffer): number {
  return (frame[0] & FLAG_LONG) !== 0 ? 9 : 2;
}
