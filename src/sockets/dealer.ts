// The CURVE keys and libzmq socket options a client or worker may give (types only: nothing here loads zeromq).

import type { Dealer } from 'zeromq';

/** CURVE keys of a client or worker: the broker's public key and this peer's key pair (Z85 text). */
export interface CurveClientKeys {
  serverKey: string;
  publicKey: string;
  secretKey: string;
}

/** transport 'libzmq' only: options for the zeromq Dealer socket. */
export type DealerOptions = ConstructorParameters<typeof Dealer>[0];
