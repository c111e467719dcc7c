/**
 * The topology as a graph, built from what the daemon reports (`daemon.status`, `route.show`,
 * `link.list`, and `tor.status` when Tor is in use): networks, VMs, routes, encrypted links to
 * peer routers, and Tor. Pure functions, so the DOT and JSON forms are unit-tested
 * without a daemon; `mvnet graph` prints them and the HTML page (html.ts) draws the JSON.
 */
import type { LinkInfo, LinksInfo, RouteInfo, StatusInfo, TorStatus, VmInfo } from '../../daemon/control/api.js';

/** How a VM's traffic leaves: the colour of its node and of its route edge. */
export type RouteClass = 'none' | 'direct' | 'via' | 'tor' | 'tor-ports';

export type GraphNode =
  | { id: string; type: 'network'; label: string; name: string; subnet: string; gateway: string; ipv6: string | null; mtu: number; forwarded: number; flooded: number; drops: number }
  | {
      id: string;
      type: 'vm';
      label: string;
      name: string;
      net: string | null;
      attached: boolean;
      ip: string | null;
      mac: string | null;
      device: string;
      state: 'up' | 'degraded' | 'waiting' | 'down' | 'detached';
      route: RouteClass;
      routeDescription: string;
    }
  | { id: string; type: 'host'; label: string }
  | { id: string; type: 'tor'; label: string; phase: string; progress: number; configured: boolean }
  /** A peer router at the far end of a link (by its public key). */
  | { id: string; type: 'peer'; label: string; publicKey: string; endpoint: string | null };

export interface Counters {
  rxFrames: number;
  rxBytes: number;
  txFrames: number;
  txBytes: number;
}

export type GraphEdge =
  /** A VM's device on its network; rx/tx as the daemon counts them at the VM's port (rx: from the VM). */
  | { id: string; type: 'attachment'; from: string; to: string; label: string; counters: Counters; state: 'up' | 'degraded' | 'waiting' | 'down' }
  /** Where a VM's flows go beyond the gateway. */
  | { id: string; type: 'route'; from: string; to: string; label: string; route: RouteClass }
  /** A network extended over an encrypted link to a peer router. */
  | { id: string; type: 'link'; from: string; to: string; label: string; state: LinkInfo['state'] };

export interface Graph {
  version: 1;
  daemon: { version: string; pid: number; uptimeSec: number; torConfigured: boolean };
  nodes: GraphNode[];
  edges: GraphEdge[];
  /** Encrypted links (`link list`): links between routers and agent ports. */
  links: GraphLink[];
}

export interface GraphLink {
  name: string;
  kind: 'link' | 'agent';
  net: string;
  peer: string;
  state: LinkInfo['state'];
  endpoint: string | null;
  listen: string | null;
  lastHandshake: string | null;
}

export interface GraphInput {
  status: StatusInfo;
  routes: RouteInfo[];
  /** `tor.status`, when Tor is configured or a route uses it (else null). */
  tor: TorStatus | null;
  /** `link.list` (null or absent: no links shown). */
  links?: LinksInfo | null;
}

export const ROUTE_COLOURS: Readonly<Record<RouteClass, string>> = {
  none: '#9e9e9e',
  direct: '#e69f00',
  via: '#0072b2',
  tor: '#7e3fbf',
  'tor-ports': '#cc79a7',
};

export const HOST_ID = 'host';
export const TOR_ID = 'tor';

export function routeClass(r: RouteInfo['route']): RouteClass {
  if (r.kind === 'tor') return 'tor';
  if (r.kind === 'via') return 'via';
  if (r.torPorts !== null) return 'tor-ports';
  return r.kind;
}

