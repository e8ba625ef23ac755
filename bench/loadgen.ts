// The load generator: a child process (never inside the broker's) that simulates MDP workers and clients.
// Forked by bench/run.ts with a JSON spec as argv[2]; reports progress and the result over IPC.
//
// Every request carries a 16-byte header frame in its body: send time (float64, ms, performance.now()), the
// request's sequence number and the client index. Workers echo the body, so latency is measured from the body.
// In open-loop mode the send time written is the *intended* one, so a late send counts against latency (no
// coordinated omission). Against our broker and the raw proxy the sequence number also travels in a one-frame
// envelope (our pipelining extension), so even error replies, which replace the body, are matched to a request.

import { Context, Dealer, curveKeyPair } from 'zeromq';
import * as hdr from 'hdr-histogram-js';
import { receiveLoop } from '../src/sockets/receive-loop.js';
import { ZmtpDealer } from '../src/zmtp/dealer.js';
import { Client } from '../src/client/client.js';
import { Worker } from '../src/client/worker.js';
import { BrokerError } from '../src/client/errors.js';
import { TIMELINE_MS, type LoadMessage, type LoadResult, type LoadSpec, type Target } from './load-config.js';

interface Args extends LoadSpec {
  target: Target;
  /** Send the sequence number as an envelope frame (ours and raw proxy: yes; external brokers: no). */
  envelope: boolean;
  /** The simulated workers this process runs: indices [workerFrom, workerTo). */
  workerFrom: number;
  workerTo: number;
  /** False for a helper process that only runs workers (a process has ~20,000 file descriptors here: 2 per socket). */
  withClients: boolean;
}

const args = JSON.parse(process.argv[2] ?? '{}') as Args;
const send = (m: LoadMessage) => process.send?.(m);

const EMPTY = Buffer.alloc(0);
const MDPC01 = Buffer.from('MDPC01');
const MDPC02 = Buffer.from('MDPC02');
const MDPW01 = Buffer.from('MDPW01');
const MDPW02 = Buffer.from('MDPW02');
const B = (n: number) => Buffer.from([n]);
const C2_REQUEST = B(1);
const W_READY = B(1);
const W1_REPLY = B(3);
const W2_FINAL = B(4);
const W1_HEARTBEAT = B(4);
const W2_HEARTBEAT = B(5);
const HEADER_BYTES = 16;
// The rest of every body: one shared buffer, never written after creation (zeromq sends >128 B without copying).
const PAD = args.json
  ? Buffer.from(JSON.stringify('a'.repeat(Math.max(0, args.size - HEADER_BYTES - 2))))
  : Buffer.alloc(Math.max(0, args.size - HEADER_BYTES), 0x61);

const myWorkers = args.workerTo - args.workerFrom;
const myClients = args.withClients ? args.clients : 0;
const ctx = new Context({ maxSockets: myWorkers + myClients + 64, blocky: false });
let stopping = false;

/** One simulated peer's connection, whichever ZMTP implementation carries it. */
interface Peer {
  send(msg: Buffer[]): void;
  close(): void;
}
const peers: Peer[] = [];

/** `fast`: the libzmq receive loop's fast style, for peers that receive a lot (clients). */
function openPeer(endpoint: string, onMessage: (frames: Buffer[]) => void, fast: boolean): Peer {
  let peer: Peer;
  if (args.peers === 'zmtp') {
    const d = new ZmtpDealer(endpoint, onMessage, (reason) => {
      // A failover run kills a broker on purpose: its sessions just end.
      if (!stopping && args.killBrokerAtMs === 0) fail(new Error(`connection to ${endpoint} closed: ${reason}`));
    }, { intern: [MDPC01, MDPC02, MDPW01, MDPW02] });
    peer = { send: (msg) => d.send(msg), close: () => d.close() };
  } else {
    const s = new Dealer({ context: ctx, linger: 0, sendTimeout: 0, sendHighWaterMark: 0, receiveHighWaterMark: 0, ...curveOptions() });
    s.connect(endpoint);
    void receiveLoop(s, onMessage, fail, fast);
    peer = { send: (msg) => fire(s, msg), close: () => s.close() };
  }
  peers.push(peer);
  return peer;
}

