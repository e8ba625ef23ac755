// CurveZMQ (RFC 26) as ZMTP's CURVE mechanism (RFC 25), server side: the handshake (HELLO, WELCOME with a cookie,
// INITIATE with a vouch, READY) and the per-frame MESSAGE boxes, as libzmq speaks them (docs/curve.md). Pure: bytes
// in, bytes out; the connection does the I/O. Crypto: sodium-native (measured fastest, `npm run bench:crypto`), with
// the precomputed box key built as NaCl defines crypto_box_beforenm, because sodium-native 5 does not export it.

import sodium from 'sodium-native';
import { hsalsa } from '@noble/ciphers/salsa.js';

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
  sodium.crypto_scalarmult(shared, secretKey, publicKey);
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

function shortNonce(n: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(n);
  return b;
}

function random(n: number): Buffer {
  const b = Buffer.alloc(n);
  sodium.randombytes_buf(b);
  return b;
}

const HELLO = Buffer.from('\x05HELLO', 'latin1');
const INITIATE = Buffer.from('\x08INITIATE', 'latin1');
const MESSAGE = Buffer.from('\x07MESSAGE', 'latin1');
const MSG_NONCE_S = Buffer.from('CurveZMQMESSAGES', 'latin1');
const MSG_NONCE_C = Buffer.from('CurveZMQMESSAGEC', 'latin1');

/** Inner flags of a MESSAGE box (libzmq's msg flags): bit 0 MORE, bit 1 COMMAND. */
export const CURVE_MORE = 0x01;
export const CURVE_COMMAND = 0x02;

/** The server end of one connection's CurveZMQ session. */
export class CurveServer {
  /** The client's permanent public key, once INITIATE checked out. */
  clientKey: Buffer | null = null;
  private readonly cookieKey = random(KEY);
  private transientPublic = Buffer.alloc(KEY);
  private transientSecret = Buffer.alloc(KEY);
  private clientTransient: Buffer | null = null;
  private precomputed: Buffer | null = null;
  private sendNonce = 1n;
  private peerNonce = 0n;
  /** MESSAGE nonces, prefix written once: per frame only the 8-byte counter changes (no allocation per frame). */
  private readonly sealNonce = Buffer.concat([MSG_NONCE_S, Buffer.alloc(8)]);
  private readonly openNonce = Buffer.concat([MSG_NONCE_C, Buffer.alloc(8)]);

  constructor(private readonly keys: RawKeyPair) {}

  /** A HELLO command body; returns the WELCOME command body, or why the HELLO is refused. */
  hello(body: Buffer): Buffer | string {
    if (body.length !== 200 || !body.subarray(0, 6).equals(HELLO)) return 'malformed HELLO';
    if (body[6] !== 1 || body[7] !== 0) return 'unsupported CurveZMQ version';
    const cn = Buffer.from(body.subarray(80, 112));
    const n = body.subarray(112, 120);
    const zeros = Buffer.alloc(64);
    if (!sodium.crypto_box_open_easy(zeros, Buffer.from(body.subarray(120, 200)), nonce('CurveZMQHELLO---', n), cn, this.keys.secretKey)) return 'HELLO box does not open';
    if (!zeros.equals(Buffer.alloc(64))) return 'HELLO signature is not zeros';
    this.peerNonce = n.readBigUInt64BE();
    this.clientTransient = cn;
    sodium.crypto_box_keypair(this.transientPublic, this.transientSecret);
    // The cookie: C' and s' under a key only this connection knows.
    const cookieNonce = random(16);
    const cookieBox = Buffer.alloc(64 + MAC);
    sodium.crypto_secretbox_easy(cookieBox, Buffer.concat([cn, this.transientSecret]), nonce('COOKIE--', cookieNonce), this.cookieKey);
    const welcomeNonce = random(16);
    const welcomeBox = Buffer.alloc(128 + MAC);
    sodium.crypto_box_easy(welcomeBox, Buffer.concat([this.transientPublic, cookieNonce, cookieBox]), nonce('WELCOME-', welcomeNonce), cn, this.keys.secretKey);
    return Buffer.concat([Buffer.from('\x07WELCOME', 'latin1'), welcomeNonce, welcomeBox]);
  }

