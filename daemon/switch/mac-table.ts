/**
 * MAC address → member, with ageing. MACs are 48-bit numbers (exact in a double), so lookups
 * allocate nothing. Time is passed in.
 */

/**
 * Told of every change to the table, e.g. to keep a copy (the native cut-through table) that is
 * never more permissive than the table itself: `set` when a MAC is learned for a member, when
 * it moves, and again at most every `refreshMs` while it keeps being learned; `delete` when it
 * ages out or is forgotten.
 */
export interface MacTableMirror<M> {
  readonly refreshMs: number;
  set(mac: number, member: M, now: number): void;
  delete(mac: number): void;
}

interface Entry<M> {
  member: M;
  seen: number;
  /** When the mirror was last told (mirror only). */
  mirrored: number;
}

export class MacTable<M> {
  private readonly entries = new Map<number, Entry<M>>();

  constructor(
    private readonly ageMs: number,
    private readonly mirror: MacTableMirror<M> | null = null,
  ) {}

  learn(mac: number, member: M, now: number): void {
    const e = this.entries.get(mac);
    if (e === undefined) {
      this.entries.set(mac, { member, seen: now, mirrored: now });
      this.mirror?.set(mac, member, now);
    } else if (e.member !== member) {
      e.member = member;
      e.seen = now;
      e.mirrored = now;
      this.mirror?.set(mac, member, now);
    } else {
      e.seen = now;
      const m = this.mirror;
      if (m !== null && now - e.mirrored >= m.refreshMs) {
        e.mirrored = now;
        m.set(mac, member, now);
      }
    }
  }

  lookup(mac: number, now: number): M | undefined {
    const e = this.entries.get(mac);
    if (e === undefined) return undefined;
    if (now - e.seen > this.ageMs) {
      this.entries.delete(mac);
      this.mirror?.delete(mac);
      return undefined;
    }
    return e.member;
  }

  forget(member: M): void {
    for (const [mac, e] of this.entries) {
      if (e.member === member) {
        this.entries.delete(mac);
        this.mirror?.delete(mac);
      }
    }
  }

  /** Drops aged entries; called from a slow timer so the map cannot grow without bound. */
  sweep(now: number): void {
    for (const [mac, e] of this.entries) {
      if (now - e.seen > this.ageMs) {
        this.entries.delete(mac);
        this.mirror?.delete(mac);
      }
    }
  }

  get size(): number {
    return this.entries.size;
  }
}
