/**
 * The route decision (daemon/routes/decide.ts) over every route × flow × Tor state ×
 * `direct.hostLoopback`, against an explicit table written from the README's promises ("Routes"
 * and "Security model"); verdictTag (which flows survive a route change); and the direct route's
 * allow-list (compileRoute.allows) on odd prefix lengths and port boundaries.
 */
import { describe, it, expect } from 'vitest';
import { Address6 } from 'ip-address';
import { decide, verdictTag, type Flow, type PlaceView, type TorView, type Verdict, type Reason, type Answer } from '../../daemon/routes/decide.js';
import { compileRoute, type CompiledRoute } from '../../daemon/routes/policy.js';
import { usesTor, type AllowRule, type Route } from '../../daemon/routes/route.js';
import type { IpAddr } from '../../daemon/endpoint/addr.js';

// --- addresses ------------------------------------------------------------------------------

function a4(text: string): IpAddr {
  const o = text.split('.').map(Number);
  return { v: 4, n: ((o[0]! << 24) | (o[1]! << 16) | (o[2]! << 8) | o[3]!) >>> 0 };
}
function a6(text: string): IpAddr {
  return { v: 6, b: Buffer.from(new Address6(text).canonicalForm().replace(/:/g, ''), 'hex') };
}
/**
 * An allow rule as `--allow` writes it ("CIDR[:PORTS]", "[CIDR]:PORTS" or a bare CIDR), built
 * here rather than by the CLI's parser so that compileRoute is tested on its own.
 */
function rule(text: string): AllowRule {
  const m = /^\[(.+)\]:(.+)$/.exec(text) ?? /^(\d+\.\d+\.\d+\.\d+(?:\/\d+)?):(.+)$/.exec(text);
  if (m === null) return { cidr: text };
  const ports = m[2]!.split(',').map((p): [number, number] => {
    const [lo, hi] = p.split('-').map(Number);
    return [lo!, hi ?? lo!];
  });
  return { cidr: m[1]!, ports };
}
function same(a: IpAddr, b: IpAddr): boolean {
  return a.v === 4 ? b.v === 4 && a.n === b.n : b.v === 6 && a.b.equals(b.b);
}

const VM = 'vm1';
const GW4 = a4('10.0.0.1');
const GW6 = a6('fd00::1');
const LOOP4 = a4('127.0.0.1');
const LOOP6 = a6('::1');
const ONION_MAPPED = a4('10.192.0.5');
const ONION_UNMAPPED = a4('10.192.0.6');
const AUTOMAP_NET = 0x0ac00000; // 10.192.0.0/10, tor.automap's default
const AUTOMAP_MASK = 0xffc00000;

// --- the fakes: Tor states and the place --------------------------------------------------------

const TOR_STATES = ['unconfigured', 'not-ready', 'ready'] as const;
type TorState = (typeof TOR_STATES)[number];

function torView(state: TorState): TorView {
  const configured = state !== 'unconfigured';
  return {
    configured,
    ready: state === 'ready',
    // As the router's view: nothing is mapped when no Tor is configured.
    onionAt(dst) {
      if (!configured || dst.v !== 4 || ((dst.n & AUTOMAP_MASK) >>> 0) !== AUTOMAP_NET) return undefined;
      return same(dst, ONION_MAPPED) ? 'abc.onion' : null;
    },
  };
}

function placeView(hostLoopback: boolean): PlaceView {
  return {
    forbidden: (dst) => same(dst, LOOP4) || same(dst, LOOP6),
    isGateway: (dst) => same(dst, GW4) || same(dst, GW6),
    // Every port listed: which ports are is asked below ("hostLoopback: only the listed ports").
    hostLoopback: () => hostLoopback,
  };
}

// --- routes -----------------------------------------------------------------------------------

const ROUTES = {
  none: { kind: 'none' },
  'none+tor': { kind: 'none', torPorts: [80, 443] },
  direct: { kind: 'direct' },
  'direct+allow': {
    kind: 'direct',
    allow: [
      rule('203.0.113.0/24:8000-8080'), // IPv4 CIDR with ports
      rule('[2001:db8::/32]:8080'), // IPv6 CIDR with ports
      rule('198.51.100.0/24'), // bare CIDR: every port (and ping)
      rule('10.0.0.1:22'), // the gateway address, port 22: the host's loopback :22 only
    ],
  },
  'direct+tor': { kind: 'direct', torPorts: [80, 443] },
  via: { kind: 'via', vm: 'vm2' },
  tor: { kind: 'tor' },
} satisfies Record<string, Route>;
type RouteName = keyof typeof ROUTES;
const ROUTE_NAMES = Object.keys(ROUTES) as RouteName[];

// --- flows ------------------------------------------------------------------------------------

const tcp = (dst: IpAddr, port: number): Flow => ({ proto: 'tcp', dst, port });
const udp = (dst: IpAddr, port: number): Flow => ({ proto: 'udp', dst, port });
const ping = (dst: IpAddr): Flow => ({ proto: 'ping', dst });

