// The client and worker sides of MDP: what a client or worker sends to a broker, and the parsing of what a broker
// sends back. (codec.ts is the broker side.) Like codec.ts, parsing points into the received frames, never copies.

import { C2, EMPTY, MDPC01, MDPC02, MDPW01, MDPW02, cmd, isHeader, type Version } from './codec.js';

/**
 * A REQUEST from a DEALER, after any envelope, with its body: RFC 7 ["", MDPC01, service, body...], RFC 18
 * [MDPC02, REQUEST, service, body...] (no empty frame), or ["", MDPC02, REQUEST, service, body...] behind an
 * envelope (`delimited`: the request-id extension needs the empty frame to end it). Never without a body frame: RFC
 * 7 and 18 make the body one or more frames, and the Guide's brokers abort on a request without one, so an empty
 * body is sent as one empty frame.
 */
export function clientRequest(version: Version, service: Buffer, body: readonly Buffer[], delimited: boolean): Buffer[] {
  const msg = version === 1 ? [EMPTY, MDPC01, service] : delimited ? [EMPTY, MDPC02, cmd(C2.REQUEST), service] : [MDPC02, cmd(C2.REQUEST), service];
  if (body.length === 0) msg.push(EMPTY);
  else for (let i = 0; i < body.length; i++) msg.push(body[i]);
  return msg;
}

/**
 * Where the MDP header of a reply to a DEALER client is: after an empty frame (RFC 7, or any version behind an
 * envelope), or first (RFC 18 as written). `from`: where the reply starts (after our request-id frame, if any).
 * -1 if neither.
 */
export function replyHeaderAt(frames: Buffer[], from: number, version: Version): number {
  const f = frames[from];
  if (f === undefined) return -1;
  if (f.length === 0) return from + 1;
  return version === 2 && isHeader(f, MDPC02) ? from : -1;
}

export interface ClientReply {
  /** False for an MDP/0.2 PARTIAL. */
  final: boolean;
  body: Buffer[];
}

/** A reply as a DEALER client receives it, its MDP header at frames[headerAt] (replyHeaderAt); null if it is not one. */
export function parseClientReply(frames: Buffer[], headerAt: number, version: Version): ClientReply | null {
  if (headerAt < 0) return null;
  const header = frames[headerAt];
  let i = headerAt + 1;
  let final = true;
  if (version === 2) {
    if (header === undefined || !isHeader(header, MDPC02)) return null;
    const c = frames[i++];
    if (c === undefined || c.length !== 1) return null;
    if (c[0] === C2.PARTIAL) final = false;
    else if (c[0] !== C2.FINAL) return null;
  } else if (header === undefined || !isHeader(header, MDPC01)) return null;
  if (i >= frames.length) return null; // no service frame
  return { final, body: frames.slice(i + 1) };
}

/** The service frame of a reply whose MDP header is frames[headerAt], as text; null if there is none. */
export function replyService(frames: Buffer[], headerAt: number, version: Version): string | null {
  if (headerAt < 0) return null;
  const f = frames[headerAt + (version === 1 ? 1 : 2)];
  return f === undefined ? null : f.toString('utf8');
}

/** A worker command: MDP/0.1 ["", MDPW01, command, ...operands], MDP/0.2 [MDPW02, command, ...operands]. */
export function workerCommand(version: Version, command: number, operands: readonly Buffer[] = []): Buffer[] {
  return version === 1 ? [EMPTY, MDPW01, cmd(command), ...operands] : [MDPW02, cmd(command), ...operands];
}

export interface WorkerInbound {
  /** The command byte as on the wire (see W1/W2). */
  command: number;
  /** REQUEST: the client address frame and the body. */
  client: Buffer | null;
  body: Buffer[];
}

/** A message from the broker as a worker receives it; null if it is not an MDP worker command of this version. */
export function parseWorkerInbound(frames: Buffer[], version: Version): WorkerInbound | null {
  let at = 0;
  if (version === 1) {
    if (frames[0]?.length !== 0) return null;
    at = 1;
  } else if (frames[0]?.length === 0) at = 1; // the delimited 0.2 variant some brokers send
  const h = frames[at];
  if (h === undefined || !isHeader(h, version === 1 ? MDPW01 : MDPW02)) return null;
  const c = frames[at + 1];
  if (c === undefined || c.length !== 1) return null;
  // REQUEST: client address, empty frame, body.
  if (frames.length >= at + 4 && frames[at + 3].length === 0) return { command: c[0], client: frames[at + 2], body: frames.slice(at + 4) };
  return { command: c[0], client: null, body: [] };
}
