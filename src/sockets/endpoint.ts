// Endpoint syntax, checked before zeromq sees it: zeromq's own answer to a typo is a bare "Invalid argument".

const SCHEMES = new Set(['tcp', 'ipc', 'inproc', 'ws', 'wss', 'pgm', 'epgm', 'udp']);

/** Why `endpoint` cannot be connected to, or null when it looks right. */
export function endpointProblem(endpoint: string): string | null {
  const m = /^([a-z]+):\/\/(.+)$/.exec(endpoint);
  if (m === null) return 'expected SCHEME://ADDRESS, e.g. tcp://127.0.0.1:5555';
  if (!SCHEMES.has(m[1])) return `unknown scheme "${m[1]}" (tcp, ipc, inproc, ws, wss, pgm, epgm, udp)`;
  if (m[1] === 'tcp') {
    const port = /:(\d+)$/.exec(m[2]);
    if (port === null) return 'a tcp endpoint needs HOST:PORT';
    if (Number(port[1]) < 1 || Number(port[1]) > 65535) return `port ${port[1]} is out of range`;
    if (m[2].startsWith('*') || m[2].startsWith(':')) return 'a client connects to a host, not to * (that is for bind)';
  }
  return null;
}
