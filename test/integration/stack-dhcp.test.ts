/**
 * DHCPv4 from the gateway, as a real client (busybox udhcpc in the VM namespace) sees it: the
 * lease's router, DNS, MTU, domain and lease time; a renewal (SIGUSR1: unicast REQUEST, ACK); a
 * second request after the client restarted (same address); a static lease from `--ip`; and a
 * network with MTU 9000 whose VMs really use jumbo frames with the gateway.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupAll } from '../support/netns.js';
import { startTopology, type StackVm, type Topology } from '../support/stack-topology.js';

afterAll(cleanupAll);

describe('stack: DHCP', () => {
  let t: Topology;
  let a: StackVm;

  beforeAll(async () => {
    t = await startTopology({ prefix: 'sdh' });
    await t.cli(['net', 'create', 'lan', '--subnet', '10.210.0.0/24']);
    await t.cli(['net', 'create', 'jumbo', '--subnet', '10.211.0.0/24', '--mtu', '9000']);
    a = await t.addVm('a', 'lan');
  });

  it('leases an address with the gateway as router and DNS, MTU, domain and lease time', async () => {
    const lease = await a.configure();
    expect(lease.ip).toMatch(/^10\.210\.0\.\d+$/);
    expect(lease.ip).not.toBe('10.210.0.1');
    expect(lease.mask).toBe('24');
    expect(lease.router).toBe('10.210.0.1');
    expect(lease.dns.trim()).toBe('10.210.0.1');
    expect(lease.serverid).toBe('10.210.0.1');
    expect(lease.mtu).toBe('1500');
    expect(lease.domain).toBe('lan.mvnet');
    expect(Number(lease.lease)).toBeGreaterThanOrEqual(60);

    // The kernel really uses it: address, default route, and the gateway answers.
    const addr = await a.exec(['ip', '-4', '-o', 'addr', 'show', 'dev', a.ifname]);
    expect(addr.stdout).toContain(`${lease.ip}/24`);
    const route = await a.exec(['ip', '-4', 'route', 'show', 'default']);
    expect(route.stdout).toContain('via 10.210.0.1');
    expect(await a.ns.ping('10.210.0.1', { count: 2 })).toBe(true);
    // The lease made the VM a DNS name on the gateway.
    const r = await a.client<{ ok: boolean; addresses?: string[]; code?: string }>(['dns', 'a.lan.mvnet', 'A']);
    expect(r).toMatchObject({ ok: true, addresses: [lease.ip] });
  });

  it('renews (SIGUSR1: a unicast REQUEST the gateway ACKs) and keeps the address', async () => {
    const first = a.dhcpEvents().find((e) => e.event === 'bound')!;
    const renewed = await a.renew();
    expect(renewed.event).toBe('renew');
    expect(renewed.ip).toBe(first.ip);
    expect(renewed.router).toBe('10.210.0.1');
    expect(renewed.lease).toBe(first.lease);
    // The renewal went to the gateway and was answered: no NAK/deconfig on the way.
    expect(a.dhcpEvents().map((e) => e.event)).not.toContain('nak');
  });

  it('a client that starts over (DISCOVER again) gets its address back', async () => {
    const first = a.dhcpEvents().find((e) => e.event === 'bound')!;
    await a.stopDhcp();
    await a.exec(['ip', '-4', 'addr', 'flush', 'dev', a.ifname], { check: true });
    const again = await a.dhcp();
    expect(again.ip).toBe(first.ip);
  });

  it('honours a static lease (--ip) and keeps that address out of the pool', async () => {
    const s = await t.addVm('s', 'lan', { ip: '10.210.0.50' });
    const lease = await s.configure();
    expect(lease.ip).toBe('10.210.0.50');
    expect(lease.router).toBe('10.210.0.1');
    expect(await s.ns.ping('10.210.0.1', { count: 2 })).toBe(true);
    // Static VMs are named in DNS too.
    const r = await a.client<{ ok: boolean; addresses?: string[] }>(['dns', 's.lan.mvnet', 'A']);
    expect(r).toMatchObject({ ok: true, addresses: ['10.210.0.50'] });

    // Other clients never get the reserved address.
    const others: string[] = [];
    for (const n of ['d1', 'd2', 'd3']) {
      const vm = await t.addVm(n, 'lan');
      others.push((await vm.dhcp()).ip);
    }
    expect(others).not.toContain('10.210.0.50');
    expect(new Set(others).size).toBe(others.length);
  });

  it('a network with --mtu 9000 hands out MTU 9000 and carries jumbo frames to the gateway', async () => {
    const j = await t.addVm('j', 'jumbo');
    const lease = await j.configure();
    expect(lease.mtu).toBe('9000');
    expect(lease.router).toBe('10.211.0.1');
    expect((await j.ns.link(j.ifname))?.mtu).toBe(9000);
    // 8972 bytes of ICMP payload + 28 = a 9000-byte IP packet, DF set: no fragmentation anywhere.
    const r = await j.exec(['ping', '-n', '-c', '2', '-W', '2', '-i', '0.2', '-M', 'do', '-s', '8972', '10.211.0.1'], { timeoutMs: 20_000 });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/8980 bytes from 10\.211\.0\.1/);
  });
});
