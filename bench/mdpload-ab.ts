// Two builds of the broker (or one build in two configs) measured with the C yardstick, ../shared/mdpload, in one
// run: A B A B ... each on a fresh broker process, then the medians and B/A. The way to say "this change keeps (or
// moves) throughput and CPU per request" on a shared, noisy machine.
//
//   node dist/bench/mdpload-ab.js --a OLD/dist/src/cli.js --b dist/src/cli.js --mdpload /tmp/mdpload/mdpload \
//     [--repeat 3] [--a-flags "--shards 2"] [--b-flags ...] -- --workers 100 --clients 50 --window 16 --size 100
//
// Everything after `--` goes to mdpload as it is (it is given --broker and --broker-pid here).

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { parseArgs } from 'node:util';

interface Sample {
  msgsPerSec: number;
  cpuUsPerReq: number;
  p50Us: number;
  p99Us: number;
  lost: number;
}

const split = process.argv.indexOf('--');
const own = split < 0 ? process.argv.slice(2) : process.argv.slice(2, split);
const loadArgs = split < 0 ? ['--workers', '100', '--clients', '50', '--window', '16', '--size', '100'] : process.argv.slice(split + 1);
const { values } = parseArgs({
  args: own,
  options: {
    a: { type: 'string' },
    b: { type: 'string' },
    'a-flags': { type: 'string', default: '' },
    'b-flags': { type: 'string', default: '' },
    mdpload: { type: 'string', default: '../shared/mdpload/mdpload' },
    repeat: { type: 'string', default: '3' },
    seconds: { type: 'string', default: '6' },
  },
});
if (!values.a || !values.b) {
  console.error('usage: mdpload-ab --a CLI.js --b CLI.js [--a-flags "..."] [--b-flags "..."] [--mdpload PATH] [--repeat N] -- MDPLOAD ARGS');
  process.exit(2);
}

async function once(cli: string, flags: string): Promise<Sample> {
  const broker = await spawnBrokerAt(cli, ['--bind', 'tcp://127.0.0.1:*', '--stats-interval', '0', ...flags.split(' ').filter(Boolean)]);
  try {
    const pid = String(broker.child.pid);
    const run = spawnSync(values.mdpload as string, [
      '--broker', broker.endpoint, '--broker-pid', pid, '--seconds', values.seconds as string, '--warmup', '1', '--drain', '2', ...loadArgs,
    ], { encoding: 'utf8', timeout: 120000 });
    if (run.status !== 0) throw new Error(`mdpload failed: ${run.stderr}`);
    const r = JSON.parse(run.stdout) as { msgs_per_sec: number; broker_cpu_pct: number; lat_us: { p50: number; p99: number }; lost: number };
    return { msgsPerSec: r.msgs_per_sec, cpuUsPerReq: (r.broker_cpu_pct / 100) * 1e6 / r.msgs_per_sec, p50Us: r.lat_us.p50, p99Us: r.lat_us.p99, lost: r.lost };
  } finally {
    broker.child.kill('SIGKILL');
    await new Promise((r) => broker.child.once('exit', r));
  }
}

/** Starts the mdbroker CLI at this path (any build) and waits for its "mdbroker listening" line. */
function spawnBrokerAt(cli: string, flags: string[]): Promise<{ child: ChildProcess; endpoint: string }> {
  const child = spawn(process.execPath, [cli, ...flags], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    let buf = '';
    child.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      const m = /"endpoints":\["([^"]+)"/.exec(buf);
      if (m) resolve({ child, endpoint: m[1] });
    });
    child.once('exit', (code) => reject(new Error(`${cli} exited with ${code}`)));
  });
}

const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];

async function main(): Promise<void> {
  const runs: Record<'a' | 'b', Sample[]> = { a: [], b: [] };
  for (let i = 0; i < Number(values.repeat); i++) {
    for (const which of ['a', 'b'] as const) {
      const s = await once(values[which] as string, values[`${which}-flags`] as string);
      runs[which].push(s);
      console.error(`${which} #${i + 1}: ${Math.round(s.msgsPerSec)} msgs/s, ${s.cpuUsPerReq.toFixed(1)} us/req, p50 ${s.p50Us} us, p99 ${s.p99Us} us, lost ${s.lost}`);
    }
  }
  const med = (w: 'a' | 'b') => ({
    msgsPerSec: median(runs[w].map((s) => s.msgsPerSec)),
    cpuUsPerReq: median(runs[w].map((s) => s.cpuUsPerReq)),
    p50Us: median(runs[w].map((s) => s.p50Us)),
    p99Us: median(runs[w].map((s) => s.p99Us)),
    lost: runs[w].reduce((n, s) => n + s.lost, 0),
  });
  const a = med('a');
  const b = med('b');
  console.log(JSON.stringify({
    load: loadArgs.join(' '), repeat: Number(values.repeat), a: { cli: values.a, flags: values['a-flags'], ...a }, b: { cli: values.b, flags: values['b-flags'], ...b },
    ratio: { msgsPerSec: b.msgsPerSec / a.msgsPerSec, cpuUsPerReq: b.cpuUsPerReq / a.cpuUsPerReq }, runs,
  }, null, 2));
}

main().catch((err: unknown) => {
  console.error(String(err));
  process.exit(1);
});
