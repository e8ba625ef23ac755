// ZMTP's wire pieces byte for byte, against what RFC 23/37 and RFC 32 (Z85) and RFC 26 (CurveZMQ) write down: the
// greeting, frame headers at the 255/256 boundary, commands, metadata, PING TTLs, and the decoders' refusals. The
// expected bytes are written out here from the RFCs, not produced by the code under test.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import nacl from 'tweetnacl';
import {
  checkGreetingHead, command, commandFrame, errorCommand, greeting, headerBytes, metadata, parseCommand, parseGreeting,
  parseProperties, pingCommand, pongCommand, readyCommand, writeHeader, DEALER_PEERS, ROUTER_PEERS,
} from '../src/zmtp/wire.js';
import { CurveClient, CurveServer, sealedBytes } from '../src/zmtp/curve.js';
import { z85Decode, z85Encode } from '../src/zmtp/z85.js';

const hex = (b: Buffer) => b.toString('hex');

test('greeting: signature, 3.1, mechanism field padded with zeros, as-server only for CURVE, filler zero', () => {
  const g = greeting();
  assert.equal(g.length, 64);
  assert.equal(hex(g.subarray(0, 12)), 'ff00000000000000017f0301');
  assert.equal(g.toString('latin1', 12, 16), 'NULL');
  assert.ok(g.subarray(16, 64).equals(Buffer.alloc(48)), 'NULL: zeros after the name, as-server 0, filler 0');
  const c = greeting('CURVE');
  assert.equal(c.toString('latin1', 12, 17), 'CURVE');
  assert.ok(c.subarray(17, 32).equals(Buffer.alloc(15)));
  assert.equal(c[32], 1, 'as-server');
  assert.ok(c.subarray(33).equals(Buffer.alloc(31)));
});

test('greeting head: ZMTP 1.0, a broken signature, ZMTP 2.0 and 3.x told apart from the first 11 octets', () => {
  const head = (bytes: number[]) => Buffer.from(bytes);
  assert.equal(checkGreetingHead(head([0x01, 0x00])), 'zmtp1', 'octet 0 not 0xff: ZMTP 1.0 (a length)');
  assert.equal(checkGreetingHead(head([0xff, 0, 0, 0])), null, 'too short to say more');
  assert.equal(checkGreetingHead(head([0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0x7e, 3])), 'not-zmtp', 'octet 9 bit 0 clear');
  assert.equal(checkGreetingHead(head([0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0x7f, 1])), 1, 'ZMTP 2.0 says 1');
  assert.equal(checkGreetingHead(head([0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0x7f, 2])), 2);
  assert.equal(checkGreetingHead(head([0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0x7f, 3])), null, '3: fine');
  assert.equal(checkGreetingHead(head([0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0x01, 4])), null, 'later majors too');
  const g = greeting('CURVE');
  assert.deepEqual(parseGreeting(g), { major: 3, minor: 1, mechanism: 'CURVE' });
  const odd = Buffer.from(g);
  odd[20] = 0x41; // text after the NUL that ends the name: no mechanism
  assert.deepEqual(parseGreeting(odd), { major: 3, minor: 1, mechanism: '' });
  const full = Buffer.from(g);
  full.write('ABCDEFGHIJKLMNOPQRST', 12, 'latin1'); // 20 octets, no NUL at all
  assert.equal(parseGreeting(full).mechanism, 'ABCDEFGHIJKLMNOPQRST');
});

test('frame headers: 1-octet size up to 255, 8-octet size with the LONG flag from 256', () => {
  assert.equal(headerBytes(255), 2);
  assert.equal(headerBytes(256), 9);
  const b = Buffer.alloc(9);
  assert.equal(writeHeader(b, 0, 0x01, 255), 2);
  assert.equal(hex(b.subarray(0, 2)), '01ff');
  assert.equal(writeHeader(b, 0, 0x01, 256), 9);
  assert.equal(hex(b), '030000000000000100');
  assert.equal(writeHeader(b, 0, 0x04, 0x1_0000_0002), 9, 'past 4 GiB the high word is written');
  assert.equal(hex(b), '060000000100000002');
  const at = Buffer.alloc(12, 0xee);
  assert.equal(writeHeader(at, 3, 0, 7), 5, 'written at the offset');
  assert.equal(hex(at.subarray(2, 6)), 'ee0007ee');
});

