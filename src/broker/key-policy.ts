// What each CURVE key may do, on the zmtp transport (which knows every connection's key): --allow-clients and
// --allow-workers say which keys may act as clients and as workers; the "keys" grants of --access say which
// services a key may serve and request. A connection's rights are worked out once, when its handshake ends, and
// travel with it (its Peer); a service's verdict is remembered per key, so the per-request cost is a map lookup.

import { isMmi } from '../protocol/codec.js';
import { z85Encode } from '../zmtp/z85.js';
import type { DeniedCounts } from '../core/broker-core.js';
import type { Rights } from '../core/peer.js';

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

/**
 * One key's rights: the Rights a connection with that key carries (shared by that key's connections). Worked out
 * again on first use after the lists are replaced (SIGHUP), so a connection that stays sees the new lists.
 */
class KeyRights implements Rights {
  private gen = -1;
  private client = false;
  private worker = false;
  /** Null: any service. */
  private serve: ServiceFilter | null = null;
  private request: ServiceFilter | null = null;

  constructor(
    private readonly policy: KeyPolicy,
    readonly name: string,
    readonly hex: string,
  ) {
    this.current();
  }

  mayRequest(service: Buffer): string | null {
    this.current();
    if (!this.client) return this.policy.deny(this.name, 'requests', 'this CURVE key may not send requests');
    if (this.request === null || isMmi(service)) return null;
    const name = service.toString('latin1');
    return this.request.allows(name) ? null : this.policy.deny(this.name, 'requests', `this CURVE key may not use ${name}`);
  }

  mayServe(service: string): string | null {
    this.current();
    if (!this.worker) return this.policy.deny(this.name, 'ready', 'key not on --allow-workers');
    if (this.serve === null || this.serve.allows(service)) return null;
    return this.policy.deny(this.name, 'ready', `key not granted ${service} by --access`);
  }

  private current(): void {
    if (this.gen === this.policy.generation) return;
    this.gen = this.policy.generation;
    const r = this.policy.resolve(this.hex);
    this.client = r.client;
    this.worker = r.worker;
    this.serve = r.serve;
    this.request = r.request;
  }
}

export class KeyPolicy {
  /** Per key (hex), shared by that key's connections so their verdicts are remembered once. */
  private readonly byKey = new Map<string, KeyRights>();
  private readonly grantsByKey = new Map<string, KeyGrant[]>();
  private readonly denied = new Map<string, DeniedCounts>();
  /** Bumped by replace(): every KeyRights works itself out again on its next use. */
  generation = 0;

  constructor(private lists: KeyLists) {
    this.index();
  }

  /** New lists (SIGHUP): connections keep their place, and their next request or READY is judged by these. */
  replace(lists: KeyLists): void {
    this.lists = lists;
    this.index();
    this.generation++;
  }

  private index(): void {
    this.grantsByKey.clear();
    for (const g of this.lists.grants) {
      for (const k of g.keys) {
        const gs = this.grantsByKey.get(k);
        if (gs) gs.push(g);
        else this.grantsByKey.set(k, [g]);
      }
    }
  }

  /** The rights of a client's permanent CURVE key (raw), resolved when its handshake ends. */
  rightsOf(key: Buffer): Rights {
    const hex = key.toString('hex');
    let r = this.byKey.get(hex);
    if (r === undefined) {
      // Without an allow-list any key may connect: keep the cache from growing with them.
      if (this.byKey.size >= 10000) this.byKey.clear();
      r = new KeyRights(this, z85Encode(key), hex);
      this.byKey.set(hex, r);
    }
    return r;
  }

  /** Denials since start by key (Z85), for mmi.stats. */
  deniedKeys(): Record<string, DeniedCounts> {
    return Object.fromEntries(this.denied);
  }

  /** Counts a denial for the key named `name`; returns `why`. */
  deny(name: string, what: keyof DeniedCounts, why: string): string {
    let d = this.denied.get(name);
    if (d === undefined) {
      const counted = this.denied.size < MAX_NAMED_KEYS ? name : 'other';
      d = this.denied.get(counted) ?? { requests: 0, ready: 0 };
      this.denied.set(counted, d);
    }
    d[what]++;
    return why;
  }

  /** What the lists in force say of one key. */
  resolve(hex: string): { client: boolean; worker: boolean; serve: ServiceFilter | null; request: ServiceFilter | null } {
    const { clients, workers } = this.lists;
    const grants = this.grantsByKey.get(hex) ?? [];
    const union = (pick: (g: KeyGrant) => string[] | null): ServiceFilter | null => {
      const lists = grants.map(pick).filter((l): l is string[] => l !== null);
      return lists.length === 0 ? null : new ServiceFilter(lists.flat());
    };
    return { client: clients === null || clients.has(hex), worker: workers === null || workers.has(hex), serve: union((g) => g.serve), request: union((g) => g.request) };
  }
}
