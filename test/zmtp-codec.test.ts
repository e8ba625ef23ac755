// The ZMTP decoder and encoder on their own, with no connection and no socket: bytes in, what the decoder hands its
// sink; queued frames in, what the encoder writes. Expected bytes are written out from RFC 23 here.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Decoder, type DecoderLimits, type DecoderSink } from '../src/zmtp/decoder.js';
import { encode, type Writer } from '../src/zmtp/encoder.js';
import { CurveClient, CurveServer, CURVE_COMMAND, CURVE_MORE } from '../src/zmtp/curve.js';
import { FLAG_MORE, command, greeting, headerBytes, pingCommand, writeHeader } from '../src/zmtp/wire.js';
import type { CloseReason } from '../src/zmtp/connection.js';
import sodium from 'sodium-native';

function frame(body: Buffer, flags: number): Buffer {
  const out = Buffer.alloc(headerBytes(body.length) + body.length);
  body.copy(out, writeHeader(out, 0, flags, body.length));
  return out;
}

/** A sink that records; `stopAfter`: message() returns false after that many (reading paused). */
class Sink implements DecoderSink {
  heads = 0;
  greetings: Buffer[] = [];
  commands: Buffer[] = [];
  messages: Buffer[][] = [];
  failures: { reason: CloseReason; tell?: string; major?: number }[] = [];
  stopAfter = Infinity;
  greetingHead(): void {
    this.heads++;
  }
  greeting(g: Buffer): boolean {
    this.greetings.push(Buffer.from(g));
    return true;
  }
  command(body: Buffer): boolean {
    this.commands.push(Buffer.from(body));
    return true;
  }
  message(frames: Buffer[]): boolean {
    this.messages.push(frames);
    return this.messages.length < this.stopAfter;
  }
  fail(reason: CloseReason, tell?: string, major?: number): void {
    this.failures.push({ reason, tell, major });
  }
}

const LIMITS = { maxFrameBytes: 1000, maxFrames: 4 };

function established(limits: DecoderLimits = LIMITS, prefix: Buffer | null = null): { d: Decoder; sink: Sink } {
  const sink = new Sink();
  const d = new Decoder(sink, limits);
  assert.equal(d.feed(greeting()), null);
  assert.equal(sink.heads, 1);
  assert.equal(sink.greetings.length, 1);
  d.establish(prefix, null);
  return { d, sink };
}

test('decoder: the greeting in two reads (head first), then frames; a header split at every octet gives the same message', () => {
  const body = Buffer.alloc(300, 9); // a long frame: 9-octet header
  const bytes = Buffer.concat([frame(Buffer.from('a'), FLAG_MORE), frame(body, 0)]);
  for (let cut = 1; cut < bytes.length; cut++) {
    const { d, sink } = established({ maxFrameBytes: 1000, maxFrames: 8 }, Buffer.from('id'));
    assert.equal(d.feed(bytes.subarray(0, cut)), null);
    assert.equal(d.feed(bytes.subarray(cut)), null);
    assert.equal(sink.messages.length, 1, `cut at ${cut}`);
    const [m] = sink.messages;
    assert.deepEqual(m.map((f) => f.toString('latin1')), ['id', 'a', body.toString('latin1')]);
  }
  const sink = new Sink();
  const d = new Decoder(sink, LIMITS);
  d.feed(greeting().subarray(0, 11));
  assert.deepEqual([sink.heads, sink.greetings.length], [1, 0], 'the rest of our greeting may go after 11 octets');
  d.feed(greeting().subarray(11));
  assert.equal(sink.greetings.length, 1);
});

