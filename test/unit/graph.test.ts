/**
 * `mvnet graph`'s builders, without a daemon: the graph from a known status (every route class,
 * a route kept for a VM that is not attached, counters on the attachment edges), its DOT text
 * (quoting, one statement per node and edge) and JSON, the HTML page (self-contained, the graph
 * embedded so that no text in it can end the script), and --serve's address check.
 */
import { describe, expect, it } from 'vitest';
import type { NetInfo, RouteInfo, StatusInfo, TorStatus, VmInfo } from '../../daemon/control/api.js';
import { buildGraph, dotString, humanBytes, ROUTE_COLOURS, toDot, type Graph } from '../../cli/graph/model.js';
import { toHtml } from '../../cli/graph/html.js';
import { isLoopback, parseServeAddress } from '../../cli/graph/serve.js';

function net(name: string, subnet: string, extra: Partial<NetInfo> = {}): NetInfo {
  const gw = subnet.replace(/0\/\d+$/, '1');
  return { name, subnet, gateway: gw, ipv6: null, dhcpRange: null, mtu: 1500, vms: [], stats: { forwarded: 7, flooded: 2, toGateway: 3, drops: { spoofed: 1 } }, router: {}, ...extra };
}

function vm(name: string, netName: string, ip: string | null, state: 'up' | 'waiting' | 'down', stats: Partial<VmInfo['port']['stats']> = {}): VmInfo {
  return {
    name,
    net: netName,
    mac: '02:00:00:00:00:01',
    ip,
    route: { kind: 'none', torPorts: null },
    routeText: 'none (gateway services only)',
    flows: null,
    port: { kind: 'unix', path: `/run/mvnet/vms/${name}.sock`, state, detail: state, lastError: null, device: null, stats: { rxFrames: 0, rxBytes: 0, txFrames: 0, txBytes: 0, drops: {}, ...stats } },
  };
}

function status(nets: NetInfo[], vms: VmInfo[], torConfigured = false): StatusInfo {
  return {
    daemon: { pid: 42, version: '0.1.0', socket: '/run/mvnet/mvnet.sock', stateDir: '/var/lib/mvnet', vmSocketDir: '/run/mvnet/vms', torConfigured, uptimeSec: 5, errors: { dataPath: 0, native: 0, uncaught: 0 }, plugins: [] },
    networks: nets,
    vms,
    captures: [],
    links: [],
    tor: null,
  };
}

const ROUTES: RouteInfo[] = [
  { vm: 'a1', attached: true, route: { kind: 'direct', allow: [{ cidr: '203.0.113.0/24', ports: [[443, 443]] }], torPorts: null }, routeText: 'direct, allow 203.0.113.0/24:443' },
  { vm: 'a2', attached: true, route: { kind: 'none', torPorts: null }, routeText: 'none (gateway services only)' },
  { vm: 'a3', attached: true, route: { kind: 'none', torPorts: [80, 443] }, routeText: 'none; TCP ports 80,443 through Tor' },
  { vm: 'b1', attached: true, route: { kind: 'via', vm: 'b2' }, routeText: 'via b2' },
  { vm: 'b2', attached: true, route: { kind: 'tor' }, routeText: 'all-tor' },
  { vm: 'gone', attached: false, route: { kind: 'direct', allow: null, torPorts: null }, routeText: 'direct' },
];

const TOR: TorStatus = { mode: 'embedded', phase: 'ready', progress: 100, summary: 'Done', restarts: 0, warnings: [], version: null, lastError: null, bootstrapProblem: null, pid: null, privileges: null, circuits: 3, vms: ['a3', 'b2'], published: 0, aliases: 0 };

function known(): Graph {
  return buildGraph({
    status: status(
      [net('A', '10.1.0.0/24'), net('B', '10.2.0.0/24', { ipv6: 'fd00:2::/64' })],
      [
        vm('a1', 'A', '10.1.0.5', 'up', { rxFrames: 10, rxBytes: 1536, txFrames: 4, txBytes: 400 }),
        vm('a2', 'A', null, 'waiting'),
        vm('a3', 'A', '10.1.0.7', 'up'),
        vm('b1', 'B', '10.2.0.9', 'down'),
        vm('b2', 'B', '10.2.0.254', 'up'),
      ],
      true,
    ),
    routes: ROUTES,
    tor: TOR,
  });
}