/** CURVE client options for a libzmq peer (a fresh key pair per peer, as real deployments have), or none. */
function curveOptions(): { curveServerKey: string; curvePublicKey: string; curveSecretKey: string } | Record<string, never> {
  const serverKey = args.target.serverKey;
  if (serverKey === undefined) return {};
  const pair = curveKeyPair();
  return { curveServerKey: serverKey, curvePublicKey: pair.publicKey, curveSecretKey: pair.secretKey };
}

function fail(err: unknown): void {
  send({ type: 'error', message: String((err as Error)?.stack ?? err) });
  process.exit(1);
}

let sendErrors = 0;
function fire(sock: Dealer, msg: Buffer[]): void {
  try {
    sock.send(msg).catch(() => sendErrors++);
  } catch {
    sendErrors++;
  }
}

// ---- workers ----

function startWorker(i: number): void {
  const service = Buffer.from(`svc-${i % args.services}`);
  if (args.target.kind === 'raw') {
    // Zero-logic peer behind the raw proxy: echo [client id, ...frames] as received.
    const peer: Peer = openPeer(args.target.workers, (frames) => reply(peer, frames), false);
    return;
  }
  if (args.peers === 'library') return startLibWorker(service.toString());
  for (const ep of args.target.endpoints ?? [args.target.workers]) startSession(ep, service);
}

/** --peers library: the Worker library, registered at every broker, echoing the body. */
const libWorkers: Worker[] = [];
function startLibWorker(service: string): void {
  const delay = args.serviceTimeMs;
  const handler = delay > 0
    ? (body: Buffer[]) => new Promise<Buffer[]>((r) => setTimeout(() => r(body), delay))
    : (body: Buffer[]) => body;
  libWorkers.push(new Worker({
    endpoints: args.target.endpoints ?? [args.target.workers], service, version: args.version, heartbeatInterval: args.heartbeatInterval, handler,
  }));
}

/** Every simulated worker's session at every broker (each heartbeats). */
const workerPeers: Peer[] = [];

/** One MDP worker session at one broker. */
function startSession(endpoint: string, service: Buffer): void {
  const v1 = args.version === 1;
  const peer: Peer = openPeer(endpoint, (f) => {
    const at = v1 ? 1 : 0;
    const c = f[at + 1]?.[0];
    if (c !== 2) return; // heartbeats need no answer; any command we send counts as one
    const body = f.slice(at + 4);
    const msg = v1 ? [EMPTY, MDPW01, W1_REPLY, f[at + 2], EMPTY, ...body] : [MDPW02, W2_FINAL, f[at + 2], EMPTY, ...body];
    reply(peer, msg);
  }, false);
  peer.send(v1 ? [EMPTY, MDPW01, W_READY, service] : [MDPW02, W_READY, service]);
  workerPeers.push(peer);
}

function reply(peer: Peer, msg: Buffer[]): void {
  if (args.serviceTimeMs > 0) setTimeout(() => peer.send(msg), args.serviceTimeMs);
  else peer.send(msg);
}

// ---- clients ----

let seqNext = 0;
/** Per sequence number: 1 sent, 2 answered. Grows by doubling. */
let state = new Uint8Array(1 << 16);
let answered = 0;
let duplicates = 0;
let unmatchedErrors = 0;
const errors: Record<string, number> = {};
const histogram = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: 3 });
let recording = false;
let windowReplies = 0;
let totalReplies = 0;

interface SimClient {
  peer: Peer;
  index: number;
  inflight: number;
  nextService: number;
}
const clients: SimClient[] = [];
const serviceFrames = Array.from({ length: args.services }, (_, i) => Buffer.from(`svc-${i}`));

/** A new sequence number, marked sent, and the header frame that carries it with the send time. */
function newRequest(at: number, client: number): { seq: number; head: Buffer } {
  const seq = seqNext++;
  if (seq >= state.length) {
    const bigger = new Uint8Array(state.length * 2);
    bigger.set(state);
    state = bigger;
  }
  state[seq] = 1;
  let head: Buffer;
  if (args.json) head = Buffer.from(JSON.stringify([at, seq, client]));
  else {
    head = Buffer.allocUnsafe(HEADER_BYTES);
    head.writeDoubleLE(at, 0);
    head.writeUInt32LE(seq, 8);
    head.writeUInt32LE(client, 12);
  }
  return { seq, head };
}