  /** An INITIATE command body; returns the client's permanent key and its metadata bytes, or why it is refused. */
  initiate(body: Buffer): { clientKey: Buffer; metadata: Buffer } | string {
    if (this.clientTransient === null) return 'INITIATE before HELLO';
    if (body.length < 9 + 96 + 8 + 128 + MAC || !body.subarray(0, 9).equals(INITIATE)) return 'malformed INITIATE';
    const cookie = Buffer.alloc(64);
    if (!sodium.crypto_secretbox_open_easy(cookie, Buffer.from(body.subarray(25, 105)), nonce('COOKIE--', body.subarray(9, 25)), this.cookieKey)) return 'cookie does not open';
    if (!cookie.subarray(0, 32).equals(this.clientTransient) || !cookie.subarray(32).equals(this.transientSecret)) return 'cookie does not match';
    const n = body.subarray(105, 113);
    const seq = n.readBigUInt64BE();
    if (seq <= this.peerNonce) return 'INITIATE nonce replayed';
    this.peerNonce = seq;
    this.precomputed = beforenm(this.clientTransient, this.transientSecret);
    const box = Buffer.from(body.subarray(113));
    const plain = Buffer.alloc(box.length - MAC);
    if (!sodium.crypto_secretbox_open_easy(plain, box, nonce('CurveZMQINITIATE', n), this.precomputed)) return 'INITIATE box does not open';
    const clientKey = Buffer.from(plain.subarray(0, 32));
    const vouch = Buffer.alloc(64);
    if (!sodium.crypto_box_open_easy(vouch, Buffer.from(plain.subarray(48, 128)), nonce('VOUCH---', plain.subarray(32, 48)), clientKey, this.transientSecret)) return 'vouch does not open';
    if (!vouch.subarray(0, 32).equals(this.clientTransient) || !vouch.subarray(32).equals(this.keys.publicKey)) return 'vouch does not match';
    this.clientKey = clientKey;
    return { clientKey, metadata: plain.subarray(128) };
  }

  /** The READY command body carrying our metadata (after initiate() succeeded). */
  ready(metadata: Buffer): Buffer {
    const n = shortNonce(this.sendNonce++);
    const box = Buffer.alloc(metadata.length + MAC);
    sodium.crypto_secretbox_easy(box, metadata, nonce('CurveZMQREADY---', n), this.precomputed as Buffer);
    return Buffer.concat([Buffer.from('\x05READY', 'latin1'), n, box]);
  }

  /** Bytes a frame of `size` takes as a MESSAGE body: command name, nonce, MAC, the flags octet, the data. */
  static sealedBytes(size: number): number {
    return 16 + MAC + 1 + size;
  }

  /**
   * Seals one frame as the body of the wire frame that carries it (MESSAGE, nonce, box of [flags, data]), written
   * into `out` at `at`; returns the offset after it. In place: the plaintext is written where the box goes and
   * libsodium (which allows the overlap) encrypts it there, so the frame is copied once and nothing is allocated.
   */
  sealInto(out: Buffer, at: number, flags: number, data: Buffer): number {
    MESSAGE.copy(out, at);
    const seq = this.sendNonce++;
    out.writeBigUInt64BE(seq, at + 8);
    this.sealNonce.writeBigUInt64BE(seq, 16);
    out[at + 16 + MAC] = flags;
    data.copy(out, at + 16 + MAC + 1);
    const end = at + CurveServer.sealedBytes(data.length);
    sodium.crypto_secretbox_easy(out.subarray(at + 16, end), out.subarray(at + 16 + MAC, end), this.sealNonce, this.precomputed as Buffer);
    return end;
  }

  /**
   * A received wire frame's body: its inner flags and data, or null when it does not open (or replays a nonce).
   * Opened in place: the data is a view into `body` (so into the read chunk), which the call overwrites.
   */
  open(body: Buffer): { flags: number; data: Buffer } | null {
    if (body.length < 16 + 1 + MAC || !body.subarray(0, 8).equals(MESSAGE)) return null;
    const seq = body.readBigUInt64BE(8);
    if (seq <= this.peerNonce) return null;
    this.openNonce.writeBigUInt64BE(seq, 16);
    const plain = body.subarray(16 + MAC);
    if (!sodium.crypto_secretbox_open_easy(plain, body.subarray(16), this.openNonce, this.precomputed as Buffer)) return null;
    this.peerNonce = seq;
    return { flags: plain[0], data: plain.subarray(1) };
  }

}
