// CurveZMQ (RFC 26) as ZMTP's CURVE mechanism (RFC 25), both ends: the handshake (HELLO, WELCOME with a cookie,
// INITIATE with a vouch, READY) and the per-frame MESSAGE boxes, as libzmq speaks them (docs/curve.md). Pure: bytes
// in, bytes out; the connection does the I/O. Crypto: sodium-native (measured fastest, `npm run bench:crypto`), with
// the precomputed box key built as NaCl defines crypto_box_beforenm, because sodium-native 5 does not export it.
// sodium-native is loaded on first use: a client on NULL (`mdbroker/client`) never loads the native addon.

import { createRequire } from 'node:module';
import { hsalsa } from '@noble/ciphers/salsa.js';

type Sodium = typeof import('sodium-native');
let loaded: Sodium | null = null;
function na(): Sodium {
  if (loaded === null) loaded = createRequire(import.meta.url)('sodium-native') as Sodium;
  return loaded;
}

const KEY = 32;
const MAC = 16;

/** A key pair as raw 32-byte keys. */
export interface RawKeyPair {
  publicKey: Buffer;
  secretKey: Buffer;
}

const SIGMA = new Uint32Array([0x61707865, 0x3320646e, 0x79622d32, 0x6b206574]);

/** crypto_box_beforenm: HSalsa20 of the X25519 shared secret, with a zero nonce. */
function beforenm(publicKey: Buffer, secretKey: Buffer): Buffer {
  const shared = Buffer.alloc(KEY);
  na().crypto_scalarmult(shared, secretKey, publicKey);
  const words = new Uint32Array(8);
  const k = new Uint32Array(8);
  for (let i = 0; i < 8; i++) k[i] = shared.readUInt32LE(i * 4);
  hsalsa(SIGMA, k, new Uint32Array(4), words);
  const out = Buffer.alloc(KEY);
  for (let i = 0; i < 8; i++) out.writeUInt32LE(words[i], i * 4);
  return out;
}

function nonce(prefix: string, tail: Buffer): Buffer {
  return Buffer.concat([Buffer.from(prefix, 'latin1'), tail]);
}

function shortNonce(n: number): Buffer {
  const b = Buffer.alloc(8);
  writeNonce(b, n, 0);
  return b;
}

function random(n: number): Buffer {
  const b = Buffer.alloc(n);
  na().randombytes_buf(b);
  return b;
}

function keyPair(): RawKeyPair {
  const pair = { publicKey: Buffer.alloc(KEY), secretKey: Buffer.alloc(KEY) };
  na().crypto_box_keypair(pair.publicKey, pair.secretKey);
  return pair;
}

const HELLO = Buffer.from('\x05HELLO', 'latin1');
const WELCOME = Buffer.from('\x07WELCOME', 'latin1');
const INITIATE = Buffer.from('\x08INITIATE', 'latin1');
const READY = Buffer.from('\x05READY', 'latin1');
const MESSAGE = Buffer.from('\x07MESSAGE', 'latin1');
const MSG_NONCE_S = Buffer.from('CurveZMQMESSAGES', 'latin1');
const MSG_NONCE_C = Buffer.from('CurveZMQMESSAGEC', 'latin1');

/** Inner flags of a MESSAGE box (libzmq's msg flags): bit 0 MORE, bit 1 COMMAND. */
export const CURVE_MORE = 0x01;
export const CURVE_COMMAND = 0x02;

/** Bytes a frame of `size` takes as a MESSAGE body: command name, nonce, MAC, the flags octet, the data. */
export function sealedBytes(size: number): number {
  return 16 + MAC + 1 + size;
}

/** Writes a short nonce (a counter under 2^53) as 8 big-endian octets. */
function writeNonce(b: Buffer, n: number, at: number): void {
  b.writeUInt32BE(Math.floor(n / 0x100000000), at);
  b.writeUInt32BE(n >>> 0, at + 4);
}

