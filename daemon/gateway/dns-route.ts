/**
 * Resolver composition: which resolver answers a VM depends on its route.
 * - `LocalFirstResolver(zone, next)`: the network's own names from the zone, the rest from
 *   `next` (what a "direct" VM gets: `new LocalFirstResolver(zone, upstream)`).
 * - `RoutedResolver(pick, fallback)`: per VM, `pick(vm)` or the fallback (normally the
 *   NoneResolver, so an unknown VM learns nothing).
 */
import type { DnsQuestion } from '../wire/dns.js';
import type { DnsAnswer, Resolver } from './dns.js';
import type { LocalZone } from './dns-local.js';

export class LocalFirstResolver implements Resolver {
  constructor(
    readonly zone: LocalZone,
    readonly next: Resolver,
  ) {}

  resolve(vm: string, q: DnsQuestion, now: number): Promise<DnsAnswer> {
    const local = this.zone.lookup(q);
    return local !== undefined ? Promise.resolve(local) : this.next.resolve(vm, q, now);
  }

  recursionAvailable(vm: string): boolean {
    return this.next.recursionAvailable?.(vm) ?? true;
  }
}

export class RoutedResolver implements Resolver {
  constructor(
    private readonly pick: (vm: string) => Resolver | undefined,
    private readonly fallback: Resolver,
  ) {}

  /** A RoutedResolver over named routes: `byRoute({ none, direct }, (vm) => routeOf(vm), none)`. */
  static byRoute<R extends string>(routes: Readonly<Record<R, Resolver>>, routeOf: (vm: string) => R | undefined, fallback: Resolver): RoutedResolver {
    return new RoutedResolver((vm) => {
      const r = routeOf(vm);
      return r === undefined ? undefined : routes[r];
    }, fallback);
  }

  private resolverFor(vm: string): Resolver {
    return this.pick(vm) ?? this.fallback;
  }

  resolve(vm: string, q: DnsQuestion, now: number): Promise<DnsAnswer> {
    return this.resolverFor(vm).resolve(vm, q, now);
  }

  recursionAvailable(vm: string): boolean {
    return this.resolverFor(vm).recursionAvailable?.(vm) ?? true;
  }
}