/** 1536 -> "1.5 KiB". */
export function humanBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${v.toFixed(1)} ${units[i]}`;
}

function describeDevice(p: VmInfo['port']): string {
  switch (p.kind) {
    case 'tap':
    case 'tun':
    case 'iface':
      return `${p.kind} ${p.ifname}${p.netns !== null ? ` (netns ${p.netns})` : ''}`;
    case 'unix':
    case 'unix-listen':
    case 'dgram':
    case 'vhost-user':
      return `${p.kind} ${p.path}`;
    case 'fd':
      return 'fd (passed)';
    case 'fifo':
      return `fifo ${p.rx}:${p.tx}`;
    case 'plugin':
      return `${p.driver} (plugin)`;
    case 'agent':
      return `agent ${p.peer.slice(0, 8)}… on ${p.listen ?? '?'}`;
  }
}

export function counterLabel(c: Counters): string {
  return `rx ${c.rxFrames} fr / ${humanBytes(c.rxBytes)}\ntx ${c.txFrames} fr / ${humanBytes(c.txBytes)}`;
}

export function buildGraph(input: GraphInput): Graph {
  const { status, routes, tor } = input;
  const nodes: GraphNode[] = [];
  const edges: GraphEdge[] = [];
  const routeOf = new Map(routes.map((r) => [r.vm, r]));
  for (const n of status.networks) {
    const drops = Object.values(n.stats.drops).reduce<number>((a, b) => a + (b ?? 0), 0);
    nodes.push({
      id: `net:${n.name}`,
      type: 'network',
      label: `${n.name}\n${n.subnet}${n.ipv6 !== null ? `\n${n.ipv6}` : ''}\ngw ${n.gateway}`,
      name: n.name,
      subnet: n.subnet,
      gateway: n.gateway,
      ipv6: n.ipv6 ?? null,
      mtu: n.mtu,
      forwarded: n.stats.forwarded,
      flooded: n.stats.flooded,
      drops,
    });
  }
  const vmNames = new Set<string>();
  for (const v of status.vms) {
    vmNames.add(v.name);
    const r = routeOf.get(v.name);
    const rc = r !== undefined ? routeClass(r.route) : 'none';
    nodes.push({
      id: `vm:${v.name}`,
      type: 'vm',
      label: `${v.name}${v.ip !== null ? `\n${v.ip}` : ''}`,
      name: v.name,
      net: v.net,
      attached: true,
      ip: v.ip,
      mac: v.mac,
      device: describeDevice(v.port),
      state: v.port.state,
      route: rc,
      routeDescription: r?.routeText ?? v.routeText,
    });
    const c: Counters = { rxFrames: v.port.stats.rxFrames, rxBytes: v.port.stats.rxBytes, txFrames: v.port.stats.txFrames, txBytes: v.port.stats.txBytes };
    edges.push({ id: `att:${v.name}`, type: 'attachment', from: `vm:${v.name}`, to: `net:${v.net}`, label: counterLabel(c), counters: c, state: v.port.state });
  }
  // Routes kept for VMs that are not attached (they apply when the VM comes back).
  for (const r of routes) {
    if (vmNames.has(r.vm)) continue;
    vmNames.add(r.vm);
    nodes.push({ id: `vm:${r.vm}`, type: 'vm', label: `${r.vm}\n(not attached)`, name: r.vm, net: null, attached: false, ip: null, mac: null, device: '-', state: 'detached', route: routeClass(r.route), routeDescription: r.routeText });
  }
  let needHost = false;
  let needTor = tor !== null || status.daemon.torConfigured;
  for (const r of [...routes].sort((a, b) => a.vm.localeCompare(b.vm))) {
    const from = `vm:${r.vm}`;
    const rc = routeClass(r.route);
    switch (r.route.kind) {
      case 'none':
        break;
      case 'direct': {
        needHost = true;
        const allow = r.route.allow !== null ? ` (${r.route.allow.length} allow rule${r.route.allow.length === 1 ? '' : 's'})` : '';
        edges.push({ id: `route:${r.vm}:host`, type: 'route', from, to: HOST_ID, label: `direct${allow}`, route: rc });
        break;
      }
      case 'via':
        edges.push({ id: `route:${r.vm}:via`, type: 'route', from, to: `vm:${r.route.vm}`, label: 'via', route: rc });
        if (!vmNames.has(r.route.vm)) {
          vmNames.add(r.route.vm);
          nodes.push({ id: `vm:${r.route.vm}`, type: 'vm', label: `${r.route.vm}\n(not attached)`, name: r.route.vm, net: null, attached: false, ip: null, mac: null, device: '-', state: 'detached', route: 'none', routeDescription: 'none' });
        }
        break;
      case 'tor':
        needTor = true;
        edges.push({ id: `route:${r.vm}:tor`, type: 'route', from, to: TOR_ID, label: 'all-tor', route: rc });
        break;
    }
    if (r.route.kind !== 'tor' && r.route.kind !== 'via' && r.route.torPorts !== null) {
      needTor = true;
      edges.push({ id: `route:${r.vm}:tor-ports`, type: 'route', from, to: TOR_ID, label: `TCP ${r.route.torPorts.join(',')}`, route: 'tor-ports' });
    }
  }
  if (needHost) nodes.push({ id: HOST_ID, type: 'host', label: 'host sockets\n(direct)' });
  if (needTor) {
    const phase = tor?.phase ?? 'not started';
    const progress = tor?.progress ?? 0;
    nodes.push({ id: TOR_ID, type: 'tor', label: `Tor\n${phase}${tor !== null ? ` ${progress}%` : ''}${status.daemon.torConfigured ? '' : '\n(not configured)'}`, phase, progress, configured: status.daemon.torConfigured });
  }
  const links: GraphLink[] = [];
  for (const l of input.links?.links ?? []) {
    links.push({ name: l.name, kind: l.kind, net: l.net, peer: l.peer, state: l.state, endpoint: l.endpoint, listen: l.listen, lastHandshake: l.lastHandshake });
    if (l.kind !== 'link') continue;
    const id = `peer:${l.peer}`;
    if (!nodes.some((n) => n.id === id)) nodes.push({ id, type: 'peer', label: `router ${l.peer.slice(0, 8)}…${l.endpoint !== null ? `\n${l.endpoint}` : ''}`, publicKey: l.peer, endpoint: l.endpoint });
    edges.push({ id: `link:${l.name}`, type: 'link', from: `net:${l.net}`, to: id, label: `link ${l.name}\n${l.state}`, state: l.state });
  }
  return {
    version: 1,
    daemon: { version: status.daemon.version, pid: status.daemon.pid, uptimeSec: status.daemon.uptimeSec, torConfigured: status.daemon.torConfigured },
    nodes,
    edges,
    links,
  };
}

/** A DOT quoted string: backslash and quote escaped, newlines as DOT's centred line break. */
export function dotString(s: string): string {
  return `"${s.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\r?\n/g, '\\n')}"`;
}

type Attrs = Record<string, string>;

const NODE_STYLE: Record<GraphNode['type'], Attrs> = {
  network: { shape: 'box', style: 'rounded,filled', fillcolor: '#dbe9f6', color: '#1f4e79', penwidth: '2' },
  vm: { shape: 'ellipse', style: 'filled', fontcolor: '#ffffff' },
  host: { shape: 'cylinder', style: 'filled', fillcolor: '#fff3d6', color: '#e69f00' },
  tor: { shape: 'doubleoctagon', style: 'filled', fillcolor: '#eadcf7', color: '#7e3fbf' },
  peer: { shape: 'box3d', style: 'filled', fillcolor: '#e8f5e9', color: '#2e7d32' },
};

function attrList(a: Attrs): string {
  return Object.entries(a)
    .map(([k, v]) => `${k}=${dotString(v)}`)
    .join(', ');
}

/** Graphviz DOT: one node per network, VM, host and Tor; edges for attachments (with counters) and routes. */
export function toDot(g: Graph): string {
  const out = ['digraph mvnet {', '  graph [rankdir="LR", fontname="sans-serif", label="mvnet topology", labelloc="t"];', '  node [fontname="sans-serif", fontsize="10"];', '  edge [fontname="sans-serif", fontsize="8"];'];
  for (const n of g.nodes) {
    const a: Attrs = { label: n.label, ...NODE_STYLE[n.type] };
    if (n.type === 'vm') {
      a.fillcolor = ROUTE_COLOURS[n.route];
      if (!n.attached) a.style = 'filled,dashed';
      else if (n.state !== 'up') Object.assign(a, { color: '#d00000', penwidth: '2' });
      a.tooltip = `${n.device}; route ${n.routeDescription}`;
    }
    out.push(`  ${dotString(n.id)} [${attrList(a)}];`);
  }
  for (const e of g.edges) {
    const a: Attrs = { label: e.label };
    if (e.type === 'attachment') Object.assign(a, { dir: 'none', color: '#1f4e79' }, e.state !== 'up' ? { style: 'dashed' } : {});
    else if (e.type === 'route') Object.assign(a, { color: ROUTE_COLOURS[e.route], style: 'bold' });
    else Object.assign(a, { dir: 'none', color: '#2e7d32', penwidth: '2' }, e.state !== 'established' ? { style: 'dashed' } : {});
    out.push(`  ${dotString(e.from)} -> ${dotString(e.to)} [${attrList(a)}];`);
  }
  out.push('}');
  return out.join('\n') + '\n';
}