function sendRequest(c: SimClient, at: number): void {
  const { seq, head } = newRequest(at, c.index);
  const svc = serviceFrames[c.nextService];
  c.nextService = (c.nextService + 1) % args.services;
  const msg: Buffer[] = [];
  if (args.envelope) {
    const env = Buffer.allocUnsafe(4);
    env.writeUInt32BE(seq);
    msg.push(env, EMPTY);
  } else if (args.version === 1) msg.push(EMPTY);
  if (args.version === 1) msg.push(MDPC01, svc, head);
  else msg.push(MDPC02, C2_REQUEST, svc, head);
  if (PAD.length > 0) msg.push(PAD);
  c.inflight++;
  c.peer.send(msg);
}

function onReply(c: SimClient, f: Buffer[]): void {
  let at = 0;
  let seq = -1;
  if (args.envelope) {
    seq = f[0].readUInt32BE(0);
    at = 2;
  } else if (args.version === 1) at = 1;
  // header [cmd] service body...
  const bodyAt = at + (args.version === 1 ? 2 : 3);
  const first = f[bodyAt];
  if (args.version === 2 && f[at + 1]?.[0] === 2) return; // PARTIAL: not expected from echo workers
  c.inflight--;
  totalReplies++;
  const isError = first !== undefined && first.length === 6 && first[0] === 0 && f.length === bodyAt + 3;
  if (isError) {
    const code = f[bodyAt + 1].toString();
    errors[code] = (errors[code] ?? 0) + 1;
    if (seq < 0) unmatchedErrors++;
  } else {
    let sentAt: number;
    if (args.json) {
      const h = JSON.parse(first.toString()) as [number, number, number];
      sentAt = h[0];
      if (seq < 0) seq = h[1];
    } else {
      sentAt = first.readDoubleLE(0);
      if (seq < 0) seq = first.readUInt32LE(8);
    }
    if (recording) {
      windowReplies++;
      histogram.recordValue(Math.max(1, Math.round((performance.now() - sentAt) * 1000)));
    }
  }
  if (seq >= 0) {
    if (state[seq] === 2) duplicates++;
    else if (state[seq] === 1) {
      state[seq] = 2;
      answered++;
    }
  }
  if (!stopping && args.mode === 'closed') sendRequest(c, performance.now());
}

// ---- library clients (failover runs) ----

/** Failover runs use the Client library: it connects to every broker and moves what a dead one held. */
const libClients: Client[] = [];
const timeline: number[] = [];
let timelineFrom = 0;

function countReply(): void {
  if (!recording) return;
  const b = Math.floor((performance.now() - timelineFrom) / TIMELINE_MS);
  while (timeline.length <= b) timeline.push(0);
  timeline[b]++;
}

function startLibClient(i: number): void {
  const eps = args.target.endpoints ?? [args.target.clients];
  // Failover runs resend within a short window; plain library runs use the Client's defaults, as an app would.
  const client = args.killBrokerAtMs > 0
    ? new Client({ endpoints: eps, version: args.version, timeout: 2000, retries: 5 })
    : new Client({ endpoints: eps, version: args.version });
  libClients.push(client);
  let next = i % args.services;
  const loop = async (): Promise<void> => {
    while (!stopping) {
      const at = performance.now();
      const { seq, head } = newRequest(at, i);
      const svc = `svc-${next}`;
      next = (next + 1) % args.services;
      try {
        const reply = await client.request(svc, PAD.length > 0 ? [head, PAD] : [head]);
        totalReplies++;
        if (!reply[0]?.equals(head)) duplicates++; // someone else's reply: counted with the duplicates
        if (recording) {
          windowReplies++;
          histogram.recordValue(Math.max(1, Math.round((performance.now() - at) * 1000)));
          countReply();
        }
      } catch (err) {
        const code = err instanceof BrokerError ? err.code : (err as Error).name;
        errors[code] = (errors[code] ?? 0) + 1;
      }
      state[seq] = 2;
      answered++;
    }
  };
  for (let k = 0; k < args.window; k++) void loop();
}

function startClient(i: number): void {
  // No reply can arrive before the first request, which goes out after `c` is set.
  let c: SimClient;
  const eps = args.target.endpoints;
  const peer = openPeer(eps ? eps[i % eps.length] : args.target.clients, (f) => onReply(c, f), true);
  c = { peer, index: i, inflight: 0, nextService: i % args.services };
  clients.push(c);
}