test('commands: name as a short string, data after it; READY metadata as RFC 37 lays it out; ERROR, PING, PONG', () => {
  assert.equal(hex(command('PONG', Buffer.from('ab'))), '0407' + '04' + '504f4e47' + '6162');
  const big = command('X', Buffer.alloc(300));
  assert.equal(hex(big.subarray(0, 9)), '06' + '000000000000012e', 'a long command frame');
  assert.equal(hex(commandFrame(Buffer.from('\x05READY', 'latin1'))), '040605' + Buffer.from('READY').toString('hex'));
  assert.equal(hex(metadata({ 'Socket-Type': 'ROUTER', Identity: Buffer.alloc(0) })),
    '0b' + Buffer.from('Socket-Type').toString('hex') + '00000006' + Buffer.from('ROUTER').toString('hex') + '08' + Buffer.from('Identity').toString('hex') + '00000000');
  const ready = readyCommand({ 'Socket-Type': 'DEALER' });
  assert.equal(ready[0], 0x04);
  assert.equal(ready.toString('latin1', 2, 8), '\x05READY');
  assert.equal(hex(errorCommand('bad')), '040a054552524f5203626164');
  assert.equal(errorCommand('x'.repeat(300)).length, 9 + 6 + 1 + 255, 'an ERROR reason is cut to 255 octets (a long frame)');
  assert.equal(hex(pingCommand(30)), '0407' + Buffer.from('\x04PING').toString('hex') + '001e');
  assert.equal(hex(pingCommand(2.6)).slice(-4), '0003', 'rounded');
  assert.equal(hex(pingCommand(-5)).slice(-4), '0000', 'never negative');
  assert.equal(hex(pingCommand(1e9)).slice(-4), 'ffff', 'at most 16 bits');
  assert.equal(hex(pongCommand(Buffer.from([1, 2]))), '0407' + Buffer.from('\x04PONG').toString('hex') + '0102');
  assert.equal(ROUTER_PEERS.has('DEALER') && ROUTER_PEERS.has('REQ') && ROUTER_PEERS.has('ROUTER') && !ROUTER_PEERS.has('PUB'), true);
  assert.equal(DEALER_PEERS.has('REP') && DEALER_PEERS.has('DEALER') && DEALER_PEERS.has('ROUTER') && !DEALER_PEERS.has('REQ'), true);
});

test('command and property decoders refuse what runs past the end, and read what fits exactly', () => {
  assert.equal(parseCommand(Buffer.alloc(0)), null);
  assert.equal(parseCommand(Buffer.from([0])), null, 'an empty name');
  assert.equal(parseCommand(Buffer.from([5, 0x41, 0x42])), null, 'the name runs past the end');
  assert.deepEqual(parseCommand(Buffer.from('\x04PING', 'latin1')), { name: 'PING', data: Buffer.alloc(0) });
  assert.deepEqual(parseCommand(Buffer.from('\x04PINGxy', 'latin1')), { name: 'PING', data: Buffer.from('xy') });
  const props = parseProperties(metadata({ 'Socket-Type': 'DEALER', IDENTITY: 'me' }));
  assert.deepEqual([...(props ?? new Map())].map(([k, v]) => [k, v.toString()]), [['socket-type', 'DEALER'], ['identity', 'me']], 'names lower-cased');
  assert.deepEqual(parseProperties(Buffer.alloc(0)), new Map());
  assert.equal(parseProperties(Buffer.from([0, 0, 0, 0, 0])), null, 'an empty name');
  assert.equal(parseProperties(Buffer.from([2, 0x61, 0x62, 0, 0, 0])), null, 'the length field runs past the end');
  assert.equal(parseProperties(Buffer.from([1, 0x61, 0, 0, 0, 2, 0x78])), null, 'the value runs past the end');
  assert.deepEqual([...(parseProperties(Buffer.from([1, 0x61, 0, 0, 0, 1, 0x78])) ?? new Map())].map(([k, v]) => [k, v.toString()]), [['a', 'x']], 'exactly to the end');
});

test('Z85 (RFC 32): the RFC test vector both ways; text that is not Z85 is refused', () => {
  const bytes = Buffer.from([0x86, 0x4f, 0xd2, 0x6f, 0xb5, 0x59, 0xf7, 0x5b]);
  assert.equal(z85Encode(bytes), 'HelloWorld');
  assert.deepEqual(z85Decode('HelloWorld'), bytes);
  assert.equal(z85Decode('Hello')?.length, 4, 'five characters, four octets');
  assert.equal(z85Decode('Hell'), null, 'not a multiple of 5');
  assert.equal(z85Decode('Hell~'), null, 'a character outside the alphabet');
  assert.equal(z85Decode('#####'), null, 'past 2^32');
  assert.equal(z85Encode(Buffer.alloc(4)), '00000');
});

