// What each CURVE key may do, on the zmtp transport (which knows every connection's key): --allow-clients and
// --allow-workers say which keys may act as clients and as workers; the "keys" grants of --access say which
// services a key may serve and request. A connection's rights are worked out once, when it first needs them, and
// a service's verdict is remembered per set of rights, so the per-request cost is two map lookups.

import { isMmi } from '../protocol/codec.js';
import { z85Encode } from '../zmtp/curve.js';
import type { DeniedCounts, PeerPolicy } from '../core/broker-core.js';

/** One "keys" entry of an --access file: these keys may serve and request only what it lists. */
export interface KeyGrant {
  /** For log lines and errors. */
  name: string;
  /** Z85 public keys. */
  keys: string[];
  /** Services these keys may serve; a trailing '*' matches by prefix. Null: this grant says nothing about serving. */
  serve: string[] | null;
  /** Services these keys may send requests to. Null: this grant says nothing about requests. */
  request: string[] | null;
}

export interface KeyLists {
  /** Hex of the raw keys that may act as clients / as workers; null: any key that may connect. */
  clients: ReadonlySet<string> | null;
  workers: ReadonlySet<string> | null;
  /** The --access "keys" grants, their keys as hex of the raw keys (as above). */
  grants: readonly KeyGrant[];
}

/** Keys named in mmi.stats at most; denials by further keys are counted under "other". */
const MAX_NAMED_KEYS = 1000;

function matches(pattern: string, name: string): boolean {
  return pattern.endsWith('*') ? name.startsWith(pattern.slice(0, -1)) : pattern === name;
}

/** Services one key may use in one role, with the verdicts so far. */
class ServiceFilter {
  private readonly seen = new Map<string, boolean>();
  constructor(private readonly patterns: readonly string[]) {}

  allows(service: string): boolean {
    let ok = this.seen.get(service);
    if (ok === undefined) {
      ok = this.patterns.some((p) => matches(p, service));
      // Service names are client-chosen: a flood of names must not grow this without bound.
      if (this.seen.size < 10000) this.seen.set(service, ok);
    }
    return ok;
  }
}

interface Rights {
  name: string;
  client: boolean;
  worker: boolean;
  /** Null: any service. */
  serve: ServiceFilter | null;
  request: ServiceFilter | null;
}

const ANYONE: Rights = { name: '', client: true, worker: true, serve: null, request: null };

export class KeyPolicy implements PeerPolicy {
  /** Per connection (by its key Buffer, which lives as long as the connection). */
  private readonly byConn = new WeakMap<Buffer, Rights>();
  /** Per key (hex), shared by that key's connections so their verdicts are remembered once. */
  private readonly byKey = new Map<string, Rights>();
  private readonly grantsByKey = new Map<string, KeyGrant[]>();
  private readonly denied = new Map<string, DeniedCounts>();

  constructor(private readonly lists: KeyLists, private readonly keyOf: (id: Buffer) => Buffer | null) {
    for (const g of lists.grants) {
      for (const k of g.keys) {
        const gs = this.grantsByKey.get(k);
        if (gs) gs.push(g);
        else this.grantsByKey.set(k, [g]);
      }
    }
  }

  mayRequest(id: Buffer, service: Buffer): string | null {
    const r = this.rightsOf(id);
    if (!r.client) return this.deny(r, 'requests', 'this CURVE key may not send requests');
    if (r.request === null || isMmi(service)) return null;
    const name = service.toString('latin1');
    return r.request.allows(name) ? null : this.deny(r, 'requests', `this CURVE key may not use ${name}`);
  }

  mayServe(id: Buffer, service: string): string | null {
    const r = this.rightsOf(id);
    if (!r.worker) return this.deny(r, 'ready', 'key not on --allow-workers');
    if (r.serve === null || r.serve.allows(service)) return null;
    return this.deny(r, 'ready', `key not granted ${service} by --access`);
  }

  keyName(id: Buffer): string | null {
    const key = this.keyOf(id);
    return key === null ? null : z85Encode(key);
  }

  deniedKeys(): Record<string, DeniedCounts> {
    return Object.fromEntries(this.denied);
  }

  private deny(r: Rights, what: keyof DeniedCounts, why: string): string {
    let d = this.denied.get(r.name);
    if (d === undefined) {
      const name = this.denied.size < MAX_NAMED_KEYS ? r.name : 'other';
      d = this.denied.get(name) ?? { requests: 0, ready: 0 };
      this.denied.set(name, d);
    }
    d[what]++;
    return why;
  }

  private rightsOf(id: Buffer): Rights {
    const key = this.keyOf(id);
    if (key === null) return ANYONE;
    let r = this.byConn.get(key);
    if (r !== undefined) return r;
    const hex = key.toString('hex');
    r = this.byKey.get(hex);
    if (r === undefined) {
      // Without an allow-list any key may connect: keep the cache from growing with them.
      if (this.byKey.size >= 10000) this.byKey.clear();
      r = this.resolve(hex, key);
      this.byKey.set(hex, r);
    }
    this.byConn.set(key, r);
    return r;
  }

  private resolve(hex: string, key: Buffer): Rights {
    const { clients, workers } = this.lists;
    const grants = this.grantsByKey.get(hex) ?? [];
    const union = (pick: (g: KeyGrant) => string[] | null): ServiceFilter | null => {
      const lists = grants.map(pick).filter((l): l is string[] => l !== null);
      return lists.length === 0 ? null : new ServiceFilter(lists.flat());
    };
    return {
      name: z85Encode(key),
      client: clients === null || clients.has(hex),
      worker: workers === null || workers.has(hex),
      serve: union((g) => g.serve),
      request: union((g) => g.request),
    };
  }
}
