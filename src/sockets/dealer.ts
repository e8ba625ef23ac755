// The DEALER socket a client or worker opens to a broker: linger 0 (a request is retried, never left to linger),
// CURVE options when keys are given, then the caller's own options.

import { Dealer } from 'zeromq';

/** CURVE keys of a client or worker: the broker's public key and this peer's key pair (Z85 text). */
export interface CurveClientKeys {
  serverKey: string;
  publicKey: string;
  secretKey: string;
}

export type DealerOptions = ConstructorParameters<typeof Dealer>[0];

/** The socket, not yet connected: a monitor started before connect() sees the first handshake too. */
export function newDealer(curve: CurveClientKeys | undefined, options: DealerOptions): Dealer {
  const keys = curve ? { curveServerKey: curve.serverKey, curvePublicKey: curve.publicKey, curveSecretKey: curve.secretKey } : {};
  return new Dealer({ linger: 0, ...keys, ...options });
}
