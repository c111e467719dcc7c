/**
 * A VM's route: data, checked by one function per flow. `none` is the default for every VM, so
 * nothing leaves unless someone says so.
 *  - none:   gateway services only (DHCP, ARP, ping to the gateway, DNS that answers nothing outside)
 *  - direct: userland NAT: each flow becomes a host socket to the same destination, optionally
 *            limited by an allow-list (everything else dropped)
 *  - via:    another VM on the same network (a firewall/VPN VM) is this VM's gateway
 *
 * Routes given to the control API or read from the state file are checked by `checkRoute`
 * (validate.ts).
 */

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

/** An allow rule as answers carry it: unset ports null (all ports). */
export interface AllowRuleView {
  cidr: string;
  ports: [number, number][] | null;
}

/** A VM's route as answers and events carry it: the Route with unset fields null (the --json contract). */
export type RouteView =
  | { kind: 'none'; torPorts: number[] | null }
  | { kind: 'direct'; allow: AllowRuleView[] | null; torPorts: number[] | null }
  | { kind: 'via'; vm: string }
  | { kind: 'tor' };

export const DEFAULT_ROUTE: Route = { kind: 'none' };

/** The route sends something through Tor (all-tor, or Tor ports): Tor must run, and every name is resolved through it. */
export function usesTor(r: Route): boolean {
  return r.kind === 'tor' || ('torPorts' in r && r.torPorts !== undefined);
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
