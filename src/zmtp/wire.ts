// ZMTP 3.x on the wire (RFC 23, RFC 37): the greeting, frame headers and the commands of the NULL mechanism and of
// connection heartbeating. Encoders return fresh Buffers (they run once per connection or per heartbeat, never per
// message); the decoders point into what they are given.

export const GREETING_BYTES = 64;
/** Bytes of the greeting that say "ZMTP 3 or later": signature (10) and major version (1). */
export const GREETING_HEAD = 11;

export const FLAG_MORE = 0x01;
export const FLAG_LONG = 0x02;
export const FLAG_COMMAND = 0x04;
/** Bits 7-3 of the flags are reserved and must be zero. */
export const FLAG_RESERVED = 0xf8;

/** Socket types a ROUTER accepts as peers (RFC 37, "The Socket-Type Property"). */
export const ROUTER_PEERS: ReadonlySet<string> = new Set(['DEALER', 'REQ', 'ROUTER']);
/** Socket types a DEALER accepts as peers. */
export const DEALER_PEERS: ReadonlySet<string> = new Set(['DEALER', 'REP', 'ROUTER']);

/** Our greeting: ZMTP 3.1, mechanism NULL (no roles: as-server 0), or CURVE as the server or the client. */
export function greeting(mechanism: 'NULL' | 'CURVE' = 'NULL', asServer = mechanism === 'CURVE'): Buffer {
  const g = Buffer.alloc(GREETING_BYTES);
  g[0] = 0xff;
  g[8] = 0x01; // libzmq puts a 1 here; a ZMTP/1.0 peer reads bytes 1-8 as a length
  g[9] = 0x7f;
  g[10] = 3;
  g[11] = 1;
  g.write(mechanism, 12, 'latin1');
  if (asServer) g[32] = 1;
  return g;
}

export interface PeerGreeting {
  major: number;
  minor: number;
  mechanism: string;
}

/**
 * What the first 11 octets say (RFC 23, "Version Negotiation"): 'zmtp1' when octet 0 is not 0xFF (a ZMTP 1.0 peer,
 * or not ZeroMQ at all: that much is known from octet 0 alone), 'not-zmtp' for a broken signature, the peer's major
 * version when it is older than 3 (a ZMTP 2.0 peer sends 1 here), or null for ZMTP 3 and later.
 */
export function checkGreetingHead(b: Buffer): 'zmtp1' | 'not-zmtp' | number | null {
  if (b[0] !== 0xff) return 'zmtp1';
  if (b.length < GREETING_HEAD) return null;
  if ((b[9] & 0x01) !== 0x01) return 'not-zmtp';
  return b[10] < 3 ? b[10] : null;
}

/**
 * The whole 64-byte greeting, after checkGreetingHead passed. The mechanism is all 20 octets of its field: the
 * name, then zeros to the end; anything else there (text after a NUL) is no mechanism ('').
 */
export function parseGreeting(b: Buffer): PeerGreeting {
  let end = 12;
  while (end < 32 && b[end] !== 0) end++;
  for (let i = end; i < 32; i++) if (b[i] !== 0) return { major: b[10], minor: b[11], mechanism: '' };
  return { major: b[10], minor: b[11], mechanism: b.toString('latin1', 12, end) };
}

/** Frame header bytes for a body of `size` (2 or 9). */
export function headerBytes(size: number): number {
  return size > 255 ? 9 : 2;
}

/** Writes a frame header at `at`; returns the offset after it. */
export function writeHeader(out: Buffer, at: number, flags: number, size: number): number {
  if (size > 255) {
    out[at] = flags | FLAG_LONG;
    out.writeUInt32BE(Math.floor(size / 0x100000000), at + 1);
    out.writeUInt32BE(size >>> 0, at + 5);
    return at + 9;
  }
  out[at] = flags;
  out[at + 1] = size;
  return at + 2;
}

/** A complete command frame: name and data. */
export function command(name: string, data: Buffer): Buffer {
  const body = Buffer.alloc(1 + name.length + data.length);
  body[0] = name.length;
  body.write(name, 1, 'latin1');
  data.copy(body, 1 + name.length);
  const out = Buffer.alloc(headerBytes(body.length) + body.length);
  body.copy(out, writeHeader(out, 0, FLAG_COMMAND, body.length));
  return out;
}

/** A command frame around a body that already starts with its name (CURVE's commands come that way). */
export function commandFrame(body: Buffer): Buffer {
  const out = Buffer.alloc(headerBytes(body.length) + body.length);
  body.copy(out, writeHeader(out, 0, FLAG_COMMAND, body.length));
  return out;
}

/** READY with metadata properties (RFC 37: name as short string, value with a 4-byte length). */
export function readyCommand(props: Record<string, Buffer | string>): Buffer {
  return command('READY', metadata(props));
}

/** Metadata properties as READY (and CURVE's INITIATE and READY boxes) carry them. */
export function metadata(props: Record<string, Buffer | string>): Buffer {
  const parts: Buffer[] = [];
  for (const [name, value] of Object.entries(props)) {
    const v = typeof value === 'string' ? Buffer.from(value, 'latin1') : value;
    const p = Buffer.alloc(1 + name.length + 4);
    p[0] = name.length;
    p.write(name, 1, 'latin1');
    p.writeUInt32BE(v.length, 1 + name.length);
    parts.push(p, v);
  }
  return Buffer.concat(parts);
}

export function errorCommand(reason: string): Buffer {
  const r = Buffer.from(reason.slice(0, 255), 'latin1');
  return command('ERROR', Buffer.concat([Buffer.from([r.length]), r]));
}

/** PING with a TTL in tenths of a second (0 = none) and an empty context. */
export function pingCommand(ttlDeciseconds: number): Buffer {
  const d = Buffer.alloc(2);
  d.writeUInt16BE(Math.min(0xffff, Math.max(0, Math.round(ttlDeciseconds))));
  return command('PING', d);
}

export function pongCommand(context: Buffer): Buffer {
  return command('PONG', context);
}

export interface Command {
  name: string;
  data: Buffer;
}

/** A command frame's body; null when the name length runs past the end. */
export function parseCommand(body: Buffer): Command | null {
  if (body.length < 1) return null;
  const n = body[0];
  if (n === 0 || 1 + n > body.length) return null;
  return { name: body.toString('latin1', 1, 1 + n), data: body.subarray(1 + n) };
}

/** READY metadata; names lower-cased (they are case-insensitive). Null when malformed. */
export function parseProperties(data: Buffer): Map<string, Buffer> | null {
  const props = new Map<string, Buffer>();
  let i = 0;
  while (i < data.length) {
    const n = data[i];
    if (n === 0 || i + 1 + n + 4 > data.length) return null;
    const name = data.toString('latin1', i + 1, i + 1 + n).toLowerCase();
    i += 1 + n;
    const len = data.readUInt32BE(i);
    i += 4;
    if (len > data.length - i) return null;
    props.set(name, data.subarray(i, i + len));
    i += len;
  }
  return props;
}
