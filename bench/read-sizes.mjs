// Read sizes on loopback when each read lands in a 64 KiB buffer (the shared read buffer) or in a 1 MiB one (the rest of
// a large frame's own buffer): 64 MiB sent in 1 MiB writes. `node bench/read-sizes.mjs`. Measured for issue 22 (docs/architecture.md).
import net from 'node:net';
for (const cap of [65536, 1 << 20]) {
  const sizes = [];
  await new Promise((done) => {
    const target = Buffer.allocUnsafeSlow(cap);
    let total = 0;
    const srv = net.createServer((s0) => {
      const handle = s0._handle; s0._handle = null; s0.destroy();
      const s = new net.Socket({ handle, readable: true, writable: true, onread: { buffer: target, callback: (n) => { sizes.push(n); total += n; if (total >= 64 << 20) { s.destroy(); srv.close(); done(); } return true; } } });
    });
    srv.listen(0, () => { const c = net.connect(srv.address().port, () => { const b = Buffer.alloc(1 << 20, 1); for (let i = 0; i < 64; i++) c.write(b); }); c.on('error', () => {}); });
  });
  sizes.sort((a, b) => a - b);
  const q = (p) => sizes[Math.floor(p * (sizes.length - 1))];
  console.log(`buffer ${cap}: ${sizes.length} reads for 64 MiB, median ${q(0.5)}, p10 ${q(0.1)}, p90 ${q(0.9)}, max ${sizes[sizes.length - 1]}`);
}
