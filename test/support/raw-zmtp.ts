// A raw ZMTP 3.x peer written from RFC 23/37, for tests that bend the protocol: it sends exactly the bytes it is
// told to (greetings of any version and mechanism field, READY with any properties, PINGs with any TTL, messages,
// commands, junk) and parses what the broker writes back into its greeting, commands and messages. Nothing of the
// broker's own ZMTP code is used, so a mistake there cannot hide here.

import { connect, type Socket } from 'node:net';

export interface Received {
  command: boolean;
  more: boolean;
  body: Buffer;
}

/** One frame: flags, a 1- or 8-byte size, the body (RFC 23). */
export function rawFrame(body: Buffer, flags: number): Buffer {
  const long = body.length > 255;
  const head = Buffer.alloc(long ? 9 : 2);
  head[0] = flags | (long ? 0x02 : 0);
  if (long) head.writeBigUInt64BE(BigInt(body.length), 1);
  else head[1] = body.length;
  return Buffer.concat([head, body]);
}

/** A command frame: name as a short string, then its data. */
export function rawCommand(name: string, data: Buffer = Buffer.alloc(0)): Buffer {
  return rawFrame(Buffer.concat([Buffer.from([name.length]), Buffer.from(name, 'latin1'), data]), 0x04);
}

/** RFC 37 metadata: name (short string), value (4-byte length). */
export function rawProperties(props: Record<string, Buffer | string>): Buffer {
  return Buffer.concat(Object.entries(props).flatMap(([k, v]) => {
    const value = typeof v === 'string' ? Buffer.from(v, 'latin1') : v;
    const len = Buffer.alloc(4);
    len.writeUInt32BE(value.length);
    return [Buffer.from([k.length]), Buffer.from(k, 'latin1'), len, value];
  }));
}

/** A 64-octet greeting: signature, version major.minor, a 20-octet mechanism field, as-server, filler. */
export function rawGreeting(opts: { major?: number; minor?: number; mechanism?: Buffer | string } = {}): Buffer {
  const g = Buffer.alloc(64);
  g[0] = 0xff;
  g[9] = 0x7f;
  g[10] = opts.major ?? 3;
  g[11] = opts.minor ?? 1;
  const mech = typeof opts.mechanism === 'string' || opts.mechanism === undefined ? Buffer.from(opts.mechanism ?? 'NULL', 'latin1') : opts.mechanism;
  mech.copy(g, 12, 0, Math.min(20, mech.length));
  return g;
}

export class RawZmtp {
  readonly sock: Socket;
  /** Every byte the broker wrote, in order. */
  private bytes = Buffer.alloc(0);
  readonly closed: Promise<void>;
  isClosed = false;

  constructor(port: number) {
    this.sock = connect({ host: '127.0.0.1', port });
    this.sock.on('data', (c: Buffer) => (this.bytes = Buffer.concat([this.bytes, c])));
    this.sock.on('error', () => undefined);
    this.closed = new Promise((r) => this.sock.on('close', () => {
      this.isClosed = true;
      r();
    }));
  }

  /**
   * Connected, greeted with NULL 3.x, READY (DEALER, with these extra properties) sent and the other side's READY
   * (or ERROR) received. As RFC 23 has it, the
   * signature and major version go first, and the rest only once the other side's signature is in: libzmq 4.3.5 as
   * the server closed the connection (seen here, most of the time) when greeting, READY and a message came in one
   * segment.
   */
  static async open(port: number, props: Record<string, Buffer | string> = {}, minor = 1): Promise<RawZmtp> {
    const p = new RawZmtp(port);
    await new Promise<void>((r) => p.sock.once('connect', () => r()));
    const greeting = rawGreeting({ minor });
    p.write(greeting.subarray(0, 11));
    const until = Date.now() + 5000;
    while (p.received.length < 10 && !p.isClosed && Date.now() < until) await new Promise((r) => setTimeout(r, 2));
    p.write(greeting.subarray(11), rawCommand('READY', rawProperties({ 'Socket-Type': 'DEALER', ...props })));
    // Returns once the other side's READY is in (or it closed): a message written sooner could reach libzmq in the
    // same read as our READY, which libzmq 4.3.5 sometimes answered by closing (a libzmq-pass flake, ZMTP 3.0 peer).
    while (p.commands('READY').length === 0 && p.commands('ERROR').length === 0 && !p.isClosed && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 2));
    }
    return p;
  }

  write(...parts: Buffer[]): void {
    this.sock.write(Buffer.concat(parts));
  }

  /** An MDP message as a DEALER sends it (MORE on all frames but the last). */
  send(frames: (Buffer | string)[]): void {
    const bufs = frames.map((f) => (typeof f === 'string' ? Buffer.from(f, 'latin1') : f));
    this.write(...bufs.map((f, i) => rawFrame(f, i < bufs.length - 1 ? 0x01 : 0)));
  }

  get received(): Buffer {
    return this.bytes;
  }

  /** The broker's frames after its 64-octet greeting (an incomplete tail is left out). */
  frames(): Received[] {
    const out: Received[] = [];
    const b = this.bytes;
    let o = 64;
    while (o + 2 <= b.length) {
      const flags = b[o];
      const long = (flags & 0x02) !== 0;
      if (long && o + 9 > b.length) break;
      const size = long ? Number(b.readBigUInt64BE(o + 1)) : b[o + 1];
      const at = o + (long ? 9 : 2);
      if (at + size > b.length) break;
      out.push({ command: (flags & 0x04) !== 0, more: (flags & 0x01) !== 0, body: b.subarray(at, at + size) });
      o = at + size;
    }
    return out;
  }

  /** Data of each command frame with this name the broker sent. */
  commands(name: string): Buffer[] {
    return this.frames().filter((f) => f.command && f.body.toString('latin1', 1, 1 + f.body[0]) === name).map((f) => f.body.subarray(1 + f.body[0]));
  }

  /** Whole messages (runs of MORE frames) the broker sent. */
  messages(): Buffer[][] {
    const out: Buffer[][] = [];
    let cur: Buffer[] = [];
    for (const f of this.frames()) {
      if (f.command) continue;
      cur.push(f.body);
      if (!f.more) {
        out.push(cur);
        cur = [];
      }
    }
    return out;
  }

  close(): void {
    this.sock.destroy();
  }
}
