// The zmtp transport's connection state machine, byte for byte, without a network or a socket: the test hands it the
// bytes a libzmq DEALER would send, split at every possible place, and records what it writes back.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ZmtpConnection, type ByteStream, type CloseReason, type ConnectionOptions, type ConnectionOwner } from '../src/zmtp/connection.js';
import { FLAG_COMMAND, FLAG_MORE, ROUTER_PEERS, greeting, readyCommand, writeHeader, headerBytes, command } from '../src/zmtp/wire.js';

const SEED = Number(process.env.FUZZ_SEED ?? 20261128);
const RUNS = Number(process.env.FUZZ_RUNS ?? 200);

/** What the connection writes to, recorded; bytes from the peer go straight into the connection (receive()). */
class RecordingStream implements ByteStream {
  written: Buffer[] = [];
  destroyed = false;
  writableLength = 0;
  readingPaused = false;
  conn: ZmtpConnection | null = null;
  pause(): void {
    this.readingPaused = true;
  }
  resume(): void {
    this.readingPaused = false;
  }
  cork(): void {}
  uncork(): void {}
  write(b: Buffer): boolean {
    this.written.push(Buffer.from(b));
    return true;
  }
  end(b?: Buffer): void {
    if (b) this.write(b);
    this.destroy();
  }
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.conn?.ended();
  }
  /** Bytes from the peer. */
  receive(b: Buffer): void {
    this.conn?.receive(b);
  }
}

/** A connection over a RecordingStream. */
function attach(sock: RecordingStream, owner: ConnectionOwner, opts: ConnectionOptions): ZmtpConnection {
  const conn = new ZmtpConnection(sock, owner, opts, 0);
  sock.conn = conn;
  return conn;
}

class Owner implements ConnectionOwner {
  messages: Buffer[][] = [];
  closes: CloseReason[] = [];
  readonly id = Buffer.from([0, 1, 2, 3, 4]);
  onReady(conn: ZmtpConnection): CloseReason | null {
    conn.id = this.id;
    return null;
  }
  onMessage(_c: ZmtpConnection, frames: Buffer[]): void {
    this.messages.push(frames.map((f) => Buffer.from(f)));
  }
  onClose(_c: ZmtpConnection, reason: CloseReason): void {
    this.closes.push(reason);
  }
  needsFlush(conn: ZmtpConnection): void {
    conn.flushQueued = true;
  }
}

function open(opts: { maxFrameBytes?: number; maxFrames?: number } = {}): { sock: RecordingStream; owner: Owner; conn: ZmtpConnection } {
  const sock = new RecordingStream();
  const owner = new Owner();
  const conn = attach(sock, owner, {
    socketType: 'ROUTER', peers: ROUTER_PEERS, maxFrameBytes: opts.maxFrameBytes ?? 1 << 20, maxFrames: opts.maxFrames ?? 1024,
  });
  return { sock, owner, conn };
}

function frame(body: Buffer, flags: number): Buffer {
  const out = Buffer.alloc(headerBytes(body.length) + body.length);
  body.copy(out, writeHeader(out, 0, flags, body.length));
  return out;
}

/** What a DEALER sends: its greeting, READY, then the messages (a PING between some). */
function dealerStream(messages: Buffer[][], pings: boolean[]): Buffer {
  const parts = [greeting(), readyCommand({ 'Socket-Type': 'DEALER' })];
  messages.forEach((m, k) => {
    if (pings[k]) parts.push(command('PING', Buffer.from([0, 0, 0x61, 0x62])));
    m.forEach((f, i) => parts.push(frame(f, i < m.length - 1 ? FLAG_MORE : 0)));
  });
  return Buffer.concat(parts);
}

function feed(sock: RecordingStream, bytes: Buffer, cuts: number[]): void {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  let at = 0;
  for (const p of [...points, bytes.length]) {
    if (p > at) sock.receive(bytes.subarray(at, p));
    at = p;
  }
}

