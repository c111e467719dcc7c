/**
 * DNS for Tor-routed VMs: A queries resolved by Tor (SOCKS RESOLVE, on the VM's own circuits),
 * .onion names answered with automap addresses, registered names (`NAME.onion.mvnet`) mapped to
 * their onion, PTR refused. While Tor is not ready every answer is SERVFAIL: fail closed.
 */
import { DNS_TYPE_A, DNS_TYPE_AAAA, DNS_TYPE_PTR, type DnsQuestion } from '../wire/dns.js';
import type { DnsAnswer, Resolver } from '../gateway/dns.js';
import { socksResolve, SocksResolveError, type SocksAuth } from './socks-resolve.js';
import type { SocksEndpoint } from './socks-endpoint.js';
import type { Automap } from './automap.js';

export const ONION_ALIAS_SUFFIX = '.onion.mvnet';

export interface TorDnsDeps {
  socks(): SocksEndpoint | null;
  creds(vm: string): SocksAuth;
  automap: Automap;
  /** A registered name (without the suffix) → "xyz.onion". */
  alias(name: string): string | undefined;
  timeoutMs: number;
}

const TTL = 60;

export class TorResolver implements Resolver {
  constructor(private readonly d: TorDnsDeps) {}

  recursionAvailable(): boolean {
    return true;
  }

  async resolve(vm: string, q: DnsQuestion, now: number): Promise<DnsAnswer> {
    const name = q.name.toLowerCase().replace(/\.$/, '');
    if (q.type === DNS_TYPE_PTR) return { kind: 'refused' };
    const ep = this.d.socks();
    if (ep === null) return { kind: 'servfail' };
    let onion: string | undefined;
    if (name.endsWith(ONION_ALIAS_SUFFIX)) {
      onion = this.d.alias(name.slice(0, -ONION_ALIAS_SUFFIX.length));
      if (onion === undefined) return { kind: 'nxdomain' };
    } else if (name.endsWith('.onion')) onion = name;
    if (onion !== undefined) {
      if (q.type !== DNS_TYPE_A) return { kind: 'records', answers: [] };
      const ip = this.d.automap.map(onion, vm, now);
      return { kind: 'records', answers: [{ name: q.name, type: DNS_TYPE_A, class: 1, ttl: TTL, data: { kind: 'a', address: ip } }] };
    }
    if (q.type !== DNS_TYPE_A && q.type !== DNS_TYPE_AAAA) return { kind: 'records', answers: [] };
    let addr: Buffer;
    try {
      addr = await socksResolve(ep, this.d.creds(vm), name, this.d.timeoutMs);
    } catch (e) {
      if (e instanceof SocksResolveError && e.reply === 4) return { kind: 'nxdomain' };
      return { kind: 'servfail' };
    }
    if (addr.length === 4) {
      if (q.type !== DNS_TYPE_A) return { kind: 'records', answers: [] };
      return { kind: 'records', answers: [{ name: q.name, type: DNS_TYPE_A, class: 1, ttl: TTL, data: { kind: 'a', address: addr.readUInt32BE(0) } }] };
    }
    if (q.type !== DNS_TYPE_AAAA) return { kind: 'records', answers: [] };
    return { kind: 'records', answers: [{ name: q.name, type: DNS_TYPE_AAAA, class: 1, ttl: TTL, data: { kind: 'aaaa', address: addr } }] };
  }
}
