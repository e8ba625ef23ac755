// Routing ids as the core sees them: a key for the peer tables, and the access-group tag the shell puts in front of
// ids from an access group's socket ([0xff, group, ...id], see broker/peer-sockets.ts).

export type Key = number | string;

/** Routing ids that libzmq generates are 5 bytes, 0x00 + uint32; a number key is ~5x cheaper than a string. */
export function peerKey(id: Buffer): Key {
  return id.length === 5 && id[0] === 0 ? id.readUInt32BE(1) : id.toString('latin1');
}

export const GROUP_MARK = 0xff;

/** Which access group a routing id came through: -1 for the main endpoint. */
export function groupOf(id: Buffer): number {
  return id.length > 2 && id[0] === GROUP_MARK ? id[1] : -1;
}
