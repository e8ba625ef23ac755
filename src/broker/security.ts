// CURVE encryption and key allow-lists. ZeroMQ's CURVE (RFC 26) encrypts and authenticates every connection; a ZAP
// handler (RFC 27) decides which client keys may connect. Key files are zcert-style text:
//   public-key = "<40 chars Z85>"
//   secret-key = "<40 chars Z85>"      (secret files only; written mode 0600)
// An allow-list file holds one Z85 public key per line (a zcert public file, or bare keys; a line starting with '#'
// is a comment).

import { readFileSync, writeFileSync } from 'node:fs';
import type { Router } from 'zeromq';
import { zeromq } from '../sockets/zeromq.js';
import type { LogFn } from '../core/broker-core.js';
import { receiveLoop } from '../sockets/receive-loop.js';
import { z85Encode } from '../zmtp/z85.js';
import type { KeyGrant } from './key-policy.js';

export interface KeyPair {
  publicKey: string;
  secretKey: string;
}

/** A CURVE public key as Z85 text (40 characters). */
export const Z85_KEY = /^[0-9a-zA-Z.\-:+=^!/*?&<>()[\]{}@%$#]{40}$/;

function field(text: string, name: string): string | null {
  const m = new RegExp(`^\\s*${name}\\s*=\\s*"([^"]{40})"`, 'm').exec(text);
  return m ? m[1] : null;
}

/** A file's text; a failure says which file and why in words ("no such file", not ENOENT). */
function readText(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'is a directory' : (err as Error).message;
    throw new Error(`${what} ${path}: cannot read: ${why}`);
  }
}

export function readSecretKeyFile(path: string): KeyPair {
  const text = readText(path, 'key file');
  const publicKey = field(text, 'public-key');
  const secretKey = field(text, 'secret-key');
  if (!publicKey || !secretKey) throw new Error(`${path}: expected public-key = "..." and secret-key = "..." lines (mdbroker keygen writes them)`);
  return { publicKey, secretKey };
}

export function readAllowList(path: string): Set<string> {
  const keys = new Set<string>();
  readText(path, 'allow-list').split('\n').forEach((raw, i) => {
    // Z85 uses '#' (1 key in 85 starts with it): a line that is a whole key is a key; any other line that starts
    // with '#' is a comment.
    const line = raw.trim();
    if (!line || (line.startsWith('#') && !Z85_KEY.test(line))) return;
    const key = field(line, 'public-key') ?? line;
    if (!Z85_KEY.test(key)) throw new Error(`${path}:${i + 1}: not a 40-character Z85 public key`);
    keys.add(key);
  });
  return keys;
}

/** Writes NAME.key (secret, 0600) and NAME.pub (public); returns the pair. */
export function keygen(name: string): KeyPair {
  const pair = zeromq().curveKeyPair();
  const stamp = `# mdbroker CURVE key, ${new Date().toISOString()}\n`;
  writeFileSync(`${name}.key`, `${stamp}public-key = "${pair.publicKey}"\nsecret-key = "${pair.secretKey}"\n`, { mode: 0o600 });
  writeFileSync(`${name}.pub`, `${stamp}public-key = "${pair.publicKey}"\n`);
  return pair;
}

/** Options for the broker's ROUTER when CURVE is on. */
export function curveServerOptions(keys: KeyPair, domain: string): { curveServer: true; curvePublicKey: string; curveSecretKey: string; zapDomain: string } {
  return { curveServer: true, curvePublicKey: keys.publicKey, curveSecretKey: keys.secretKey, zapDomain: domain };
}

// ---- ZAP ----

interface Domain {
  /** Null: any key may connect (encryption only). */
  allowed: Set<string> | null;
  log: LogFn;
  denied: number;
}

/**
 * One ZAP handler per process (libzmq looks for it at inproc://zeromq.zap.01 in the context); each broker
 * registers its own ZAP domain with its allow-list.
 */
