/**
 * Prometheus metrics: read at scrape time from the counters the daemon keeps anyway (the same
 * numbers `mvnet status --json` shows), so metrics cost nothing per packet. One snapshot is taken
 * per scrape and every metric reads it. A registry of our own (prom-client), no default process
 * metrics.
 */
import client from 'prom-client';
import type { CaptureInfo, DaemonErrors, LinkInfo, NetInfo, RouteInfo, VmInfo } from '../control/api.js';

export interface MetricsSnapshot {
  vms: VmInfo[];
  networks: NetInfo[];
  routes: RouteInfo[];
  links: LinkInfo[];
  /** Link drops no peer can be blamed for. */
  linkDrops: Record<string, number>;
  captures: CaptureInfo[];
  /** null: Tor was never started. */
  tor: { phase: string; progress: number; restarts: number } | null;
  /** VMs whose Tor route fails closed now. */
  failing: ReadonlySet<string>;
  errors: DaemonErrors;
  events: { emitted: ReadonlyMap<string, number>; followers: number; overflows: number };
}

type Labels = Record<string, string>;
type Sample = [Labels, number];

interface Def {
  name: string;
  help: string;
  type: 'counter' | 'gauge';
  labels: string[];
  samples(s: MetricsSnapshot): Sample[];
}

const usesTor = (r: RouteInfo['route']): boolean => r.kind === 'tor' || ('torPorts' in r && r.torPorts !== null);

function portStat(k: 'rxFrames' | 'rxBytes' | 'txFrames' | 'txBytes') {
  return (s: MetricsSnapshot): Sample[] => s.vms.map((v) => [{ vm: v.name, net: v.net }, v.port.stats[k]]);
}

function linkStat(dir: 'rx' | 'tx', k: 'packets' | 'bytes') {
  return (s: MetricsSnapshot): Sample[] => s.links.map((l) => [{ link: l.name, kind: l.kind }, l[dir][k]]);
}

function netStat(k: 'forwarded' | 'flooded' | 'toGateway') {
  return (s: MetricsSnapshot): Sample[] => s.networks.map((n) => [{ net: n.name }, n.stats[k]]);
}

