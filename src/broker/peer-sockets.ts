// The broker's ROUTER sockets as one frame stream: the main socket (clients, and workers of unprotected services)
// and one socket per access group of workers (--access), each behind its own CURVE allow-list. Routing ids from a
// group socket are tagged [0xff, group, ...id] so the core can tell which group a worker connected through, and
// the tag is taken off again on the way out. Main-socket ids that look like a tag are dropped: libzmq's own ids
// start with 0x00, and a peer must not be able to pose as a group member.

import type { Pair, Router } from 'zeromq';
import { receiveLoop } from '../sockets/receive-loop.js';
import { GROUP_MARK } from '../core/peer-id.js';


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
