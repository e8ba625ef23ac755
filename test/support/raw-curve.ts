// A raw CurveZMQ client written from RFC 25/26 on tweetnacl (not the broker's sodium-native code): the handshake
// (HELLO, WELCOME, INITIATE with a vouch, READY), then MESSAGE boxes that the test may replay, reorder or tamper
// with. Every wire frame it writes is returned, so a test can send the same bytes again.

import nacl from 'tweetnacl';
import { RawZmtp, rawCommand, rawFrame, rawGreeting, rawProperties } from './raw-zmtp.js';

const Z85 = '0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#';

/** Z85 text (RFC 32) to bytes. */
export function fromZ85(text: string): Uint8Array {
  const out = new Uint8Array((text.length / 5) * 4);
  for (let i = 0, o = 0; i < text.length; i += 5, o += 4) {
    let v = 0;
    for (let k = 0; k < 5; k++) v = v * 85 + Z85.indexOf(text[i + k]);
    out[o] = v >>> 24;
    out[o + 1] = (v >>> 16) & 0xff;
    out[o + 2] = (v >>> 8) & 0xff;
    out[o + 3] = v & 0xff;
  }
  return out;
}

/** Bytes (a multiple of 4) to Z85 text. */
export function toZ85(data: Uint8Array): string {
  let s = '';
  for (let i = 0; i < data.length; i += 4) {
    let v = ((data[i] << 24) | (data[i + 1] << 16) | (data[i + 2] << 8) | data[i + 3]) >>> 0;
    let chunk = '';
    for (let k = 0; k < 5; k++) {
      chunk = Z85[v % 85] + chunk;
      v = Math.floor(v / 85);
    }
    s += chunk;
  }
  return s;
}

const latin = (s: string) => Buffer.from(s, 'latin1');
const nonce = (prefix: string, tail: Uint8Array) => new Uint8Array(Buffer.concat([latin(prefix), tail]));
const short = (n: number) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(n));
  return b;
};
const wait = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class RawCurveClient {
  readonly raw: RawZmtp;
  /** The client's next short nonce: HELLO took 1, INITIATE 2, so MESSAGEs start at 3. */
  next = 1;
  private readonly transient = nacl.box.keyPair();
  private shared: Uint8Array = new Uint8Array(32);

  private constructor(port: number, private readonly serverKey: Uint8Array, private readonly keys: nacl.BoxKeyPair) {
    this.raw = new RawZmtp(port);
  }

  /**
   * Greets with CURVE and sends HELLO; with `stopAfter: 'welcome'` returns once WELCOME is in (no INITIATE sent),
   * else completes the handshake and returns once the server's READY opened.
   */
  static async open(port: number, serverKey: string, keys: nacl.BoxKeyPair, stopAfter: 'welcome' | 'ready' = 'ready'): Promise<RawCurveClient> {
    const c = new RawCurveClient(port, fromZ85(serverKey), keys);
    await new Promise<void>((r) => c.raw.sock.once('connect', () => r()));
    const g = rawGreeting({ mechanism: 'CURVE' });
    c.raw.write(g.subarray(0, 11));
    await c.until(() => c.raw.received.length >= 64, 'greeting');
    c.raw.write(g.subarray(11));
    // HELLO: version 1.0, 72 octets of padding, C', short nonce, Box[64 zeros](C'->S).
    const n1 = short(c.next++);
    const sig = nacl.box(new Uint8Array(64), nonce('CurveZMQHELLO---', n1), c.serverKey, c.transient.secretKey);
    c.raw.write(rawCommand('HELLO', Buffer.concat([Buffer.from([1, 0]), Buffer.alloc(72), c.transient.publicKey, n1, sig])));
    const welcome = await c.command('WELCOME');
    const opened = nacl.box.open(welcome.subarray(16), nonce('WELCOME-', welcome.subarray(0, 16)), c.serverKey, c.transient.secretKey);
    if (opened === null) throw new Error('WELCOME does not open');
    const serverTransient = opened.subarray(0, 32);
    const cookie = opened.subarray(32, 128);
    if (stopAfter === 'welcome') return c;
    // INITIATE: cookie, short nonce, Box[C, vouch nonce, vouch, metadata](C'->S'), vouch = Box[C', S](C->S').
    const vouchNonce = nacl.randomBytes(16);
    const vouch = nacl.box(new Uint8Array([...c.transient.publicKey, ...c.serverKey]), nonce('VOUCH---', vouchNonce), serverTransient, c.keys.secretKey);
    const meta = rawProperties({ 'Socket-Type': 'DEALER' });
    const n2 = short(c.next++);
    const box = nacl.box(new Uint8Array(Buffer.concat([c.keys.publicKey, vouchNonce, vouch, meta])), nonce('CurveZMQINITIATE', n2), serverTransient, c.transient.secretKey);
    c.raw.write(rawCommand('INITIATE', Buffer.concat([cookie, n2, box])));
    c.shared = nacl.box.before(serverTransient, c.transient.secretKey);
    const ready = await c.command('READY');
    if (nacl.secretbox.open(ready.subarray(8), nonce('CurveZMQREADY---', ready.subarray(0, 8)), c.shared) === null) throw new Error('READY does not open');
    return c;
  }

  private async until(cond: () => boolean, what: string): Promise<void> {
    const end = Date.now() + 5000;
    while (!cond()) {
      if (this.raw.isClosed) throw new Error(`closed while waiting for ${what}`);
      if (Date.now() > end) throw new Error(`no ${what} within 5 s`);
      await wait(2);
    }
  }

  private async command(name: string): Promise<Buffer> {
    await this.until(() => this.raw.commands(name).length > 0, name);
    return this.raw.commands(name)[0];
  }

  /** One MESSAGE wire frame: Box[flags, data] under the given short nonce (default: the next one). */
  box(flags: number, data: Buffer, n = this.next++): Buffer {
    const sealed = nacl.secretbox(new Uint8Array(Buffer.concat([Buffer.from([flags]), data])), nonce('CurveZMQMESSAGEC', short(n)), this.shared);
    return rawFrame(Buffer.concat([latin('\x07MESSAGE'), short(n), sealed]), 0);
  }

  /** An MDP message as one MESSAGE box per frame (MORE inside the box); returns the wire bytes it wrote. */
  send(frames: (Buffer | string)[]): Buffer[] {
    const wire = frames.map((f, i) => this.box(i < frames.length - 1 ? 1 : 0, typeof f === 'string' ? latin(f) : f));
    this.raw.write(...wire);
    return wire;
  }

  /** Messages the server sent since the handshake, opened (a box that does not open throws). */
  messages(): Buffer[][] {
    const out: Buffer[][] = [];
    let cur: Buffer[] = [];
    let last = 1; // READY took 1
    const frames = this.raw.frames().filter((f) => !f.command);
    for (const f of frames) {
      const seq = Number(f.body.readBigUInt64BE(8));
      const plain = nacl.secretbox.open(f.body.subarray(16), nonce('CurveZMQMESSAGES', f.body.subarray(8, 16)), this.shared);
      if (plain === null) throw new Error('server MESSAGE does not open');
      if (seq <= last) throw new Error('server MESSAGE nonce did not grow');
      last = seq;
      if ((plain[0] & 0x02) !== 0) continue; // a command inside a box (PING)
      cur.push(Buffer.from(plain.subarray(1)));
      if ((plain[0] & 0x01) === 0) {
        out.push(cur);
        cur = [];
      }
    }
    return out;
  }

  close(): void {
    this.raw.close();
  }
}
