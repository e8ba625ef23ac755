// `npm run bench:crypto`: the per-message and per-handshake cost of the CurveZMQ primitives (RFC 26: X25519,
// crypto_box_beforenm, XSalsa20-Poly1305 secretbox with the precomputed key) in each candidate library, to choose the
// one the zmtp transport's CURVE will use (issue 11). Plain JS (.mjs): the candidates are dev dependencies until one
// is chosen, and some have no typings. Also checks that sodium-native's X25519 plus @noble/ciphers' HSalsa20 gives
// libsodium's crypto_box_beforenm (sodium-native 5 has no beforenm/afternm and no crypto_core_hsalsa20).
import nacl from 'tweetnacl';
import sodiumW from 'libsodium-wrappers';
import { xsalsa20poly1305, hsalsa } from '@noble/ciphers/salsa.js';
import { x25519 } from '@noble/curves/ed25519.js';
import sodiumN from 'sodium-native';
import { randomBytes } from 'node:crypto';
await sodiumW.ready;
const S = sodiumW;
const key = randomBytes(32), nonce = randomBytes(24);
function time(fn, n) { for (let i = 0; i < Math.min(n, 200); i++) fn(); const t0 = performance.now(); for (let i = 0; i < n; i++) fn(); return (performance.now() - t0) * 1000 / n; } // us per op
const med = (xs) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const rep = (fn, n) => med([time(fn, n), time(fn, n), time(fn, n)]);
// noble beforenm: x25519 shared then hsalsa with zero nonce (NaCl crypto_box_beforenm)
const sigma = new Uint32Array([0x61707865, 0x3320646e, 0x79622d32, 0x6b206574]);
function nobleBefore(pk, sk) { const s = x25519.getSharedSecret(sk, pk); const out = new Uint32Array(8); hsalsa(sigma, new Uint32Array(s.buffer, s.byteOffset, 8), new Uint32Array(4), out); return new Uint8Array(out.buffer); }
const a = nacl.box.keyPair(), b = nacl.box.keyPair();
// Correctness of the sodium-native + HSalsa20 beforenm.
{
  const ka = S.crypto_box_keypair(), kb = S.crypto_box_keypair();
  const ref = S.crypto_box_beforenm(kb.publicKey, ka.privateKey);
  const shared = Buffer.alloc(32);
  sodiumN.crypto_scalarmult(shared, Buffer.from(ka.privateKey), Buffer.from(kb.publicKey));
  const out = new Uint32Array(8);
  hsalsa(sigma, new Uint32Array(shared.buffer, shared.byteOffset, 8), new Uint32Array(4), out);
  if (!Buffer.from(out.buffer).equals(Buffer.from(ref))) throw new Error('sodium-native + hsalsa beforenm differs from libsodium');
  console.log('sodium-native X25519 + @noble/ciphers HSalsa20 = libsodium crypto_box_beforenm: checked');
}
const rows = [];
for (const size of [100, 65536]) {
  const msg = randomBytes(size);
  const sealedT = nacl.secretbox(msg, nonce, key);
  const sealedS = S.crypto_secretbox_easy(msg, nonce, key);
  const nb = xsalsa20poly1305(key, nonce); const sealedN = nb.encrypt(msg);
  const outN = Buffer.alloc(size + 16), outM = Buffer.alloc(size);
  sodiumN.crypto_secretbox_easy(outN, msg, nonce, key);
  const n = size > 1000 ? 2000 : 50000;
  rows.push([`seal ${size} B`, rep(() => nacl.secretbox(msg, nonce, key), n), rep(() => S.crypto_secretbox_easy(msg, nonce, key), n), rep(() => xsalsa20poly1305(key, nonce).encrypt(msg), n), rep(() => sodiumN.crypto_secretbox_easy(outN, msg, nonce, key), n)]);
  rows.push([`open ${size} B`, rep(() => nacl.secretbox.open(sealedT, nonce, key), n), rep(() => S.crypto_secretbox_open_easy(sealedS, nonce, key), n), rep(() => xsalsa20poly1305(key, nonce).decrypt(sealedN), n), rep(() => sodiumN.crypto_secretbox_open_easy(outM, outN, nonce, key), n)]);
}
const pkN = Buffer.alloc(32), skN = Buffer.alloc(32); sodiumN.crypto_box_keypair(pkN, skN);
const shared = Buffer.alloc(32);
// sodium-native's handshake cost here is keypair + X25519 only; HSalsa20 in JS adds a few microseconds.
rows.push(['keypair+beforenm (per handshake)', rep(() => { const k = nacl.box.keyPair(); nacl.box.before(b.publicKey, k.secretKey); }, 300), rep(() => { const k = S.crypto_box_keypair(); S.crypto_box_beforenm(b.publicKey, k.privateKey); }, 300), rep(() => { const sk = x25519.utils.randomSecretKey(); nobleBefore(b.publicKey, sk); }, 300), rep(() => { sodiumN.crypto_box_keypair(pkN, skN); sodiumN.crypto_scalarmult(shared, skN, Buffer.from(b.publicKey)); }, 300)]);
console.log('us per op (median of 3)           tweetnacl  libsodium-wrappers  @noble  sodium-native(no beforenm)');
for (const r of rows) console.log(r[0].padEnd(34), ...r.slice(1).map((x) => x.toFixed(2).padStart(10)));
