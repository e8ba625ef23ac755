// The zmtp transport's connection state machine, byte for byte, without a network or a socket: the test hands it the
// bytes a libzmq DEALER would send, split at every possible place, and records what it writes back.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ZmtpConnection, type ByteStream, type CloseReason, type ConnectionOptions, type ConnectionOwner } from '../src/zmtp/connection.js';
import { FLAG_COMMAND, FLAG_MORE, DEALER_PEERS, ROUTER_PEERS, greeting, readyCommand, writeHeader, headerBytes, command } from '../src/zmtp/wire.js';
import { READ_AHEAD_BYTES, readAheadBytes } from '../src/zmtp/decoder.js';
import { LARGE_FRAME_BYTES } from '../src/zmtp/frame-pool.js';
import nacl from 'tweetnacl';

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
  // Just under the size that gets a buffer of its own at its header: assembled from what arrives.
  const body = Buffer.alloc(LARGE_FRAME_BYTES - 1);
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

// ---- Reads as the socket does them (net-stream.ts): each read lands in conn.readBuffer(), at most its length. ----

/** Feeds `bytes` as the kernel would hand them over when they arrive in the pieces `cuts` makes. */
function readAsSocket(conn: ZmtpConnection, bytes: Buffer, cuts: number[]): void {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  let at = 0;
  for (const p of [...points, bytes.length]) {
    while (at < p) {
      const target = conn.readBuffer();
      const n = Math.min(target.length, p - at);
      bytes.copy(target, 0, at, at + n);
      conn.receiveInto(n, target);
      at += n;
    }
  }
}

/** What a RecordingStream has written since the last call (a connection pair is shuttled by hand). */
function take(sock: RecordingStream): Buffer {
  const b = Buffer.concat(sock.written);
  sock.written = [];
  return b;
}

/** Keeps the frames it is handed as they are (views), to check later that nothing reused their memory. */
class KeepingOwner extends Owner {
  kept: Buffer[][] = [];
  override onMessage(_c: ZmtpConnection, frames: Buffer[]): void {
    this.kept.push(frames.slice());
  }
}

const SERVER_KEYS = nacl.box.keyPair();
const CLIENT_KEYS = nacl.box.keyPair();
const raw = (k: nacl.BoxKeyPair) => ({ publicKey: Buffer.from(k.publicKey), secretKey: Buffer.from(k.secretKey) });

/** A DEALER and a ROUTER connection (NULL, or CURVE) with the handshake done, and the ROUTER's owner. */
function pair(curve: boolean): { client: ZmtpConnection; clientPipe: RecordingStream; server: ZmtpConnection; serverPipe: RecordingStream; owner: KeepingOwner } {
  const clientPipe = new RecordingStream();
  const serverPipe = new RecordingStream();
  const owner = new KeepingOwner();
  const server = new ZmtpConnection(serverPipe, owner, {
    socketType: 'ROUTER', peers: ROUTER_PEERS, maxFrameBytes: 1 << 20, maxFrames: 64,
    curve: curve ? { keys: raw(SERVER_KEYS), authorize: () => true } : undefined,
  }, 0);
  const client = new ZmtpConnection(clientPipe, new Owner(), {
    socketType: 'DEALER', peers: DEALER_PEERS, maxFrameBytes: 1 << 20, maxFrames: 64,
    curveClient: curve ? { keys: raw(CLIENT_KEYS), serverKey: Buffer.from(SERVER_KEYS.publicKey) } : undefined,
  }, 0);
  serverPipe.conn = server;
  clientPipe.conn = client;
  for (let i = 0; i < 10 && !(client.ready && server.ready); i++) {
    const up = take(clientPipe);
    if (up.length > 0) server.receive(up);
    const down = take(serverPipe);
    if (down.length > 0) client.receive(down);
  }
  assert.ok(client.ready && server.ready, 'handshake done');
  client.flush();
  const rest = take(clientPipe);
  if (rest.length > 0) server.receive(rest);
  return { client, clientPipe, server, serverPipe, owner };
}

/** A body of `size` bytes whose content depends on `seed` and the position (so a misplaced byte shows). */
function patterned(size: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(size);
  for (let i = 0; i < size; i++) b[i] = (i * 31 + seed + (i >>> 8)) & 0xff;
  return b;
}

const sizedFrameArb = fc.oneof(
  { weight: 4, arbitrary: fc.uint8Array({ maxLength: 20 }).map((a) => Buffer.from(a)) },
  { weight: 2, arbitrary: fc.integer({ min: 250, max: 700 }).map((n) => patterned(n, n)) },
  // Around the size that gets a buffer of its own, and up to past one 64 KiB read.
  { weight: 2, arbitrary: fc.record({ size: fc.integer({ min: LARGE_FRAME_BYTES - 2, max: 140_000 }), seed: fc.nat(255) }).map((r) => patterned(r.size, r.seed)) },
);
const sizedMessagesArb = fc.array(fc.array(sizedFrameArb, { minLength: 1, maxLength: 4 }), { minLength: 1, maxLength: 5 });