const FLOWS = {
  'tcp4 allowed port': tcp(a4('203.0.113.7'), 8080),
  'tcp4 other port': tcp(a4('203.0.113.7'), 25),
  'tcp6 allowed port': tcp(a6('2001:db8:1::7'), 8080),
  'tcp6 other port': tcp(a6('2001:db8:1::7'), 25),
  'tcp4 bare-cidr any port': tcp(a4('198.51.100.9'), 25),
  'tcp4 unlisted': tcp(a4('192.0.2.1'), 8080),
  'tcp4 tor port 80': tcp(a4('203.0.113.7'), 80),
  'tcp6 tor port 443': tcp(a6('2001:db8:1::7'), 443),
  'tcp gw :53': tcp(GW4, 53),
  'tcp gw :22': tcp(GW4, 22),
  'tcp gw6 :22': tcp(GW6, 22),
  'tcp forbidden 127.0.0.1:22': tcp(LOOP4, 22),
  'tcp forbidden [::1]:80': tcp(LOOP6, 80),
  'tcp onion mapped :80': tcp(ONION_MAPPED, 80),
  'tcp onion unmapped :80': tcp(ONION_UNMAPPED, 80),
  'tcp onion mapped :22': tcp(ONION_MAPPED, 22),
  'udp4 allowed port': udp(a4('203.0.113.7'), 8000),
  'udp6 other port': udp(a6('2001:db8:1::7'), 53),
  'udp gw :123': udp(GW4, 123),
  'udp forbidden 127.0.0.1:53': udp(LOOP4, 53),
  'ping4 out': ping(a4('203.0.113.7')),
  'ping6 out': ping(a6('2001:db8:1::7')),
  'ping bare-cidr': ping(a4('198.51.100.9')),
  'ping gw': ping(GW4),
  'ping forbidden ::1': ping(LOOP6),
  dns: { proto: 'dns' },
} satisfies Record<string, Flow>;
type FlowName = keyof typeof FLOWS;
const FLOW_NAMES = Object.keys(FLOWS) as FlowName[];

// --- expected verdicts ------------------------------------------------------------------------

/** A cell that depends on Tor's state. */
interface ByTor {
  readonly byTor: Readonly<Record<TorState, Verdict>>;
}
/** A cell that depends on `direct.hostLoopback`. */
interface ByLoopback {
  readonly byLoopback: { readonly off: Verdict; readonly on: Verdict };
}
type Cell = Verdict | ByTor | ByLoopback;

const T = (unconfigured: Verdict, notReady: Verdict, ready: Verdict): ByTor => ({ byTor: { unconfigured, 'not-ready': notReady, ready } });
const L = (off: Verdict, on: Verdict): ByLoopback => ({ byLoopback: { off, on } });

const refuse = (reason: Reason, answer: Answer): Verdict => ({ kind: 'refuse', reason, answer });
const DIRECT: Verdict = { kind: 'direct' };
const VIA: Verdict = { kind: 'via', vm: 'vm2' };
const LOCAL_DNS: Verdict = { kind: 'local', service: 'dns' };
const HOST_LO: Verdict = { kind: 'local', service: 'host-loopback' };
/** none (and the others' refusals of flows out): ICMP administratively prohibited. */
const PROHIBITED = (reason: Reason): Verdict => refuse(reason, 'prohibited');
/** A TCP port of the gateway with nothing behind it: RST, as a closed port. */
const GW_CLOSED = refuse('gateway-port-closed', 'reset');
/** UDP (or an echo) to the gateway that no gateway service answers. */
const GW_DROP: Verdict = { kind: 'drop', reason: 'gateway-port-closed' };
const DROP = (reason: Reason): Verdict => ({ kind: 'drop', reason });
/** A TCP stream through Tor, failing closed (RST) while Tor is absent or not bootstrapped. */
const TOR = (host: string): ByTor => T(refuse('tor-not-configured', 'reset'), refuse('tor-not-ready', 'reset'), { kind: 'tor', identity: VM, host });
/** A Tor stream whose destination may not be reached even through Tor: RST in every state. */
const TOR_RST = (reason: Reason): ByTor => T(refuse('tor-not-configured', 'reset'), refuse('tor-not-ready', 'reset'), refuse(reason, 'reset'));
/** DNS through Tor: SERVFAIL while Tor is not ready, REFUSED when there is no Tor at all. */
const TOR_DNS = T(refuse('tor-not-configured', 'refused'), refuse('tor-not-ready', 'servfail'), { kind: 'tor', identity: VM, host: '' });