/**
 * One end's MESSAGE boxes, once the handshake gave both ends the precomputed key. Per frame: one libsodium call and
 * two views (nonces are Numbers, not BigInts: 2^53 frames is past any connection's life). Measured here: about 3 us
 * per 100-byte frame sealed and opened, of which the two libsodium calls are about 1 us each.
 */
export class CurveSession {
  protected precomputed: Buffer | null = null;
  /** Our next short nonce, and the peer's latest (a replayed or reordered one is refused). */
  protected sendNonce = 1;
  protected peerNonce = 0;
  /** MESSAGE nonces, prefix written once: per frame only the 8-byte counter changes (no allocation per frame). */
  private readonly sealNonce: Buffer;
  private readonly openNonce: Buffer;

  constructor(asServer: boolean) {
    this.sealNonce = Buffer.concat([asServer ? MSG_NONCE_S : MSG_NONCE_C, Buffer.alloc(8)]);
    this.openNonce = Buffer.concat([asServer ? MSG_NONCE_C : MSG_NONCE_S, Buffer.alloc(8)]);
  }

  /**
   * Seals one frame as the body of the wire frame that carries it (MESSAGE, nonce, box of [flags, data]), written
   * into `out` at `at`; returns the offset after it. In place: the plaintext is written where the box goes and
   * libsodium (which allows the overlap) encrypts it there, so the frame is copied once.
   */
  sealInto(out: Buffer, at: number, flags: number, data: Buffer): number {
    // TypedArray set(): no argument checks per call (copy() has them); the difference is within noise here.
    out.set(MESSAGE, at);
    const seq = this.sendNonce++;
    writeNonce(out, seq, at + 8);
    writeNonce(this.sealNonce, seq, 16);
    out[at + 16 + MAC] = flags;
    out.set(data, at + 16 + MAC + 1);
    const end = at + sealedBytes(data.length);
    na().crypto_secretbox_easy(out.subarray(at + 16, end), out.subarray(at + 16 + MAC, end), this.sealNonce, this.precomputed as Buffer);
    return end;
  }

  /** The inner flags of the frame openFrame() opened last. */
  openedFlags = 0;

  /**
   * A received wire frame's body: its data (its inner flags in `openedFlags`), or null when it does not open (or
   * replays a nonce). Opened in place: the data is a view into `body` (so into the read chunk), which the call
   * overwrites.
   */
  openFrame(body: Buffer): Buffer | null {
    if (body.length < 16 + 1 + MAC) return null;
    for (let i = 0; i < 8; i++) if (body[i] !== MESSAGE[i]) return null;
    const seq = body.readUInt32BE(8) * 0x100000000 + body.readUInt32BE(12);
    // A counter at or past 2^53 cannot be told apart from its neighbours as a Number: refused, as a replay would be.
    if (seq <= this.peerNonce || seq > Number.MAX_SAFE_INTEGER) return null;
    const nonceBytes = this.openNonce;
    for (let i = 0; i < 8; i++) nonceBytes[16 + i] = body[8 + i];
    const plain = body.subarray(16 + MAC);
    if (!na().crypto_secretbox_open_easy(plain, body.subarray(16), nonceBytes, this.precomputed as Buffer)) return null;
    this.peerNonce = seq;
    this.openedFlags = plain[0];
    return plain.subarray(1);
  }

  /** openFrame() as one value: flags and data. */
  open(body: Buffer): { flags: number; data: Buffer } | null {
    const data = this.openFrame(body);
    return data === null ? null : { flags: this.openedFlags, data };
  }
}

/** The server end of one connection's CurveZMQ session. */
export class CurveServer extends CurveSession {
  /** The client's permanent public key, once INITIATE checked out. */
  clientKey: Buffer | null = null;
  private readonly cookieKey = random(KEY);
  private transient: RawKeyPair | null = null;
  private clientTransient: Buffer | null = null;

