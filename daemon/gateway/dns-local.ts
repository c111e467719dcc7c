/**
 * The network's own names: `<domain>` (SOA), `gateway.<domain>` (the gateway's addresses) and
 * `<vm>.<domain>` for hosts the owner registers (normally a VM's lease address, updated from the
 * DHCP server's lease events), plus reverse (PTR) names of the subnet and the IPv6 prefix.
 * Authoritative: unknown names in the domain are NXDOMAIN, known names without the asked type
 * are NODATA, both with the zone's SOA for negative caching.
 *
 * `NoneResolver` answers these and REFUSES everything else: a VM without a route to the outside
 * learns nothing about outside names.
 */
import {
  DNS_CLASS_IN,
  DNS_TYPE_A,
  DNS_TYPE_AAAA,
  DNS_TYPE_ANY,
  DNS_TYPE_PTR,
  DNS_TYPE_SOA,
  normalizeDnsName,
  type DnsQuestion,
  type DnsRecord,
} from '../wire/dns.js';
import { parseIpv4Text } from '../wire/ip-text.js';
import type { DnsAnswer, Resolver } from './dns.js';
import { inIpv6Prefix, inSubnet, type GatewayNet } from './types.js';

export interface LocalHost {
  readonly ipv4?: number | undefined;
  readonly ipv6?: readonly Uint8Array[] | undefined;
}

export interface LocalZoneOptions {
  /** TTL of local answers and negative answers (SOA minimum), seconds; default 60. */
  readonly ttl?: number | undefined;
}

const LABEL_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** True when `name` can be a host's name in a zone (one DNS label, not "gateway"). */
export function isHostLabel(name: string): boolean {
  const n = name.toLowerCase();
  return LABEL_RE.test(n) && n !== 'gateway';
}
const ANY_CLASS = 255;

function reverseV4(name: string): number | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.in-addr\.arpa$/.exec(name);
  if (!m) return undefined;
  const r = parseIpv4Text(`${m[4]}.${m[3]}.${m[2]}.${m[1]}`);
  return r.ok ? r.value : undefined;
}

function reverseV6(name: string): Buffer | undefined {
  if (!name.endsWith('.ip6.arpa')) return undefined;
  const nibbles = name.slice(0, -'.ip6.arpa'.length).split('.');
  if (nibbles.length !== 32 || !nibbles.every((n) => /^[0-9a-f]$/.test(n))) return undefined;
  return Buffer.from(nibbles.reverse().join(''), 'hex');
}

export class LocalZone {
  private readonly hosts = new Map<string, LocalHost>();
  private readonly ttl: number;
  private serial = 1;

  constructor(
    private readonly net: GatewayNet,
    opts: LocalZoneOptions = {},
  ) {
    this.ttl = opts.ttl ?? 60;
  }

  /** Registers `<name>.<domain>`; `name` is one DNS label (a VM name), case-insensitive. */
  setHost(name: string, host: LocalHost): void {
    const n = name.toLowerCase();
    if (!isHostLabel(n)) throw new RangeError(`"${name}" cannot be a host name in ${this.net.domain}`);
    this.hosts.set(n, { ipv4: host.ipv4, ipv6: host.ipv6?.map((a) => Buffer.from(a)) });
    this.serial++;
  }

  deleteHost(name: string): boolean {
    const gone = this.hosts.delete(name.toLowerCase());
    if (gone) this.serial++;
    return gone;
  }

  /** True for names this zone answers for (so a composition should not forward them). */
  isLocal(name: string): boolean {
    const n = normalizeDnsName(name);
    const d = this.net.domain;
    if (n === d || n.endsWith(`.${d}`)) return true;
    const v4 = reverseV4(n);
    if (v4 !== undefined) return inSubnet(v4, this.net.subnet);
    const v6 = reverseV6(n);
    if (v6 !== undefined) return this.inV6Scope(v6);
    return false;
  }