/** One row per flow, one column per route. */
const EXPECTED: Record<FlowName, Record<RouteName, Cell>> = {
  'tcp4 allowed port': {
    none: PROHIBITED('route-none'), 'none+tor': PROHIBITED('route-none'), direct: DIRECT, 'direct+allow': DIRECT,
    'direct+tor': DIRECT, via: VIA, tor: TOR('203.0.113.7'),
  },
  'tcp4 other port': {
    none: PROHIBITED('route-none'), 'none+tor': PROHIBITED('route-none'), direct: DIRECT, 'direct+allow': PROHIBITED('not-allowed'),
    'direct+tor': DIRECT, via: VIA, tor: TOR('203.0.113.7'),
  },
  'tcp6 allowed port': {
    none: PROHIBITED('route-none'), 'none+tor': PROHIBITED('route-none'), direct: DIRECT, 'direct+allow': DIRECT,
    'direct+tor': DIRECT, via: VIA, tor: TOR('2001:db8:1::7'),
  },
  'tcp6 other port': {
    none: PROHIBITED('route-none'), 'none+tor': PROHIBITED('route-none'), direct: DIRECT, 'direct+allow': PROHIBITED('not-allowed'),
    'direct+tor': DIRECT, via: VIA, tor: TOR('2001:db8:1::7'),
  },
  'tcp4 bare-cidr any port': {
    none: PROHIBITED('route-none'), 'none+tor': PROHIBITED('route-none'), direct: DIRECT, 'direct+allow': DIRECT,
    'direct+tor': DIRECT, via: VIA, tor: TOR('198.51.100.9'),
  },
  'tcp4 unlisted': {
    none: PROHIBITED('route-none'), 'none+tor': PROHIBITED('route-none'), direct: DIRECT, 'direct+allow': PROHIBITED('not-allowed'),
    'direct+tor': DIRECT, via: VIA, tor: TOR('192.0.2.1'),
  },
  // Tor ports go through Tor on none and direct alike; an allow-list does not list them here.
  'tcp4 tor port 80': {
    none: PROHIBITED('route-none'), 'none+tor': TOR('203.0.113.7'), direct: DIRECT, 'direct+allow': PROHIBITED('not-allowed'),
    'direct+tor': TOR('203.0.113.7'), via: VIA, tor: TOR('203.0.113.7'),
  },
  'tcp6 tor port 443': {
    none: PROHIBITED('route-none'), 'none+tor': TOR('2001:db8:1::7'), direct: DIRECT, 'direct+allow': PROHIBITED('not-allowed'),
    'direct+tor': TOR('2001:db8:1::7'), via: VIA, tor: TOR('2001:db8:1::7'),
  },
  // DNS over TCP to the gateway is a gateway service on every route (its resolver then decides).
  'tcp gw :53': {
    none: LOCAL_DNS, 'none+tor': LOCAL_DNS, direct: LOCAL_DNS, 'direct+allow': LOCAL_DNS,
    'direct+tor': LOCAL_DNS, via: LOCAL_DNS, tor: LOCAL_DNS,
  },
  // hostLoopback: the gateway address is the host's loopback for direct-routed VMs only, and
  // an allow-list still says which ports (here 10.0.0.1:22 is listed).
  'tcp gw :22': {
    none: GW_CLOSED, 'none+tor': GW_CLOSED, direct: L(GW_CLOSED, HOST_LO), 'direct+allow': L(GW_CLOSED, HOST_LO),
    'direct+tor': L(GW_CLOSED, HOST_LO), via: GW_CLOSED, tor: GW_CLOSED,
  },
  'tcp gw6 :22': {
    none: GW_CLOSED, 'none+tor': GW_CLOSED, direct: L(GW_CLOSED, HOST_LO), 'direct+allow': GW_CLOSED,
    'direct+tor': L(GW_CLOSED, HOST_LO), via: GW_CLOSED, tor: GW_CLOSED,
  },
  // The host's loopback is never a destination; a via VM's flows are not the mvnet gateway's to
  // answer; all-tor fails closed with RST.
  'tcp forbidden 127.0.0.1:22': {
    none: PROHIBITED('forbidden-destination'), 'none+tor': PROHIBITED('forbidden-destination'), direct: PROHIBITED('forbidden-destination'),
    'direct+allow': PROHIBITED('forbidden-destination'), 'direct+tor': PROHIBITED('forbidden-destination'), via: VIA,
    tor: TOR_RST('forbidden-destination'),
  },
  'tcp forbidden [::1]:80': {
    none: PROHIBITED('forbidden-destination'), 'none+tor': TOR_RST('forbidden-destination'), direct: PROHIBITED('forbidden-destination'),
    'direct+allow': PROHIBITED('forbidden-destination'), 'direct+tor': TOR_RST('forbidden-destination'), via: VIA,
    tor: TOR_RST('forbidden-destination'),
  },
  // A connection to an automap address goes to the onion by name; an unmapped one is reset.
  'tcp onion mapped :80': {
    none: PROHIBITED('route-none'), 'none+tor': TOR('abc.onion'), direct: DIRECT, 'direct+allow': PROHIBITED('not-allowed'),
    'direct+tor': TOR('abc.onion'), via: VIA, tor: TOR('abc.onion'),
  },
  'tcp onion unmapped :80': {
    none: PROHIBITED('route-none'), 'none+tor': TOR_RST('tor-unmapped'), direct: DIRECT, 'direct+allow': PROHIBITED('not-allowed'),
    'direct+tor': TOR_RST('tor-unmapped'), via: VIA, tor: TOR_RST('tor-unmapped'),
  },
  // Not a Tor port: "the rest by the VM's other route" (for direct, the address as it is).
  'tcp onion mapped :22': {
    none: PROHIBITED('route-none'), 'none+tor': PROHIBITED('route-none'), direct: DIRECT, 'direct+allow': PROHIBITED('not-allowed'),
    'direct+tor': DIRECT, via: VIA, tor: TOR('abc.onion'),
  },
  // UDP: direct by the allow-list (ports apply to UDP too); never through Tor (all-tor: dropped).
  'udp4 allowed port': {
    none: PROHIBITED('route-none'), 'none+tor': PROHIBITED('route-none'), direct: DIRECT, 'direct+allow': DIRECT,
    'direct+tor': DIRECT, via: VIA, tor: DROP('not-through-tor'),
  },
  'udp6 other port': {
    none: PROHIBITED('route-none'), 'none+tor': PROHIBITED('route-none'), direct: DIRECT, 'direct+allow': PROHIBITED('not-allowed'),
    'direct+tor': DIRECT, via: VIA, tor: DROP('not-through-tor'),
  },
  'udp gw :123': {
    none: GW_DROP, 'none+tor': GW_DROP, direct: L(GW_DROP, HOST_LO), 'direct+allow': GW_DROP,
    'direct+tor': L(GW_DROP, HOST_LO), via: GW_DROP, tor: GW_DROP,
  },
  'udp forbidden 127.0.0.1:53': {
    none: PROHIBITED('forbidden-destination'), 'none+tor': PROHIBITED('forbidden-destination'), direct: PROHIBITED('forbidden-destination'),
    'direct+allow': PROHIBITED('forbidden-destination'), 'direct+tor': PROHIBITED('forbidden-destination'), via: VIA,
    tor: DROP('not-through-tor'),
  },
  // Echo beyond the gateway: direct only (an allow rule with ports does not cover ICMP).
  'ping4 out': {
    none: DROP('route-none'), 'none+tor': DROP('route-none'), direct: DIRECT, 'direct+allow': DROP('not-allowed'),
    'direct+tor': DIRECT, via: VIA, tor: DROP('not-through-tor'),
  },
  'ping6 out': {
    none: DROP('route-none'), 'none+tor': DROP('route-none'), direct: DIRECT, 'direct+allow': DROP('not-allowed'),
    'direct+tor': DIRECT, via: VIA, tor: DROP('not-through-tor'),
  },
  'ping bare-cidr': {
    none: DROP('route-none'), 'none+tor': DROP('route-none'), direct: DIRECT, 'direct+allow': DIRECT,
    'direct+tor': DIRECT, via: VIA, tor: DROP('not-through-tor'),
  },
  // The gateway's own echo is answered before asking; were it asked, nothing leaves.
  'ping gw': {
    none: GW_DROP, 'none+tor': GW_DROP, direct: GW_DROP, 'direct+allow': GW_DROP,
    'direct+tor': GW_DROP, via: GW_DROP, tor: GW_DROP,
  },
  'ping forbidden ::1': {
    none: DROP('route-none'), 'none+tor': DROP('route-none'), direct: DROP('forbidden-destination'), 'direct+allow': DROP('forbidden-destination'),
    'direct+tor': DROP('forbidden-destination'), via: VIA, tor: DROP('not-through-tor'),
  },
  // none: REFUSED; via: REFUSED (resolving around the firewall VM would leak); direct: upstream;
  // any Tor use: through Tor (SERVFAIL while not ready).
  dns: {
    none: refuse('route-none', 'refused'), 'none+tor': TOR_DNS, direct: DIRECT, 'direct+allow': DIRECT,
    'direct+tor': TOR_DNS, via: refuse('via-dns', 'refused'), tor: TOR_DNS,
  },
};