  constructor(private readonly keys: RawKeyPair) {
    super(true);
  }

  /** A HELLO command body; returns the WELCOME command body, or why the HELLO is refused. */
  hello(body: Buffer): Buffer | string {
    if (body.length !== 200 || !body.subarray(0, 6).equals(HELLO)) return 'malformed HELLO';
    if (body[6] !== 1 || body[7] !== 0) return 'unsupported CurveZMQ version';
    const cn = Buffer.from(body.subarray(80, 112));
    const n = body.subarray(112, 120);
    const zeros = Buffer.alloc(64);
    if (!na().crypto_box_open_easy(zeros, Buffer.from(body.subarray(120, 200)), nonce('CurveZMQHELLO---', n), cn, this.keys.secretKey)) return 'HELLO box does not open';
    if (!zeros.equals(Buffer.alloc(64))) return 'HELLO signature is not zeros';
    this.peerNonce = n.readUInt32BE(0) * 0x100000000 + n.readUInt32BE(4);
    this.clientTransient = cn;
    const transient = keyPair();
    this.transient = transient;
    // The cookie: C' and s' under a key only this connection knows.
    const cookieNonce = random(16);
    const cookieBox = Buffer.alloc(64 + MAC);
    na().crypto_secretbox_easy(cookieBox, Buffer.concat([cn, transient.secretKey]), nonce('COOKIE--', cookieNonce), this.cookieKey);
    const welcomeNonce = random(16);
    const welcomeBox = Buffer.alloc(128 + MAC);
    na().crypto_box_easy(welcomeBox, Buffer.concat([transient.publicKey, cookieNonce, cookieBox]), nonce('WELCOME-', welcomeNonce), cn, this.keys.secretKey);
    return Buffer.concat([WELCOME, welcomeNonce, welcomeBox]);
  }

  /** An INITIATE command body; returns the client's permanent key and its metadata bytes, or why it is refused. */
  initiate(body: Buffer): { clientKey: Buffer; metadata: Buffer } | string {
    if (this.clientTransient === null || this.transient === null) return 'INITIATE before HELLO';
    if (body.length < 9 + 96 + 8 + 128 + MAC || !body.subarray(0, 9).equals(INITIATE)) return 'malformed INITIATE';
    const cookie = Buffer.alloc(64);
    if (!na().crypto_secretbox_open_easy(cookie, Buffer.from(body.subarray(25, 105)), nonce('COOKIE--', body.subarray(9, 25)), this.cookieKey)) return 'cookie does not open';
    if (!cookie.subarray(0, 32).equals(this.clientTransient) || !cookie.subarray(32).equals(this.transient.secretKey)) return 'cookie does not match';
    const n = body.subarray(105, 113);
    const seq = n.readUInt32BE(0) * 0x100000000 + n.readUInt32BE(4);
    if (seq <= this.peerNonce || seq > Number.MAX_SAFE_INTEGER) return 'INITIATE nonce replayed';
    this.peerNonce = seq;
    this.precomputed = beforenm(this.clientTransient, this.transient.secretKey);
    const box = Buffer.from(body.subarray(113));
    const plain = Buffer.alloc(box.length - MAC);
    if (!na().crypto_secretbox_open_easy(plain, box, nonce('CurveZMQINITIATE', n), this.precomputed)) return 'INITIATE box does not open';
    const clientKey = Buffer.from(plain.subarray(0, 32));
    const vouch = Buffer.alloc(64);
    if (!na().crypto_box_open_easy(vouch, Buffer.from(plain.subarray(48, 128)), nonce('VOUCH---', plain.subarray(32, 48)), clientKey, this.transient.secretKey)) return 'vouch does not open';
    if (!vouch.subarray(0, 32).equals(this.clientTransient) || !vouch.subarray(32).equals(this.keys.publicKey)) return 'vouch does not match';
    this.clientKey = clientKey;
    return { clientKey, metadata: plain.subarray(128) };
  }

