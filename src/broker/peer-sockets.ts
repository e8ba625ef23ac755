// The broker's libzmq ROUTER sockets as one frame stream: the main socket (clients, and workers of unprotected
// services) and one socket per access group of workers (--access), each behind its own CURVE allow-list. Routing ids
// from a group socket are tagged [0xff, group, ...id] so the core can tell which group a worker connected through,
// and the tag is taken off again on the way out. Main-socket ids that look like a tag are dropped: libzmq's own ids
// start with 0x00, and a peer must not be able to pose as a group member.

import type { Router } from 'zeromq';
import { GROUP_MARK } from '../core/peer-id.js';
import type { Peer } from '../core/peer.js';
import type { SendFailure } from '../core/broker-core.js';
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

  send(msg: Buffer[], peer: Peer, tag = -1): void {
    const id = msg[0];
    if (id.length > 2 && id[0] === GROUP_MARK) {
      const io = this.groupIO[id[1]];
      if (!io) {
        this.sink?.sendFailed(peer, 'unreachable', tag);
        return;
      }
      const m = msg.slice();
      m[0] = id.subarray(2);
      io.send(m, peer, tag);
      return;
    }
    this.mainIO.send(msg, peer, tag);
  }

  peer(serial: number): Peer | null {
    for (const io of [this.mainIO, ...this.groupIO]) {
      const p = io.peer(serial);
      if (p !== null) return p;
    }
    return null;
  }

  start(sink: FrameSink): Promise<void> {
    this.sink = sink;
    // Each socket's stream gets a sink of its own, written out in full: a spread of `sink` would lose the methods
    // of a class instance (a send failure then threw "sendFailed is not a function" and ended the process).
    const passOn = {
      sendFailed: (peer: Peer, why: SendFailure, t: number) => sink.sendFailed(peer, why, t),
      peerClosed: (peer: Peer) => sink.peerClosed(peer),
      error: (err: unknown) => sink.error(err),
    };
    const loops = [this.mainIO.start({
      ...passOn,
      message: (f, peer) => {
        if (this.groups.length > 0 && f[0].length > 2 && f[0][0] === GROUP_MARK) {
          this.spoofed++;
          return;
        }
        sink.message(f, peer);
      },
    })];
    this.groupIO.forEach((io, g) => {
      const tag = this.tags[g];
      loops.push(io.start({
        ...passOn,
        message: (f, peer) => {
          f[0] = Buffer.concat([tag, f[0]]);
          sink.message(f, peer);
        },
      }));
    });
    return Promise.all(loops).then(() => undefined);
  }

  async close(): Promise<void> {
    for (const s of [this.main, ...this.groups]) if (!s.closed) s.close();
  }
}