class ZapHandler {
  private sock: Router | null = null;
  private readonly domains = new Map<string, Domain>();

  async register(domain: string, d: Domain): Promise<void> {
    this.domains.set(domain, d);
    if (this.sock) return;
    const sock = new (zeromq().Router)();
    this.sock = sock;
    await sock.bind('inproc://zeromq.zap.01');
    void this.loop(sock);
  }

  /** New allow-list for a domain (SIGHUP): checked at each new handshake; connections made stay. */
  setAllowed(domain: string, allow: string[] | null): void {
    const d = this.domains.get(domain);
    if (d !== undefined) d.allowed = allow === null ? null : new Set(allow);
  }

  deniedCount(domain: string): number {
    return this.domains.get(domain)?.denied ?? 0;
  }

  unregister(domain: string): void {
    this.domains.delete(domain);
    if (this.domains.size === 0 && this.sock) {
      this.sock.close();
      this.sock = null;
    }
  }

  private loop(sock: Router): Promise<void> {
    return receiveLoop(sock, (msg) => this.answer(sock, msg), () => undefined, false);
  }

  private answer(sock: Router, msg: Buffer[]): void {
    // [routing id, "", version, request id, domain, address, identity, mechanism, credentials...]
    const [id, , version, requestId, domainF, address, , mechanism, key] = msg;
    const d = this.domains.get(domainF?.toString() ?? '');
    let status = '400';
    let text = 'no such domain';
    let user = '';
    if (d && version?.toString() === '1.0' && mechanism?.toString() === 'CURVE' && key?.length === 32) {
      user = z85Encode(key);
      if (d.allowed === null || d.allowed.has(user)) {
        status = '200';
        text = 'OK';
      } else {
        text = 'key not allowed';
        d.denied++;
        d.log('warn', 'connection refused: CURVE key not on the allow-list', { key: user, address: address?.toString() });
      }
    }
    const E = Buffer.alloc(0);
    sock.send([id, E, Buffer.from('1.0'), requestId ?? E, Buffer.from(status), Buffer.from(text), Buffer.from(status === '200' ? user : ''), E]).catch(() => undefined);
  }
}

export const zap = new ZapHandler();
let domains = 0;
export function newZapDomain(): string {
  return `mdbroker-${process.pid}-${++domains}`;
}

/** Registers the broker's ZAP domain (when CURVE is on) and returns the ROUTER options for it. */
export async function secureRouter(keys: KeyPair | null, allow: string[] | null, log: LogFn): Promise<{ options: Record<string, unknown>; domain: string | null }> {
  if (keys === null) return { options: {}, domain: null };
  const domain = newZapDomain();
  await zap.register(domain, { allowed: allow === null ? null : new Set(allow), log, denied: 0 });
  return { options: curveServerOptions(keys, domain), domain };
}

// ---- access groups (--access) ----

/** Workers of these services must connect through this group's endpoint(s), with a key on its allow-list. */
export interface WorkerGroup {
  bind: string[];
  /** Service names; a trailing '*' matches by prefix. */
  services: string[];
  /** Public keys allowed on this group's endpoints; null = any key the CURVE handshake accepts. */
  allowKeys: string[] | null;
}

function matches(pattern: string, name: string): boolean {
  return pattern.endsWith('*') ? name.startsWith(pattern.slice(0, -1)) : pattern === name;
}

/**
 * Who may register what: a worker that came through group g may register g's services only; one on the main
 * endpoint may register any service no group claims. Null when there are no groups (anyone, anything).
 */
export function accessPolicy(groups: readonly WorkerGroup[]): ((group: number, service: string) => boolean) | null {
  if (groups.length === 0) return null;
  return (g, service) => {
    if (g >= 0) return g < groups.length && groups[g].services.some((p) => matches(p, service));
    return !groups.some((gr) => gr.services.some((p) => matches(p, service)));
  };
}

