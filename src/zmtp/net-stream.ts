// The thin node:net side of a ZMTP connection: a socket's events into the connection, the socket as its ByteStream.
//
// Reads go through net.Socket's `onread` option: the connection names the buffer each read lands in (the rest of a
// large frame's own buffer, or the thread's shared read buffer), so Node allocates nothing per read and a large body
// is read where it stays. `onread` applies only when a Socket is built, so a socket the server accepted is built
// again on the same handle before anything is read from it.

import { Socket, connect, type NetConnectOpts, type SocketConstructorOpts } from 'node:net';
import { ZmtpConnection, type ConnectionOptions, type ConnectionOwner } from './connection.js';

/** The `onread` of one socket: reads go where its connection says (the first buffer is asked for before it exists). */
class Reader {
  conn: ZmtpConnection<Socket> | null = null;
  constructor(private readonly first: Buffer) {}
  readonly buffer = (): Buffer => (this.conn === null ? this.first : this.conn.readBuffer());
  readonly callback = (n: number, buf: Uint8Array): boolean => {
    this.conn?.receiveInto(n, buf as Buffer);
    return true;
  };
}

/** Node takes `onread` when it builds any Socket; its types list it for connect() only. */
type ReadingSocketOpts = SocketConstructorOpts & { onread: Reader };

/** Socket internals used here: the handle an accepted socket wraps. */
interface WithHandle {
  _handle: unknown;
}

function attach(make: (onread: Reader) => Socket, owner: ConnectionOwner, opts: ConnectionOptions, now: number): ZmtpConnection<Socket> {
  // No connection exists while the socket is built: its first read buffer is a small one of its own (the greeting).
  const reader = new Reader(Buffer.allocUnsafeSlow(GREETING_READ));
  const sock = make(reader);
  sock.setNoDelay(true);
  const address = sock.remoteAddress === undefined ? undefined : { host: sock.remoteAddress, port: sock.remotePort ?? 0 };
  const conn = new ZmtpConnection(sock, owner, opts, now, address);
  reader.conn = conn;
  sock.on('drain', () => conn.drained());
  sock.on('error', () => conn.errored());
  sock.on('close', () => conn.ended());
  sock.resume();
  return conn;
}

/** Bytes of the first read of a connection (the greeting is 64; a peer may send its READY with it). */
const GREETING_READ = 512;

/**
 * A connection over a socket the server accepted (not yet read from: the server pauses on connect). The socket is
 * built again on its handle with our `onread`; the first Socket lets go of the handle and is destroyed, which also
 * takes it off the server's count (the router waits for its own connections when it closes).
 */
export function acceptedConnection(accepted: Socket, owner: ConnectionOwner, opts: ConnectionOptions, now: number): ZmtpConnection<Socket> {
  const handle = (accepted as unknown as WithHandle)._handle;
  return attach((onread) => {
    (accepted as unknown as WithHandle)._handle = null;
    accepted.destroy();
    return new Socket({ handle, readable: true, writable: true, onread } as ReadingSocketOpts);
  }, owner, opts, now);
}

/** A connection over a descriptor another thread accepted and handed over (--shards). */
export function descriptorConnection(fd: number, owner: ConnectionOwner, opts: ConnectionOptions, now: number): ZmtpConnection<Socket> {
  return attach((onread) => new Socket({ fd, readable: true, writable: true, onread } as ReadingSocketOpts), owner, opts, now);
}

/** A connection dialled to `to`: the greeting goes out once the socket connects. */
export function dialledConnection(to: NetConnectOpts, owner: ConnectionOwner, opts: ConnectionOptions, now: number): ZmtpConnection<Socket> {
  return attach((onread) => connect({ ...to, onread }), owner, opts, now);
}
