// The broker's listening endpoints, shared by the plain and the sharded broker. With the zmtp transport (the default
// for tcp:// and ipc://, with or without CURVE) one ZmtpRouter serves every endpoint. The libzmq transport keeps a
// main ROUTER and one per access group, with CURVE and a ZAP domain each when keys are set; it serves access groups
// (--access), other schemes (inproc://), and anyone who asks for it (--transport libzmq).

import type { Router } from 'zeromq';
import { zeromq, zmtpHeartbeat } from '../sockets/zeromq.js';
import { PeerSockets } from './peer-sockets.js';
import { zmqIO, type FrameIO } from './frame-io.js';
import { ZmtpIO } from './zmtp-io.js';
import type { Placement, ZmtpRouter } from '../zmtp/router.js';
import { parseEndpoint } from '../zmtp/endpoint.js';
import { z85Decode } from '../zmtp/z85.js';
import { MDPC01, MDPC02, MDPW01, MDPW02 } from '../protocol/codec.js';
import { secureRouter, zap } from './security.js';
import type { BrokerOptions, SecurityLists, Transport } from './options.js';
import { ConfigError } from './config-error.js';
import { readAheadBytes } from '../zmtp/decoder.js';
import { freeFrameBytes } from '../zmtp/frame-pool.js';
import type { StatsSnapshot } from '../core/stats.js';

/** Which transport serves these options, and why when it is not the one asked for. */
export function chooseTransport(o: BrokerOptions): { transport: Transport; why: string | null } {
  if (o.transport === 'libzmq') return { transport: 'libzmq', why: null };
  if (o.curveKeys !== null && o.workerGroups.length > 0) return { transport: 'libzmq', why: 'access groups (--access) are served by the libzmq transport' };
  const other = o.bind.find((ep) => parseEndpoint(ep) === null);
  if (other !== undefined) return { transport: 'libzmq', why: `${other} is served by the libzmq transport` };
  return { transport: 'zmtp', why: null };
}

/** A Z85 key (as the key files and allow-lists hold them) as its 32 raw bytes. */
function rawKey(z85: string): Buffer {
  const raw = z85Decode(z85);
  if (raw === null || raw.length !== 32) throw new Error(`not a Z85 CURVE key: ${z85.slice(0, 8)}...`);
  return raw;
}

function hexSet(keys: string[] | null): Set<string> | null {
  return keys === null ? null : new Set(keys.map((k) => rawKey(k).toString('hex')));
}

export class Listeners {
  readonly io: FrameIO;
  readonly transport: Transport;
  readonly endpoints: string[] = [];
  readonly groupEndpoints: string[][] = [];
  private readonly zmtp: ZmtpIO | null = null;
  private readonly main: Router | null = null;
  private readonly groups: Router[] = [];
  private readonly domains: string[] = [];

  constructor(private readonly opts: BrokerOptions, placement?: Placement) {
    const choice = chooseTransport(opts);
    this.transport = choice.transport;
    if (choice.why !== null) opts.log('info', `transport: libzmq (${choice.why})`);
    if (this.transport === 'libzmq' && opts.keyGrants.length > 0) {
      throw new ConfigError('access', `key grants (--access "keys") need the zmtp transport, and ${choice.why ?? '--transport libzmq was asked for'}`);
    }
    if (this.transport === 'zmtp') {
      this.zmtp = new ZmtpIO({
        maxFrameBytes: opts.limits.maxFrameBytes,
        maxFrames: opts.limits.maxFrames,
        maxQueuedBytes: opts.peerQueueBytes,
        // A message is held whole while it is read: no bigger than one frame or one client's share of held bytes
        // (a larger request could only be refused as `overloaded`), so 1024 frames of 16 MiB cannot pile up.
        maxMessageBytes: Math.max(opts.limits.maxFrameBytes, opts.maxClientBytes),
        heartbeatInterval: opts.heartbeatInterval,
        heartbeatLiveness: opts.heartbeatLiveness,
        handshakeTimeout: opts.handshakeTimeout,
        // The core never writes to a frame, so MDP's header frames can arrive as shared constants.
        intern: [MDPC01, MDPC02, MDPW01, MDPW02],
        credit: opts.workerCredit,
        placement,
        // The core releases the frames of requests and replies that have ended (BrokerCore.done).
        pooled: true,
        curve: opts.curveKeys === null ? undefined : {
          keys: { publicKey: rawKey(opts.curveKeys.publicKey), secretKey: rawKey(opts.curveKeys.secretKey) },
          allow: hexSet(opts.allowKeys),
        },
      }, opts.log, {
        clients: hexSet(opts.clientKeys),
        workers: hexSet(opts.workerKeys),
        grants: opts.keyGrants.map((g) => ({ ...g, keys: [...(hexSet(g.keys) as Set<string>)] })),
      });
      this.io = this.zmtp;
      return;
    }
    const { Router } = zeromq();
    const router = () => new Router({
      // Without mandatory, ROUTER drops messages to unknown or full peers without a word.
      mandatory: true,
      // Never await a send: a full or vanished peer must fail at once and be told to the core, not queue an EBUSY.
      sendTimeout: 0,
      sendHighWaterMark: opts.sendHighWaterMark,
      receiveHighWaterMark: opts.receiveHighWaterMark,
      // libzmq drops the connection of a peer that sends a frame over this size, before it costs us memory.
      maxMessageSize: opts.limits.maxFrameBytes,
      // ZMTP heartbeats: libzmq drops a peer that answers no PING for liveness intervals; the next send to it then
      // fails (mandatory) and the core learns the worker is gone. A peer whose application is blocked still answers.
      ...zmtpHeartbeat(opts.heartbeatInterval, opts.heartbeatLiveness),
      linger: 1000,
    });
    this.main = router();
    this.groups = opts.workerGroups.map(router);
    this.io = this.groups.length > 0 ? new PeerSockets(this.main, this.groups) : zmqIO(this.main);
  }