function expectedAt(c: Cell, tor: TorState, hostLoopback: boolean): Verdict {
  if ('byTor' in c) return c.byTor[tor];
  if ('byLoopback' in c) return hostLoopback ? c.byLoopback.on : c.byLoopback.off;
  return c;
}

// --- inputs, deep-frozen ----------------------------------------------------------------------

/** Freezes everything reachable except Buffer contents (a typed array with elements cannot be frozen). */
function deepFreeze<T>(o: T): T {
  if (o === null || (typeof o !== 'object' && typeof o !== 'function') || ArrayBuffer.isView(o) || Object.isFrozen(o)) return o;
  Object.freeze(o);
  for (const k of Reflect.ownKeys(o as object)) {
    const d = Object.getOwnPropertyDescriptor(o, k);
    if (d !== undefined && 'value' in d) deepFreeze(d.value as unknown);
  }
  return o;
}

deepFreeze(ROUTES);
deepFreeze(FLOWS);
const COMPILED = Object.fromEntries(ROUTE_NAMES.map((n) => [n, deepFreeze(compileRoute(ROUTES[n]))])) as Record<RouteName, CompiledRoute>;
const TORS = Object.fromEntries(TOR_STATES.map((s) => [s, deepFreeze(torView(s))])) as Record<TorState, TorView>;
const PLACES = { off: deepFreeze(placeView(false)), on: deepFreeze(placeView(true)) };

interface Case {
  route: RouteName;
  flow: FlowName;
  tor: TorState;
  hostLoopback: boolean;
  expected: Verdict;
}

const CASES: Case[] = [];
for (const route of ROUTE_NAMES)
  for (const flow of FLOW_NAMES)
    for (const tor of TOR_STATES)
      for (const hostLoopback of [false, true]) CASES.push({ route, flow, tor, hostLoopback, expected: expectedAt(EXPECTED[flow][route], tor, hostLoopback) });

function run(c: Pick<Case, 'route' | 'flow' | 'tor' | 'hostLoopback'>): Verdict {
  return decide(VM, COMPILED[c.route], TORS[c.tor], PLACES[c.hostLoopback ? 'on' : 'off'], FLOWS[c.flow]);
}

// --- decide -----------------------------------------------------------------------------------

