/**
 * The one route decision: given a VM's compiled route, what the router knows of Tor and of the
 * host, and one flow, where may the flow go? Pure: no counters, no sockets, no clock. Every
 * caller (TCP and UDP flows, ping, DNS, the live recheck after a route change) asks here and
 * does its own counting, so asking twice costs nothing and changes nothing.
 */
import { ipString, type IpAddr } from '../endpoint/addr.js';
import type { CompiledRoute } from './policy.js';
import { usesTor } from './route.js';

/** What the decision needs to know of Tor, sampled by the caller. */
export interface TorView {
  /** A Tor (embedded or external) is configured at all. */
  readonly configured: boolean;
  /** Its SOCKS port is usable now (bootstrapped, not down). */
  readonly ready: boolean;
  /**
   * For an IPv4 address inside the automap range: the .onion name it stands for, or null when
   * nothing is mapped there. undefined: the address is outside the range.
   */
  onionAt(dst: IpAddr): string | null | undefined;
}

/** What the decision needs to know of the host and the network. */
export interface PlaceView {
  /** The host's loopback, own addresses and special ranges: never a destination of any route. */
  forbidden(dst: IpAddr): boolean;
  /** The gateway's own address (IPv4 or either IPv6 one). */
  isGateway(dst: IpAddr): boolean;
  /**
   * `direct.hostLoopback`: whether a direct-routed VM reaches the host's loopback `port` at the
   * gateway address (the port is listed in `direct.hostLoopbackPorts` and is not Tor's).
   */
  hostLoopback(port: number): boolean;
}

export type Flow =
  | { readonly proto: 'tcp' | 'udp'; readonly dst: IpAddr; readonly port: number }
  /** An ICMP echo request beyond the gateway. */
  | { readonly proto: 'ping'; readonly dst: IpAddr }
  /** A DNS question for a name outside the network's own zone. */
  | { readonly proto: 'dns' };

export type Reason =
  | 'gateway-port-closed'
  | 'route-none'
  | 'not-allowed'
  | 'forbidden-destination'
  | 'tor-not-configured'
  | 'tor-not-ready'
  | 'tor-unmapped'
  | 'not-through-tor'
  | 'via-dns';

/** What the VM sees when a flow is refused. */
export type Answer =
  /** TCP RST (fail closed: looks like a closed port). */
  | 'reset'
  /** ICMP administratively prohibited (a real router's answer for a filtered destination). */
  | 'prohibited'
  /** DNS REFUSED. */
  | 'refused'
  /** DNS SERVFAIL (a temporary failure: Tor is not ready). */
  | 'servfail';

export type Verdict =
  /** A gateway service answers: DNS over TCP, or the host's loopback behind the gateway address. */
  | { readonly kind: 'local'; readonly service: 'dns' | 'host-loopback' }
  | { readonly kind: 'direct' }
  /** Through Tor, isolated by `identity`; `host` is what the SOCKS CONNECT names (IP or .onion). */
  | { readonly kind: 'tor'; readonly identity: string; readonly host: string }
  /** The VM's gateway is another VM: the mvnet gateway does not carry this flow. */
  | { readonly kind: 'via'; readonly vm: string }
  | { readonly kind: 'refuse'; readonly reason: Reason; readonly answer: Answer }
  | { readonly kind: 'drop'; readonly reason: Reason };

const closedGateway: Verdict = { kind: 'drop', reason: 'gateway-port-closed' };

function refuse(reason: Reason, answer: Answer): Verdict {
  return { kind: 'refuse', reason, answer };
}

/** Which VMs' flows go through Tor on this port (all-tor: every TCP port). */
function torTcpPort(route: CompiledRoute, port: number): boolean {
  const r = route.route;
  return r.kind === 'tor' || ('torPorts' in r && r.torPorts?.includes(port) === true);
}


/**
 * `direct.hostLoopback`: the gateway address stands for the host's loopback, for a direct route
 * only, on the listed ports only, and within the route's allow-list ("only those destinations";
 * no list: every listed port).
 */
function hostLoopback(route: CompiledRoute, place: PlaceView, dst: IpAddr, port: number): boolean {
  return route.route.kind === 'direct' && place.hostLoopback(port) && route.allows(dst, port);
}