  /** The answer for a local name, or undefined when the name is not local. */
  lookup(q: DnsQuestion): DnsAnswer | undefined {
    if (!this.isLocal(q.name)) return undefined;
    if (q.class !== DNS_CLASS_IN && q.class !== ANY_CLASS) return { kind: 'refused' };
    const n = normalizeDnsName(q.name);
    const d = this.net.domain;
    if (n === d) {
      if (q.type === DNS_TYPE_SOA || q.type === DNS_TYPE_ANY) return { kind: 'records', answers: [this.soa(q.name)], authoritative: true };
      return this.nodata();
    }
    if (n.endsWith(`.${d}`)) {
      const label = n.slice(0, -(d.length + 1));
      const host = this.hostOf(label);
      if (!host) return { kind: 'nxdomain', authorities: [this.soa(d)], authoritative: true };
      const answers: DnsRecord<Uint8Array>[] = [];
      if ((q.type === DNS_TYPE_A || q.type === DNS_TYPE_ANY) && host.ipv4 !== undefined) {
        answers.push({ name: q.name, type: DNS_TYPE_A, class: DNS_CLASS_IN, ttl: this.ttl, data: { kind: 'a', address: host.ipv4 } });
      }
      if (q.type === DNS_TYPE_AAAA || q.type === DNS_TYPE_ANY) {
        for (const a of host.ipv6 ?? []) answers.push({ name: q.name, type: DNS_TYPE_AAAA, class: DNS_CLASS_IN, ttl: this.ttl, data: { kind: 'aaaa', address: a } });
      }
      return answers.length > 0 ? { kind: 'records', answers, authoritative: true } : this.nodata();
    }
    // Reverse names.
    const target = this.ptrTarget(n);
    if (target === undefined) return { kind: 'nxdomain', authoritative: true };
    if (q.type !== DNS_TYPE_PTR && q.type !== DNS_TYPE_ANY) return { kind: 'records', answers: [], authoritative: true };
    return { kind: 'records', answers: [{ name: q.name, type: DNS_TYPE_PTR, class: DNS_CLASS_IN, ttl: this.ttl, data: { kind: 'name', name: target } }], authoritative: true };
  }

  private hostOf(label: string): LocalHost | undefined {
    if (label === 'gateway') {
      const v6 = this.net.ipv6;
      return { ipv4: this.net.gatewayIp, ipv6: v6 ? [v6.global] : [] };
    }
    return this.hosts.get(label);
  }

  private ptrTarget(reverseName: string): string | undefined {
    const d = this.net.domain;
    const v4 = reverseV4(reverseName);
    if (v4 !== undefined) {
      if (v4 === this.net.gatewayIp) return `gateway.${d}`;
      for (const [name, h] of this.hosts) if (h.ipv4 === v4) return `${name}.${d}`;
      return undefined;
    }
    const v6 = reverseV6(reverseName);
    if (v6 === undefined) return undefined;
    const gw = this.net.ipv6;
    if (gw && (gw.global.equals(v6) || gw.linkLocal.equals(v6))) return `gateway.${d}`;
    for (const [name, h] of this.hosts) if (h.ipv6?.some((a) => Buffer.from(a).equals(v6))) return `${name}.${d}`;
    return undefined;
  }

  private inV6Scope(addr: Uint8Array): boolean {
    const v6 = this.net.ipv6;
    if (!v6) return false;
    return inIpv6Prefix(addr, v6.prefix, v6.length) || v6.linkLocal.equals(addr);
  }

  private nodata(): DnsAnswer {
    return { kind: 'records', answers: [], authorities: [this.soa(this.net.domain)], authoritative: true };
  }

  private soa(owner: string): DnsRecord<Uint8Array> {
    const d = this.net.domain;
    return {
      name: owner,
      type: DNS_TYPE_SOA,
      class: DNS_CLASS_IN,
      ttl: this.ttl,
      data: { kind: 'soa', mname: `gateway.${d}`, rname: `hostmaster.${d}`, serial: this.serial, refresh: 3600, retry: 600, expire: 86400, minimum: this.ttl },
    };
  }
}

/** Local names only; REFUSED for everything else. */
export class NoneResolver implements Resolver {
  constructor(readonly zone: LocalZone) {}

  resolve(_vm: string, q: DnsQuestion, _now?: number): Promise<DnsAnswer> {
    return Promise.resolve(this.zone.lookup(q) ?? { kind: 'refused' });
  }

  recursionAvailable(): boolean {
    return false;
  }
}