const frameArb = fc.oneof(
  fc.uint8Array({ maxLength: 20 }),
  fc.uint8Array({ minLength: 250, maxLength: 700 }), // long frames (8-byte size) and both sides of 255
);
const messagesArb = fc.array(fc.array(frameArb.map((a) => Buffer.from(a)), { minLength: 1, maxLength: 5 }), { minLength: 1, maxLength: 12 });

test('any split of a valid byte stream gives the same messages, and the broker answers READY and PING (one PONG owed at a time)', () => {
  fc.assert(
    fc.property(messagesArb, fc.array(fc.boolean(), { maxLength: 12 }), fc.array(fc.nat(), { maxLength: 40 }), (messages, pings, cuts) => {
      const { sock, owner, conn } = open();
      feed(sock, dealerStream(messages, pings), cuts);
      assert.deepEqual(owner.closes, []);
      assert.equal(owner.messages.length, messages.length);
      owner.messages.forEach((m, k) => assert.deepEqual(m, [owner.id, ...messages[k]]));
      conn.flush();
      const out = Buffer.concat(sock.written);
      // Our greeting (ZMTP 3.1, NULL), then READY with Socket-Type ROUTER, then one PONG "ab": the PINGs all came
      // before this flush, and one PONG is owed at a time (as libzmq does), so a PING flood cannot queue a PONG each.
      assert.deepEqual(out.subarray(0, 12), Buffer.from([0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0x7f, 3, 1]));
      assert.equal(out.subarray(12, 16).toString(), 'NULL');
      const rest = out.subarray(64);
      assert.deepEqual(rest.subarray(0, rest.indexOf('PONG') < 0 ? rest.length : rest.indexOf('PONG') - 3), readyCommand({ 'Socket-Type': 'ROUTER' }));
      const pongs = pings.slice(0, messages.length).some(Boolean) ? 1 : 0;
      assert.equal(rest.toString('latin1').split('\x04PONGab').length - 1, pongs);
    }),
    { seed: SEED, numRuns: RUNS },
  );
});

test('frames that arrived whole are delivered as views of the read chunk, not copies', () => {
  const sock = new RecordingStream();
  const seen: Buffer[][] = [];
  const owner = new Owner();
  owner.onMessage = (_c, frames) => seen.push(frames);
  attach(sock, owner, { socketType: 'ROUTER', peers: ROUTER_PEERS, maxFrameBytes: 1 << 20, maxFrames: 16 });
  const body = Buffer.alloc(1000, 7);
  const chunk = dealerStream([[Buffer.from('hello'), body]], []);
  sock.receive(chunk);
  assert.equal(seen.length, 1);
  assert.equal(seen[0][2].buffer, chunk.buffer, 'the 1000-byte frame shares the chunk memory');
});

test('random bytes never throw: after a good handshake or instead of one, they end in a counted close or wait for more', () => {
  fc.assert(
    fc.property(fc.boolean(), fc.uint8Array({ minLength: 1, maxLength: 600 }), fc.array(fc.nat(), { maxLength: 10 }), (handshake, junk, cuts) => {
      const { sock, owner } = open({ maxFrameBytes: 300, maxFrames: 8 });
      const prefix = handshake ? Buffer.concat([greeting(), readyCommand({ 'Socket-Type': 'DEALER' })]) : Buffer.alloc(0);
      feed(sock, Buffer.concat([prefix, Buffer.from(junk)]), cuts);
      assert.ok(owner.closes.length <= 1);
      // Any frame it delivered respects the limits.
      for (const m of owner.messages) assert.ok(m.length <= 9 && m.every((f) => f.length <= 300));
      // The peer hangs up: exactly one close is reported, with a reason.
      sock.destroy();
      assert.equal(owner.closes.length, 1);
    }),
    { seed: SEED, numRuns: RUNS * 5 },
  );
});

