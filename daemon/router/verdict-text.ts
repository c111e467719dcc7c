/** Route decisions as a capture's packet comments say them, and the exit point each one reaches. */
import type { Reason, Verdict } from '../routes/decide.js';
import type { Route } from '../routes/route.js';
import type { ExitName } from '../capture/points.js';

const REASON_TEXT: Record<Reason, string> = {
  'gateway-port-closed': 'gateway port closed',
  'route-none': 'route none',
  'not-allowed': 'not in allow-list',
  'forbidden-destination': "forbidden destination (the host's own or a special address)",
  'tor-not-configured': 'Tor not configured',
  'tor-not-ready': 'Tor not ready',
  'tor-unmapped': 'no onion name mapped at this address',
  'not-through-tor': 'cannot go through Tor',
  'via-dns': 'DNS of a VM routed via another VM',
};

/**
 * `circuit`: the identity's current circuit name (`vm1/3`: its SOCKS credentials' generation,
 * which `tor newnym` moves on); without it the bare identity.
 */
export function verdictComment(v: Verdict, circuit?: (identity: string) => string): string {
  switch (v.kind) {
    case 'direct':
      return 'direct';
    case 'tor':
      return `tor circuit-identity ${circuit !== undefined ? circuit(v.identity) : v.identity}${v.host.endsWith('.onion') ? ` to ${v.host}` : ''}`;
    case 'local':
      return `local ${v.service}`;
    case 'via':
      return `via ${v.vm}`;
    case 'refuse':
      return `refused: ${REASON_TEXT[v.reason]}`;
    case 'drop':
      return `dropped: ${REASON_TEXT[v.reason]}`;
  }
}

/** The exit a verdict hands the packet to; a refused or dropped flow shows at its route's exit (none: nowhere). */
export function exitOf(v: Verdict, route: Route): ExitName | null {
  switch (v.kind) {
    case 'direct':
    case 'tor':
    case 'local':
    case 'via':
      return v.kind;
    default:
      return route.kind === 'none' ? null : route.kind;
  }
}
