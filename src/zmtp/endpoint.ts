// ZeroMQ endpoint strings for the transports node:net can serve: tcp://HOST:PORT (HOST may be * for every
// interface, PORT may be * or 0 for one the OS picks) and ipc://PATH (ipc://@NAME: a Linux abstract socket).

import type { ListenOptions } from 'node:net';

export type Endpoint = { kind: 'tcp'; host: string; port: number } | { kind: 'ipc'; path: string };

/** Null when node:net cannot serve it (inproc://, pgm://, a malformed string). */
export function parseEndpoint(endpoint: string): Endpoint | null {
  const tcp = /^tcp:\/\/(\[[^\]]+\]|[^:/]+):(\*|\d{1,5})$/.exec(endpoint);
  if (tcp) {
    const host = tcp[1] === '*' ? '0.0.0.0' : tcp[1].replace(/^\[|\]$/g, '');
    const port = tcp[2] === '*' ? 0 : Number(tcp[2]);
    return port > 65535 ? null : { kind: 'tcp', host, port };
  }
  const ipc = /^ipc:\/\/(.+)$/.exec(endpoint);
  if (ipc) return { kind: 'ipc', path: ipc[1].startsWith('@') ? `\0${ipc[1].slice(1)}` : ipc[1] };
  return null;
}

export function listenOptions(ep: Endpoint): ListenOptions {
  return ep.kind === 'tcp' ? { host: ep.host, port: ep.port } : { path: ep.path };
}

/** The endpoint as bound, in ZeroMQ's spelling (the port resolved). */
export function formatEndpoint(ep: Endpoint, port: number): string {
  if (ep.kind === 'ipc') return `ipc://${ep.path.startsWith('\0') ? `@${ep.path.slice(1)}` : ep.path}`;
  return `tcp://${ep.host.includes(':') ? `[${ep.host}]` : ep.host}:${port}`;
}
