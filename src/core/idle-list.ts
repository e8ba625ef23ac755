// Idle workers of one service in least-recently-used order: a worker that becomes idle goes to the tail, dispatch
// takes the head (the one idle longest), and a worker that dies is unlinked from the middle. All O(1).
//
// Why not mnemonist's LRUMap/LRUCache: they are caches (get/set, evict on overflow) with no public way to take the
// least-recent entry; reaching it means iterating the whole map, O(idle workers) per dispatch. An intrusive list
// needs no allocation per operation either (see bench/micro for the measurement).

export interface IdleNode {
  idlePrev: IdleNode | null;
  idleNext: IdleNode | null;
  /** The list this node is linked into, or null when not idle. */
  idleIn: IdleList<IdleNode> | null;
}

export class IdleList<T extends IdleNode> {
  private head: T | null = null;
  private tail: T | null = null;
  size = 0;

  /** Appends as most recently used. The node must not be in any list. */
  push(node: T): void {
    node.idlePrev = this.tail;
    node.idleNext = null;
    node.idleIn = this as IdleList<IdleNode>;
    if (this.tail) this.tail.idleNext = node;
    else this.head = node;
    this.tail = node;
    this.size++;
  }

  /** Takes the least recently used node. */
  shift(): T | null {
    const node = this.head;
    if (node) this.remove(node);
    return node;
  }

  remove(node: T): void {
    if (node.idleIn !== (this as IdleList<IdleNode>)) return;
    const prev = node.idlePrev as T | null;
    const next = node.idleNext as T | null;
    if (prev) prev.idleNext = next;
    else this.head = next;
    if (next) next.idlePrev = prev;
    else this.tail = prev;
    node.idlePrev = node.idleNext = null;
    node.idleIn = null;
    this.size--;
  }

  *[Symbol.iterator](): IterableIterator<T> {
    for (let n = this.head; n; n = n.idleNext as T | null) yield n;
  }
}
