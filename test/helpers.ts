// Shared helpers for socket-level tests: a broker on an OS-chosen port, and raw peers that speak frames.
import { Dealer, Request } from 'zeromq';
import type { Worker } from '../src/client/worker.js';
import { Broker } from '../src/broker/broker.js';
import type { BrokerOptions } from '../src/broker/options.js';

export const B = (s: string | number[]) => (typeof s === 'string' ? Buffer.from(s, 'latin1') : Buffer.from(s));
export const E = Buffer.alloc(0);

/**
 * The whole suite runs again with MDBROKER_TEST_OFFLOAD=all (stats and a pass-through --validate rule in the
 * piscina pool, so every request goes through pool validation), MDBROKER_TEST_SHARDS=2 and
 * MDBROKER_TEST_TRANSPORT=libzmq (the zeromq binding's ROUTER instead of the default zmtp transport).
 */
export function modeOptions(): Partial<BrokerOptions> {
  const o: Partial<BrokerOptions> = {};
  const offload = process.env.MDBROKER_TEST_OFFLOAD;
  if (offload === 'all' || offload === 'validation' || offload === 'stats') {
    o.offload = offload;
    if (offload !== 'stats') o.validate = ['max-body=4294967295'];
  }
  const transport = process.env.MDBROKER_TEST_TRANSPORT;
  if (transport === 'zmtp' || transport === 'libzmq') o.transport = transport;
  const shards = Number(process.env.MDBROKER_TEST_SHARDS ?? 1);
  if (shards > 1) (o as Record<string, unknown>).shards = shards;
  return o;
}

/** The same, as mdbroker command-line flags. */
export function modeFlags(): string[] {
  const o = modeOptions();
  const f: string[] = [];
  if (o.offload) f.push('--offload', o.offload);
  if (o.transport) f.push('--transport', o.transport);
  for (const v of o.validate ?? []) f.push('--validate', v);
  const shards = (o as Record<string, unknown>).shards;
  if (shards) f.push('--shards', String(shards));
  return f;
}

export async function startBroker(opts: Partial<BrokerOptions> = {}): Promise<{ broker: Broker; endpoint: string }> {
  const broker = new Broker({ bind: ['tcp://127.0.0.1:*'], shutdownGrace: 200, ...modeOptions(), ...opts });
  await broker.start();
  return { broker, endpoint: broker.endpoints[0] };
}

/** A DEALER (or REQ) that receives with a deadline, for golden frame sequences. */
export class RawPeer {
  readonly sock: Dealer | Request;
  constructor(endpoint: string, kind: 'dealer' | 'req' = 'dealer') {
    this.sock = kind === 'dealer' ? new Dealer({ linger: 0 }) : new Request({ linger: 0 });
    this.sock.connect(endpoint);
  }
  send(frames: (Buffer | string | number[])[]): Promise<void> {
    return this.sock.send(frames.map((f) => (Buffer.isBuffer(f) ? f : B(f))));
  }
  /** Next message, or null if none arrives within `ms`. */
  async recv(ms = 2000): Promise<Buffer[] | null> {
    this.sock.receiveTimeout = ms;
    try {
      return await this.sock.receive();
    } catch (err) {
      if ((err as { code?: string }).code === 'EAGAIN') return null;
      throw err;
    }
  }
  /** Next message that is not a HEARTBEAT from the broker (workers get those at any time). */
  async recvSkippingHeartbeats(ms = 2000): Promise<Buffer[] | null> {
    const until = Date.now() + ms;
    for (;;) {
      const m = await this.recv(Math.max(1, until - Date.now()));
      if (m === null) return null;
      const hb = (m[0].length === 0 && m[1]?.toString() === 'MDPW01' && m[2]?.[0] === 4) || (m[0].toString() === 'MDPW02' && m[1]?.[0] === 5);
      if (!hb) return m;
    }
  }
  close(): void {
    this.sock.close();
  }
}

export function show(m: Buffer[]): string[];
export function show(m: Buffer[] | null): string[] | null;
export function show(m: Buffer[] | null): string[] | null {
  return m === null ? null : m.map((f) => f.toString('latin1'));
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `cond` until true or `ms` pass; returns whether it became true. */
export async function until(cond: () => boolean, ms = 3000): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (cond()) return true;
    await sleep(10);
  }
  return cond();
}

export { prng } from './support/prng.js';

/** `n` zeromq DEALERs connected to `endpoint` that never wait on a send (junk and storm peers). */
export function junkPeers(endpoint: string, n: number): Dealer[] {
  return Array.from({ length: n }, () => {
    const d = new Dealer({ linger: 0, sendTimeout: 0 });
    d.connect(endpoint);
    return d;
  });
}

/** Waits until every connection of `worker` is registered with `broker` (one with worker credit, else one per unit of concurrency). */
export async function registered(broker: Broker, worker: Worker, ms = 3000): Promise<boolean> {
  await worker.ready({ timeout: ms });
  return until(() => broker.snapshot().workers === worker.connections, ms);
}
