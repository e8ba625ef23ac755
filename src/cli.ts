#!/usr/bin/env node
// mdbroker command line: parse flags, run a Broker, log structured JSON (pino), stop cleanly on SIGINT/SIGTERM.

import { parseArgs } from 'node:util';
import { existsSync, readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { pino } from 'pino';
import { Broker } from './broker/broker.js';
import { DEFAULT_BROKER_OPTIONS, type Transport } from './broker/options.js';
import { ConfigError } from './broker/config-error.js';
import { readConfigFile } from './config-file.js';
import { statusCommand } from './status-command.js';
import { DEFAULT_LIMITS } from './protocol/codec.js';
import type { LogFn } from './core/broker-core.js';
import { OFFLOAD_MODES, type OffloadMode } from './broker/offload.js';
import { keygen, readAccessFile, readAllowList, readSecretKeyFile, type KeyPair, type AccessFile } from './broker/security.js';

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };

const d = DEFAULT_BROKER_OPTIONS;
const HELP = `mdbroker ${pkg.version}: a Majordomo (MDP/0.1, MDP/0.2, MMI) broker for ZeroMQ

Usage: mdbroker [options]

  --bind ENDPOINT            endpoint to bind; repeatable (default ${d.bind[0]})
  --heartbeat-interval MS    heartbeat period, both ways (default ${d.heartbeatInterval})
  --heartbeat-liveness N     worker dead after N silent intervals (default ${d.heartbeatLiveness})
  --busy-timeout MS          expire a worker holding one request this long (default ${d.busyTimeout})
  --max-attempts N           dispatches per request before 'failed' (default ${d.maxAttempts})
  --request-ttl MS           how long a request may wait for a worker (default ${d.requestTtl})
  --max-queue N              requests one service may queue (default ${d.maxQueue})
  --max-queued-bytes N       bytes of requests the broker may hold, queued or at workers; past it new requests
                             get \`overloaded\` at once (default ${d.maxHeldBytes}, 256 MiB)
  --max-client-bytes N       of those, what one client's requests may hold (default ${d.maxClientBytes}, 64 MiB)
  --max-frames N             frames per message (default ${DEFAULT_LIMITS.maxFrames})
  --max-frame-bytes N        bytes per frame (default ${DEFAULT_LIMITS.maxFrameBytes})
  --max-service-name N       bytes per service name (default ${DEFAULT_LIMITS.maxServiceName})
  --transport NAME           zmtp (ZMTP and CURVE spoken by the broker itself) or libzmq (the zeromq binding);
                             inproc:// endpoints and --access groups always use libzmq (default ${d.transport})
  --peer-queue-bytes N       zmtp: unwritten bytes for one peer past which it is not read and sends to it fail (default ${d.peerQueueBytes})
  --handshake-timeout MS     zmtp: close a connection that has not finished its handshake (default ${d.handshakeTimeout})
  --hwm N                    libzmq: send/receive high-water mark per peer, in messages (default ${d.sendHighWaterMark})
  --shutdown-grace MS        on SIGINT/SIGTERM, time busy workers get to reply (default ${d.shutdownGrace})
  --stats-interval MS        stats aggregation and a summary log line every MS; 0 = no line (default ${d.statsInterval})
  --metrics-port PORT        serve Prometheus metrics on http://HOST:PORT/metrics (0 = any free port)
  --metrics-host HOST        address for the metrics endpoint (default ${d.metricsHost})
  --validate CHECK           check request bodies before queueing; repeatable:
                             utf8[@SERVICE], json[@SERVICE], max-body=N[@SERVICE], module=PATH
  --offload MODE             none, stats, validation or all: what runs in the worker-thread pool (default ${d.offload})
  --offload-threads N        threads in that pool (default ${d.offloadThreads})
  --shards N                 N worker threads, each a whole broker for the connections it accepts on the same
                             endpoints; requests cross threads only where the workers are (default ${d.shards})
  --titanic DIR|URL          serve RFC 9's titanic.request/reply/close from a durable store: a directory (LMDB,
                             one broker), or postgres://user:pass@host:port/db, shared by any number of brokers
  --titanic-max-bytes N      bytes the store may hold; past it titanic.request answers 500 (default ${d.titanicMaxBytes})
  --titanic-retention MS     delete stored requests and replies older than this (default ${d.titanicRetention})
  --titanic-hold MS          titanic.reply for a pending request waits this long for the reply before it says
                             300, and answers 200 the moment the reply is stored; 0 = at once (default ${d.titanicHold})
  --worker-credit N          zmtp: requests one worker connection may hold at once when the worker
                             offers credit (README, What the broker speaks); 1 = MDP's one at a time (default ${d.workerCredit})
  --curve-secret-key FILE    turn on CURVE encryption with this key pair (see 'mdbroker keygen')
  --allow-clients FILE       with CURVE: public keys allowed to connect as clients (one per line)
  --allow-workers FILE       with CURVE: public keys allowed to connect as workers (one per line)
  --access FILE              with CURVE: services per key ("keys") or worker endpoints per group ("workerGroups"); JSON, see README, Security

  --log-level LEVEL          debug, info, warn, error or silent (default info)
  -c, --config FILE          read these flags from a JSON file ({"bind": ["tcp://*:5555"], "heartbeat-interval":
                             2500, ...}: keys are the long names above); flags given here override it
  -h, --help                 this text
  -v, --version              the version

  mdbroker status ENDPOINT [--json] [--curve-server-key KEY]
                             list a running broker's services, workers and queue depths (over MDP; --help for more)
  mdbroker keygen NAME [--force]
                             write a CURVE key pair to NAME.key (secret, mode 0600) and NAME.pub;
                             an existing pair is replaced only with --force

Logs are JSON lines on stdout. SIGINT/SIGTERM: stop taking requests, let busy workers finish
(--shutdown-grace), tell every worker DISCONNECT, exit 0. SIGHUP: read the allow lists, the access file and
the config file again (log level too; other settings need a restart), without dropping a connection.
`;

