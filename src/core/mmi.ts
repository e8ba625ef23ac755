// MMI (RFC 8) and its extensions, answered by the broker itself. One home for both the plain broker's core and the
// sharded broker's main thread, which answers the broker-wide names (mmi.services, mmi.stats) for all shards.
//   mmi.service   body: a service name; 200 while at least one worker is registered for it, else 404
//   mmi.services  (extension) the names of all served services, one frame each
//   mmi.stats     (extension) the latest aggregated stats as one JSON frame (no body, or an empty frame); with a
//                 service name, that entry or 404
//   mmi.extensions (extension) 200, then one frame per MDP extension this broker offers; clients use an extension
//                 only after a broker listed it here. `request-id`: frames before the empty delimiter of a client
//                 request are an envelope the broker returns verbatim with every reply to it.
//   mmi.*         anything else: 501

import { EXT_REQUEST_ID, MMI_EXTENSIONS } from '../protocol/extensions.js';

export { isMmi } from '../protocol/codec.js';

/** What the answers are made of; the sharded broker gives broker-wide figures. */
export interface MmiSource {
  /** Workers registered for a service. */
  workersFor(name: string): number;
  /** Name frames of services with at least one worker. */
  served(): Buffer[];
  readonly statsReplies: StatsReplies;
}

const MMI_STATS = Buffer.from('mmi.stats');

export function isMmiStats(service: Buffer): boolean {
  return service.equals(MMI_STATS);
}

const CODE_200 = Buffer.from('200');
const CODE_404 = Buffer.from('404');
const CODE_501 = Buffer.from('501');
const EMPTY_REPORT = Buffer.from('{}');
const EXTENSIONS = [CODE_200, Buffer.from(EXT_REQUEST_ID)];

/** The reply body for an MMI request on `service` with first body frame `query`. */
export function mmiBody(service: Buffer, query: Buffer | undefined, src: MmiSource): Buffer[] {
  switch (service.toString('latin1')) {
    case 'mmi.service':
      return [query !== undefined && src.workersFor(query.toString('latin1')) > 0 ? CODE_200 : CODE_404];
    case 'mmi.services':
      return src.served();
    case 'mmi.stats':
      return [src.statsReplies.get(query)];
    case MMI_EXTENSIONS:
      return EXTENSIONS;
    default:
      return [CODE_501];
  }
}

/**
 * The mmi.stats answers, rendered by an aggregation and installed here. The host's `refresh` aggregates at once
 * (synchronously) before a question is answered, so the figures include what happened up to the question and the
 * reply leaves in the turn it was asked, as every other MMI reply does. No Promise: the core stays synchronous.
 */
export class StatsReplies {
  private overall: Buffer = EMPTY_REPORT;
  private perService = new Map<string, Buffer>();
  /** Set by the host: aggregates now and installs the result (it may keep a recent one, to bound its cost). */
  refresh: (() => void) | null = null;
  /**
   * Set by a shard's host: the figures come from every thread, so `refresh` only asks for them and the core holds
   * each question until the host calls answerStats().
   */
  deferred = false;

  /** Makes the installed report current for a question asked now. */
  fresh(): void {
    this.refresh?.();
  }

  set(overall: Buffer, perService: Map<string, Buffer>): void {
    this.overall = overall;
    this.perService = perService;
  }

  /** The whole broker's report, or one service's (404 when it has none). */
  get(service: Buffer | undefined): Buffer {
    // No body, or one empty body frame (what an RFC 7 client sends for "no argument"): the whole broker.
    if (service === undefined || service.length === 0) return this.overall;
    return this.perService.get(service.toString('latin1')) ?? CODE_404;
  }
}