test('CurveZMQ server: HELLO refusals (length, version, a box that does not open, a signature that is not zeros); WELCOME opens with the client transient key', () => {
  const server = nacl.box.keyPair();
  const keys = { publicKey: Buffer.from(server.publicKey), secretKey: Buffer.from(server.secretKey) };
  const cn = nacl.box.keyPair();
  const hello = (opts: { version?: [number, number]; zeros?: Uint8Array; key?: Uint8Array; len?: number } = {}) => {
    const n = Buffer.alloc(8);
    n.writeBigUInt64BE(1n);
    const sig = nacl.box(opts.zeros ?? new Uint8Array(64), new Uint8Array(Buffer.concat([Buffer.from('CurveZMQHELLO---'), n])), opts.key ?? server.publicKey, cn.secretKey);
    const body = Buffer.concat([Buffer.from('\x05HELLO', 'latin1'), Buffer.from(opts.version ?? [1, 0]), Buffer.alloc(72), cn.publicKey, n, sig]);
    return opts.len === undefined ? body : body.subarray(0, opts.len);
  };
  assert.equal(new CurveServer(keys).hello(hello({ len: 199 })), 'malformed HELLO');
  const renamed = hello();
  renamed[1] = 0x68;
  assert.equal(new CurveServer(keys).hello(renamed), 'malformed HELLO');
  assert.equal(new CurveServer(keys).hello(hello({ version: [2, 0] })), 'unsupported CurveZMQ version');
  assert.equal(new CurveServer(keys).hello(hello({ version: [1, 1] })), 'unsupported CurveZMQ version');
  assert.equal(new CurveServer(keys).hello(hello({ key: nacl.box.keyPair().publicKey })), 'HELLO box does not open');
  const ones = new Uint8Array(64);
  ones[63] = 1;
  assert.equal(new CurveServer(keys).hello(hello({ zeros: ones })), 'HELLO signature is not zeros');
  const s = new CurveServer(keys);
  const welcome = s.hello(hello());
  assert.ok(Buffer.isBuffer(welcome));
  assert.equal(welcome.length, 168);
  assert.equal(welcome.toString('latin1', 0, 8), '\x07WELCOME');
  const opened = nacl.box.open(welcome.subarray(24), new Uint8Array(Buffer.concat([Buffer.from('WELCOME-'), welcome.subarray(8, 24)])), server.publicKey, cn.secretKey);
  assert.ok(opened !== null && opened.length === 128, 'S\' and a 96-octet cookie');
  assert.equal(s.initiate(Buffer.alloc(300)), 'malformed INITIATE');
  assert.equal(new CurveServer(keys).initiate(Buffer.alloc(300)), 'INITIATE before HELLO');
  assert.equal(sealedBytes(10), 8 + 8 + 16 + 1 + 10);
});