  /** The READY command body carrying our metadata (after initiate() succeeded). */
  ready(metadata: Buffer): Buffer {
    const n = shortNonce(this.sendNonce++);
    const box = Buffer.alloc(metadata.length + MAC);
    na().crypto_secretbox_easy(box, metadata, nonce('CurveZMQREADY---', n), this.precomputed as Buffer);
    return Buffer.concat([READY, n, box]);
  }
}

/**
 * The client end: HELLO (short nonce 1), INITIATE (nonce 2) once WELCOME opens with the server's permanent key, then
 * the server's READY; MESSAGE nonces go on from 3.
 */
export class CurveClient extends CurveSession {
  private readonly transient = keyPair();

  constructor(private readonly keys: RawKeyPair, private readonly serverKey: Buffer) {
    super(false);
  }

  /** The HELLO command body: version 1.0, 72 octets of padding, C', short nonce, Box[64 zeros](C'->S). */
  hello(): Buffer {
    const n = shortNonce(this.sendNonce++);
    const box = Buffer.alloc(64 + MAC);
    na().crypto_box_easy(box, Buffer.alloc(64), nonce('CurveZMQHELLO---', n), this.serverKey, this.transient.secretKey);
    return Buffer.concat([HELLO, Buffer.from([1, 0]), Buffer.alloc(72), this.transient.publicKey, n, box]);
  }

  /**
   * A WELCOME command body; returns the INITIATE command body (cookie, short nonce, Box[C, vouch nonce, vouch,
   * metadata](C'->S'), vouch = Box[C', S](C->S')), or why the WELCOME is refused (a wrong server key: it does not open).
   */
  welcome(body: Buffer, metadata: Buffer): Buffer | string {
    if (body.length !== 8 + 16 + 128 + MAC || !body.subarray(0, 8).equals(WELCOME)) return 'malformed WELCOME';
    const plain = Buffer.alloc(128);
    const opened = na().crypto_box_open_easy(plain, Buffer.from(body.subarray(24)), nonce('WELCOME-', body.subarray(8, 24)), this.serverKey, this.transient.secretKey);
    if (!opened) return 'WELCOME does not open (is the server key right?)';
    const serverTransient = plain.subarray(0, 32);
    const cookie = plain.subarray(32, 128);
    this.precomputed = beforenm(serverTransient, this.transient.secretKey);
    const vouchNonce = random(16);
    const vouch = Buffer.alloc(64 + MAC);
    na().crypto_box_easy(vouch, Buffer.concat([this.transient.publicKey, this.serverKey]), nonce('VOUCH---', vouchNonce), serverTransient, this.keys.secretKey);
    const inner = Buffer.concat([this.keys.publicKey, vouchNonce, vouch, metadata]);
    const box = Buffer.alloc(inner.length + MAC);
    const n = shortNonce(this.sendNonce++);
    na().crypto_secretbox_easy(box, inner, nonce('CurveZMQINITIATE', n), this.precomputed);
    return Buffer.concat([INITIATE, cookie, n, box]);
  }

  /** The server's READY command body; returns its metadata bytes, or why it is refused. */
  ready(body: Buffer): Buffer | string {
    if (body.length < 6 + 8 + MAC || !body.subarray(0, 6).equals(READY)) return 'malformed READY';
    const seq = body.readUInt32BE(6) * 0x100000000 + body.readUInt32BE(10);
    if (seq <= this.peerNonce || seq > Number.MAX_SAFE_INTEGER) return 'READY nonce replayed';
    const plain = Buffer.alloc(body.length - 14 - MAC);
    if (!na().crypto_secretbox_open_easy(plain, Buffer.from(body.subarray(14)), nonce('CurveZMQREADY---', body.subarray(6, 14)), this.precomputed as Buffer)) return 'READY box does not open';
    this.peerNonce = seq;
    return plain;
  }
}