describe('decide: routes × flows × Tor states × hostLoopback', () => {
  it('the table covers every cell once', () => {
    expect(Object.keys(EXPECTED).sort()).toEqual([...FLOW_NAMES].sort());
    for (const f of FLOW_NAMES) expect(Object.keys(EXPECTED[f]).sort()).toEqual([...ROUTE_NAMES].sort());
    expect(CASES).toHaveLength(ROUTE_NAMES.length * FLOW_NAMES.length * TOR_STATES.length * 2);
    expect(CASES).toHaveLength(7 * 26 * 3 * 2);
  });

  it.each(CASES)('$route / $flow / tor $tor / hostLoopback $hostLoopback', (c) => {
    expect(run(c)).toStrictEqual(c.expected);
  });
});

describe('decide: README promises, read across the table', () => {
  const verdicts = CASES.map((c) => ({ ...c, v: run(c) }));

  it('all-tor: every TCP stream goes through Tor or is reset; nothing goes direct or is answered with ICMP', () => {
    for (const c of verdicts.filter((x) => x.route === 'tor' && FLOWS[x.flow].proto === 'tcp' && !x.flow.startsWith('tcp gw'))) {
      expect(['tor', 'refuse']).toContain(c.v.kind);
      if (c.v.kind === 'refuse') expect(c.v.answer).toBe('reset');
      if (c.tor !== 'ready') expect(c.v.kind).toBe('refuse');
    }
  });

  it('all-tor: UDP and ICMP beyond the gateway never leave', () => {
    for (const c of verdicts.filter((x) => x.route === 'tor' && (FLOWS[x.flow].proto === 'udp' || FLOWS[x.flow].proto === 'ping'))) expect(c.v.kind).toBe('drop');
  });

  it('Tor down: nothing of a Tor-using route goes any other way', () => {
    for (const c of verdicts.filter((x) => x.tor !== 'ready' && usesTor(COMPILED[x.route].route))) {
      const f = FLOWS[c.flow];
      const r: Route = ROUTES[c.route];
      const torTcp = f.proto === 'tcp' && !c.flow.startsWith('tcp gw') && (r.kind === 'tor' || ('torPorts' in r && r.torPorts?.includes(f.port) === true));
      if (f.proto === 'dns' || torTcp) expect(c.v.kind).toBe('refuse');
      if (torTcp) expect(c.v).toMatchObject({ answer: 'reset' });
      if (f.proto === 'dns' && c.tor === 'not-ready') expect(c.v).toMatchObject({ answer: 'servfail' });
    }
  });

  it('none: nothing leaves, whatever Tor or the host do', () => {
    for (const c of verdicts.filter((x) => x.route === 'none')) expect(['refuse', 'drop', 'local']).toContain(c.v.kind);
    for (const c of verdicts.filter((x) => x.route === 'none' && x.v.kind === 'local')) expect(c.v).toEqual(LOCAL_DNS);
  });

  it('via: the mvnet gateway carries nothing beyond itself for the VM', () => {
    for (const c of verdicts.filter((x) => x.route === 'via')) expect(['via', 'refuse', 'drop', 'local']).toContain(c.v.kind);
    for (const c of verdicts.filter((x) => x.route === 'via' && x.flow !== 'dns' && !x.flow.includes('gw'))) expect(c.v).toEqual(VIA);
  });

  it("the host's loopback is never a destination, except the gateway address with hostLoopback on a direct route", () => {
    for (const c of verdicts.filter((x) => x.flow.includes('forbidden'))) expect(['refuse', 'drop', 'via']).toContain(c.v.kind);
    for (const c of verdicts.filter((x) => x.v.kind === 'local' && x.v.service === 'host-loopback')) {
      expect(c.hostLoopback).toBe(true);
      expect(ROUTES[c.route].kind).toBe('direct');
    }
  });

  it('Tor isolation: every Tor verdict carries the VM as its identity', () => {
    for (const c of verdicts) if (c.v.kind === 'tor') expect(c.v.identity).toBe(VM);
  });
});

describe('decide: hostLoopback exposes only the listed ports', () => {
  const only22: PlaceView = { ...placeView(true), hostLoopback: (port) => port === 22 };
  const at = (route: RouteName, flow: Flow): Verdict => decide(VM, COMPILED[route], TORS.ready, only22, flow);

  it('a listed port reaches the host loopback, another is a closed gateway port (TCP and UDP, IPv4 and IPv6)', () => {
    for (const route of ['direct', 'direct+tor'] as const) {
      expect(at(route, tcp(GW4, 22))).toStrictEqual(HOST_LO);
      expect(at(route, tcp(GW6, 22))).toStrictEqual(HOST_LO);
      expect(at(route, udp(GW4, 22))).toStrictEqual(HOST_LO);
      expect(at(route, tcp(GW4, 23))).toStrictEqual(GW_CLOSED);
      expect(at(route, tcp(GW6, 9050))).toStrictEqual(GW_CLOSED);
      expect(at(route, udp(GW4, 123))).toStrictEqual(GW_DROP);
    }
    // The allow-list still applies on top (it names 10.0.0.1:22 only).
    expect(at('direct+allow', tcp(GW4, 22))).toStrictEqual(HOST_LO);
    expect(at('direct+allow', tcp(GW6, 22))).toStrictEqual(GW_CLOSED);
  });

  it('DNS on the gateway is not a host-loopback port', () => {
    expect(at('direct', tcp(GW4, 53))).toStrictEqual(LOCAL_DNS);
  });
});

