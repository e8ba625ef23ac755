// The thin node:net side of a ZMTP connection: a socket's events into the connection, the socket as its ByteStream.

import type { Socket } from 'node:net';
import { ZmtpConnection, type ConnectionOptions, type ConnectionOwner } from './connection.js';

/** A connection over `sock` (accepted or connecting): the greeting goes out at once. */
export function connectionOnSocket(sock: Socket, owner: ConnectionOwner, opts: ConnectionOptions, now: number): ZmtpConnection<Socket> {
  sock.setNoDelay(true);
  const address = sock.remoteAddress === undefined ? undefined : { host: sock.remoteAddress, port: sock.remotePort ?? 0 };
  const conn = new ZmtpConnection(sock, owner, opts, now, address);
  sock.on('data', (chunk: Buffer) => conn.receive(chunk));
  sock.on('drain', () => conn.drained());
  sock.on('error', () => conn.errored());
  sock.on('close', () => conn.ended());
  // An accepted socket is paused when its router places connections (--shards): reading starts here.
  sock.resume();
  return conn;
}
