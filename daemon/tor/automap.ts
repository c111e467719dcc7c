/**
 * Virtual addresses for .onion names (as Tor's VirtualAddrNetworkIPv4 with AutomapHostsOnResolve):
 * the gateway's DNS answers an onion name with an address from the range, and a connection to
 * that address goes to Tor by name. Bounded: the least recently used mapping is reused.
 */
import { ipv4Mask, parseIpv4CidrText } from '../wire/ip-text.js';

export interface Resolution {
  onion: string;
  vm: string;
  at: number;
}

export class Automap {
  readonly network: number;
  readonly mask: number;
  private readonly size: number;
  private next = 1;
  private readonly byName = new Map<string, number>();
  private readonly byAddr = new Map<number, string>();
  /** Who resolved which onion, last time each (for `onion list`). */
  private readonly seen = new Map<string, Resolution>();

  constructor(
    cidr: string,
    private readonly maxEntries = 16384,
  ) {
    const a = parseIpv4CidrText(cidr);
    if (!a.ok) throw new Error(`automap ${JSON.stringify(cidr)} is not an IPv4 CIDR`);
    this.mask = ipv4Mask(a.value.prefix);
    this.network = a.value.network;
    this.size = 2 ** (32 - a.value.prefix);
  }

  contains(ip: number): boolean {
    return ((ip & this.mask) >>> 0) === this.network;
  }

  /** The address for `onion` (lowercased "xyz.onion"), allocating one if needed. */
  map(onion: string, vm: string, now: number): number {
    const name = onion.toLowerCase();
    this.seen.set(`${vm}|${name}`, { onion: name, vm, at: now });
    if (this.seen.size > this.maxEntries) this.seen.delete(this.seen.keys().next().value!);
    let ip = this.byName.get(name);
    if (ip !== undefined) {
      // Refresh its place in the LRU order.
      this.byName.delete(name);
      this.byName.set(name, ip);
      return ip;
    }
    if (this.byName.size >= Math.min(this.maxEntries, this.size - 2)) {
      const [oldName, oldIp] = this.byName.entries().next().value!;
      this.byName.delete(oldName);
      this.byAddr.delete(oldIp);
    }
    do {
      ip = (this.network + this.next) >>> 0;
      this.next = this.next + 1 >= this.size - 1 ? 1 : this.next + 1;
    } while (this.byAddr.has(ip));
    this.byName.set(name, ip);
    this.byAddr.set(ip, name);
    return ip;
  }

  lookup(ip: number): string | undefined {
    return this.byAddr.get(ip);
  }

  resolutions(): Resolution[] {
    return [...this.seen.values()];
  }
}