test('limits are enforced from the header: an oversized frame closes before its body arrives; extra frames are dropped', () => {
  const { sock, owner } = open({ maxFrameBytes: 100, maxFrames: 3 });
  sock.receive(Buffer.concat([greeting(), readyCommand({ 'Socket-Type': 'DEALER' })]));
  // 5 frames: the message keeps [id] + 3 frames (+1 so the core sees it was over), the rest is dropped.
  sock.receive(Buffer.concat(['a', 'b', 'c', 'd', 'e'].map((s, i) => frame(Buffer.from(s), i < 4 ? FLAG_MORE : 0))));
  assert.deepEqual(owner.messages.map((m) => m.slice(1).map(String)), [['a', 'b', 'c']]);
  assert.equal(owner.messages[0].length, 4);
  // A header that announces 1 GiB: closed at once, nothing buffered.
  const big = Buffer.alloc(9);
  writeHeader(big, 0, 0, 1 << 30);
  sock.receive(big);
  assert.deepEqual(owner.closes, ['frame-too-large']);
  // The peer was told why: an ERROR command is the last thing written.
  assert.match(Buffer.concat(sock.written).toString('latin1'), /\x05ERROR\x0fframe too large$/);
});

test('handshake refusals: a PUB peer gets ERROR and is closed; a greeting that is not ZMTP 3 is closed', () => {
  const a = open();
  a.sock.receive(Buffer.concat([greeting(), readyCommand({ 'Socket-Type': 'PUB' })]));
  assert.deepEqual(a.owner.closes, ['socket-type']);
  assert.match(Buffer.concat(a.sock.written).toString('latin1'), /\x05ERROR.invalid socket type PUB for ROUTER$/);
  const b = open();
  b.sock.receive(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
  assert.deepEqual(b.owner.closes, ['bad-greeting']);
  const c = open();
  c.sock.receive(Buffer.concat([greeting(), frame(Buffer.from('early'), 0)]));
  assert.deepEqual(c.owner.closes, ['protocol-error']);
  const d = open();
  const curve = greeting();
  curve.fill(0, 12, 32);
  curve.write('CURVE', 12);
  d.sock.receive(curve);
  assert.deepEqual(d.owner.closes, ['mechanism']);
  void FLAG_COMMAND;
});

test('a frame trickled one byte per read is kept in a few buffers of ours, not one Buffer per byte', () => {
  const { sock, owner, conn } = open({ maxFrameBytes: 1 << 20 });
  sock.receive(Buffer.concat([greeting(), readyCommand({ 'Socket-Type': 'DEALER' })]));
  const body = Buffer.alloc(50000);
  for (let i = 0; i < body.length; i++) body[i] = (i * 7) & 0xff;
  const bytes = frame(body, 0);
  // Each byte its own Buffer, as each TCP segment of one byte arrives from the socket.
  for (let i = 0; i < bytes.length - 1; i++) sock.receive(Buffer.from([bytes[i]]));
  const pieces = (conn as unknown as { decoder: { pending: Buffer[] } }).decoder.pending.length;
  assert.ok(pieces <= 16, `${pieces} pieces held for ${bytes.length - 1} bytes received`);
  sock.receive(Buffer.from([bytes[bytes.length - 1]]));
  assert.equal(owner.messages.length, 1);
  assert.ok(owner.messages[0][1].equals(body), 'delivered byte for byte');
});

test('paused while a message is handled, the connection stops after it: the rest of the chunk waits, in order, for resume', async () => {
  const { sock, owner, conn } = open();
  sock.receive(Buffer.concat([greeting(), readyCommand({ 'Socket-Type': 'DEALER' })]));
  owner.onMessage = (c, frames) => {
    owner.messages.push(frames.map((f) => Buffer.from(f)));
    if (owner.messages.length === 2) c.pause(); // as the broker pauses a client that holds too much
  };
  sock.receive(Buffer.concat(['1', '2', '3', '4'].map((b) => frame(Buffer.from(b), 0))));
  assert.deepEqual(owner.messages.map((m) => m[1].toString()), ['1', '2'], 'nothing after the message that paused it');
  assert.ok(sock.readingPaused);
  conn.resume();
  assert.ok(sock.readingPaused, 'the socket stays paused until the held messages are handled');
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(owner.messages.map((m) => m[1].toString()), ['1', '2', '3', '4']);
  assert.ok(!sock.readingPaused);
});
