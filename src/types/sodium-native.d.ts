// The part of sodium-native (libsodium's native binding; it ships no typings) the zmtp transport's CURVE uses.
declare module 'sodium-native' {
  export function crypto_box_keypair(pk: Buffer, sk: Buffer): void;
  export function crypto_box_easy(c: Buffer, m: Buffer, n: Buffer, pk: Buffer, sk: Buffer): void;
  export function crypto_box_open_easy(m: Buffer, c: Buffer, n: Buffer, pk: Buffer, sk: Buffer): boolean;
  export function crypto_secretbox_easy(c: Buffer, m: Buffer, n: Buffer, k: Buffer): void;
  export function crypto_secretbox_open_easy(m: Buffer, c: Buffer, n: Buffer, k: Buffer): boolean;
  export function crypto_scalarmult(q: Buffer, n: Buffer, p: Buffer): void;
  export function crypto_scalarmult_base(q: Buffer, n: Buffer): void;
  export function randombytes_buf(buf: Buffer): void;
}