const LOG_LEVELS = ['debug', 'info', 'warn', 'error', 'silent'];
const LOG_LEVELS_TEXT = 'debug, info, warn, error or silent';

const spec = {
  bind: { type: 'string', multiple: true },
  'heartbeat-interval': { type: 'string' },
  'heartbeat-liveness': { type: 'string' },
  'busy-timeout': { type: 'string' },
  'max-attempts': { type: 'string' },
  'request-ttl': { type: 'string' },
  'max-queue': { type: 'string' },
  'max-queued-bytes': { type: 'string' },
  'max-client-bytes': { type: 'string' },
  'worker-credit': { type: 'string' },
  titanic: { type: 'string' },
  'titanic-max-bytes': { type: 'string' },
  'titanic-retention': { type: 'string' },
  'titanic-hold': { type: 'string' },
  'max-frames': { type: 'string' },
  'max-frame-bytes': { type: 'string' },
  'max-service-name': { type: 'string' },
  transport: { type: 'string' },
  'peer-queue-bytes': { type: 'string' },
  'handshake-timeout': { type: 'string' },
  hwm: { type: 'string' },
  'shutdown-grace': { type: 'string' },
  'stats-interval': { type: 'string' },
  'metrics-port': { type: 'string' },
  'metrics-host': { type: 'string' },
  validate: { type: 'string', multiple: true },
  offload: { type: 'string' },
  'offload-threads': { type: 'string' },
  shards: { type: 'string' },
  'curve-secret-key': { type: 'string' },
  'allow-clients': { type: 'string' },
  'allow-workers': { type: 'string' },
  access: { type: 'string' },
  'log-level': { type: 'string' },
  config: { type: 'string', short: 'c' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean', short: 'v' },
} as const;

function int(values: Record<string, unknown>, name: string, fallback: number, min = 1, max = Number.MAX_SAFE_INTEGER): number {
  const raw = values[name];
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new ConfigError(name, `--${name} must be an integer ${max === Number.MAX_SAFE_INTEGER ? `>= ${min}` : `from ${min} to ${max}`}, got '${String(raw)}'`);
  }
  return n;
}

