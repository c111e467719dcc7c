/**
 * IPv6 on a network with `--ipv6 fd00:77::/64`, seen by the VM namespace's own kernel (SLAAC
 * from the gateway's router advertisements, accept_ra=1, forwarding=0): a global address in the
 * prefix, an RA that carries the prefix and RDNSS = prefix::1, NDP for the gateway (ping6
 * prefix::1 and its link-local router address), DNS over IPv6 to prefix::1, and IPv6 TCP/UDP to
 * the upstream namespace following the route exactly as IPv4 does: none → refused, nothing on
 * the upstream link; direct → works, bytes intact.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupAll, waitFor } from '../support/netns.js';
import { PORTS, UPSTREAM_IP6, UPSTREAM_NAME, startTopology, type StackVm, type Topology } from '../support/stack-topology.js';

afterAll(cleanupAll);

const PREFIX = 'fd00:77::';
const GW6 = 'fd00:77::1';

describe('stack: IPv6', () => {
  let t: Topology;
  let vm: StackVm;
  let addr6: string;
  let raText = '';

  beforeAll(async () => {
    t = await startTopology({ prefix: 'si6', ipv6: true });
    await t.cli(['net', 'create', 'lan', '--subnet', '10.212.0.0/24', '--ipv6', 'fd00:77::/64']);
    vm = await t.addVm('v', 'lan', { ipv6: true });
    // Watch the router advertisement the VM's router solicitation gets (link down/up sends one).
    const cap = await t.capture({ ns: vm.ns, ifname: vm.ifname, filter: 'icmp6' });
    await vm.exec(['ip', 'link', 'set', vm.ifname, 'down'], { check: true });
    await vm.exec(['ip', 'link', 'set', vm.ifname, 'up'], { check: true });
    const addrs = await waitFor(
      async () => {
        const a = await vm.ipv6Addresses();
        return a.some((x) => x.startsWith(PREFIX)) ? a : undefined;
      },
      { timeoutMs: 15_000, what: 'a SLAAC address in fd00:77::/64' },
    );
    addr6 = addrs.find((x) => x.startsWith(PREFIX))!;
    raText = (await cap.stop())
      .filter((p) => /router advertisement/.test(p.text))
      .map((p) => p.text)
      .join('\n');
  });

  it('the VM forms a SLAAC address in the prefix from the router advertisement', async () => {
    expect(addr6.startsWith(PREFIX)).toBe(true);
    // EUI-64 from the TAP's MAC: the interface identifier is not ::1 (the gateway's).
    expect(addr6).not.toBe(GW6);
    expect(raText).toMatch(/prefix info option.*fd00:77::\/64/s);
    expect(raText).toMatch(/rdnss option.*fd00:77::1/s);
    // A default route learned from the RA, via the gateway's link-local address.
    const r = await vm.exec(['ip', '-6', 'route', 'show', 'default']);
    expect(r.stdout).toMatch(/default via fe80::[0-9a-f:]+ dev .* proto ra/);
  });

  it('NDP for the gateway works: ping6 prefix::1 and its link-local address', async () => {
    expect(await vm.ns.ping(GW6, { count: 2 })).toBe(true);
    const neigh = await vm.exec(['ip', '-6', 'neigh', 'show', GW6]);
    expect(neigh.stdout).toMatch(/lladdr [0-9a-f:]{17}/);
    const def = await vm.exec(['ip', '-6', 'route', 'show', 'default']);
    const ll = /via (fe80::[0-9a-f:]+)/.exec(def.stdout)?.[1];
    expect(ll).toBeDefined();
    expect(await vm.ns.ping(`${ll!}%${vm.ifname}`, { count: 2 })).toBe(true);
  });

  it('DNS over IPv6 to prefix::1 answers local names', async () => {
    vm.setResolvConf([GW6]);
    const r = await vm.client<{ ok: boolean; addresses?: string[]; servers: string[] }>(['dns', 'gateway.lan.mvnet', 'A']);
    expect(r.servers).toEqual([GW6]);
    expect(r).toMatchObject({ ok: true, addresses: ['10.212.0.1'] });
    const aaaa = await vm.client<{ ok: boolean; addresses?: string[] }>(['dns', 'gateway.lan.mvnet', 'AAAA']);
    expect(aaaa).toMatchObject({ ok: true, addresses: [GW6] });
    // glibc's resolver (getaddrinfo) over the IPv6-only resolv.conf. (The VM has no IPv4
    // address, so AI_ADDRCONFIG makes getent ask for AAAA only.)
    const g = await vm.exec(['getent', 'ahostsv6', 'gateway.lan.mvnet']);
    expect(g.code, g.stderr).toBe(0);
    expect(g.stdout).toMatch(/^fd00:77::1\s/);
  });

  it('route none: DNS for outside names is REFUSED and IPv6 TCP/UDP to the upstream is refused, with nothing on the upstream link', async () => {
    const dns = await vm.client<{ ok: boolean; code?: string }>(['dns', UPSTREAM_NAME, 'AAAA']);
    expect(dns).toMatchObject({ ok: false, code: 'EREFUSED' });
    const cap = await t.capture({ filter: 'not ip6 multicast' });
    const tcp = await vm.client<{ ok: boolean; code?: string; ms: number }>(['tcp', UPSTREAM_IP6, PORTS.http, 8000]);
    expect(tcp.ok).toBe(false);
    // ICMPv6 administratively prohibited: EACCES (or unreachable) at once, not a timeout.
    expect(['EACCES', 'EHOSTUNREACH', 'ENETUNREACH', 'ECONNREFUSED']).toContain(tcp.code);
    expect(tcp.ms).toBeLessThan(3000);
    const udp = await vm.client<{ ok: boolean }>(['udp', UPSTREAM_IP6, PORTS.udpEcho, 1500]);
    expect(udp.ok).toBe(false);
    const pkts = t.fromRouterTraffic(await cap.stop());
    expect(pkts.map((p) => p.line)).toEqual([]);
  });

  it('route direct: DNS AAAA through prefix::1, IPv6 TCP and UDP to the upstream work, bytes intact', async () => {
    await t.cli(['route', '--direct', 'v']);
    const dns = await vm.client<{ ok: boolean; addresses?: string[] }>(['dns', UPSTREAM_NAME, 'AAAA']);
    expect(dns).toMatchObject({ ok: true, addresses: [UPSTREAM_IP6] });
    const g = await vm.exec(['getent', 'ahostsv6', UPSTREAM_NAME]);
    expect(g.stdout).toMatch(/^fd00:200::2\s/);

    const cap = await t.capture({ filter: `ip6 and tcp port ${PORTS.http}` });
    const hello = await vm.curl(['-6', '--max-time', '10', `http://[${UPSTREAM_IP6}]/hello`]);
    expect(hello.code, hello.stderr).toBe(0);
    expect(hello.stdout).toBe('hello\n');
    const pkts = t.fromRouter(await cap.stop());
    // It left the router namespace as IPv6, from the router's own address (userland NAT).
    expect(pkts.some((p) => /fd00:200::1\.\d+ > fd00:200::2\.80: Flags \[S\]/.test(p.text)), pkts.map((p) => p.line).join('\n')).toBe(true);

    const size = 8 * 1024 * 1024;
    const want = await t.blobSha(size);
    const dl = await vm.download(`http://${UPSTREAM_NAME}/bytes/${size}`, { extra: ['-6'] });
    expect(dl.code, dl.stderr).toBe(0);
    expect(dl.bytes).toBe(size);
    expect(dl.sha256).toBe(want);
    const ul = await vm.upload(`http://[${UPSTREAM_IP6}]/upload`, size);
    expect(ul.code, ul.stderr).toBe(0);
    expect(ul.server).toEqual({ bytes: size, sha256: ul.sentSha256 });

    const udp = await vm.client<{ ok: boolean; echo?: string }>(['udp', UPSTREAM_IP6, PORTS.udpEcho, 3000]);
    expect(udp).toMatchObject({ ok: true, echo: 'hello-udp' });
  }, 120_000);

  it('back to none: IPv6 TCP to the upstream is refused again', async () => {
    await t.cli(['route', '--none', 'v']);
    const tcp = await vm.client<{ ok: boolean; code?: string; ms: number }>(['tcp', UPSTREAM_IP6, PORTS.http, 8000]);
    expect(tcp.ok).toBe(false);
    expect(tcp.ms).toBeLessThan(3000);
  });
});
