// The broker's ROUTER sockets as one frame stream: the main socket (clients, and workers of unprotected services)
// and one socket per access group of workers (--access), each behind its own CURVE allow-list. Routing ids from a
// group socket are tagged [0xff, group, ...id] so the core can tell which group a worker connected through, and
// the tag is taken off again on the way out. Main-socket ids that look like a tag are dropped: libzmq's own ids
// start with 0x00, and a peer must not be able to pose as a group member.

import type { Pair, Router } from 'zeromq';
import { receiveLoop } from './receive-loop.js';

export const GROUP_MARK = 0xff;

/** Which access group a routing id came through: -1 for the main socket. */
export function groupOf(id: Buffer): number {
  return id.length > 2 && id[0] === GROUP_MARK ? id[1] : -1;
}

export interface FrameIO {
  send(msg: Buffer[]): Promise<void>;
  start(onMessage: (frames: Buffer[]) => void, onError: (err: unknown) => void): Promise<void>;
  close(): void;
}

/** One socket, as is (a shard's PAIR, or a broker without access groups). */
export function socketIO(sock: Router | Pair): FrameIO {
  return {
    send: (msg) => sock.send(msg),
    start: (onMessage, onError) => receiveLoop(sock, onMessage, onError),
    close: () => {
      if (!sock.closed) sock.close();
    },
  };
}

const unreachable = () => Promise.reject(Object.assign(new Error('no such access group'), { code: 'EHOSTUNREACH' }));

export class PeerSockets implements FrameIO {
  private readonly tags: Buffer[];
  /** Messages dropped from the main socket because their routing id posed as a group tag. */
  spoofed = 0;

  constructor(
    private readonly main: Router,
    private readonly groups: Router[],
  ) {
    this.tags = groups.map((_, g) => Buffer.from([GROUP_MARK, g]));
  }

  send(msg: Buffer[]): Promise<void> {
    const id = msg[0];
    if (id.length > 2 && id[0] === GROUP_MARK) {
      const sock = this.groups[id[1]];
      if (!sock) return unreachable();
      const m = msg.slice();
      m[0] = id.subarray(2);
      return sock.send(m);
    }
    return this.main.send(msg);
  }

  start(onMessage: (frames: Buffer[]) => void, onError: (err: unknown) => void): Promise<void> {
    const loops = [receiveLoop(this.main, (f) => {
      if (this.groups.length > 0 && f[0].length > 2 && f[0][0] === GROUP_MARK) {
        this.spoofed++;
        return;
      }
      onMessage(f);
    }, onError)];
    this.groups.forEach((sock, g) => {
      const tag = this.tags[g];
      loops.push(receiveLoop(sock, (f) => {
        f[0] = Buffer.concat([tag, f[0]]);
        onMessage(f);
      }, onError));
    });
    return Promise.all(loops).then(() => undefined);
  }

  close(): void {
    for (const s of [this.main, ...this.groups]) if (!s.closed) s.close();
  }
}

// ---- shard <-> main over inproc ----
//
// zeromq.js sends frames over 128 bytes without copying and, once libzmq is done with them, hands the reference back
// to the *sending* thread's module. A shard thread that has ended can no longer take it back, and the process
// aborts (seen here: "free(): invalid pointer" when a shard's replies sat in a slow client's pipe). So a shard sends
// its large frames as latin1 strings, which zeromq.js copies into memory of its own, and the main thread turns
// them back into bytes. A frame of 128 bytes or less is always copied and travels as is; a converted frame is
// always longer than 128 bytes, so the receiver can tell them apart by length alone.
const COPY_LIMIT = 128;

export function shardIO(pair: Pair): FrameIO {
  return {
    send: (msg) => pair.send(msg.map((f) => (f.length > COPY_LIMIT ? f.toString('latin1') : f))),
    start: (onMessage, onError) => receiveLoop(pair, onMessage, onError),
    close: () => {
      if (!pair.closed) pair.close();
    },
  };
}

/** Undoes shardIO's conversion on frames received from a shard. */
export function fromShardFrames(frames: Buffer[]): Buffer[] {
  for (let i = 0; i < frames.length; i++) {
    if (frames[i].length > COPY_LIMIT) frames[i] = Buffer.from(frames[i].toString('utf8'), 'latin1');
  }
  return frames;
}
