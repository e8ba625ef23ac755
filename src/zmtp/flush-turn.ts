// One flush list for every connection a process dials (the libraries' links, the bench's dealers): what is queued in
// one event-loop turn goes out in one write per connection when the turn ends, however many sends made it.

import type { ZmtpConnection } from './connection.js';

let dirty: ZmtpConnection[] = [];
let scheduled = false;

function flushAll(): void {
  scheduled = false;
  const list = dirty;
  dirty = [];
  for (let i = 0; i < list.length; i++) list[i].flush();
}

/** ConnectionOwner.needsFlush for a connection with no owner loop of its own. */
export function flushThisTurn(conn: ZmtpConnection): void {
  conn.flushQueued = true;
  dirty.push(conn);
  if (!scheduled) {
    scheduled = true;
    setImmediate(flushAll);
  }
}