/** Sends `messages` from the DEALER, reads them into the ROUTER as a socket would, and checks them byte for byte. */
function roundTrip(curve: boolean, messages: Buffer[][], cuts: number[]): void {
  const { client, clientPipe, server, owner } = pair(curve);
  for (const m of messages) client.send(m);
  client.flush();
  readAsSocket(server, take(clientPipe), cuts);
  // The shared read buffer is reused by the next read of any connection: scribble on it, then look at what was kept.
  server.readBuffer().fill(0xee);
  assert.deepEqual(owner.closes, []);
  assert.equal(owner.kept.length, messages.length);
  owner.kept.forEach((m, k) => {
    assert.deepEqual(m.slice(1).map((f) => f.length), messages[k].map((f) => f.length));
    m.slice(1).forEach((f, i) => assert.ok(f.equals(messages[k][i]), `message ${k} frame ${i} (${f.length} bytes) byte for byte`));
  });
  assert.equal(readAheadBytes(), 0, 'no read-ahead left once every frame arrived');
}

for (const curve of [false, true]) {
  const name = curve ? 'CURVE' : 'NULL';
  test(`${name}: messages with large frames, read as the socket reads them at any split, arrive byte for byte and stay intact after the read buffer is reused`, () => {
    fc.assert(
      fc.property(sizedMessagesArb, fc.array(fc.nat(), { maxLength: 30 }), (messages, cuts) => roundTrip(curve, messages, cuts)),
      { seed: SEED, numRuns: Math.max(20, RUNS / 4) },
    );
  });

  test(`${name}: a large frame between small ones, split into two reads at every offset, arrives byte for byte`, () => {
    const messages = [[Buffer.from('MDPC01'), Buffer.from('echo'), patterned(LARGE_FRAME_BYTES + 300, 7)], [Buffer.from('x')]];
    let length = -1;
    for (let cut = 0; cut <= length || length < 0; cut++) {
      // A fresh pair per cut (CURVE's nonces start over with each session, so the bytes are sealed again each time).
      const { client, clientPipe, server, owner } = pair(curve);
      for (const m of messages) client.send(m);
      client.flush();
      const bytes = take(clientPipe);
      length = bytes.length;
      readAsSocket(server, bytes, [cut]);
      server.readBuffer().fill(0xee);
      assert.equal(owner.kept.length, 2, `cut ${cut}`);
      assert.ok(owner.kept[0][3].equals(messages[0][2]), `cut ${cut}`);
      assert.equal(owner.kept[1][1].toString(), 'x', `cut ${cut}`);
    }
    assert.equal(readAheadBytes(), 0);
  });
}

test('a large frame is read into one buffer of its own size; small frames of one read share one copy of it', () => {
  const { client, clientPipe, server, owner } = pair(false);
  const big = patterned(1 << 20, 3);
  client.send([Buffer.from('a'), Buffer.from('hello'), big]);
  client.send([Buffer.from('world'), Buffer.from('again')]);
  client.flush();
  const bytes = take(clientPipe);
  // As a 64 KiB socket read would see it: the header and the start of the body first, the rest read straight in.
  readAsSocket(server, bytes, []);
  const [first, second] = owner.kept;
  assert.equal(first[3].buffer.byteLength, big.length, 'the 1 MiB body is its own allocation, no bigger');
  assert.equal(first[3].byteOffset, 0);
  assert.ok(first[3].equals(big));
  assert.equal(second[1].buffer, second[2].buffer, 'the two small frames are views of one copy of their read');
  assert.ok(second[1].buffer.byteLength < 1024, 'a copy the size of what was read, not of the read buffer');
});

test('read-ahead is bounded: headers announcing large frames get buffers up to the budget, then what arrives is assembled; a closed connection gives its share back', () => {
  const size = 16 * 1024 * 1024;
  const conns: { sock: RecordingStream; owner: Owner; conn: ZmtpConnection }[] = [];
  const n = Math.ceil(READ_AHEAD_BYTES / size) + 2;
  for (let i = 0; i < n; i++) {
    const c = open({ maxFrameBytes: size });
    c.sock.receive(Buffer.concat([greeting(), readyCommand({ 'Socket-Type': 'DEALER' })]));
    const head = Buffer.alloc(9 + 10);
    writeHeader(head, 0, 0, size);
    readAsSocket(c.conn, head, []);
    conns.push(c);
  }
  assert.ok(readAheadBytes() <= READ_AHEAD_BYTES, `${readAheadBytes()} bytes read ahead, budget ${READ_AHEAD_BYTES}`);
  assert.ok(readAheadBytes() >= READ_AHEAD_BYTES - size, 'the budget was used');
  // Past the budget a connection reads into the shared buffer, and keeps only what arrived.
  assert.equal(conns[n - 1].conn.readBuffer().length, 65536);
  for (const c of conns) c.sock.destroy();
  assert.equal(readAheadBytes(), 0, 'closed connections gave their read-ahead back');
});