test('CurveZMQ server: INITIATE refusals (short, another connection\'s cookie, a replayed nonce, a vouch for other keys); a good one yields the client key and READY', () => {
  const server = nacl.box.keyPair();
  const keys = { publicKey: Buffer.from(server.publicKey), secretKey: Buffer.from(server.secretKey) };
  const client = nacl.box.keyPair();
  const short = (n: number) => {
    const b = Buffer.alloc(8);
    b.writeBigUInt64BE(BigInt(n));
    return b;
  };
  const nonce = (prefix: string, tail: Uint8Array) => new Uint8Array(Buffer.concat([Buffer.from(prefix, 'latin1'), tail]));
  /** A fresh server session past HELLO: the client's transient pair, S' and the cookie from WELCOME. */
  const session = () => {
    const s = new CurveServer(keys);
    const cn = nacl.box.keyPair();
    const sig = nacl.box(new Uint8Array(64), nonce('CurveZMQHELLO---', short(1)), server.publicKey, cn.secretKey);
    const welcome = s.hello(Buffer.concat([Buffer.from('\x05HELLO', 'latin1'), Buffer.from([1, 0]), Buffer.alloc(72), cn.publicKey, short(1), sig])) as Buffer;
    const opened = nacl.box.open(welcome.subarray(24), nonce('WELCOME-', welcome.subarray(8, 24)), server.publicKey, cn.secretKey) as Uint8Array;
    return { s, cn, sPrime: opened.subarray(0, 32), cookie: opened.subarray(32, 128) };
  };
  const initiate = (x: ReturnType<typeof session>, o: { cookie?: Uint8Array; n?: number; vouchFor?: Uint8Array; vouchTransient?: Uint8Array } = {}) => {
    const vn = nacl.randomBytes(16);
    const vouch = nacl.box(new Uint8Array([...(o.vouchTransient ?? x.cn.publicKey), ...(o.vouchFor ?? server.publicKey)]), nonce('VOUCH---', vn), x.sPrime, client.secretKey);
    const meta = Buffer.from('\x0bSocket-Type\x00\x00\x00\x06DEALER', 'latin1');
    const n = short(o.n ?? 2);
    const box = nacl.box(new Uint8Array(Buffer.concat([client.publicKey, vn, vouch, meta])), nonce('CurveZMQINITIATE', n), x.sPrime, x.cn.secretKey);
    return Buffer.concat([Buffer.from('\x08INITIATE', 'latin1'), o.cookie ?? x.cookie, n, box]);
  };
  const a = session();
  assert.equal(a.s.initiate(initiate(a).subarray(0, 9 + 96 + 8 + 128 + 15)), 'malformed INITIATE');
  const b = session();
  assert.equal(a.s.initiate(initiate(a, { cookie: b.cookie })), 'cookie does not open', 'another connection\'s cookie');
  assert.equal(session().s.initiate(initiate(session())), 'cookie does not open');
  const c = session();
  assert.equal(c.s.initiate(initiate(c, { n: 1 })), 'INITIATE nonce replayed', 'the HELLO nonce again');
  const d = session();
  assert.equal(d.s.initiate(initiate(d, { vouchFor: nacl.box.keyPair().publicKey })), 'vouch does not match', 'a vouch for another server');
  const e = session();
  assert.equal(e.s.initiate(initiate(e, { vouchTransient: nacl.box.keyPair().publicKey })), 'vouch does not match', 'a vouch for another transient key');
  const f = session();
  const ok = f.s.initiate(initiate(f));
  assert.ok(typeof ok === 'object');
  assert.deepEqual(ok.clientKey, Buffer.from(client.publicKey));
  assert.equal(ok.metadata.toString('latin1'), '\x0bSocket-Type\x00\x00\x00\x06DEALER');
  const ready = f.s.ready(Buffer.from('meta'));
  const shared = nacl.box.before(f.sPrime, f.cn.secretKey);
  assert.equal(ready.toString('latin1', 0, 6), '\x05READY');
  assert.equal(Buffer.from(nacl.secretbox.open(ready.subarray(14), nonce('CurveZMQREADY---', ready.subarray(6, 14)), shared) ?? []).toString(), 'meta');
  // MESSAGE: a good box opens once; a short one, a wrong command name, and the same nonce again do not.
  const msg = (n: number, name = '\x07MESSAGE') => Buffer.concat([Buffer.from(name, 'latin1'), short(n), nacl.secretbox(new Uint8Array([0, 0x68, 0x69]), nonce('CurveZMQMESSAGEC', short(n)), shared)]);
  assert.equal(f.s.open(msg(3).subarray(0, 8 + 8 + 16 + 1 - 1)), null, 'shorter than name, nonce, MAC and flags');
  assert.equal(f.s.open(msg(3, '\x07MESSAGX')), null, 'not a MESSAGE');
  const opened = f.s.open(msg(3));
  assert.deepEqual(opened && { flags: opened.flags, data: opened.data.toString() }, { flags: 0, data: 'hi' });
  assert.equal(f.s.open(msg(3)), null, 'the same nonce twice');
});