describe('buildGraph', () => {
  it('has a node per network, VM (attached or only routed), the host and Tor', () => {
    const g = known();
    expect(g.nodes.map((n) => n.id).sort()).toEqual(['host', 'net:A', 'net:B', 'tor', 'vm:a1', 'vm:a2', 'vm:a3', 'vm:b1', 'vm:b2', 'vm:gone']);
    const byId = new Map(g.nodes.map((n) => [n.id, n]));
    expect(byId.get('vm:a1')).toMatchObject({ route: 'direct', state: 'up', attached: true, net: 'A', device: 'unix /run/mvnet/vms/a1.sock' });
    expect(byId.get('vm:a2')).toMatchObject({ route: 'none', state: 'waiting' });
    expect(byId.get('vm:a3')).toMatchObject({ route: 'tor-ports' });
    expect(byId.get('vm:b1')).toMatchObject({ route: 'via', state: 'down' });
    expect(byId.get('vm:b2')).toMatchObject({ route: 'tor' });
    expect(byId.get('vm:gone')).toMatchObject({ route: 'direct', attached: false, state: 'detached', net: null });
    expect(byId.get('net:B')).toMatchObject({ ipv6: 'fd00:2::/64', forwarded: 7, flooded: 2, drops: 1 });
    expect(byId.get('tor')).toMatchObject({ phase: 'ready', progress: 100, configured: true });
    expect(g.links).toEqual([]);
  });

  it('has an attachment edge with the counters per VM, and an edge per route that leaves', () => {
    const g = known();
    const ids = g.edges.map((e) => `${e.from} -> ${e.to} (${e.type})`).sort();
    expect(ids).toEqual([
      'vm:a1 -> host (route)',
      'vm:a1 -> net:A (attachment)',
      'vm:a2 -> net:A (attachment)',
      'vm:a3 -> net:A (attachment)',
      'vm:a3 -> tor (route)',
      'vm:b1 -> net:B (attachment)',
      'vm:b1 -> vm:b2 (route)',
      'vm:b2 -> net:B (attachment)',
      'vm:b2 -> tor (route)',
      'vm:gone -> host (route)',
    ]);
    const att = g.edges.find((e) => e.id === 'att:a1');
    expect(att).toMatchObject({ counters: { rxFrames: 10, rxBytes: 1536, txFrames: 4, txBytes: 400 }, label: 'rx 10 fr / 1.5 KiB\ntx 4 fr / 400 B' });
    expect(g.edges.find((e) => e.id === 'route:a1:host')?.label).toBe('direct (1 allow rule)');
    expect(g.edges.find((e) => e.id === 'route:a3:tor-ports')?.label).toBe('TCP 80,443');
  });

  it('shows no host or Tor node when no route needs them, and Tor as not configured', () => {
    const plain = buildGraph({ status: status([net('A', '10.1.0.0/24')], [vm('a', 'A', null, 'up')]), routes: [{ vm: 'a', attached: true, route: { kind: 'none', torPorts: null }, routeText: 'none' }], tor: null });
    expect(plain.nodes.map((n) => n.type).sort()).toEqual(['network', 'vm']);
    const torNoCfg = buildGraph({ status: status([net('A', '10.1.0.0/24')], [vm('a', 'A', null, 'up')]), routes: [{ vm: 'a', attached: true, route: { kind: 'tor' }, routeText: 'all-tor' }], tor: null });
    expect(torNoCfg.nodes.find((n) => n.type === 'tor')).toMatchObject({ configured: false, phase: 'not started', label: 'Tor\nnot started\n(not configured)' });
  });

  it('formats bytes', () => {
    expect([0, 1023, 1024, 1536, 5 * 1024 * 1024].map(humanBytes)).toEqual(['0 B', '1023 B', '1.0 KiB', '1.5 KiB', '5.0 MiB']);
  });
});