function torStream(vm: string, tor: TorView, dst: IpAddr, place: PlaceView): Verdict {
  if (!tor.configured) return refuse('tor-not-configured', 'reset');
  if (!tor.ready) return refuse('tor-not-ready', 'reset');
  const onion = tor.onionAt(dst);
  if (onion === null) return refuse('tor-unmapped', 'reset');
  if (onion !== undefined) return { kind: 'tor', identity: vm, host: onion };
  // Tor by IP, never towards this host's own or special addresses.
  if (place.forbidden(dst)) return refuse('forbidden-destination', 'reset');
  return { kind: 'tor', identity: vm, host: ipString(dst) };
}

/** Where `vm`'s `flow` may go under `route`. */
export function decide(vm: string, route: CompiledRoute, tor: TorView, place: PlaceView, flow: Flow): Verdict {
  const r = route.route;
  switch (flow.proto) {
    case 'dns': {
      // The network's own names were answered before asking.
      // Any Tor use means every name is resolved through Tor: a lookup elsewhere would leak.
      if (usesTor(route.route)) {
        if (!tor.configured) return refuse('tor-not-configured', 'refused');
        if (!tor.ready) return refuse('tor-not-ready', 'servfail');
        return { kind: 'tor', identity: vm, host: '' };
      }
      if (r.kind === 'direct') return { kind: 'direct' };
      // A via VM resolves through its firewall VM; resolving around it would leak.
      return refuse(r.kind === 'via' ? 'via-dns' : 'route-none', 'refused');
    }
    case 'ping': {
      if (place.isGateway(flow.dst)) return closedGateway;
      if (r.kind === 'via') return { kind: 'via', vm: r.vm };
      if (r.kind !== 'direct') return { kind: 'drop', reason: r.kind === 'tor' ? 'not-through-tor' : 'route-none' };
      if (place.forbidden(flow.dst)) return { kind: 'drop', reason: 'forbidden-destination' };
      return route.allows(flow.dst, 0) ? { kind: 'direct' } : { kind: 'drop', reason: 'not-allowed' };
    }
    case 'tcp': {
      const { dst, port } = flow;
      if (place.isGateway(dst)) {
        if (port === 53) return { kind: 'local', service: 'dns' };
        if (hostLoopback(route, place, dst, port)) return { kind: 'local', service: 'host-loopback' };
        return refuse('gateway-port-closed', 'reset');
      }
      // The mvnet gateway drops a via VM's outside traffic, whatever its destination (as ping).
      if (r.kind === 'via') return { kind: 'via', vm: r.vm };
      if (torTcpPort(route, port)) return torStream(vm, tor, dst, place);
      if (place.forbidden(dst)) return refuse('forbidden-destination', 'prohibited');
      if (r.kind !== 'direct') return refuse('route-none', 'prohibited');
      return route.allows(dst, port) ? { kind: 'direct' } : refuse('not-allowed', 'prohibited');
    }
    case 'udp': {
      const { dst, port } = flow;
      if (place.isGateway(dst)) {
        if (hostLoopback(route, place, dst, port)) return { kind: 'local', service: 'host-loopback' };
        return closedGateway;
      }
      // via: the mvnet gateway drops it; all-tor: UDP is dropped (and counted), never answered.
      if (r.kind === 'via') return { kind: 'via', vm: r.vm };
      if (r.kind === 'tor') return { kind: 'drop', reason: 'not-through-tor' };
      if (place.forbidden(dst)) return refuse('forbidden-destination', 'prohibited');
      if (r.kind === 'none') return refuse('route-none', 'prohibited');
      return route.allows(dst, port) ? { kind: 'direct' } : refuse('not-allowed', 'prohibited');
    }
  }
}

/**
 * The identity of where an open flow goes: a flow stays open across a route change only while
 * the new verdict gives the same one.
 */
export function verdictTag(v: Verdict): string | null {
  switch (v.kind) {
    case 'local':
      return v.service === 'dns' ? 'local' : 'direct';
    case 'direct':
      return 'direct';
    case 'tor':
      return 'tor';
    default:
      return null;
  }
}
