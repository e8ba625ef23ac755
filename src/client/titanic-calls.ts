// Titanic (RFC 9) from the client side: titanic.request, titanic.reply and titanic.close as calls on a Client, with
// RFC 9's status frames turned into results and TitanicErrors. Any broker serving RFC 9 works (ours with --titanic,
// the Guide's titanic.py behind its broker).

import type { RequestOptions } from './client.js';
import { AbortError, MdpError } from './errors.js';

/** What these calls need of a Client. */
interface Requester {
  request(service: string, body: readonly (Buffer | string)[] | string, opts?: RequestOptions): Promise<Buffer[]>;
}

export interface TitanicWaitOptions extends RequestOptions {
  /** How long result() polls while the reply is pending (ms); 0 asks once. durable(): default no limit. */
  wait?: number;
  /** First pause between polls (ms, default 50); it doubles up to 1 s. */
  poll?: number;
}

/** RFC 9 status 400 (the broker does not know the UUID, or refused the request as malformed) or 500 (not stored). */
export class TitanicError extends MdpError {
  override name = 'TitanicError';
  constructor(
    readonly status: 400 | 500,
    /** The text after the status code, if the broker gave one (RFC 9: informative only). */
    readonly reason: string,
    readonly service: string,
  ) {
    super(`${service}: ${status}${reason ? ` ${reason}` : ''}`);
  }
}

/** The status code of a TSP reply and its content frames; 400 and 500 thrown. */
function status(reply: Buffer[], service: string): { code: 200 | 300; content: Buffer[] } {
  const head = reply[0]?.toString('latin1') ?? '';
  const code = head.slice(0, 3);
  const reason = head.length > 4 ? head.slice(4) : '';
  if (code === '200' || code === '300') return { code: code === '200' ? 200 : 300, content: reply.slice(1) };
  if (code === '400' || code === '500') throw new TitanicError(code === '400' ? 400 : 500, reason, service);
  throw new TitanicError(500, `not an RFC 9 status frame: ${JSON.stringify(head.slice(0, 40))}`, service);
}

export async function titanicSubmit(c: Requester, service: string, body: Buffer[], opts: RequestOptions): Promise<string> {
  const { code, content } = status(await c.request('titanic.request', [service, ...body], opts), 'titanic.request');
  if (code !== 200 || content.length < 1) throw new TitanicError(500, 'no UUID in the answer', 'titanic.request');
  return content[0].toString('latin1');
}

export async function titanicResult(c: Requester, uuid: string, opts: TitanicWaitOptions): Promise<Buffer[] | null> {
  const until = Date.now() + (opts.wait ?? 0);
  let pause = opts.poll ?? 50;
  for (;;) {
    if (opts.signal?.aborted) throw new AbortError('result() aborted', { cause: opts.signal.reason });
    const { code, content } = status(await c.request('titanic.reply', uuid, opts), 'titanic.reply');
    if (code === 200) return content;
    const left = until - Date.now();
    if (left <= 0) return null;
    await sleep(Math.min(pause, left), opts.signal);
    pause = Math.min(1000, pause * 2);
  }
}

export async function titanicClose(c: Requester, uuid: string): Promise<void> {
  status(await c.request('titanic.close', uuid), 'titanic.close');
}

export async function titanicDurable(c: Requester, service: string, body: Buffer[], opts: TitanicWaitOptions): Promise<Buffer[]> {
  const uuid = await titanicSubmit(c, service, body, opts);
  const reply = await titanicResult(c, uuid, { ...opts, wait: opts.wait ?? Number.POSITIVE_INFINITY });
  if (reply === null) throw new TitanicError(500, `no reply within ${opts.wait} ms (still stored as ${uuid})`, 'titanic.reply');
  await titanicClose(c, uuid);
  return reply;
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(done, ms);
    function done() {
      signal?.removeEventListener('abort', abort);
      resolve();
    }
    function abort() {
      clearTimeout(t);
      reject(new AbortError('result() aborted', { cause: signal?.reason }));
    }
    signal?.addEventListener('abort', abort, { once: true });
  });
}