  /** Connections refused by the allow-lists so far (all sockets). */
  get denied(): number {
    if (this.zmtp !== null) return this.zmtp.router.counters['curve-denied'] ?? 0;
    return this.domains.reduce((a, d) => a + zap.deniedCount(d), 0);
  }

  /** The zmtp transport's counters (connections, closes by reason); empty for libzmq. */
  /** Denials by key (the key policy lives with the transport, on the main thread), into a stats snapshot. */
  addDenials(snap: StatsSnapshot): void {
    const denied = this.zmtp?.policy?.deniedKeys();
    if (denied !== undefined && Object.keys(denied).length > 0) snap.deniedKeys = denied;
  }

  counters(): Record<string, number> {
    if (this.zmtp === null) return {};
    const out: Record<string, number> = {
      connections: this.zmtp.router.connections,
      unwrittenBytes: this.zmtp.router.unwrittenBytes(),
      readAheadBytes: readAheadBytes(),
      freeFrameBytes: freeFrameBytes(),
    };
    for (const [k, v] of Object.entries(this.zmtp.router.counters)) out[`zmtp_${k}`] = v;
    return out;
  }

  /** The zmtp transport's router (null on libzmq). */
  get router(): ZmtpRouter | null {
    return this.zmtp?.router ?? null;
  }

  /**
   * SIGHUP: the CURVE lists read again. No connection is dropped: who may connect applies to new handshakes, and
   * each key's rights (role lists, --access key grants) to its next request or READY.
   */
  reload(lists: SecurityLists): void {
    if (this.zmtp !== null) {
      this.zmtp.reload(hexSet(lists.allowKeys), {
        clients: hexSet(lists.clientKeys),
        workers: hexSet(lists.workerKeys),
        grants: lists.keyGrants.map((g) => ({ ...g, keys: [...(hexSet(g.keys) as Set<string>)] })),
      });
      return;
    }
    // libzmq: the main socket's ZAP domain first, then one per access group (in --access order).
    if (this.domains.length === 0) return;
    zap.setAllowed(this.domains[0], lists.allowKeys);
    lists.workerGroups.forEach((g, i) => {
      if (this.domains[i + 1] !== undefined) zap.setAllowed(this.domains[i + 1], g.allowKeys);
    });
  }

  /** Registers the ZAP domains, puts CURVE options on, binds every endpoint. */
  async bind(): Promise<void> {
    const o = this.opts;
    if (this.zmtp !== null) {
      for (const ep of o.bind) this.endpoints.push(await this.zmtp.router.bind(ep));
      return;
    }
    const main = this.main as Router;
    const secure = async (sock: Router, allow: string[] | null) => {
      const sec = await secureRouter(o.curveKeys, allow, o.log);
      if (sec.domain !== null) this.domains.push(sec.domain);
      Object.assign(sock, sec.options);
    };
    await secure(main, o.allowKeys);
    for (const ep of o.bind) {
      await main.bind(ep);
      this.endpoints.push(main.lastEndpoint ?? ep);
    }
    for (let g = 0; g < this.groups.length; g++) {
      const sock = this.groups[g];
      await secure(sock, o.workerGroups[g].allowKeys);
      const bound: string[] = [];
      for (const ep of o.workerGroups[g].bind) {
        await sock.bind(ep);
        bound.push(sock.lastEndpoint ?? ep);
      }
      this.groupEndpoints.push(bound);
    }
  }

  async close(): Promise<void> {
    await this.io.close();
    for (const d of this.domains) zap.unregister(d);
  }
}