test('decoder: frames that arrived whole are views of the chunk; empty, one-octet and interned frames are shared Buffers', () => {
  const header = Buffer.from('MDPC01');
  const mk = () => {
    const sink = new Sink();
    const d = new Decoder(sink, { ...LIMITS, intern: [header] });
    d.feed(greeting());
    d.establish(null, null);
    return { d, sink };
  };
  const a = mk();
  const chunk = Buffer.concat([frame(Buffer.alloc(0), FLAG_MORE), frame(Buffer.from([7]), FLAG_MORE), frame(Buffer.from('MDPC01'), FLAG_MORE), frame(Buffer.alloc(20, 1), 0)]);
  a.d.feed(chunk);
  const b = mk();
  b.d.feed(Buffer.from(chunk));
  const [x] = a.sink.messages;
  const [y] = b.sink.messages;
  assert.equal(x[0], y[0], 'empty frame shared');
  assert.equal(x[1], y[1], 'one-octet frame shared');
  assert.equal(x[2], header, 'interned header is the given Buffer');
  assert.equal(x[3].buffer, chunk.buffer, 'the body is a view of the read chunk');
});

test('decoder: a sink that pauses after a message gets the rest of the chunk back, decoded in order when fed again', () => {
  const { d, sink } = established();
  sink.stopAfter = 2;
  const bytes = Buffer.concat(['1', '2', '3', '4'].map((s) => frame(Buffer.from(s), 0)));
  const rest = d.feed(bytes);
  assert.deepEqual(sink.messages.map((m) => m[0].toString()), ['1', '2']);
  assert.ok(rest !== null && rest.equals(bytes.subarray(6)));
  sink.stopAfter = Infinity;
  assert.equal(d.feed(rest), null);
  assert.deepEqual(sink.messages.map((m) => m[0].toString()), ['1', '2', '3', '4']);
});

test('decoder refusals: old versions, reserved flags, oversized frames and messages, commands inside a message, messages before READY', () => {
  const zmtp2 = new Sink();
  const g = greeting();
  g[10] = 1;
  new Decoder(zmtp2, LIMITS).feed(g);
  assert.deepEqual(zmtp2.failures, [{ reason: 'old-version', tell: undefined, major: 1 }]);
  const early = new Sink();
  const d0 = new Decoder(early, LIMITS);
  d0.feed(Buffer.concat([greeting(), frame(Buffer.from('x'), 0)]));
  assert.deepEqual(early.failures.map((f) => f.tell), ['message before READY']);

  const cases: [Buffer, CloseReason, string][] = [
    [Buffer.from([0x08, 0]), 'protocol-error', 'reserved flag bits set'],
    [frame(Buffer.alloc(1001), 0), 'frame-too-large', 'frame too large'],
    [Buffer.concat([frame(Buffer.from('a'), FLAG_MORE), command('PING', Buffer.from([0, 0]))]), 'protocol-error', 'command frame inside a message'],
  ];
  for (const [bytes, reason, tell] of cases) {
    const { d, sink } = established();
    d.feed(bytes);
    assert.deepEqual(sink.failures, [{ reason, tell, major: undefined }]);
    assert.equal(sink.messages.length, 0);
  }
  // The size check is made from the header: nothing of the body needs to arrive.
  const { d: d1, sink: s1 } = established();
  const long = Buffer.alloc(9);
  long[0] = 0x02;
  long.writeUInt32BE(1, 1); // past 4 GiB
  d1.feed(long);
  assert.equal(s1.failures[0].reason, 'frame-too-large');

  const { d: d2, sink: s2 } = established({ maxFrameBytes: 1000, maxFrames: 100, maxMessageBytes: 1500 });
  d2.feed(Buffer.concat([frame(Buffer.alloc(800), FLAG_MORE), frame(Buffer.alloc(800), 0)]));
  assert.equal(s2.failures[0].reason, 'message-too-large');
  // A large frame that would pass the message limit is refused at its header, before its buffer is allocated.
  const { d: d4, sink: s4 } = established({ maxFrameBytes: 1 << 20, maxFrames: 100, maxMessageBytes: 100_000 });
  const head = Buffer.alloc(9);
  head[0] = 0x02;
  head.writeUInt32BE(200_000, 5);
  d4.feed(head);
  assert.equal(s4.failures[0]?.reason, 'message-too-large');
  assert.equal(d4.readTarget(), null, 'no buffer taken for it');

  // Past maxFrames the frames are dropped, one more is kept so the owner can refuse, and the message ends where it ends.
  const { d: d3, sink: s3 } = established();
  d3.feed(Buffer.concat([...[...'abcdefg'].map((c, i) => frame(Buffer.from(c), i < 6 ? FLAG_MORE : 0)), frame(Buffer.from('next'), 0)]));
  assert.deepEqual(s3.messages.map((m) => m.map(String).join('')), ['abcde', 'next']);
});

