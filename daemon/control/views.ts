/**
 * Answers as the contract (api.ts) shapes them from the daemon's own records: unset fields null,
 * never absent; a route as RouteView; a `--fifo` port as kind `fifo`. The records themselves (the
 * state file's) keep their optional fields, so old state files load unchanged.
 */
import type { PortSpec } from '../../plugins/types.js';
import type { Route } from '../routes/route.js';
import type { NetworkSpec } from '../state/model.js';
import type { CaptureSourceView, NetInfo, PortView, RouteView } from './api.js';

export function routeView(r: Route): RouteView {
  switch (r.kind) {
    case 'none':
      return { kind: 'none', torPorts: r.torPorts ?? null };
    case 'direct':
      return { kind: 'direct', allow: r.allow?.map((a) => ({ cidr: a.cidr, ports: a.ports ?? null })) ?? null, torPorts: r.torPorts ?? null };
    case 'via':
      return { kind: 'via', vm: r.vm };
    case 'tor':
      return { kind: 'tor' };
  }
}

export function portView(p: PortSpec): PortView {
  switch (p.kind) {
    case 'tap':
      return { kind: 'tap', ifname: p.ifname, netns: p.netns ?? null, mac: p.mac ?? null, vnetHdr: p.vnetHdr ?? null, multiQueue: p.multiQueue ?? null };
    case 'tun':
    case 'iface':
      return { kind: p.kind, ifname: p.ifname, netns: p.netns ?? null };
    case 'unix':
    case 'unix-listen':
    case 'vhost-user':
      return { kind: p.kind, path: p.path };
    case 'dgram':
      return { kind: 'dgram', path: p.path, peer: p.peer ?? null };
    case 'fd':
      // Stored as kind fd (state files of earlier versions too); reported as what was given.
      return p.token !== undefined ? { kind: 'fd', token: p.token } : { kind: 'fifo', rx: p.rx ?? '', tx: p.tx ?? '' };
    case 'plugin':
      return { kind: 'plugin', driver: p.driver, options: p.options };
    case 'agent':
      return { kind: 'agent', peer: p.peer, listen: p.listen ?? null, layer: p.layer ?? null };
  }
}

export function netView(n: NetworkSpec): Omit<NetInfo, 'vms' | 'stats' | 'router'> {
  return { name: n.name, subnet: n.subnet, gateway: n.gateway, ipv6: n.ipv6 ?? null, mtu: n.mtu, dhcpRange: n.dhcpRange ?? null };
}

export function sourceView(s: { vm?: string; net?: string; point?: string[] }): CaptureSourceView {
  return { vm: s.vm ?? null, net: s.net ?? null, point: s.point ?? null };
}