test('CurveZMQ client, checked with tweetnacl from RFC 26: HELLO is 200 octets that open to 64 zeros; a WELCOME from another server key is refused; a good one yields INITIATE whose vouch opens; READY and MESSAGE nonces count on', () => {
  const server = nacl.box.keyPair();
  const ours = nacl.box.keyPair();
  const keys = { publicKey: Buffer.from(ours.publicKey), secretKey: Buffer.from(ours.secretKey) };
  const client = new CurveClient(keys, Buffer.from(server.publicKey));
  const hello = client.hello();
  assert.equal(hello.length, 200);
  assert.equal(hello.toString('latin1', 0, 6), '\x05HELLO');
  assert.deepEqual([hello[6], hello[7]], [1, 0], 'version 1.0');
  assert.ok(hello.subarray(8, 80).equals(Buffer.alloc(72)), 'anti-amplification padding');
  const cn = hello.subarray(80, 112);
  assert.equal(hello.readBigUInt64BE(112), 1n, 'short nonce 1');
  const sig = nacl.box.open(hello.subarray(120), Buffer.concat([Buffer.from('CurveZMQHELLO---'), hello.subarray(112, 120)]), cn, server.secretKey);
  assert.ok(sig !== null && Buffer.from(sig).equals(Buffer.alloc(64)), 'Box[64 zeros](C\'->S)');

  // WELCOME: Box[S' + cookie](S->C'). One sealed with another server's key does not open.
  const st = nacl.box.keyPair();
  const cookie = Buffer.alloc(96, 7);
  const wn = Buffer.alloc(16, 3);
  const welcome = (fromKey: Uint8Array) => Buffer.concat([Buffer.from('\x07WELCOME'), wn,
    nacl.box(Buffer.concat([st.publicKey, cookie]), Buffer.concat([Buffer.from('WELCOME-'), wn]), cn, fromKey)]);
  assert.match(String(new CurveClient(keys, Buffer.from(server.publicKey)).welcome(welcome(nacl.box.keyPair().secretKey), Buffer.alloc(0))), /does not open/);
  assert.equal(client.welcome(Buffer.alloc(100), Buffer.alloc(0)), 'malformed WELCOME');
  const meta = metadata({ 'Socket-Type': 'DEALER' });
  const initiate = client.welcome(welcome(server.secretKey), meta);
  assert.ok(Buffer.isBuffer(initiate));
  const init = initiate as Buffer;
  assert.equal(init.toString('latin1', 0, 9), '\x08INITIATE');
  assert.ok(init.subarray(9, 105).equals(cookie), 'the cookie, as sent');
  assert.equal(init.readBigUInt64BE(105), 2n, 'short nonce 2');
  const inner = nacl.box.open(init.subarray(113), Buffer.concat([Buffer.from('CurveZMQINITIATE'), init.subarray(105, 113)]), cn, st.secretKey);
  assert.ok(inner !== null, 'Box[...](C\'->S\')');
  const plain = Buffer.from(inner as Uint8Array);
  assert.ok(plain.subarray(0, 32).equals(Buffer.from(ours.publicKey)), 'our permanent key');
  const vouch = nacl.box.open(plain.subarray(48, 128), Buffer.concat([Buffer.from('VOUCH---'), plain.subarray(32, 48)]), ours.publicKey, st.secretKey);
  assert.ok(vouch !== null && Buffer.from(vouch).equals(Buffer.concat([cn, server.publicKey])), 'vouch: Box[C\' + S](C->S\')');
  assert.ok(plain.subarray(128).equals(meta), 'our metadata');

  // READY: Box[metadata](S'->C') with the server's short nonce 1; a replay of it is refused.
  const shared = nacl.box.before(cn, st.secretKey);
  const rn = Buffer.from([0, 0, 0, 0, 0, 0, 0, 1]);
  const ready = Buffer.concat([Buffer.from('\x05READY'), rn, nacl.secretbox(metadata({ 'Socket-Type': 'ROUTER' }), Buffer.concat([Buffer.from('CurveZMQREADY---'), rn]), shared)]);
  const got = client.ready(ready);
  assert.ok(Buffer.isBuffer(got) && parseProperties(got as Buffer)?.get('socket-type')?.toString() === 'ROUTER');
  assert.equal(client.ready(ready), 'READY nonce replayed');
  // Our first MESSAGE carries short nonce 3 and opens with the session key under the client's prefix.
  const out = Buffer.alloc(sealedBytes(5));
  client.sealInto(out, 0, 1, Buffer.from('hello'));
  assert.equal(out.readBigUInt64BE(8), 3n);
  const msg = nacl.secretbox.open(out.subarray(16), Buffer.concat([Buffer.from('CurveZMQMESSAGEC'), out.subarray(8, 16)]), shared);
  assert.ok(msg !== null && Buffer.from(msg).equals(Buffer.from('\x01hello')), 'flags MORE, then the frame');
});
