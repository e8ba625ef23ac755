// MDP/0.1 (RFC 7) and MDP/0.2 (RFC 18) frame parsing and building.
// Parsing never copies a frame: bodies stay the Buffers zeromq handed us. Headers are compared by length and bytes,
// which is ~10x cheaper than Buffer.equals (a native call) or toString.

import { unpooled } from './unpooled.js';

export const EMPTY = Buffer.alloc(0);
export const MDPC01 = unpooled('MDPC01');
export const MDPW01 = unpooled('MDPW01');
export const MDPC02 = unpooled('MDPC02');
export const MDPW02 = unpooled('MDPW02');

/** MDP version a peer speaks: 1 = MDP/0.1, 2 = MDP/0.2. */
export type Version = 1 | 2;

// Command bytes, as constant one-byte frames reused for every message.
export const W1 = { READY: 1, REQUEST: 2, REPLY: 3, HEARTBEAT: 4, DISCONNECT: 5 } as const;
export const W2 = { READY: 1, REQUEST: 2, PARTIAL: 3, FINAL: 4, HEARTBEAT: 5, DISCONNECT: 6 } as const;
export const C2 = { REQUEST: 1, PARTIAL: 2, FINAL: 3 } as const;

const BYTE: Buffer[] = [];
for (let i = 0; i < 8; i++) BYTE.push(unpooled([i]));
/** A shared one-byte frame; never mutate it. */
export function cmd(n: number): Buffer {
  return BYTE[n];
}

/** Worker-side command, version independent. */
export const enum WCmd {
  Ready = 1,
  Request,
  Partial,
  Final,
  Heartbeat,
  Disconnect,
}

export interface Limits {
  /** Most frames in one message, routing id and envelope included. */
  maxFrames: number;
  /** Largest single frame, in bytes. */
  maxFrameBytes: number;
  /** Longest service name, in bytes. */
  maxServiceName: number;
  /** Most envelope frames a client may put before the empty delimiter (our pipelining extension). */
  maxEnvelope: number;
}

export const DEFAULT_LIMITS: Limits = {
  maxFrames: 1024,
  maxFrameBytes: 16 * 1024 * 1024,
  maxServiceName: 255,
  maxEnvelope: 8,
};

export const enum Kind {
  ClientRequest,
  Worker,
  Invalid,
}

/** A client REQUEST: frames[0..bodyStart-3] are the prefix (routing id, envelope, delimiter) echoed on reply. */
export interface ClientRequest {
  kind: Kind.ClientRequest;
  version: Version;
  /** Index of the header frame; frames before it are returned verbatim in front of the reply. */
  headerAt: number;
  service: Buffer;
  /** Index of the first body frame. */
  bodyAt: number;
}

export interface WorkerMessage {
  kind: Kind.Worker;
  version: Version;
  /** True when the peer put an empty frame before the header (always for 0.1; a tolerated variant for 0.2). */
  delimited: boolean;
  command: WCmd;
  /** The command byte as on the wire (for log lines: HEARTBEAT is 4 in MDP/0.1 and 5 in MDP/0.2). */
  byte: number;
  /** READY: the service name. */
  service: Buffer;
  /** REPLY/PARTIAL/FINAL: the client address frame. */
  client: Buffer;
  /** REPLY/PARTIAL/FINAL: index of the first body frame. */
  bodyAt: number;
}

export interface Invalid {
  kind: Kind.Invalid;
  reason: string;
  /** For client requests that can still be answered: the parsed request, so the broker can reply with an error. */
  request?: ClientRequest;
}

export type Inbound = ClientRequest | WorkerMessage | Invalid;

function isAnyHeader(b: Buffer): boolean {
  return b.length === 6 && b[0] === 0x4d && b[1] === 0x44 && b[2] === 0x50 && (b[3] === 0x43 || b[3] === 0x57) && b[4] === 0x30 && (b[5] === 0x31 || b[5] === 0x32);
}

