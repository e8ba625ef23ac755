// dup(2) and close(2), through koffi: every shard thread listens on its own duplicate of the one listening socket
// (closing a thread's server then closes only its copy), and an accepted connection moves to another thread as a
// duplicate of its descriptor. Node has no call for either.

import { createRequire } from 'node:module';

interface Libc {
  dup(fd: number): number;
  close(fd: number): number;
}

let libc: Libc | null = null;

function load(): Libc {
  if (libc !== null) return libc;
  const koffi = createRequire(import.meta.url)('koffi') as typeof import('koffi');
  const lib = koffi.load(process.platform === 'darwin' ? 'libc.dylib' : 'libc.so.6');
  libc = { dup: lib.func('int dup(int)') as (fd: number) => number, close: lib.func('int close(int)') as (fd: number) => number };
  return libc;
}

/** A new descriptor for the same open socket; throws when the system has none to give. */
export function dupDescriptor(fd: number): number {
  const copy = load().dup(fd);
  if (copy < 0) throw new Error(`dup(${fd}) failed`);
  return copy;
}

export function closeDescriptor(fd: number): void {
  load().close(fd);
}