describe('decide is pure', () => {
  it('twice with the same (frozen) inputs: deep-equal verdicts, inputs untouched', () => {
    const bytes = (Object.values(FLOWS) as Flow[]).map((f) => (f.proto !== 'dns' && f.dst.v === 6 ? Buffer.from(f.dst.b) : null));
    const before = JSON.stringify({ ROUTES, FLOWS, COMPILED: ROUTE_NAMES.map((n) => COMPILED[n].route) });
    for (const c of CASES) {
      const first = run(c);
      const second = run(c);
      expect(second).toStrictEqual(first);
    }
    expect(JSON.stringify({ ROUTES, FLOWS, COMPILED: ROUTE_NAMES.map((n) => COMPILED[n].route) })).toBe(before);
    (Object.values(FLOWS) as Flow[]).forEach((f, i) => {
      if (f.proto !== 'dns' && f.dst.v === 6) expect(f.dst.b.equals(bytes[i]!)).toBe(true);
    });
    expect(Object.isFrozen(COMPILED.tor) && Object.isFrozen(TORS.ready) && Object.isFrozen(PLACES.on)).toBe(true);
  });

  it('order does not matter: the whole table asked backwards gives the same verdicts', () => {
    const forwards = CASES.map(run);
    const backwards = [...CASES].reverse().map(run).reverse();
    expect(backwards).toStrictEqual(forwards);
  });

  it('asks the views only: no counters, nothing written to the route, Tor or place', () => {
    const reads: string[] = [];
    const tor: TorView = deepFreeze({
      configured: true,
      get ready() {
        reads.push('ready');
        return true;
      },
      onionAt: (dst: IpAddr) => {
        reads.push('onionAt');
        return TORS.ready.onionAt(dst);
      },
    });
    const v1 = decide(VM, COMPILED.tor, tor, PLACES.off, FLOWS['tcp onion mapped :80']);
    const v2 = decide(VM, COMPILED.tor, tor, PLACES.off, FLOWS['tcp onion mapped :80']);
    expect(v1).toStrictEqual({ kind: 'tor', identity: VM, host: 'abc.onion' });
    expect(v2).toStrictEqual(v1);
    expect(reads).toEqual(['ready', 'onionAt', 'ready', 'onionAt']);
  });
});

// --- verdictTag -------------------------------------------------------------------------------

describe('verdictTag', () => {
  it.each<[Verdict, string | null]>([
    [DIRECT, 'direct'],
    [HOST_LO, 'direct'],
    [LOCAL_DNS, 'local'],
    [{ kind: 'tor', identity: VM, host: '203.0.113.7' }, 'tor'],
    [{ kind: 'tor', identity: 'other', host: 'abc.onion' }, 'tor'],
    [VIA, null],
    [PROHIBITED('route-none'), null],
    [GW_CLOSED, null],
    [refuse('tor-not-ready', 'reset'), null],
    [refuse('tor-not-ready', 'servfail'), null],
    [GW_DROP, null],
    [DROP('not-through-tor'), null],
  ])('%j → %j', (v, tag) => {
    expect(verdictTag(v)).toBe(tag);
  });

  /** A flow opened under `from` survives the change to `to` (as the router's recheck asks). */
  function staysOpen(from: RouteName, to: RouteName, flow: FlowName, tor: TorState = 'ready', hostLoopback = true): boolean {
    const before = verdictTag(run({ route: from, flow, tor, hostLoopback }));
    const after = verdictTag(run({ route: to, flow, tor, hostLoopback }));
    return before !== null && before === after;
  }

  it.each<[RouteName, RouteName, FlowName, boolean]>([
    ['direct', 'direct+allow', 'tcp4 allowed port', true],
    ['direct+allow', 'direct', 'tcp6 allowed port', true],
    ['direct', 'direct+allow', 'tcp4 other port', false],
    ['direct', 'direct+allow', 'udp6 other port', false],
    ['direct', 'direct+allow', 'udp4 allowed port', true],
    ['direct', 'direct+tor', 'tcp4 other port', true],
    ['direct', 'direct+tor', 'tcp4 tor port 80', false], // from a host socket to Tor: reset
    ['direct+tor', 'direct', 'tcp4 tor port 80', false], // from Tor to a host socket: reset
    ['tor', 'direct+tor', 'tcp4 tor port 80', true],
    ['tor', 'none+tor', 'tcp onion mapped :80', true],
    ['tor', 'none+tor', 'tcp4 other port', false],
    ['tor', 'direct', 'tcp4 other port', false],
    ['direct', 'none', 'tcp4 allowed port', false],
    ['direct', 'via', 'tcp4 allowed port', false],
    ['direct', 'direct+allow', 'tcp gw :22', true], // host loopback, listed
    ['direct', 'direct+allow', 'tcp gw6 :22', false], // host loopback, not listed
    ['direct', 'direct+tor', 'tcp gw :22', true],
    ['direct', 'none', 'tcp gw :22', false],
    ['none', 'tor', 'tcp gw :53', true], // the gateway's DNS over TCP survives anything
    ['via', 'direct', 'tcp gw :53', true],
    ['tor', 'via', 'tcp gw :53', true],
    ['direct', 'direct+allow', 'udp gw :123', false],
    ['direct', 'direct+tor', 'udp gw :123', true],
  ])('%s → %s, %s: stays open %s', (from, to, flow, open) => {
    expect(staysOpen(from, to, flow)).toBe(open);
  });

  it('a flow survives a change to the route it already had, exactly when it was open', () => {
    for (const c of CASES) {
      if (FLOWS[c.flow].proto !== 'tcp' && FLOWS[c.flow].proto !== 'udp') continue;
      const open = ['direct', 'local', 'tor'].includes(c.expected.kind);
      expect(staysOpen(c.route, c.route, c.flow, c.tor, c.hostLoopback)).toBe(open);
    }
  });

  /** Where an open flow's bytes go, stated without verdictTag. */
  function upstream(v: Verdict): string | null {
    switch (v.kind) {
      case 'direct':
        return 'host socket';
      case 'local':
        return v.service === 'dns' ? 'gateway dns' : 'host socket';
      case 'tor':
        return `tor ${v.identity} ${v.host}`;
      default:
        return null;
    }
  }

  it('every route change: tags equal exactly when the flow keeps going to the same upstream', () => {
    let pairs = 0;
    for (const from of ROUTE_NAMES)
      for (const to of ROUTE_NAMES)
        for (const flow of FLOW_NAMES) {
          if (FLOWS[flow].proto !== 'tcp' && FLOWS[flow].proto !== 'udp') continue;
          for (const tor of TOR_STATES)
            for (const hostLoopback of [false, true]) {
              const a = run({ route: from, flow, tor, hostLoopback });
              const b = run({ route: to, flow, tor, hostLoopback });
              const same = upstream(a) !== null && upstream(a) === upstream(b);
              expect(verdictTag(a) !== null && verdictTag(a) === verdictTag(b), `${from} → ${to}, ${flow}, tor ${tor}, hostLoopback ${hostLoopback}`).toBe(same);
              pairs++;
            }
        }
    expect(pairs).toBe(7 * 7 * 20 * 3 * 2);
  });
});