export function isHeader(b: Buffer, h: Buffer): boolean {
  // All four headers share "MDP" and length 6; compare the distinguishing bytes only after the cheap checks.
  return b.length === 6 && b[0] === 0x4d && b[1] === 0x44 && b[2] === 0x50 && b[3] === h[3] && b[4] === h[4] && b[5] === h[5];
}

function invalid(reason: string, request?: ClientRequest): Invalid {
  return request ? { kind: Kind.Invalid, reason, request } : { kind: Kind.Invalid, reason };
}

/**
 * Parses one message as received on the broker's ROUTER socket (frames[0] is the routing id).
 * Returns a description that points into `frames`; it never throws and never copies.
 */
export function parseInbound(frames: Buffer[], limits: Limits): Inbound {
  const n = frames.length;
  if (n < 3) return invalid('too few frames');
  if (n > limits.maxFrames) {
    const req = tryClientAfterLimit(frames, limits);
    return invalid(`too many frames (${n} > ${limits.maxFrames})`, req);
  }
  for (let i = 1; i < n; i++) {
    if (frames[i].length > limits.maxFrameBytes) {
      return invalid(`frame ${i} is ${frames[i].length} bytes (limit ${limits.maxFrameBytes})`, tryClientAfterLimit(frames, limits));
    }
  }
  // Find the header: right after the routing id (0.2 as written), or after the first empty frame.
  let at = 1;
  let delimited = false;
  if (frames[1].length === 0) {
    at = 2;
    delimited = true;
  } else if (!isAnyHeader(frames[1])) {
    // Client envelope frames (routing stack or our request-id extension) up to an empty delimiter.
    const maxAt = Math.min(n - 1, 1 + limits.maxEnvelope + 1);
    at = -1;
    for (let i = 2; i <= maxAt; i++) {
      if (frames[i].length === 0) {
        at = i + 1;
        delimited = true;
        break;
      }
    }
    if (at < 0) return invalid('no MDP header');
  }
  if (at >= n) return invalid('no MDP header');
  const h = frames[at];
  if (isHeader(h, MDPC01)) return parseClient(frames, at, 1, limits);
  if (isHeader(h, MDPC02)) return parseClient(frames, at, 2, limits);
  const worker1 = isHeader(h, MDPW01);
  if (!worker1 && !isHeader(h, MDPW02)) return invalid('unknown MDP header');
  if (at > 2) return invalid('worker message with an envelope');
  if (worker1 && !delimited) return invalid('MDP/0.1 worker message without empty frame');
  return parseWorker(frames, at, worker1 ? 1 : 2, delimited);
}

function parseClient(frames: Buffer[], at: number, version: Version, limits: Limits): Inbound {
  const n = frames.length;
  let s = at + 1;
  if (version === 2) {
    const c = frames[s];
    if (c === undefined || c.length !== 1 || c[0] !== C2.REQUEST) {
      const what = c === undefined ? 'missing' : c.length === 1 ? `0x${c[0].toString(16).padStart(2, '0')}` : `${c.length} bytes`;
      // Seen from a third-party library that sends 0x02: when a service frame follows, the client can be told why.
      const service = frames[s + 1];
      const req: ClientRequest | undefined = c !== undefined && service !== undefined && service.length > 0 && service.length <= limits.maxServiceName
        ? { kind: Kind.ClientRequest, version, headerAt: at, service, bodyAt: s + 2 }
        : undefined;
      return invalid(`MDP/0.2 client command is ${what}, not REQUEST (0x01)`, req);
    }
    s++;
  }
  if (s >= n) return invalid('request without service frame');
  const service = frames[s];
  const req: ClientRequest = { kind: Kind.ClientRequest, version, headerAt: at, service, bodyAt: s + 1 };
  if (service.length === 0) return invalid('empty service name', req);
  if (service.length > limits.maxServiceName) return invalid(`service name longer than ${limits.maxServiceName} bytes`, req);
  return req;
}