// ---- run ----

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function main(): Promise<void> {
  for (let i = args.workerFrom; i < args.workerTo; i++) startWorker(i);
  let heartbeat: NodeJS.Timeout | null = null;
  if (args.target.kind === 'mdp') {
    const frame = args.version === 1 ? [EMPTY, MDPW01, W1_HEARTBEAT] : [MDPW02, W2_HEARTBEAT];
    heartbeat = setInterval(() => {
      for (const p of workerPeers) p.send(frame);
    }, args.heartbeatInterval);
  }
  const library = args.killBrokerAtMs > 0 || args.peers === 'library';
  if (!library) for (let i = 0; i < myClients; i++) startClient(i);
  // Let connections and READYs settle before load starts (1,000 workers take a moment).
  await sleep(200 + myWorkers / 2);
  send({ type: 'ready' });
  if (!args.withClients) return; // a workers-only helper serves until the orchestrator disconnects

  const t0 = performance.now();
  let openTimer: NodeJS.Timeout | null = null;
  if (library) {
    for (let i = 0; i < myClients; i++) startLibClient(i);
  } else if (args.mode === 'closed') {
    for (const c of clients) for (let k = 0; k < args.window; k++) sendRequest(c, performance.now());
  } else {
    let issued = 0;
    let rr = 0;
    const interval = 1000 / args.rate;
    openTimer = setInterval(() => {
      const now = performance.now();
      const due = Math.floor((now - t0) / interval);
      while (issued < due && !stopping) {
        sendRequest(clients[rr], t0 + issued * interval);
        rr = (rr + 1) % clients.length;
        issued++;
      }
    }, 1);
  }
  const total = args.warmupMs + args.durationMs;
  const progress = setInterval(() => {
    const el = performance.now() - t0;
    send({ type: 'progress', phase: el < args.warmupMs ? 'warmup' : 'measure', elapsedMs: el, totalMs: total, replies: totalReplies });
  }, 250);

  await sleep(args.warmupMs);
  send({ type: 'window-start' });
  const cpu0 = process.cpuUsage();
  const w0 = performance.now();
  timelineFrom = w0;
  recording = true;
  await sleep(args.durationMs);
  recording = false;
  const windowMs = performance.now() - w0;
  const cpu = process.cpuUsage(cpu0);
  send({ type: 'window-end' });
  stopping = true;
  if (openTimer) clearInterval(openTimer);
  clearInterval(progress);

  // Drain: everything sent must come back (a reply or an error reply) before we call anything lost.
  const drainUntil = performance.now() + Math.max(5000, args.serviceTimeMs * 4);
  while (answered + unmatchedErrors < seqNext && performance.now() < drainUntil) {
    send({ type: 'progress', phase: 'drain', elapsedMs: total, totalMs: total, replies: totalReplies });
    await sleep(50);
  }
  if (heartbeat) clearInterval(heartbeat);
  let unanswered = 0;
  for (let s = 0; s < seqNext; s++) if (state[s] === 1) unanswered++;
  // Without the envelope an error reply cannot name its request; it still accounts for one.
  const lost = Math.max(0, unanswered - unmatchedErrors);

  const result: LoadResult = {
    replies: windowReplies,
    windowMs,
    throughput: (windowReplies * 1000) / windowMs,
    p50: histogram.getValueAtPercentile(50),
    p99: histogram.getValueAtPercentile(99),
    p999: histogram.getValueAtPercentile(99.9),
    max: histogram.maxValue,
    mean: histogram.mean,
    sent: seqNext,
    answered: answered + unmatchedErrors,
    errors: sendErrors > 0 ? { ...errors, 'send-failed': sendErrors } : errors,
    lost,
    duplicates,
    generatorCpuUsPerReq: windowReplies > 0 ? (cpu.user + cpu.system) / windowReplies : 0,
    ...(library ? { timeline } : {}),
  };
  for (const c of libClients) c.close();
  for (const w of libWorkers) void w.close();
  send({ type: 'result', result });
  for (const p of peers) p.close();
  process.disconnect?.();
}

process.on('disconnect', () => process.exit(0));
main().catch((err: unknown) => {
  send({ type: 'error', message: String((err as Error)?.stack ?? err) });
  process.exit(1);
});
