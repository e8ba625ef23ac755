// One shard thread's view of the others (the core's Neighbours): the board's counters to decide, the exchange to
// move requests and to ask for them. Local first: a request stays on the thread that read it unless this thread has
// no idle worker for it and another has one (or this thread has no worker for it at all); a thread whose workers
// go idle with nothing queued asks the threads that queue that service for work, once per turn per thread.

import type { Neighbours } from '../../core/neighbours.js';
import type { Peer } from '../../core/peer.js';
import type { Board, BoardEntry } from './board.js';
import { Rec, type Exchange } from './exchange.js';

/**
 * Bytes of requests moved to one thread and not yet taken in by it. A thread that stops reading its port (stalled)
 * gets no more until it catches up: its share of the work waits in the queues here, under their budgets.
 */
export const MAX_MOVING_BYTES = 64 * 1024 * 1024;

export class Spread implements Neighbours {
  /** Bytes moved to each thread so far (uint32 arithmetic, as the board's count of what it took). */
  private readonly sent: Int32Array;
  /** Where the search for a thread with an idle worker starts, turning, so moved work spreads over them. */
  private start = 0;
  /** This turn's requests for work: per thread, per service name, how many. */
  private readonly pulls: Map<string, { frame: Buffer; n: number }>[];
  private pullsDue = false;
  private readonly sendPulls = () => this.flushPulls();

  constructor(
    private readonly board: Board,
    private readonly exchange: Exchange,
  ) {
    this.pulls = Array.from({ length: board.threads }, () => new Map());
    this.sent = new Int32Array(board.threads);
  }

  /** Bytes moved to `t` that it has not taken in yet. */
  private moving(t: number): number {
    return (this.sent[t] - this.board.taken(this.board.index, t)) | 0;
  }

  open(name: string): BoardEntry | null {
    const e = this.board.open(name);
    if (e !== null) this.exchange.broadcast(Rec.Service, 0, e.slot, [e.frame]);
    return e;
  }

  close(s: BoardEntry): void {
    this.board.close(s);
    this.exchange.broadcast(Rec.Service, 0, -1, [s.frame]);
  }

  publish(s: BoardEntry, idle: number, queued: number, workers: number): void {
    this.board.publish(s, idle, queued, workers);
  }

  target(s: BoardEntry, workers: number): number {
    const b = this.board;
    const n = b.threads;
    const me = b.index;
    let most = -1;
    let mostWorkers = 0;
    for (let k = 0; k < n; k++) {
      const t = (this.start + k) % n;
      if (t === me || s.remote[t] < 0 || this.moving(t) >= MAX_MOVING_BYTES) continue;
      if (b.idle(s, t) > 0 && b.queued(s, t) === 0) {
        this.start = t + 1;
        return t;
      }
      if (workers === 0) {
        const w = b.workers(s, t);
        if (w > mostWorkers) {
          mostWorkers = w;
          most = t;
        }
      }
    }
    return most;
  }

  want(s: BoardEntry, idle: number, workers: number): void {
    const b = this.board;
    for (let t = 0; t < b.threads; t++) {
      if (t === b.index || s.remote[t] < 0 || b.queued(s, t) === 0) continue;
      // Work waiting on a thread with no worker for it comes here even when our own workers are busy.
      const n = idle > 0 ? idle : b.workers(s, t) === 0 ? Math.min(workers, b.queued(s, t)) : 0;
      if (n === 0) continue;
      const due = this.pulls[t].get(s.name);
      if (due === undefined) this.pulls[t].set(s.name, { frame: s.frame, n });
      else due.n = Math.max(due.n, n);
      if (!this.pullsDue) {
        this.pullsDue = true;
        setImmediate(this.sendPulls);
      }
    }
  }

  private flushPulls(): void {
    this.pullsDue = false;
    for (let t = 0; t < this.pulls.length; t++) {
      const m = this.pulls[t];
      if (m.size === 0) continue;
      for (const { frame, n } of m.values()) this.exchange.put(t, Rec.Pull, 0, n, [frame]);
      m.clear();
    }
  }

  move(to: number, frames: Buffer[], client: Peer): void {
    const home = client.home < 0 ? this.board.index : client.home;
    let bytes = 0;
    for (let i = 0; i < frames.length; i++) bytes += frames[i].length;
    this.sent[to] = (this.sent[to] + bytes) | 0;
    this.exchange.put(to, Rec.Request, home, client.serial, frames);
  }

  workers(name: string): number {
    const e = this.board.find(name);
    if (e === undefined) return 0;
    let n = 0;
    for (let t = 0; t < this.board.threads; t++) if (t !== this.board.index) n += this.board.workers(e, t);
    return n;
  }

  served(): Buffer[] {
    const out: Buffer[] = [];
    for (const e of this.board.known()) {
      for (let t = 0; t < this.board.threads; t++) {
        if (t !== this.board.index && this.board.workers(e, t) > 0) {
          out.push(e.frame);
          break;
        }
      }
    }
    return out;
  }
}