/** Every metric: the README lists these names. */
export const METRICS: readonly Def[] = [
  { name: 'mvnet_port_up', help: 'A VM port is up (1) or waiting/down (0)', type: 'gauge', labels: ['vm', 'net', 'kind'], samples: (s) => s.vms.map((v) => [{ vm: v.name, net: v.net, kind: v.port.kind }, v.port.state === 'up' ? 1 : 0]) },
  { name: 'mvnet_port_rx_frames_total', help: 'Frames received from the VM', type: 'counter', labels: ['vm', 'net'], samples: portStat('rxFrames') },
  { name: 'mvnet_port_rx_bytes_total', help: 'Bytes received from the VM', type: 'counter', labels: ['vm', 'net'], samples: portStat('rxBytes') },
  { name: 'mvnet_port_tx_frames_total', help: 'Frames sent to the VM', type: 'counter', labels: ['vm', 'net'], samples: portStat('txFrames') },
  { name: 'mvnet_port_tx_bytes_total', help: 'Bytes sent to the VM', type: 'counter', labels: ['vm', 'net'], samples: portStat('txBytes') },
  {
    name: 'mvnet_port_drops_total',
    help: 'Frames a VM port or its switch port dropped, by reason',
    type: 'counter',
    labels: ['vm', 'net', 'reason'],
    samples: (s) => s.vms.flatMap((v) => Object.entries(v.port.stats.drops).map(([reason, n]): Sample => [{ vm: v.name, net: v.net, reason }, n ?? 0])),
  },
  {
    name: 'mvnet_vm_flows',
    help: 'Open flows of a VM through the gateway',
    type: 'gauge',
    labels: ['vm', 'proto'],
    samples: (s) => s.vms.flatMap((v): Sample[] => (v.flows === null ? [] : [[{ vm: v.name, proto: 'tcp' }, v.flows.tcp], [{ vm: v.name, proto: 'udp' }, v.flows.udp]])),
  },
  {
    name: 'mvnet_vm_flow_limit_hits_total',
    help: "New flows refused because the VM's flow table was full (limits.tcpPerVm, limits.udpPerVm)",
    type: 'counter',
    labels: ['vm', 'proto'],
    samples: (s) => s.vms.flatMap((v): Sample[] => (v.flows === null ? [] : [[{ vm: v.name, proto: 'tcp' }, v.flows.tcpLimit], [{ vm: v.name, proto: 'udp' }, v.flows.udpLimit]])),
  },
  {
    name: 'mvnet_vm_flows_refused_total',
    help: "New flows refused or dropped by the VM's route",
    type: 'counter',
    labels: ['vm', 'proto'],
    samples: (s) => s.vms.flatMap((v): Sample[] => (v.flows === null ? [] : [[{ vm: v.name, proto: 'tcp' }, v.flows.tcpRefused], [{ vm: v.name, proto: 'udp' }, v.flows.udpDropped]])),
  },
  { name: 'mvnet_route_info', help: "A VM's route (always 1): kind none, direct, via or tor; tor=true when any of it goes through Tor", type: 'gauge', labels: ['vm', 'kind', 'tor'], samples: (s) => s.routes.map((r) => [{ vm: r.vm, kind: r.route.kind, tor: String(usesTor(r.route)) }, 1]) },
  { name: 'mvnet_route_failclosed', help: 'A VM whose route uses Tor has no Tor now: its Tor traffic is refused (1)', type: 'gauge', labels: ['vm'], samples: (s) => s.routes.filter((r) => usesTor(r.route)).map((r) => [{ vm: r.vm }, s.failing.has(r.vm) ? 1 : 0]) },
  { name: 'mvnet_network_forwarded_frames_total', help: 'Frames the switch forwarded to one port', type: 'counter', labels: ['net'], samples: netStat('forwarded') },
  { name: 'mvnet_network_flooded_frames_total', help: 'Frames the switch flooded', type: 'counter', labels: ['net'], samples: netStat('flooded') },
  { name: 'mvnet_network_to_gateway_frames_total', help: 'Frames sent to the gateway', type: 'counter', labels: ['net'], samples: netStat('toGateway') },
  {
    name: 'mvnet_network_drops_total',
    help: 'Frames the switch dropped, by reason',
    type: 'counter',
    labels: ['net', 'reason'],
    samples: (s) => s.networks.flatMap((n) => Object.entries(n.stats.drops).map(([reason, v]): Sample => [{ net: n.name, reason }, v ?? 0])),
  },
  {
    name: 'mvnet_router_events_total',
    help: "The network gateway's router and endpoint counters (torRefused, torDropped, spoofed, noRoute, tcpOpened, tcpRefused, udpDropped, ...)",
    type: 'counter',
    labels: ['net', 'counter'],
    samples: (s) => s.networks.flatMap((n) => Object.entries(n.router).map(([counter, v]): Sample => [{ net: n.name, counter }, v])),
  },
  { name: 'mvnet_tor_up', help: 'Tor is ready (1) or not (0)', type: 'gauge', labels: [], samples: (s) => [[{}, s.tor?.phase === 'ready' ? 1 : 0]] },
  { name: 'mvnet_tor_bootstrap_percent', help: "Tor's bootstrap progress", type: 'gauge', labels: [], samples: (s) => [[{}, s.tor?.progress ?? 0]] },
  { name: 'mvnet_tor_restarts_total', help: 'Times the embedded Tor was started again (external: its control port reconnected)', type: 'counter', labels: [], samples: (s) => [[{}, s.tor?.restarts ?? 0]] },
  { name: 'mvnet_link_up', help: "A link's (or agent's) session is established (1) or not (0)", type: 'gauge', labels: ['link', 'kind'], samples: (s) => s.links.map((l) => [{ link: l.name, kind: l.kind }, l.state === 'established' ? 1 : 0]) },
  { name: 'mvnet_link_rx_packets_total', help: 'Packets received over a link', type: 'counter', labels: ['link', 'kind'], samples: linkStat('rx', 'packets') },
  { name: 'mvnet_link_rx_bytes_total', help: 'Bytes received over a link', type: 'counter', labels: ['link', 'kind'], samples: linkStat('rx', 'bytes') },
  { name: 'mvnet_link_tx_packets_total', help: 'Packets sent over a link', type: 'counter', labels: ['link', 'kind'], samples: linkStat('tx', 'packets') },
  { name: 'mvnet_link_tx_bytes_total', help: 'Bytes sent over a link', type: 'counter', labels: ['link', 'kind'], samples: linkStat('tx', 'bytes') },
  { name: 'mvnet_link_handshakes_total', help: 'Completed handshakes of a link', type: 'counter', labels: ['link', 'kind'], samples: (s) => s.links.map((l) => [{ link: l.name, kind: l.kind }, l.handshakes]) },
  {
    name: 'mvnet_link_drops_total',
    help: 'Link messages dropped, by reason (link="" for those no peer can be blamed for)',
    type: 'counter',
    labels: ['link', 'kind', 'reason'],
    samples: (s) => [
      ...s.links.flatMap((l) => Object.entries(l.drops).map(([reason, v]): Sample => [{ link: l.name, kind: l.kind, reason }, v])),
      ...Object.entries(s.linkDrops).map(([reason, v]): Sample => [{ link: '', kind: '', reason }, v]),
    ],
  },
  { name: 'mvnet_capture_captured_total', help: 'Packets a capture or tee wrote', type: 'counter', labels: ['capture', 'kind'], samples: (s) => s.captures.map((c) => [{ capture: c.name ?? c.id, kind: c.kind }, c.counters.captured]) },
  { name: 'mvnet_capture_dropped_total', help: 'Packets a capture or tee lost (its queue or a tee ring was full)', type: 'counter', labels: ['capture', 'kind'], samples: (s) => s.captures.map((c) => [{ capture: c.name ?? c.id, kind: c.kind }, c.counters.dropped]) },
  { name: 'mvnet_daemon_errors_total', help: 'Exceptions caught (each one a bug), by where', type: 'counter', labels: ['where'], samples: (s) => Object.entries(s.errors).map(([where, v]): Sample => [{ where }, v]) },
  { name: 'mvnet_events_total', help: 'Events emitted, by type', type: 'counter', labels: ['type'], samples: (s) => [...s.events.emitted].map(([type, v]): Sample => [{ type }, v]) },
  { name: 'mvnet_event_followers', help: 'Connections following events now', type: 'gauge', labels: [], samples: (s) => [[{}, s.events.followers]] },
  { name: 'mvnet_event_overflows_total', help: 'Followers disconnected for reading events too slowly', type: 'counter', labels: [], samples: (s) => [[{}, s.events.overflows]] },
];

/** The registry, filled from `snapshot()` at each scrape. */
export class Metrics {
  readonly registry = new client.Registry();
  private current: MetricsSnapshot | null = null;

  constructor(private readonly snapshot: () => MetricsSnapshot) {
    for (const d of METRICS) {
      const fill = (m: { reset(): void }, put: (l: Labels, v: number) => void): void => {
        m.reset();
        if (this.current !== null) for (const [l, v] of d.samples(this.current)) put(l, v);
      };
      if (d.type === 'counter') {
        new client.Counter({
          name: d.name,
          help: d.help,
          labelNames: d.labels,
          registers: [this.registry],
          collect() {
            fill(this, (l, v) => this.inc(l, Math.max(0, v)));
          },
        });
      } else {
        new client.Gauge({
          name: d.name,
          help: d.help,
          labelNames: d.labels,
          registers: [this.registry],
          collect() {
            fill(this, (l, v) => this.set(l, v));
          },
        });
      }
    }
  }

  /** The exposition text (text/plain; version=0.0.4). */
  async text(): Promise<string> {
    this.current = this.snapshot();
    try {
      return await this.registry.metrics();
    } finally {
      this.current = null;
    }
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
