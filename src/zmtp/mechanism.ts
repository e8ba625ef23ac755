// ZMTP security mechanisms (RFC 23 "Authentication and Confidentiality", RFC 25/26), as libzmq splits them: each
// takes the handshake commands the peer sends and says what to send back, when the peer is known, or why it is
// refused. No I/O: the connection writes what they return. ERROR from the peer is the connection's business.
//
// NULL: the connecting side sends READY first; the accepting side answers it only after its owner accepted the peer,
// so a refused peer gets ERROR in place of READY (RFC 23 allows it). CURVE: HELLO, WELCOME, INITIATE, READY.

import type { CloseReason } from './connection.js';
import { CurveClient, CurveServer, type CurveSession, type RawKeyPair } from './curve.js';
import { commandFrame, metadata, parseProperties, readyCommand } from './wire.js';

/** Who the peer says it is (its READY or INITIATE metadata). */
export interface PeerInfo {
  socketType: string;
  identity: Buffer;
  /** All its properties, names lower-cased; values are views of the read chunk (read them during onReady only). */
  properties: ReadonlyMap<string, Buffer>;
}

/** What one handshake command leads to. */
export type Step =
  | { kind: 'send'; frame: Buffer }
  /** The peer is known; `reply` (a command frame) goes to it only once its owner accepts it. */
  | { kind: 'done'; peer: PeerInfo; reply: Buffer | null }
  | { kind: 'fail'; reason: CloseReason; tell?: string };

export interface Mechanism {
  readonly name: 'NULL' | 'CURVE';
  /** RFC 23's as-server field of our greeting. */
  readonly asServer: boolean;
  /** The command frame that opens our side of the handshake once the greetings are exchanged (null: we wait). */
  start(): Buffer | null;
  /** One handshake command: its name, and its whole body (name included), which CURVE's boxes are read from. */
  command(name: string, body: Buffer, data: Buffer): Step;
  /** MESSAGE boxes once the handshake is done; null when frames travel plain. */
  readonly session: CurveSession | null;
  /** The peer's permanent CURVE key, once it is known (a server's view of its client). */
  readonly peerKey: Buffer | null;
}

/** What we say of ourselves: Socket-Type, a DEALER's Identity when it has one, and application (`X-`) properties. */
export interface OurProperties {
  socketType: string;
  identity?: Buffer;
  extra?: Readonly<Record<string, string>>;
}

function ourMetadata(ours: OurProperties): Record<string, Buffer | string> {
  const props: Record<string, Buffer | string> = { 'Socket-Type': ours.socketType };
  if (ours.identity !== undefined && ours.identity.length > 0) props.Identity = ours.identity;
  if (ours.extra !== undefined) Object.assign(props, ours.extra);
  return props;
}

/** The peer's Socket-Type and Identity from metadata; null when the metadata is malformed. */
function peerInfo(data: Buffer): PeerInfo | null {
  const props = parseProperties(data);
  if (props === null) return null;
  return {
    socketType: props.get('socket-type')?.toString('latin1') ?? '',
    // Copied: the identity outlives the read chunk it came in.
    identity: Buffer.from(props.get('identity') ?? Buffer.alloc(0)),
    properties: props,
  };
}

const BAD_HANDSHAKE: Step = { kind: 'fail', reason: 'curve-handshake' };

export class NullMechanism implements Mechanism {
  readonly name = 'NULL';
  readonly asServer = false;
  readonly session = null;
  readonly peerKey = null;
  private readonly ready: Buffer;

  /** `accepting`: the side that answers READY (our ROUTER); the connecting side speaks first. */
  constructor(ours: OurProperties, private readonly accepting: boolean) {
    this.ready = readyCommand(ourMetadata(ours));
  }

  start(): Buffer | null {
    return this.accepting ? null : this.ready;
  }

  command(name: string, _body: Buffer, data: Buffer): Step {
    if (name !== 'READY') return { kind: 'fail', reason: 'bad-command', tell: `expected READY, got ${name}` };
    const peer = peerInfo(data);
    if (peer === null) return { kind: 'fail', reason: 'bad-command', tell: 'malformed READY metadata' };
    return { kind: 'done', peer, reply: this.accepting ? this.ready : null };
  }
}

/** What a refused key is told (a ZAP-style status code: libzmq reports it as an authentication failure). */
export const CURVE_DENIED = '400';

export class CurveServerMechanism implements Mechanism {
  readonly name = 'CURVE';
  readonly asServer = true;
  readonly session: CurveServer;
  /** HELLO was answered; a second one is refused (each costs X25519 operations). */
  private welcomed = false;
  private readonly ours: Buffer;

  constructor(keys: RawKeyPair, private readonly authorize: (clientKey: Buffer) => boolean, ours: OurProperties) {
    this.session = new CurveServer(keys);
    this.ours = metadata(ourMetadata(ours));
  }

  get peerKey(): Buffer | null {
    return this.session.clientKey;
  }

  start(): null {
    return null;
  }

  command(name: string, body: Buffer): Step {
    if (name === 'HELLO') {
      // libzmq takes one HELLO per connection, then only INITIATE.
      if (this.welcomed) return BAD_HANDSHAKE;
      this.welcomed = true;
      const welcome = this.session.hello(body);
      return typeof welcome === 'string' ? BAD_HANDSHAKE : { kind: 'send', frame: commandFrame(welcome) };
    }
    if (name !== 'INITIATE') return BAD_HANDSHAKE;
    const init = this.session.initiate(body);
    if (typeof init === 'string') return BAD_HANDSHAKE;
    if (!this.authorize(init.clientKey)) return { kind: 'fail', reason: 'curve-denied', tell: CURVE_DENIED };
    const peer = peerInfo(init.metadata);
    if (peer === null) return BAD_HANDSHAKE;
    return { kind: 'done', peer, reply: commandFrame(this.session.ready(this.ours)) };
  }
}

export class CurveClientMechanism implements Mechanism {
  readonly name = 'CURVE';
  readonly asServer = false;
  readonly session: CurveClient;
  readonly peerKey: Buffer;
  private readonly ours: Buffer;
  /** Why the handshake failed, for the owner's log line (a wrong server key shows as a WELCOME that does not open). */
  problem: string | null = null;

  constructor(keys: RawKeyPair, serverKey: Buffer, ours: OurProperties) {
    this.session = new CurveClient(keys, serverKey);
    this.peerKey = serverKey;
    this.ours = metadata(ourMetadata(ours));
  }

  start(): Buffer {
    return commandFrame(this.session.hello());
  }

  command(name: string, body: Buffer): Step {
    if (name === 'WELCOME') {
      const initiate = this.session.welcome(body, this.ours);
      if (typeof initiate === 'string') return this.fail(initiate);
      return { kind: 'send', frame: commandFrame(initiate) };
    }
    if (name !== 'READY') return this.fail(`unexpected ${name}`);
    const meta = this.session.ready(body);
    if (typeof meta === 'string') return this.fail(meta);
    const peer = peerInfo(meta);
    if (peer === null) return this.fail('malformed READY metadata');
    return { kind: 'done', peer, reply: null };
  }

  private fail(problem: string): Step {
    this.problem = problem;
    return BAD_HANDSHAKE;
  }
}