// --- compileRoute.allows ----------------------------------------------------------------------

function allowing(...rules: string[]): CompiledRoute {
  return compileRoute({ kind: 'direct', allow: rules.map(rule) });
}

describe('compileRoute.allows', () => {
  it('direct without an allow-list allows everything; other routes nothing', () => {
    const all = compileRoute({ kind: 'direct' });
    for (const [dst, port] of [[a4('0.0.0.0'), 0], [a4('255.255.255.255'), 65535], [a6('::'), 1], [a6('ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff'), 65535]] as const) expect(all.allows(dst, port)).toBe(true);
    for (const r of [{ kind: 'none' }, { kind: 'none', torPorts: [80] }, { kind: 'via', vm: 'vm2' }, { kind: 'tor' }] satisfies Route[]) {
      const c = compileRoute(r);
      expect(c.route).toBe(r);
      expect(c.allows(a4('203.0.113.7'), 80)).toBe(false);
      expect(c.allows(a6('2001:db8::1'), 80)).toBe(false);
    }
  });

  it('an empty allow-list allows nothing', () => {
    const c = compileRoute({ kind: 'direct', allow: [] });
    expect(c.allows(a4('203.0.113.7'), 80)).toBe(false);
    expect(c.allows(a6('2001:db8::1'), 80)).toBe(false);
  });

  it.each<[string, string, boolean]>([
    // IPv4 /0: everything IPv4, nothing IPv6
    ['0.0.0.0/0', '0.0.0.0', true],
    ['0.0.0.0/0', '255.255.255.255', true],
    ['0.0.0.0/0', '::ffff:1.2.3.4', false],
    // /7: 10.0.0.0/7 = 10.0.0.0 - 11.255.255.255
    ['10.0.0.0/7', '9.255.255.255', false],
    ['10.0.0.0/7', '10.0.0.0', true],
    ['10.0.0.0/7', '11.255.255.255', true],
    ['10.0.0.0/7', '12.0.0.0', false],
    ['11.1.2.3/7', '10.200.0.1', true], // host bits in the rule are cleared
    // /1 on the sign bit
    ['128.0.0.0/1', '127.255.255.255', false],
    ['128.0.0.0/1', '128.0.0.0', true],
    ['128.0.0.0/1', '255.255.255.255', true],
    ['0.0.0.0/1', '127.255.255.255', true],
    ['0.0.0.0/1', '128.0.0.0', false],
    // /31, /32
    ['192.0.2.4/31', '192.0.2.3', false],
    ['192.0.2.4/31', '192.0.2.4', true],
    ['192.0.2.4/31', '192.0.2.5', true],
    ['192.0.2.4/31', '192.0.2.6', false],
    ['192.0.2.4', '192.0.2.4', true],
    ['192.0.2.4', '192.0.2.5', false],
    ['255.255.255.255/32', '255.255.255.255', true],
    // /23 across an octet
    ['198.51.100.0/23', '198.51.99.255', false],
    ['198.51.100.0/23', '198.51.101.255', true],
    ['198.51.100.0/23', '198.51.102.0', false],
    // IPv6 /0: everything IPv6, nothing IPv4
    ['::/0', '::', true],
    ['::/0', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', true],
    ['::/0', '1.2.3.4', false],
    // /7: fc00::/7 = fc00:: - fdff:...
    ['fc00::/7', 'fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', false],
    ['fc00::/7', 'fc00::', true],
    ['fc00::/7', 'fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', true],
    ['fc00::/7', 'fe00::', false],
    // /33: one bit into the third group
    ['2001:db8::/33', '2001:db8::1', true],
    ['2001:db8::/33', '2001:db8:7fff:ffff:ffff:ffff:ffff:ffff', true],
    ['2001:db8::/33', '2001:db8:8000::', false],
    ['2001:db8::/33', '2001:db9::', false],
    ['2001:db8:8000::/33', '2001:db8:8000::', true],
    ['2001:db8:8000::/33', '2001:db8:ffff::1', true],
    ['2001:db8:8000::/33', '2001:db8:7fff::1', false],
    // /127, /128
    ['2001:db8::2/127', '2001:db8::1', false],
    ['2001:db8::2/127', '2001:db8::2', true],
    ['2001:db8::2/127', '2001:db8::3', true],
    ['2001:db8::2/127', '2001:db8::4', false],
    ['2001:db8::3/127', '2001:db8::2', true], // host bits cleared
    ['2001:db8::5', '2001:db8::5', true],
    ['2001:db8::5', '2001:db8::4', false],
    ['2001:db8::5/128', '2001:db9::5', false],
    // /1 and /65
    ['8000::/1', '7fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', false],
    ['8000::/1', '8000::', true],
    ['2001:db8:0:0:8000::/65', '2001:db8::8000:0:0:0', true],
    ['2001:db8:0:0:8000::/65', '2001:db8::7fff:ffff:ffff:ffff', false],
  ])('%s allows %s: %s', (rule, dst, allowed) => {
    const c = allowing(rule);
    const addr = dst.includes(':') ? a6(dst) : a4(dst);
    expect(c.allows(addr, 443)).toBe(allowed);
    expect(c.allows(addr, 0)).toBe(allowed); // a rule without ports covers every port (and ping)
  });

  it('IPv6 rules given in either spelling match alike', () => {
    const bracketed = allowing('[2001:DB8:0:0::/33]:443');
    const bare = allowing('2001:0db8::/33');
    for (const dst of ['2001:db8::1', '2001:db8:8000::1']) {
      expect(bracketed.allows(a6(dst), 443)).toBe(bare.allows(a6(dst), 443));
    }
  });

  it.each<[string, number, boolean]>([
    ['203.0.113.0/24:80', 79, false],
    ['203.0.113.0/24:80', 80, true],
    ['203.0.113.0/24:80', 81, false],
    ['203.0.113.0/24:8000-8080', 7999, false],
    ['203.0.113.0/24:8000-8080', 8000, true],
    ['203.0.113.0/24:8000-8080', 8040, true],
    ['203.0.113.0/24:8000-8080', 8080, true],
    ['203.0.113.0/24:8000-8080', 8081, false],
    ['203.0.113.0/24:22,80,443', 22, true],
    ['203.0.113.0/24:22,80,443', 443, true],
    ['203.0.113.0/24:22,80,443', 444, false],
    ['203.0.113.0/24:22,80,443', 0, false], // ping has no port: a rule with ports does not cover it
    ['203.0.113.0/24:1-65535', 1, true],
    ['203.0.113.0/24:1-65535', 65535, true],
    ['203.0.113.0/24:1-65535', 0, false],
    ['203.0.113.0/24:1', 1, true],
    ['203.0.113.0/24:1', 2, false],
    ['203.0.113.0/24:65535', 65535, true],
    ['203.0.113.0/24:65535', 65534, false],
    ['203.0.113.0/24:1-2,65534-65535', 3, false],
    ['203.0.113.0/24:1-2,65534-65535', 65534, true],
    ['[2001:db8::/32]:443', 443, true],
    ['[2001:db8::/32]:443', 442, false],
    ['[2001:db8::/32]:443', 444, false],
    ['[2001:db8::/32]:1000-2000,3000', 999, false],
    ['[2001:db8::/32]:1000-2000,3000', 1000, true],
    ['[2001:db8::/32]:1000-2000,3000', 2000, true],
    ['[2001:db8::/32]:1000-2000,3000', 2001, false],
    ['[2001:db8::/32]:1000-2000,3000', 3000, true],
  ])('%s, port %d: %s', (rule, port, allowed) => {
    const c = allowing(rule);
    const dst = rule.startsWith('[') ? a6('2001:db8:1::7') : a4('203.0.113.7');
    expect(c.allows(dst, port)).toBe(allowed);
    // outside the prefix, no port helps
    expect(c.allows(rule.startsWith('[') ? a6('2001:db9::7') : a4('203.0.114.7'), port)).toBe(false);
  });

  it('several rules: any one that matches address and port lets the flow through', () => {
    const c = allowing('203.0.113.0/24:443', '203.0.113.128/25:22', '[2001:db8::/32]:443', '198.51.100.0/24');
    expect(c.allows(a4('203.0.113.1'), 443)).toBe(true);
    expect(c.allows(a4('203.0.113.1'), 22)).toBe(false);
    expect(c.allows(a4('203.0.113.129'), 22)).toBe(true);
    expect(c.allows(a4('203.0.113.129'), 443)).toBe(true);
    expect(c.allows(a4('198.51.100.200'), 1)).toBe(true);
    expect(c.allows(a6('2001:db8::1'), 443)).toBe(true);
    expect(c.allows(a6('2001:db8::1'), 22)).toBe(false);
    // an IPv4 rule never matches an IPv6 destination, nor the reverse
    expect(c.allows(a6('::ffff:203.0.113.1'), 443)).toBe(false);
    expect(c.allows(a6('::ffff:198.51.100.200'), 1)).toBe(false);
  });
});
