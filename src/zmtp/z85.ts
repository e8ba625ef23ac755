// Z85 (ZeroMQ RFC 32): how CURVE keys are written as text on the command line, in key files and in logs. Its own
// module, so code that only reads or names keys (the ZAP handler, the key policy) loads no crypto.

const Z85_CHARS = '0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#';
const Z85_VALUE = new Map([...Z85_CHARS].map((c, i) => [c, i]));

/** Z85 (ZeroMQ RFC 32) text to bytes; null if it is not Z85 of a multiple of 5 characters. */
export function z85Decode(text: string): Buffer | null {
  if (text.length % 5 !== 0) return null;
  const out = Buffer.alloc((text.length / 5) * 4);
  for (let i = 0, o = 0; i < text.length; i += 5, o += 4) {
    let v = 0;
    for (let k = 0; k < 5; k++) {
      const d = Z85_VALUE.get(text[i + k]);
      if (d === undefined) return null;
      v = v * 85 + d;
    }
    if (v > 0xffffffff) return null;
    out.writeUInt32BE(v, o);
  }
  return out;
}

export function z85Encode(data: Buffer): string {
  let s = '';
  for (let i = 0; i < data.length; i += 4) {
    let v = data.readUInt32BE(i);
    const chunk: string[] = [];
    for (let k = 0; k < 5; k++) {
      chunk.unshift(Z85_CHARS[v % 85]);
      v = Math.floor(v / 85);
    }
    s += chunk.join('');
  }
  return s;
}
