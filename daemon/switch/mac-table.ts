/**
 * MAC address → member, with ageing. MACs are 48-bit numbers (exact in a double), so lookups
 * allocate nothing. Time is passed in.
 */
export class MacTable<M> {
  private readonly entries = new Map<number, { member: M; seen: number }>();

  constructor(private readonly ageMs: number) {}

  learn(mac: number, member: M, now: number): void {
    const e = this.entries.get(mac);
    if (e === undefined) this.entries.set(mac, { member, seen: now });
    else {
      e.member = member;
      e.seen = now;
    }
  }

  lookup(mac: number, now: number): M | undefined {
    const e = this.entries.get(mac);
    if (e === undefined) return undefined;
    if (now - e.seen > this.ageMs) {
      this.entries.delete(mac);
      return undefined;
    }
    return e.member;
  }

  forget(member: M): void {
    for (const [mac, e] of this.entries) if (e.member === member) this.entries.delete(mac);
  }

  /** Drops aged entries; called from a slow timer so the map cannot grow without bound. */
  sweep(now: number): void {
    for (const [mac, e] of this.entries) if (now - e.seen > this.ageMs) this.entries.delete(mac);
  }

  get size(): number {
    return this.entries.size;
  }
}