function curveOptions(values: Record<string, unknown>): { curveKeys: KeyPair | null; allowKeys: string[] | null; clientKeys: string[] | null; workerKeys: string[] | null } & AccessFile {
  const keyFile = values['curve-secret-key'] as string | undefined;
  const lists = [values['allow-clients'], values['allow-workers']].filter((f): f is string => typeof f === 'string');
  const access = values.access as string | undefined;
  if (!keyFile) {
    if (lists.length > 0 || access) throw new ConfigError('curve-secret-key', '--allow-clients, --allow-workers and --access need --curve-secret-key');
    return { curveKeys: null, allowKeys: null, clientKeys: null, workerKeys: null, workerGroups: [], keyGrants: [] };
  }
  try {
    const curveKeys = readSecretKeyFile(keyFile);
    // libzmq's ZAP sees a connecting key, not whether it will act as client or worker: the lists are joined.
    // A key must be on one of the lists to connect at all; the zmtp transport then holds each to its role(s).
    const allowKeys = lists.length === 0 ? null : [...new Set(lists.flatMap((f) => [...readAllowList(f)]))];
    const list = (flag: string) => (typeof values[flag] === 'string' ? [...readAllowList(values[flag] as string)] : null);
    return { curveKeys, allowKeys, clientKeys: list('allow-clients'), workerKeys: list('allow-workers'), ...(access ? readAccessFile(access) : { workerGroups: [], keyGrants: [] }) };
  } catch (err) {
    throw new ConfigError('curve-secret-key', (err as Error).message);
  }
}

function offloadMode(raw: unknown): OffloadMode {
  if (raw === undefined) return d.offload;
  if (!OFFLOAD_MODES.includes(raw as OffloadMode)) throw new ConfigError('offload', `--offload must be one of ${OFFLOAD_MODES.join(', ')}, got '${String(raw)}'`);
  return raw as OffloadMode;
}

