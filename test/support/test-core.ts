// BrokerCore as the tests drive it: each routing id stands for one connection (a Peer) until that connection is
// closed, as a transport would hand them over. peerClosed() ends the connection: the next message with that id is
// a new connection, exactly as when another peer claims a departed peer's routing id.

import { BrokerCore, type CoreOptions, type LogFn, type SendFailure } from '../../src/core/broker-core.js';
import { Peer, nextSerial } from '../../src/core/peer.js';

export class TestCore extends BrokerCore {
  private readonly peers = new Map<string, Peer>();

  constructor(opts: Partial<CoreOptions> = {}, log?: LogFn) {
    super(opts, log);
  }

  /** The live connection that uses this routing id (a new one if none does). */
  peerOf(id: Buffer): Peer {
    const key = id.toString('latin1');
    let p = this.peers.get(key);
    if (p === undefined || p.gone) {
      p = new Peer(nextSerial());
      this.peers.set(key, p);
    }
    return p;
  }

  override handle(frames: Buffer[], now: number, peer: Peer = this.peerOf(frames[0])): void {
    super.handle(frames, now, peer);
  }

  override sendFailed(to: Peer | Buffer, why: SendFailure, now: number): void {
    super.sendFailed(to instanceof Peer ? to : this.peerOf(to), why, now);
  }

  override peerClosed(to: Peer | Buffer, now: number): void {
    super.peerClosed(to instanceof Peer ? to : this.peerOf(to), now);
  }
}
