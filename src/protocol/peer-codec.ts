// The client and worker sides of MDP: what a client or worker sends to a broker, and the parsing of what a broker
// sends back. (codec.ts is the broker side.) Like codec.ts, parsing points into the received frames, never copies.

import { C2, EMPTY, MDPC01, MDPC02, MDPW01, MDPW02, cmd, isHeader, type Version } from './codec.js';

/** A REQUEST from a DEALER, after any envelope: ["", MDPC01, service] or ["", MDPC02, REQUEST, service]; body follows. */
export function clientRequestHead(version: Version, service: Buffer): Buffer[] {
  return version === 1 ? [EMPTY, MDPC01, service] : [EMPTY, MDPC02, cmd(C2.REQUEST), service];
}

export interface ClientReply {
  /** False for an MDP/0.2 PARTIAL. */
  final: boolean;
  body: Buffer[];
}

/** A reply as a DEALER client receives it, starting at the empty delimiter frames[at]; null if it is not one. */
export function parseClientReply(frames: Buffer[], at: number, version: Version): ClientReply | null {
  if (frames[at]?.length !== 0) return null;
  const header = frames[at + 1];
  let i = at + 2;
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

/** The service frame of a reply starting at the empty delimiter frames[at], as text; null if there is none. */
export function replyService(frames: Buffer[], at: number, version: Version): string | null {
  const f = frames[at + (version === 1 ? 2 : 3)];
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