/** A Writer that records each write and the cork/uncork calls. */
class Recorder implements Writer {
  writes: Buffer[] = [];
  corks = 0;
  uncorks = 0;
  write(b: Buffer): boolean {
    this.writes.push(b);
    return true;
  }
  cork(): void {
    this.corks++;
  }
  uncork(): void {
    this.uncorks++;
  }
}

test('encoder: commands then messages in one write, MORE on all but the last frame, a ROUTER\'s routing id left out', () => {
  const w = new Recorder();
  const ping = pingCommand(30);
  encode(w, [ping], [[Buffer.from('id'), Buffer.from('a'), Buffer.alloc(0)], [Buffer.from('id'), Buffer.alloc(300, 5)]], 1, null);
  assert.equal(w.writes.length, 1);
  const expected = Buffer.concat([ping, Buffer.from([FLAG_MORE, 1, 0x61, 0, 0]), Buffer.from([0x02, 0, 0, 0, 0, 0, 0, 1, 0x2c]), Buffer.alloc(300, 5)]);
  assert.ok(w.writes[0].equals(expected));
  const none = new Recorder();
  encode(none, [], [], 0, null);
  assert.equal(none.writes.length, 0, 'nothing queued, nothing written');
});

test('encoder: a body of 16 KiB or more goes to the writer as it is (no copy), between runs of encoded headers, corked', () => {
  const w = new Recorder();
  const big = Buffer.alloc(20000, 3);
  encode(w, [], [[Buffer.from('h'), big, Buffer.from('t')]], 0, null);
  assert.deepEqual([w.corks, w.uncorks], [1, 1]);
  assert.equal(w.writes.length, 3);
  assert.equal(w.writes[1], big, 'the very Buffer, not a copy');
  assert.ok(Buffer.concat(w.writes).equals(Buffer.concat([Buffer.from([FLAG_MORE, 1, 0x68, FLAG_MORE | 0x02, 0, 0, 0, 0, 0, 0, 0x4e, 0x20]), big, Buffer.from([0, 1, 0x74])])));
});

test('encoder under CURVE: each frame its own MESSAGE box (flags 0 on the wire), MORE and COMMAND inside; the peer opens them in order', () => {
  const kp = () => {
    const p = { publicKey: Buffer.alloc(32), secretKey: Buffer.alloc(32) };
    sodium.crypto_box_keypair(p.publicKey, p.secretKey);
    return p;
  };
  const s = kp();
  const server = new CurveServer(s);
  const client = new CurveClient(kp(), s.publicKey);
  const welcome = server.hello(client.hello()) as Buffer;
  const init = server.initiate(client.welcome(welcome, Buffer.alloc(0)) as Buffer);
  assert.ok(typeof init !== 'string');
  assert.ok(Buffer.isBuffer(client.ready(server.ready(Buffer.alloc(0)))));

  const w = new Recorder();
  encode(w, [pingCommand(10)], [[Buffer.from('one'), Buffer.from('two')]], 0, client);
  assert.equal(w.writes.length, 1);
  const wire = w.writes[0];
  const opened: { flags: number; data: string }[] = [];
  let at = 0;
  while (at < wire.length) {
    assert.equal(wire[at], 0, 'wire flags 0: MORE and COMMAND travel inside the box');
    const size = wire[at + 1];
    const o = server.open(Buffer.from(wire.subarray(at + 2, at + 2 + size)));
    assert.ok(o !== null);
    opened.push({ flags: o.flags, data: o.data.toString('latin1') });
    at += 2 + size;
  }
  assert.deepEqual(opened, [
    { flags: CURVE_COMMAND, data: '\x04PING\x00\x0a' },
    { flags: CURVE_MORE, data: 'one' },
    { flags: 0, data: 'two' },
  ]);
});