/** Used after a size limit was hit: if the message still has a client header and service, it can be answered. */
function tryClientAfterLimit(frames: Buffer[], limits: Limits): ClientRequest | undefined {
  const lim: Limits = { ...limits, maxFrames: Number.MAX_SAFE_INTEGER, maxFrameBytes: Number.MAX_SAFE_INTEGER };
  // Only the leading frames matter for the header; parse a short view so a huge message is not walked twice.
  const head = frames.slice(0, Math.min(frames.length, limits.maxEnvelope + 6));
  const r = parseInbound(head, lim);
  if (r.kind === Kind.ClientRequest && r.service.length > 0 && r.service.length <= limits.maxServiceName) return r;
  return undefined;
}

function parseWorker(frames: Buffer[], at: number, version: Version, delimited: boolean): Inbound {
  const n = frames.length;
  const c = frames[at + 1];
  if (c === undefined || c.length !== 1) return invalid('worker command frame is not one byte');
  const rest = n - at; // header + command + operands
  const b = c[0];
  let command: WCmd;
  if (version === 1) {
    switch (b) {
      case W1.READY: command = WCmd.Ready; break;
      case W1.REPLY: command = WCmd.Final; break;
      case W1.HEARTBEAT: command = WCmd.Heartbeat; break;
      case W1.DISCONNECT: command = WCmd.Disconnect; break;
      default: return invalid(`unknown MDP/0.1 worker command 0x${b.toString(16)}`);
    }
  } else {
    switch (b) {
      case W2.READY: command = WCmd.Ready; break;
      case W2.PARTIAL: command = WCmd.Partial; break;
      case W2.FINAL: command = WCmd.Final; break;
      case W2.HEARTBEAT: command = WCmd.Heartbeat; break;
      case W2.DISCONNECT: command = WCmd.Disconnect; break;
      default: return invalid(`unknown MDP/0.2 worker command 0x${b.toString(16)}`);
    }
  }
  const msg: WorkerMessage = { kind: Kind.Worker, version, delimited, command, byte: b, service: EMPTY, client: EMPTY, bodyAt: n };
  switch (command) {
    case WCmd.Ready:
      if (rest !== 3) return invalid('READY must have exactly one service frame');
      msg.service = frames[at + 2];
      if (msg.service.length === 0) return invalid('READY with empty service name');
      return msg;
    case WCmd.Heartbeat:
    case WCmd.Disconnect:
      if (rest !== 2) return invalid('HEARTBEAT/DISCONNECT must have no operands');
      return msg;
    default:
      if (rest < 4) return invalid('reply without client address and empty frame');
      if (frames[at + 3].length !== 0) return invalid('reply: frame after client address is not empty');
      msg.client = frames[at + 2];
      msg.bodyAt = at + 4;
      return msg;
  }
}

/** True for a service name in the broker's own `mmi.` namespace (RFC 8). */
export function isMmi(name: Buffer): boolean {
  return name.length >= 4 && name[0] === 0x6d && name[1] === 0x6d && name[2] === 0x69 && name[3] === 0x2e;
}

/** A command from the broker to the worker `id`, in that worker's framing: [id, ("",) MDPW0x, command]. */
export function toWorker(id: Buffer, version: Version, delimited: boolean, command: number): Buffer[] {
  return delimited ? [id, EMPTY, version === 1 ? MDPW01 : MDPW02, cmd(command)] : [id, MDPW02, cmd(command)];
}

/**
 * A reply to a client: the prefix of its request (routing id, envelope, delimiter: frames before headerAt), the
 * client header, for MDP/0.2 the command (PARTIAL or FINAL), the service frame, then body[from..].
 */
export function clientReply(request: Buffer[], headerAt: number, version: Version, v2cmd: number, service: Buffer, body: Buffer[], from: number): Buffer[] {
  const msg: Buffer[] = [];
  for (let i = 0; i < headerAt; i++) msg.push(request[i]);
  if (version === 1) msg.push(MDPC01);
  else msg.push(MDPC02, cmd(v2cmd));
  msg.push(service);
  for (let i = from; i < body.length; i++) msg.push(body[i]);
  return msg;
}