describe('toDot', () => {
  it('quotes strings: backslash, double quote, newline', () => {
    expect(dotString('a"b\\c\nd')).toBe('"a\\"b\\\\c\\nd"');
  });

  it('writes one statement per node and edge, coloured by route', () => {
    const g = known();
    const dot = toDot(g);
    expect(dot.startsWith('digraph mvnet {\n')).toBe(true);
    expect(dot.endsWith('}\n')).toBe(true);
    const nodeLines = dot.split('\n').filter((l) => /^ {2}"[^"]+" \[/.test(l));
    const edgeLines = dot.split('\n').filter((l) => / -> /.test(l));
    expect(nodeLines).toHaveLength(g.nodes.length);
    expect(edgeLines).toHaveLength(g.edges.length);
    expect(dot).toContain(`"vm:a1" [label="a1\\n10.1.0.5", shape="ellipse", style="filled", fontcolor="#ffffff", fillcolor="${ROUTE_COLOURS.direct}"`);
    expect(dot).toContain(`"vm:gone" [label="gone\\n(not attached)", shape="ellipse", style="filled,dashed"`);
    expect(dot).toContain(`"vm:b1" -> "vm:b2" [label="via", color="${ROUTE_COLOURS.via}", style="bold"];`);
    expect(dot).toContain('"vm:a1" -> "net:A" [label="rx 10 fr / 1.5 KiB\\ntx 4 fr / 400 B", dir="none", color="#1f4e79"];');
    // Each attribute once per statement.
    for (const l of [...nodeLines, ...edgeLines]) {
      const keys = [...l.matchAll(/[ ,[]([a-z]+)=/g)].map((m) => m[1]);
      expect(new Set(keys).size, l).toBe(keys.length);
    }
  });

  it('JSON is the graph itself', () => {
    const g = known();
    expect(JSON.parse(JSON.stringify(g))).toEqual(g);
  });
});

describe('toHtml', () => {
  it('is self-contained: vis-network inlined, no external script, style or link', () => {
    const html = toHtml(known());
    expect(html).toContain('vis-network');
    expect(html.length).toBeGreaterThan(300_000);
    expect(html).not.toMatch(/<script[^>]+src=/i);
    expect(html).not.toMatch(/<link[^>]+href=/i);
    expect(html).not.toMatch(/@import/);
    expect(html).toContain('<script id="mvnet-graph" type="application/json">');
    expect(html).not.toContain('"endpoint"');
  });

  it('embeds the graph so that no text in it ends the script element', () => {
    const g = known();
    const evil = '</script><script>alert(1)</script><!--';
    const n = g.nodes[0]!;
    n.label = evil;
    const html = toHtml(g);
    const start = html.indexOf('<script id="mvnet-graph" type="application/json">') + '<script id="mvnet-graph" type="application/json">'.length;
    const end = html.indexOf('</script>', start);
    const embedded = JSON.parse(html.slice(start, end)) as Graph;
    expect(embedded.nodes[0]!.label).toBe(evil);
    expect(html.slice(start, end)).not.toContain('<');
  });

  it('served: polls the endpoint', () => {
    const html = toHtml(known(), { endpoint: '/graph.json', refreshMs: 500 });
    expect(html).toContain('"endpoint":"/graph.json","refreshMs":500');
  });
});

describe('links in the graph', () => {
  const link = (name: string, peer: string, state: 'established' | 'handshaking' | 'waiting', kind: 'link' | 'agent' = 'link') => ({
    name,
    net: kind === 'link' ? 'A' : '',
    kind,
    peer,
    error: null,
    state,
    endpoint: state === 'waiting' ? null : '/ip4/10.99.0.2/udp/51820',
    configuredEndpoint: null,
    listen: '/ip6/::/udp/51820',
    lastHandshake: null,
    handshakes: 0,
    rx: { packets: 0, bytes: 0 },
    tx: { packets: 0, bytes: 0 },
    drops: {},
    macs: 0,
  });
  const PEER = 'pdWrGh+nSZCJBR7u3xezPcOQ3OW/zKqtMwStv5tXUEY=';

  it('draws a peer router per link key and a link edge from the network, dashed unless established', () => {
    const g = buildGraph({
      status: status([net('A', '10.1.0.0/24')], [vm('a1', 'A', '10.1.0.5', 'up')], false),
      routes: [],
      tor: null,
      links: { publicKey: 'x', listeners: [], drops: {}, cookieReplies: 0, underLoad: false, links: [link('to-b', PEER, 'established'), link('to-b2', PEER, 'waiting'), link('vmc', 'k', 'established', 'agent')] },
    });
    expect(g.nodes.filter((n) => n.type === 'peer').map((n) => n.id)).toEqual([`peer:${PEER}`]);
    expect(g.edges.filter((e) => e.type === 'link').map((e) => `${e.from} -> ${e.to}`)).toEqual([`net:A -> peer:${PEER}`, `net:A -> peer:${PEER}`]);
    expect(g.links.map((l) => [l.name, l.kind, l.state])).toEqual([
      ['to-b', 'link', 'established'],
      ['to-b2', 'link', 'waiting'],
      ['vmc', 'agent', 'established'],
    ]);
    const dot = toDot(g);
    expect(dot).toContain(`"net:A" -> "peer:${PEER}" [label="link to-b\\nestablished", dir="none", color="#2e7d32", penwidth="2"]`);
    expect(dot).toContain(`"net:A" -> "peer:${PEER}" [label="link to-b2\\nwaiting", dir="none", color="#2e7d32", penwidth="2", style="dashed"]`);
  });
});

describe('--serve addresses', () => {
  it('accepts loopback addresses only', () => {
    for (const h of ['127.0.0.1', '127.1.2.3', '::1', '::ffff:127.0.0.1']) expect(isLoopback(h), h).toBe(true);
    for (const h of ['0.0.0.0', '::', '10.0.0.1', '128.0.0.1', 'localhost', '::ffff:10.0.0.1', '::2']) expect(isLoopback(h), h).toBe(false);
    expect(parseServeAddress('127.0.0.1:8080')).toEqual({ host: '127.0.0.1', port: 8080 });
    expect(parseServeAddress('[::1]:0')).toEqual({ host: '::1', port: 0 });
  });

  it('refuses anything else with the reason', () => {
    expect(() => parseServeAddress('0.0.0.0:8080')).toThrow('0.0.0.0 is not a loopback address');
    expect(() => parseServeAddress('[::]:8080')).toThrow(':: is not a loopback address');
    expect(() => parseServeAddress('192.168.1.1:80')).toThrow('not a loopback address');
    expect(() => parseServeAddress('localhost:8080')).toThrow('"localhost" is not an IP address');
    expect(() => parseServeAddress('8080')).toThrow('--serve takes ADDRESS:PORT');
    expect(() => parseServeAddress('127.0.0.1:70000')).toThrow('out of range');
  });
});