/** A list of Z85 keys given inline or as an allow-list file (relative to the access file's folder). */
function keyList(v: unknown, dir: string, where: string, field: string): string[] | null {
  if (typeof v === 'string') return [...readAllowList(v.startsWith('/') ? v : dir + v)];
  if (Array.isArray(v)) {
    for (const k of v) if (typeof k !== 'string' || !Z85_KEY.test(k)) throw new Error(`${where}: ${field} holds something that is not a Z85 public key`);
    return v as string[];
  }
  if (v !== undefined) throw new Error(`${where}: "${field}" must be a file name or a list of keys`);
  return null;
}

function serviceList(v: unknown, where: string, field: string, optional: boolean): string[] | null {
  if (v === undefined && optional) return null;
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string' && x.length > 0) || (!optional && v.length === 0)) {
    throw new Error(`${where}: "${field}" must be a ${optional ? '' : 'non-empty '}list of service names`);
  }
  return v as string[];
}

export interface AccessFile {
  workerGroups: WorkerGroup[];
  keyGrants: KeyGrant[];
}

/**
 * Reads an --access file:
 *   { "keys": [ { "name": "...", "keys": "FILE" | [...], "serve": [...], "request": [...] } ],
 *     "workerGroups": [ { "bind": [...], "services": [...], "allowKeys": "FILE" | [...] } ] }
 * Either part may be absent, not both.
 */
export function readAccessFile(path: string): AccessFile {
  const dir = path.includes('/') ? path.slice(0, path.lastIndexOf('/') + 1) : '';
  let raw: { workerGroups?: unknown; keys?: unknown };
  try {
    raw = JSON.parse(readText(path, 'access file')) as { workerGroups?: unknown };
  } catch (err) {
    throw err instanceof SyntaxError ? new Error(`access file ${path}: not JSON: ${err.message}`) : err;
  }
  if (raw === null || typeof raw !== 'object') throw new Error(`access file ${path}: expected a JSON object`);
  if (raw.workerGroups === undefined && raw.keys === undefined) throw new Error(`${path}: needs a "keys" array (grants per key) or a "workerGroups" array`);
  if (raw.workerGroups !== undefined && !Array.isArray(raw.workerGroups)) throw new Error(`${path}: "workerGroups" must be an array`);
  if (raw.keys !== undefined && !Array.isArray(raw.keys)) throw new Error(`${path}: "keys" must be an array`);
  const workerGroups = ((raw.workerGroups ?? []) as { bind?: unknown; services?: unknown; allowKeys?: unknown }[]).map((g, i) => {
    const where = `${path}: workerGroups[${i}]`;
    const bind = typeof g.bind === 'string' ? [g.bind] : g.bind;
    if (!Array.isArray(bind) || bind.length === 0 || !bind.every((b) => typeof b === 'string')) throw new Error(`${where}: "bind" must be an endpoint or a list of them`);
    const services = serviceList(g.services, where, 'services', false) as string[];
    return { bind: bind as string[], services, allowKeys: keyList(g.allowKeys, dir, where, 'allowKeys') };
  });
  const keyGrants = ((raw.keys ?? []) as { name?: unknown; keys?: unknown; serve?: unknown; request?: unknown }[]).map((g, i) => {
    const name = typeof g.name === 'string' ? g.name : `keys[${i}]`;
    const where = `${path}: ${name}`;
    const keys = keyList(g.keys, dir, where, 'keys');
    if (keys === null || keys.length === 0) throw new Error(`${where}: "keys" must name at least one key (a file or a list)`);
    const serve = serviceList(g.serve, where, 'serve', true);
    const request = serviceList(g.request, where, 'request', true);
    if (serve === null && request === null) throw new Error(`${where}: grants nothing: give "serve", "request" or both`);
    return { name, keys, serve, request };
  });
  return { workerGroups, keyGrants };
}
