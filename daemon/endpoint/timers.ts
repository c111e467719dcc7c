/**
 * One Node timer for every connection's deadline: a binary min-heap with lazy deletion. An item
 * has at most one live entry; pushing a later deadline is free (the live entry, when it pops,
 * re-queues the item at its current deadline), so a connection that moves its keepalive on
 * every segment does not fill the heap.
 */
import { dataPathFault } from '../errors.js';
export interface Timed {
  /** Managed by the wheel: the wanted deadline, or null. */
  deadline: number | null;
  /** Managed by the wheel: time of the item's live heap entry, or null. */
  queued: number | null;
  fire(now: number): void;
}

interface Entry {
  at: number;
  item: Timed;
}

export class TimerWheel {
  private heap: Entry[] = [];
  private timer: NodeJS.Timeout | null = null;
  private armedAt = Infinity;

  constructor(private readonly clock: () => number) {}

  /** (Re)schedules `item` at `at`, or cancels with null. */
  schedule(item: Timed, at: number | null): void {
    item.deadline = at;
    if (at === null || (item.queued !== null && item.queued <= at)) return;
    item.queued = at;
    this.push({ at, item });
    if (at < this.armedAt) this.arm(at);
  }

  private push(e: Entry): void {
    const h = this.heap;
    h.push(e);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (h[p]!.at <= e.at) break;
      h[i] = h[p]!;
      i = p;
    }
    h[i] = e;
  }

  private pop(): Entry | undefined {
    const h = this.heap;
    const top = h[0];
    const last = h.pop();
    if (h.length > 0 && last !== undefined) {
      let i = 0;
      const n = h.length;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= n) break;
        const r = l + 1;
        const c = r < n && h[r]!.at < h[l]!.at ? r : l;
        if (h[c]!.at >= last.at) break;
        h[i] = h[c]!;
        i = c;
      }
      h[i] = last;
    }
    return top;
  }

  private arm(at: number): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.armedAt = at;
    this.timer = setTimeout(() => this.run(), Math.max(0, at - this.clock()));
    this.timer.unref();
  }

  private run(): void {
    this.timer = null;
    this.armedAt = Infinity;
    const now = this.clock();
    for (;;) {
      const top = this.heap[0];
      if (top === undefined) return;
      if (top.at > now) {
        this.arm(top.at);
        return;
      }
      this.pop();
      const item = top.item;
      if (item.queued !== top.at) continue; // superseded by an earlier entry
      item.queued = null;
      if (item.deadline === null) continue;
      if (item.deadline > now) {
        item.queued = item.deadline;
        this.push({ at: item.deadline, item });
        continue;
      }
      item.deadline = null;
      try {
        item.fire(now);
      } catch (e) {
        // A bug in one flow's timer: the other flows' timers still run.
        dataPathFault('endpoint timer', e);
      }
    }
  }

  get size(): number {
    return this.heap.length;
  }

  close(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.heap = [];
  }
}
