// The broker's ROUTER sockets as one frame stream: the main socket (clients, and workers of unprotected services)
// and one socket per access group of workers (--access), each behind its own CURVE allow-list. Routing ids from a
// group socket are tagged [0xff, group, ...id] so the core can tell which group a worker connected through, and
// the tag is taken off again on the way out. Main-socket ids that look like a tag are dropped: libzmq's own ids
// start with 0x00, and a peer must not be able to pose as a group member.

import type { Router } from 'zeromq';
import { GROUP_MARK } from '../core/peer-id.js';
import { zmqIO, type FrameIO, type FrameSink } from './frame-io.js';

export class PeerSockets implements FrameIO {
  private readonly tags: Buffer[];
  private readonly mainIO: FrameIO;
  private readonly groupIO: FrameIO[];
  private sink: FrameSink | null = null;
  /** Messages dropped from the main socket because their routing id posed as a group tag. */
  spoofed = 0;

  constructor(
    private readonly main: Router,
    private readonly groups: Router[],
  ) {
    this.tags = groups.map((_, g) => Buffer.from([GROUP_MARK, g]));
    this.mainIO = zmqIO(main);
    this.groupIO = groups.map((g) => zmqIO(g));
  }

  send(msg: Buffer[], tag = -1): void {
    const id = msg[0];
    if (id.length > 2 && id[0] === GROUP_MARK) {
      const io = this.groupIO[id[1]];
      if (!io) {
        this.sink?.sendFailed(id, 'unreachable', tag);
        return;
      }
      const m = msg.slice();
      m[0] = id.subarray(2);
      // A failure names the tagged id, the one the core knows.
      io.send(m, tag);
      return;
    }
    this.mainIO.send(msg, tag);
  }

  start(sink: FrameSink): Promise<void> {
    this.sink = sink;
    const loops = [this.mainIO.start({
      ...sink,
      message: (f) => {
        if (this.groups.length > 0 && f[0].length > 2 && f[0][0] === GROUP_MARK) {
          this.spoofed++;
          return;
        }
        sink.message(f);
      },
    })];
    this.groupIO.forEach((io, g) => {
      const tag = this.tags[g];
      const tagged = (id: Buffer) => Buffer.concat([tag, id]);
      loops.push(io.start({
        message: (f) => {
          f[0] = tagged(f[0]);
          sink.message(f);
        },
        sendFailed: (id, why, t) => sink.sendFailed(tagged(id), why, t),
        peerClosed: (id) => sink.peerClosed(tagged(id)),
        error: (err) => sink.error(err),
      }));
    });
    return Promise.all(loops).then(() => undefined);
  }

  async close(): Promise<void> {
    for (const s of [this.main, ...this.groups]) if (!s.closed) s.close();
  }
}
