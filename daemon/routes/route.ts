/**
 * A VM's route: data, checked by one function per flow. `none` is the default for every VM, so
 * nothing leaves unless someone says so.
 *  - none:   gateway services only (DHCP, ARP, ping to the gateway, DNS that answers nothing outside)
 *  - direct: userland NAT: each flow becomes a host socket to the same destination, optionally
 *            limited by an allow-list (everything else dropped)
 *  - via:    another VM on the same network (a firewall/VPN VM) is this VM's gateway
 */
import { Address4, Address6 } from 'ip-address';
import { UserError } from '../errors.js';
import { asObject, checkName } from '../validate.js';

export interface AllowRule {
  /** CIDR, IPv4 or IPv6, normalised. */
  cidr: string;
  /** Inclusive port ranges; absent = all ports. */
  ports?: [number, number][];
}

/**
 * `torPorts` (on none and direct): TCP to those destination ports goes through Tor, the rest by
 * the route's kind. `tor`: every TCP stream and DNS query through Tor, nothing else leaves.
 */
export type Route =
  | { kind: 'none'; torPorts?: number[] }
  | { kind: 'direct'; allow?: AllowRule[]; torPorts?: number[] }
  | { kind: 'via'; vm: string }
  | { kind: 'tor' };

export const DEFAULT_ROUTE: Route = { kind: 'none' };

function parsePorts(s: string, rule: string): [number, number][] {
  return s.split(',').map((part) => {
    const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(part);
    if (m === null) throw new UserError(`invalid ports in allow rule ${JSON.stringify(rule)}: use PORT, PORT-PORT or a comma list`);
    const lo = Number(m[1]);
    const hi = m[2] !== undefined ? Number(m[2]) : lo;
    if (lo < 1 || hi > 65535 || lo > hi) throw new UserError(`invalid port range ${part} in allow rule ${JSON.stringify(rule)}`);
    return [lo, hi];
  });
}

/** "CIDR[:PORTS]" for IPv4, "[CIDR]:PORTS" or a bare CIDR for IPv6. */
export function parseAllowRule(s: string): AllowRule {
  let cidr = s;
  let ports: string | undefined;
  const v6 = /^\[([^\]]+)\](?::(.+))?$/.exec(s);
  if (v6 !== null) {
    cidr = v6[1]!;
    ports = v6[2];
  } else if (!s.includes('::') && s.split(':').length === 2) {
    [cidr, ports] = s.split(':') as [string, string];
  }
  let norm: string;
  if (cidr.includes(':')) {
    let a: Address6;
    try {
      a = new Address6(cidr.includes('/') ? cidr : `${cidr}/128`);
    } catch {
      throw new UserError(`invalid allow rule ${JSON.stringify(s)}: expected CIDR[:PORTS], e.g. 203.0.113.0/24:80,443`);
    }
    norm = `${a.startAddress().correctForm()}/${a.subnetMask}`;
  } else {
    let a: Address4;
    try {
      if (!/^\d{1,3}(\.\d{1,3}){3}(\/\d{1,2})?$/.test(cidr)) throw new Error('syntax');
      a = new Address4(cidr.includes('/') ? cidr : `${cidr}/32`);
    } catch {
      throw new UserError(`invalid allow rule ${JSON.stringify(s)}: expected CIDR[:PORTS], e.g. 203.0.113.0/24:80,443`);
    }
    norm = `${a.startAddress().address}/${a.subnetMask}`;
  }
  const rule: AllowRule = { cidr: norm };
  if (ports !== undefined) rule.ports = parsePorts(ports, s);
  return rule;
}

function checkTorPorts(v: unknown): number[] | undefined {
  if (v === undefined) return undefined;
  if (!Array.isArray(v) || v.length === 0 || v.length > 64) throw new UserError('torPorts must be a list of 1 to 64 ports');
  const ports = v.map((p) => {
    if (typeof p !== 'number' || !Number.isInteger(p) || p < 1 || p > 65535) throw new UserError(`invalid Tor port ${JSON.stringify(p)}: a port from 1 to 65535`);
    return p;
  });
  return [...new Set(ports)].sort((a, b) => a - b);
}


export function checkRoute(v: unknown): Route {
  const o = asObject(v, 'route');
  switch (o.kind) {
    case 'none': {
      const torPorts = checkTorPorts(o.torPorts);
      return torPorts !== undefined ? { kind: 'none', torPorts } : { kind: 'none' };
    }
    case 'direct': {
      const r: Route = { kind: 'direct' };
      const torPorts = checkTorPorts(o.torPorts);
      if (torPorts !== undefined) r.torPorts = torPorts;
      if (o.allow === undefined) return r;
      if (!Array.isArray(o.allow)) throw new UserError('route.allow must be a list of CIDR[:PORTS] rules');
      const allow = o.allow.map((x) => (typeof x === 'string' ? parseAllowRule(x) : parseAllowRule(formatAllowRule(asObject(x, 'allow rule') as unknown as AllowRule))));
      if (allow.length > 0) r.allow = allow;
      return r;
    }
    case 'via':
      if (o.torPorts !== undefined) throw new UserError('--tor-ports does not combine with --via');
      return { kind: 'via', vm: checkName(o.vm, 'via VM') };
    case 'tor':
      return { kind: 'tor' };
    default:
      throw new UserError(`unknown route kind ${JSON.stringify(o.kind)}: one of none, direct, via, tor`);
  }
}

export function formatAllowRule(r: AllowRule): string {
  const ports = r.ports?.map(([a, b]) => (a === b ? `${a}` : `${a}-${b}`)).join(',');
  if (ports === undefined) return r.cidr;
  return r.cidr.includes(':') ? `[${r.cidr}]:${ports}` : `${r.cidr}:${ports}`;
}

export function describeRoute(r: Route): string {
  const tor = 'torPorts' in r && r.torPorts !== undefined ? `; TCP ports ${r.torPorts.join(',')} through Tor` : '';
  switch (r.kind) {
    case 'none':
      return `none (gateway services only)${tor}`;
    case 'direct':
      return (r.allow === undefined ? 'direct' : `direct, allow ${r.allow.map(formatAllowRule).join(' ')}`) + tor;
    case 'via':
      return `via ${r.vm}`;
    case 'tor':
      return 'all-tor (every TCP stream and DNS query through Tor; nothing else leaves)';
  }
}
