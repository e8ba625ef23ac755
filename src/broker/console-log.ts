// A LogFn for a broker started from code that should log like the CLI does (JSON lines) without bringing a logger:
// new Broker({ log: consoleLog('info') }). A Broker logs nothing by default: a library does not write to its
// host's output unasked.

import type { LogFn, LogLevel } from '../core/broker-core.js';

const RANK: Record<LogLevel, number> = { debug: 20, info: 30, warn: 40 };

/** JSON lines on stderr (`{"level":"info","time":...,"msg":...,...fields}`) at `level` and above. */
export function consoleLog(level: LogLevel = 'info', write: (line: string) => void = (line) => process.stderr.write(line)): LogFn {
  const min = RANK[level];
  return (lvl, msg, fields) => {
    if (RANK[lvl] < min) return;
    write(`${JSON.stringify({ level: lvl, time: Date.now(), msg, ...fields })}\n`);
  };
}
