// MDP messages as the core receives them (routing id first), a core with the tests' clock settings, and a reader
// of what it sent: shared by the core's test files.
import { type CoreOptions } from '../../src/core/broker-core.js';
import { unpooled } from '../../src/protocol/unpooled.js';
import { TestCore } from './test-core.js';

type Frame = string | Buffer;

// unpooled: as the transports hand frames over (their own backing stores), not slabs of Node's pool (64 KiB on
// Node 24, which the core would take for read chunks to copy out of).
export const B = (s: string | number[]) => unpooled(s);
export const E = B('');
const F = (f: Frame) => (typeof f === 'string' ? B(f) : f);

/** A routing id as libzmq makes them: 0x00 and a 4-byte number. */
export const id = (n: number) => unpooled([0, 0, 0, 0, n]);
export const CLIENT = id(1);
export const CLIENT2 = id(2);
export const W_A = id(10);
export const W_B = id(11);
export const W_C = id(12);

/** Frames as readable strings, so a failing assertion shows the wire. */
export const show = (msgs: Buffer[][]) => msgs.map((m) => m.map((f) => f.toString('latin1')));

export function core(opts: Partial<CoreOptions> = {}): TestCore {
  return new TestCore({ heartbeatInterval: 1000, heartbeatLiveness: 3, busyTimeout: 10000, requestTtl: 5000, ...opts });
}

/** What the core sent since the last take. */
export function take(c: TestCore): Buffer[][] {
  c.to.length = 0;
  return c.out.splice(0);
}

export const ready1 = (w: Buffer, svc: string) => [w, E, B('MDPW01'), B([1]), B(svc)];
export const ready2 = (w: Buffer, svc: string) => [w, B('MDPW02'), B([1]), B(svc)];
export const req1 = (c: Buffer, svc: string, ...body: Frame[]) => [c, E, B('MDPC01'), B(svc), ...body.map(F)];
export const req2 = (c: Buffer, svc: string, ...body: Frame[]) => [c, B('MDPC02'), B([1]), B(svc), ...body.map(F)];
export const reply1 = (w: Buffer, c: Buffer, ...body: Frame[]) => [w, E, B('MDPW01'), B([3]), c, E, ...body.map(F)];
export const partial2 = (w: Buffer, c: Buffer, ...body: Frame[]) => [w, B('MDPW02'), B([3]), c, E, ...body.map(F)];
export const final2 = (w: Buffer, c: Buffer, ...body: Frame[]) => [w, B('MDPW02'), B([4]), c, E, ...body.map(F)];
export const hb1 = (w: Buffer) => [w, E, B('MDPW01'), B([4])];
export const disc1 = (w: Buffer) => [w, E, B('MDPW01'), B([5])];
