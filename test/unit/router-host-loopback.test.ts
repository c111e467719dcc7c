/**
 * The router's view of `direct.hostLoopback` (PlaceView.hostLoopback(port) in net-router.ts):
 * only the listed ports, and never the port Tor's SOCKS listens on now, even when listed (an
 * embedded "auto" port is known only once Tor runs, so the config cannot refuse it at load).
 */
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { NetRouter } from '../../daemon/router/net-router.js';
import { Network } from '../../daemon/switch/network.js';
import { Automap } from '../../daemon/tor/automap.js';
import type { SocksEndpoint } from '../../daemon/tor/socks-endpoint.js';
import type { DnsAnswer } from '../../daemon/gateway/dns.js';
import type { DirectOptions } from '../../daemon/egress/direct.js';

const GW = { v: 4 as const, n: 0x0a010001 }; // 10.1.0.1

function router(direct: DirectOptions, socks: () => SocksEndpoint | null): NetRouter {
  const network = new Network({ name: 'lan', mtu: 1500, gatewayMac: 0x020000000001, clock: () => 0, onMacLearned: () => undefined });
  const servfail = { resolve: (): Promise<DnsAnswer> => Promise.resolve({ kind: 'servfail' }) };
  const r = new NetRouter({
    spec: { name: 'lan', subnet: '10.1.0.0/24', gateway: '10.1.0.1', mtu: 1500 },
    network,
    log: pino({ level: 'silent' }),
    vm: () => undefined,
    vmByMac: () => undefined,
    routeOf: () => ({ kind: 'direct' }),
    viaClientsOf: () => [],
    upstreamDns: servfail,
    direct,
    tor: { socks, timeoutMs: 1000, alive: () => Promise.resolve(true), creds: () => ({ user: 'u', pass: 'p' }), automap: new Automap('10.192.0.0/10'), resolver: servfail },
    onLeases: () => undefined,
    forbidden: () => false,
  });
  network.setGateway(r);
  return r;
}

describe('router: hostLoopback ports', () => {
  const tcp = (r: NetRouter, port: number): string => r.decide('vm', { proto: 'tcp', dst: GW, port }).kind;
  const udp = (r: NetRouter, port: number): string => r.decide('vm', { proto: 'udp', dst: GW, port }).kind;

  it('only the listed ports reach the host loopback', () => {
    const r = router({ connectTimeoutMs: 1000, hostLoopback: true, hostLoopbackPorts: [[8080, 8080], [9000, 9010]] }, () => null);
    expect(tcp(r, 8080)).toBe('local');
    expect(tcp(r, 9000)).toBe('local');
    expect(tcp(r, 9010)).toBe('local');
    expect(udp(r, 9005)).toBe('local');
    expect(tcp(r, 8081)).toBe('refuse');
    expect(tcp(r, 8999)).toBe('refuse');
    expect(tcp(r, 9011)).toBe('refuse');
    expect(udp(r, 22)).toBe('drop');

  });

  it('hostLoopback off, or no ports listed: none', () => {
    expect(tcp(router({ connectTimeoutMs: 1000, hostLoopback: false, hostLoopbackPorts: [[8080, 8080]] }, () => null), 8080)).toBe('refuse');
    expect(tcp(router({ connectTimeoutMs: 1000, hostLoopback: true }, () => null), 8080)).toBe('refuse');
  });

  it("Tor's live SOCKS port is never a host-loopback port, even when listed", () => {
    let socks: SocksEndpoint | null = null;
    const r = router({ connectTimeoutMs: 1000, hostLoopback: true, hostLoopbackPorts: [[40000, 40100]] }, () => socks);
    expect(tcp(r, 40050)).toBe('local');
    socks = { host: '127.0.0.1', port: 40050 };
    expect(tcp(r, 40050)).toBe('refuse');
    expect(udp(r, 40050)).toBe('drop');
    expect(tcp(r, 40051)).toBe('local');
    socks = { path: '/run/mvnet/tor/socks.sock' };
    expect(tcp(r, 40050)).toBe('local');
  });
});
