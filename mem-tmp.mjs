import { spawnBroker } from './dist/test/support/spawn-broker.js';
import { ZmtpDealer } from './dist/src/zmtp/dealer.js';
import { readFileSync } from 'node:fs';
const rss = (pid) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) / 1024;
const { child, endpoint } = await spawnBroker(['--bind', 'tcp://127.0.0.1:*', '--stats-interval', '0', '--heartbeat-interval', '2500']);
await new Promise((r) => setTimeout(r, 500));
console.log('idle', rss(child.pid).toFixed(0));
const N = Number(process.argv[2] ?? 10000);
const ds = [];
for (let i = 0; i < N; i++) {
  const d = new ZmtpDealer(endpoint, () => {});
  d.send([Buffer.alloc(0), Buffer.from('MDPW01'), Buffer.from([1]), Buffer.from('svc-' + (i % 10))]);
  ds.push(d);
  if (i % 500 === 0) await new Promise((r) => setTimeout(r, 10));
}
await new Promise((r) => setTimeout(r, 3000));
console.log('with', N, rss(child.pid).toFixed(0));
await new Promise((r) => setTimeout(r, 3000));
console.log('after 3s more', rss(child.pid).toFixed(0));
child.kill('SIGKILL');
process.exit(0);
