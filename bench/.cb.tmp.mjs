import { CurveClient, CurveServer, sealedBytes } from '../dist/src/zmtp/curve.js';
import sodium from 'sodium-native';
const kp = () => { const p = { publicKey: Buffer.alloc(32), secretKey: Buffer.alloc(32) }; sodium.crypto_box_keypair(p.publicKey, p.secretKey); return p; };
const s = kp(), c = kp();
const server = new CurveServer(s); const client = new CurveClient(c, s.publicKey);
const w = server.hello(client.hello()); const init = client.welcome(w, Buffer.alloc(0));
server.initiate(init); client.ready(server.ready(Buffer.alloc(0)));
const frames = [Buffer.alloc(4,1), Buffer.alloc(0), Buffer.from('MDPC01'), Buffer.from('echo'), Buffer.alloc(100, 97)];
const N = 300000;
const buf = Buffer.allocUnsafe(sealedBytes(200));
const open = server.openFrame ? (b) => server.openFrame(b) : (b) => server.open(b);
const res = [];
for (let round = 0; round < 7; round++) {
  const t0 = performance.now();
  for (let i = 0; i < N; i++) {
    const f = frames[i % 5];
    const end = client.sealInto(buf, 0, 0, f);
    if (open(buf.subarray(0, end)) === null) throw new Error('no');
  }
  res.push((performance.now() - t0) * 1000 / N);
}
res.sort(); console.log('seal+open per frame us (median of 7)', res[3].toFixed(3));
