// Small long-lived Buffers (interned frames, routing ids) with backing stores of their own size.

/**
 * A long-lived small Buffer with a backing store of its own size. Buffer.from() takes small buffers from Node's pool,
 * whose slabs are Buffer.poolSize bytes (8 KiB on Node 20 and 22, 64 KiB on Node 24): the core would take a frame in
 * a 64 KiB slab for a view into a read chunk and copy every held request that carries one (see compacted()).
 */
export function unpooled(bytes: string | readonly number[]): Buffer {
  const src = typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : Buffer.from(bytes);
  const b = Buffer.allocUnsafeSlow(src.length);
  src.copy(b);
  return b;
}