function main(argv: string[]): void {
  if (argv[0] === 'status') {
    void statusCommand(argv.slice(1), (t) => process.stdout.write(t), (t) => process.stderr.write(t)).then((code) => {
      process.exitCode = code;
    });
    return;
  }
  if (argv[0] === 'keygen') {
    const force = argv.includes('--force');
    const rest = argv.slice(1).filter((a) => a !== '--force');
    const name = rest[0];
    if (!name || rest.length > 1) return usage('usage: mdbroker keygen NAME [--force]   (writes NAME.key and NAME.pub)');
    const existing = [`${name}.key`, `${name}.pub`].filter((f) => existsSync(f));
    // A key pair that clients and workers already trust is not replaced by accident.
    if (existing.length > 0 && !force) return usage(`${existing.join(' and ')} already exist${existing.length === 1 ? 's' : ''}; add --force to replace the key pair`);
    let pair: KeyPair;
    try {
      pair = keygen(name);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      process.stderr.write(`mdbroker: cannot write ${name}.key: ${e.code === 'ENOENT' ? `no directory ${JSON.stringify(dirname(name))}` : e.code === 'EACCES' ? 'permission denied' : e.message}\n`);
      process.exitCode = 1;
      return;
    }
    process.stdout.write(`wrote ${name}.key (secret, mode 0600) and ${name}.pub\npublic key: ${pair.publicKey}\n`);
    return;
  }
  let values: Record<string, unknown>;
  try {
    values = parseArgs({ args: argv, options: spec, strict: true, allowPositionals: false }).values;
  } catch (err) {
    return usage((err as Error).message);
  }
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  if (values.version) {
    process.stdout.write(`${pkg.version}\n`);
    return;
  }
  const commandLine = values;
  if (typeof values.config === 'string') {
    // The file first, the command line over it.
    try {
      values = { ...readConfigFile(values.config, spec), ...commandLine };
    } catch (err) {
      if (err instanceof ConfigError) return usage(err.message);
      throw err;
    }
  }
  const level = String(values['log-level'] ?? 'info');
  if (!LOG_LEVELS.includes(level)) return usage(`--log-level must be ${LOG_LEVELS_TEXT}, got '${level}'`);
  let broker: Broker;
  // Synchronous writes: lines appear in the order they were logged, also right before process.exit.
  const logger = pino({ level, base: { name: 'mdbroker' } }, pino.destination({ dest: 1, sync: true }));
  const log: LogFn = (lvl, msg, fields) => logger[lvl](fields ?? {}, msg);
  try {
    broker = new Broker({
      bind: (values.bind as string[] | undefined) ?? d.bind,
      heartbeatInterval: int(values, 'heartbeat-interval', d.heartbeatInterval),
      heartbeatLiveness: int(values, 'heartbeat-liveness', d.heartbeatLiveness),
      busyTimeout: int(values, 'busy-timeout', d.busyTimeout),
      maxAttempts: int(values, 'max-attempts', d.maxAttempts),
      requestTtl: int(values, 'request-ttl', d.requestTtl),
      maxQueue: int(values, 'max-queue', d.maxQueue),
      maxHeldBytes: int(values, 'max-queued-bytes', d.maxHeldBytes),
      maxClientBytes: int(values, 'max-client-bytes', d.maxClientBytes),
      limits: {
        ...DEFAULT_LIMITS,
        maxFrames: int(values, 'max-frames', DEFAULT_LIMITS.maxFrames, 3),
        maxFrameBytes: int(values, 'max-frame-bytes', DEFAULT_LIMITS.maxFrameBytes),
        maxServiceName: int(values, 'max-service-name', DEFAULT_LIMITS.maxServiceName),
      },
      transport: (values.transport as Transport | undefined) ?? d.transport,
      peerQueueBytes: int(values, 'peer-queue-bytes', d.peerQueueBytes),
      handshakeTimeout: int(values, 'handshake-timeout', d.handshakeTimeout),
      sendHighWaterMark: int(values, 'hwm', d.sendHighWaterMark, 0),
      receiveHighWaterMark: int(values, 'hwm', d.receiveHighWaterMark, 0),
      shutdownGrace: int(values, 'shutdown-grace', d.shutdownGrace, 0),
      statsInterval: int(values, 'stats-interval', d.statsInterval, 0),
      metricsPort: values['metrics-port'] === undefined ? null : int(values, 'metrics-port', 0, 0, 65535),
      metricsHost: (values['metrics-host'] as string | undefined) ?? d.metricsHost,
      validate: (values.validate as string[] | undefined) ?? [],
      offload: offloadMode(values.offload),
      offloadThreads: int(values, 'offload-threads', d.offloadThreads),
      shards: int(values, 'shards', d.shards),
      workerCredit: int(values, 'worker-credit', d.workerCredit),
      titanic: (values.titanic as string | undefined) ?? d.titanic,
      titanicMaxBytes: int(values, 'titanic-max-bytes', d.titanicMaxBytes),
      titanicRetention: int(values, 'titanic-retention', d.titanicRetention),
      titanicHold: int(values, 'titanic-hold', d.titanicHold, 0),
      ...curveOptions(values),
      logLevel: level === 'debug' ? 'debug' : level === 'info' ? 'info' : 'warn',
      log,
    });
  } catch (err) {
    if (err instanceof ConfigError) return usage((err as Error).message);
    throw err;
  }
  let stopping = false;
  // The broker logs its own "mdbroker listening" line (endpoints, metrics port, version, pid) once it serves.
  const started = broker.start().then(
    () => undefined,
    (err: unknown) => {
      logger.error({ err: String(err) }, startupFailure(err));
      process.exit(1);
    },
  );
  const stop = (signal: string) => {
    if (stopping) {
      logger.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    stopping = true;
    logger.info({ signal }, 'shutting down');
    // A signal during start-up: let the start finish (or fail) first, then close what it opened.
    started.then(() => broker.close()).then(
      () => {
        logger.info({ stats: broker.stats() }, 'stopped');
        process.exit(0);
      },
      (err: unknown) => {
        logger.error({ err: String(err) }, 'stopped, with an error while closing');
        process.exit(1);
      },
    );
  };
  // A shard thread died: what it held is gone. Say so, let the other shards drain, and exit non-zero so that a
  // supervisor starts a whole broker again.
  broker.on('error', (err) => {
    logger.error({ err: err.message }, 'broker failed; shutting down');
    process.exitCode = 1;
    if (stopping) return;
    stopping = true;
    void broker.close().finally(() => process.exit(1));
  });
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  // SIGHUP: read the allow lists, the access file and the config file again, without dropping a connection.
  let inForce = values;
  process.on('SIGHUP', () => {
    if (stopping) return;
    const next = reloadSettings(commandLine, inForce, broker, logger);
    if (next !== null) inForce = next;
  });
}

/** The log line for a broker that could not start: the real cause, in words. */
/** Settings SIGHUP applies; every other flag needs a restart. */
const RELOADABLE = new Set(['allow-clients', 'allow-workers', 'access', 'log-level']);

/**
 * SIGHUP: the settings read again (config file, then the command line over it) and the CURVE lists applied; the
 * new settings, or null when something could not be read (the settings in force stay, and the log says why).
 */
function reloadSettings(commandLine: Record<string, unknown>, inForce: Record<string, unknown>, broker: Broker, logger: pino.Logger): Record<string, unknown> | null {
  let next: Record<string, unknown>;
  let lists: ReturnType<typeof curveOptions>;
  try {
    next = typeof commandLine.config === 'string' ? { ...readConfigFile(commandLine.config, spec), ...commandLine } : commandLine;
    const level = String(next['log-level'] ?? 'info');
    if (!LOG_LEVELS.includes(level)) throw new ConfigError('log-level', `log-level must be ${LOG_LEVELS_TEXT}, got '${level}'`);
    lists = curveOptions(next);
  } catch (err) {
    logger.warn({ err: (err as Error).message }, 'SIGHUP: reload failed; the settings in force stay');
    return null;
  }
  const changed = Object.keys({ ...inForce, ...next }).filter((k) => JSON.stringify(inForce[k]) !== JSON.stringify(next[k]));
  const restart = changed.filter((k) => !RELOADABLE.has(k));
  if (restart.length > 0) logger.warn({ settings: restart }, 'SIGHUP: these settings changed and take effect at the next start');
  const o = broker.opts;
  const diff = (was: string[] | null, now: string[] | null) => {
    const a = new Set(was ?? []);
    const b = new Set(now ?? []);
    return { added: [...b].filter((k) => !a.has(k)).length, removed: [...a].filter((k) => !b.has(k)).length, any: now === null };
  };
  const what = {
    allowClients: diff(o.clientKeys, lists.clientKeys),
    allowWorkers: diff(o.workerKeys, lists.workerKeys),
    keyGrants: JSON.stringify(o.keyGrants) === JSON.stringify(lists.keyGrants) ? 'unchanged' : `${lists.keyGrants.length} grants`,
  };
  // Access groups are endpoints of their own: their lists reload, the groups themselves need a restart.
  const sameGroups = JSON.stringify(o.workerGroups.map((g) => [g.bind, g.services])) === JSON.stringify(lists.workerGroups.map((g) => [g.bind, g.services]));
  if (!sameGroups) logger.warn({}, 'SIGHUP: the access groups (endpoints or services) changed and take effect at the next start; their allow lists are reloaded where the groups match');
  broker.reload({
    allowKeys: lists.allowKeys, clientKeys: lists.clientKeys, workerKeys: lists.workerKeys, keyGrants: lists.keyGrants,
    workerGroups: sameGroups ? lists.workerGroups : o.workerGroups,
  });
  const level = String(next['log-level'] ?? 'info');
  if (logger.level !== level) logger.level = level;
  logger.info({ changed: changed.filter((k) => RELOADABLE.has(k)), ...what, logLevel: level }, 'SIGHUP: reloaded');
  return next;
}

function startupFailure(err: unknown): string {
  const e = err as { code?: string; message?: string; address?: string; port?: number };
  const where = e.address === undefined ? '' : ` ${e.address}${e.port === undefined ? '' : `:${e.port}`}`;
  if (e.code === 'EADDRINUSE') return `cannot bind${where}: in use (is another broker, or another server, on it?)`;
  if (e.code === 'EACCES') return `cannot bind${where}: permission denied`;
  if (e.code === 'EADDRNOTAVAIL') return `cannot bind${where}: that address is not on this machine`;
  return `cannot start: ${e.message ?? String(err)}`;
}

function usage(msg: string): void {
  process.stderr.write(`mdbroker: ${msg}\nTry 'mdbroker --help'.\n`);
  process.exitCode = 2;
}

main(process.argv.slice(2));
