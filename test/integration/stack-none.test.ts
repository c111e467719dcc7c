/**
 * Route none (the default): the VM has the gateway's services and nothing else. It pings the
 * gateway, resolves gateway.<net>.mvnet through its own resolv.conf, gets REFUSED for an outside
 * name, and its TCP, UDP and ICMP probes towards the upstream namespace cause no packet at all
 * on the upstream link (tcpdump on the upstream end, router's source MAC), while the VM is told
 * "administratively prohibited" at once instead of hanging.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupAll } from '../support/netns.js';
import { PORTS, UPSTREAM_IP, UPSTREAM_NAME, startTopology, type StackVm, type Topology } from '../support/stack-topology.js';

afterAll(cleanupAll);

describe('stack: route none', () => {
  let t: Topology;
  let vm: StackVm;

  beforeAll(async () => {
    t = await startTopology({ prefix: 'sno' });
    await t.cli(['net', 'create', 'lan', '--subnet', '10.220.0.0/24']);
    vm = await t.addVm('n', 'lan');
    await vm.configure();
  });

  it('is the default route', async () => {
    const shown = JSON.parse(await t.daemon.cliOk(['--json', 'route', 'show', 'n'])) as { route: { kind: string } }[];
    expect(shown[0]?.route.kind).toBe('none');
  });

  it('pings the gateway', async () => {
    expect(await vm.ns.ping('10.220.0.1', { count: 2 })).toBe(true);
  });

  it('resolves gateway.lan.mvnet with the kernel resolver configuration', async () => {
    const r = await vm.exec(['getent', 'ahostsv4', 'gateway.lan.mvnet']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.split('\n')[0]).toMatch(/^10\.220\.0\.1\s/);
  });

  it('gets REFUSED for an outside name', async () => {
    const r = await vm.client<{ ok: boolean; code?: string; servers: string[] }>(['dns', UPSTREAM_NAME, 'A']);
    expect(r.servers).toEqual(['10.220.0.1']);
    expect(r).toMatchObject({ ok: false, code: 'EREFUSED' });
  });

  it('TCP, UDP, ICMP and DNS probes to the outside cause no packet on the upstream link', async () => {
    const cap = await t.capture();
    const tapCap = await t.capture({ ns: vm.ns, ifname: vm.ifname, filter: 'icmp' });
    const serverEventsBefore = t.serverEvents().length;

    // TCP: refused at once with ICMP admin-prohibited (EHOSTUNREACH), not a hang.
    const tcp = await vm.client<{ ok: boolean; code?: string; ms: number }>(['tcp', UPSTREAM_IP, PORTS.http, 8000]);
    expect(tcp.ok).toBe(false);
    expect(tcp.code).toBe('EHOSTUNREACH');
    expect(tcp.ms).toBeLessThan(3000);
    const curl = await vm.curl(['--max-time', '8', `http://${UPSTREAM_IP}/hello`]);
    expect(curl.code).not.toBe(0);

    // UDP to the upstream echo server: no echo.
    const udp = await vm.client<{ ok: boolean; code?: string }>(['udp', UPSTREAM_IP, PORTS.udpEcho, 1500]);
    expect(udp.ok).toBe(false);

    // ICMP echo to the upstream: no reply.
    expect(await vm.ns.ping(UPSTREAM_IP, { count: 3, waitS: 1 })).toBe(false);

    // DNS: an outside name through the gateway, and a query straight at the upstream resolver.
    const dns1 = await vm.client<{ ok: boolean; code?: string }>(['dns', UPSTREAM_NAME, 'A']);
    expect(dns1.ok).toBe(false);
    const dns2 = await vm.client<{ ok: boolean; code?: string }>(['dns', UPSTREAM_NAME, 'A', UPSTREAM_IP]);
    expect(dns2.ok).toBe(false);

    const seenByVm = await tapCap.stop();
    const pkts = await cap.stop();
    const fromRouter = t.fromRouterTraffic(pkts);
    expect(fromRouter.map((p) => p.line), 'packets from the router namespace on the upstream link').toEqual([]);
    // Only the router and the upstream are on that link: nothing else appeared either.
    expect(pkts.filter((p) => p.srcMac !== t.upstreamMac && p.srcMac !== t.routerMac).map((p) => p.line)).toEqual([]);
    // The upstream servers saw nothing either.
    expect(t.serverEvents().slice(serverEventsBefore)).toEqual([]);
    expect(t.dnsmasq.stderr).not.toMatch(/query\[/);
    // The VM was told, by its gateway, that its TCP and UDP were prohibited.
    const prohibited = seenByVm.filter((p) => /10\.220\.0\.1 > 10\.220\.0\.\d+: ICMP .*admin prohibited/.test(p.text));
    expect(prohibited.length, seenByVm.map((p) => p.line).join('\n')).toBeGreaterThanOrEqual(2);
  });

  it('control: the same capture does see the router once the VM is routed direct', async () => {
    await t.cli(['route', '--direct', 'n']);
    const cap = await t.capture();
    const r = await vm.curl(['--max-time', '10', `http://${UPSTREAM_IP}/hello`]);
    expect(r.stdout).toBe('hello\n');
    const pkts = t.fromRouter(await cap.stop());
    expect(pkts.some((p) => /10\.200\.0\.1\.\d+ > 10\.200\.0\.2\.80: Flags \[S\]/.test(p.text)), pkts.map((p) => p.line).join("\n")).toBe(true);
  });
});
