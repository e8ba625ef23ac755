// A link on libzmq through the zeromq binding (`transport: 'libzmq'`): a DEALER socket that libzmq dials and
// re-dials itself, with libzmq's ZMTP heartbeats, and a monitor for its connection events. The binding is required
// when the first such link opens, not when this module is imported.

import type { Dealer } from 'zeromq';
import { zeromq } from '../sockets/zeromq.js';
import { receiveLoop } from '../sockets/receive-loop.js';
import { Sender } from './sender.js';
import { EndpointError } from './errors.js';
import type { BrokerLink, LinkHandler, LinkOptions } from './broker-link.js';

export class LibzmqLink implements BrokerLink {
  private readonly sock: Dealer;
  private readonly sender: Sender;
  private watching = false;

  constructor(endpoint: string, private readonly opts: LinkOptions, private readonly handler: LinkHandler) {
    const curve = opts.curve;
    const keys = curve ? { curveServerKey: curve.serverKey, curvePublicKey: curve.publicKey, curveSecretKey: curve.secretKey } : {};
    const { Dealer } = zeromq();
    // linger 0: a request is retried, never left to linger; the caller's own options last.
    const sock = new Dealer({
      linger: 0, heartbeatInterval: opts.heartbeatInterval, heartbeatTimeout: opts.heartbeatTimeout, ...keys, ...opts.socketOptions,
    });
    this.sock = sock;
    this.sender = new Sender(sock);
    // The monitor starts before connect(): it sees the first handshake too.
    if (opts.watch ?? true) this.watch();
    try {
      sock.connect(endpoint);
    } catch (err) {
      sock.close();
      throw new EndpointError(endpoint, `cannot connect to "${endpoint}": ${(err as Error).message}`);
    }
    void receiveLoop(sock, (frames) => handler.message(frames), () => undefined, false);
  }

  get closed(): boolean {
    return this.sock.closed;
  }

  /** Starts reporting connection events (once; after connect() it misses what already happened). */
  watch(): void {
    if (this.watching || this.sock.closed) return;
    this.watching = true;
    watch(this.sock, this.opts, this.handler);
  }

  send(frames: Buffer[]): void {
    if (!this.sock.closed) this.sender.send(frames);
  }

  async close(lingerMs = 0): Promise<void> {
    if (this.sock.closed) return;
    if (lingerMs > 0) {
      // Bounded: a socket that never connected (broker down, or our key refused) would hold the send forever.
      let t: NodeJS.Timeout | undefined;
      await Promise.race([this.sender.drained(), new Promise((r) => (t = setTimeout(r, lingerMs)))]);
      clearTimeout(t);
      if (this.sock.closed) return;
      this.sock.linger = lingerMs;
    }
    this.sock.close();
  }
}

function watch(sock: Dealer, opts: LinkOptions, handler: LinkHandler): void {
  const who = opts.role ?? 'client';
  const ev = sock.events;
  // libzmq's peer metadata is out of the binding's reach: no worker credit on this transport.
  ev.on('handshake', () => handler.connected(1));
  ev.on('disconnect', () => handler.disconnected());
  ev.on('connect:retry', () => handler.retrying());
  ev.on('handshake:error:auth', (e) => handler.refused(`the broker refused this ${who}'s CURVE key (${e.error.message})`));
  ev.on('handshake:error:protocol', (e) => handler.refused(`the handshake failed (${e.error.message}): a CURVE broker and a plain ${who}, or the reverse`));
}
