/**
 * Route via: a firewall VM (attached with --ip, routed direct, ip_forward=1, no NAT) becomes
 * another VM's router. The client VM gets the firewall as its DHCP router; its traffic to the
 * upstream passes through the firewall (seen on the firewall's TAP, in and out) and reaches the
 * upstream; the gateway drops the client's traffic when the client bypasses the firewall; with
 * forwarding off on the firewall the client reaches nothing. Loops are refused by the CLI.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupAll } from '../support/netns.js';
import { PORTS, UPSTREAM_IP, startTopology, type StackVm, type Topology } from '../support/stack-topology.js';

afterAll(cleanupAll);

const FW_IP = '10.250.0.10';
const GW_IP = '10.250.0.1';

describe('stack: route via a firewall VM', () => {
  let t: Topology;
  let fw: StackVm;
  let client: StackVm;
  let clientIp: string;

  beforeAll(async () => {
    t = await startTopology({ prefix: 'svi' });
    await t.cli(['net', 'create', 'lan', '--subnet', '10.250.0.0/24']);
    fw = await t.addVm('fw', 'lan', { ip: FW_IP });
    await t.cli(['route', '--direct', 'fw']);
    const fwLease = await fw.configure();
    expect(fwLease.ip).toBe(FW_IP);
    // A plain forwarding firewall: no NAT, no ICMP redirects (the client must keep using it).
    await fw.exec(['sysctl', '-q', '-w', 'net.ipv4.ip_forward=1', 'net.ipv4.conf.all.send_redirects=0', `net.ipv4.conf.${fw.ifname}.send_redirects=0`], {
      check: true,
    });
    client = await t.addVm('cl', 'lan');
    await t.cli(['route', '--via', 'fw', 'cl']);
    clientIp = (await client.configure()).ip;
  });

  it("the client's DHCP router is the firewall", () => {
    const lease = client.dhcpEvents().find((e) => e.event === 'bound')!;
    expect(lease.router).toBe(FW_IP);
    // The firewall itself still has the gateway.
    expect(fw.dhcpEvents().find((e) => e.event === 'bound')!.router).toBe(GW_IP);
  });

  it('the firewall reaches the upstream itself (route direct)', async () => {
    const r = await fw.curl(['--max-time', '10', `http://${UPSTREAM_IP}/hello`]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe('hello\n');
  });

  it('the client reaches the upstream through the firewall', async () => {
    const fwCap = await t.capture({ ns: fw.ns, ifname: fw.ifname, filter: `tcp port ${PORTS.http}` });
    const upCap = await t.capture({ filter: `tcp port ${PORTS.http}` });
    const r = await client.curl(['--max-time', '10', `http://${UPSTREAM_IP}/hello`]);
    const seenByFw = await fwCap.stop();
    const seenUpstream = t.fromRouter(await upCap.stop());
    const fwMac = await fw.ns.mac(fw.ifname);
    const syn = (p: { text: string }): boolean => new RegExp(`${clientIp.replace(/\./g, '\\.')}\\.\\d+ > ${UPSTREAM_IP.replace(/\./g, '\\.')}\\.80: Flags \\[S\\]`).test(p.text);
    // The client's SYN came in to the firewall and went out again from the firewall's MAC.
    expect(seenByFw.filter((p) => syn(p) && p.srcMac !== fwMac).length, 'SYN from the client at the firewall').toBeGreaterThan(0);
    expect(seenByFw.filter((p) => syn(p) && p.srcMac === fwMac).length, 'SYN forwarded by the firewall').toBeGreaterThan(0);
    const diag = `curl exit ${r.code} ${r.stderr}\nat the firewall:\n${seenByFw.map((p) => p.line).join('\n')}\nupstream:\n${seenUpstream.map((p) => p.line).join('\n')}\nstatus: ${await t.describe()}`;
    expect(r.code, diag).toBe(0);
    expect(r.stdout).toBe('hello\n');
    expect(seenUpstream.some((p) => /10\.200\.0\.1\.\d+ > 10\.200\.0\.2\.80: Flags \[S\]/.test(p.text)), diag).toBe(true);
  });

  it("the gateway drops the client's outside traffic when it bypasses the firewall", async () => {
    await client.exec(['ip', 'route', 'replace', 'default', 'via', GW_IP, 'dev', client.ifname], { check: true });
    try {
      const cap = await t.capture();
      const r = await client.curl(['--max-time', '3', `http://${UPSTREAM_IP}/hello`]);
      const udp = await client.client<{ ok: boolean }>(['udp', UPSTREAM_IP, PORTS.udpEcho, 1000]);
      const pkts = t.fromRouterTraffic(await cap.stop());
      expect(r.code).not.toBe(0);
      expect(udp.ok).toBe(false);
      expect(pkts.map((p) => p.line)).toEqual([]);
    } finally {
      await client.exec(['ip', 'route', 'replace', 'default', 'via', FW_IP, 'dev', client.ifname], { check: true });
    }
  });

  it('with forwarding off on the firewall the client reaches nothing', async () => {
    await fw.exec(['sysctl', '-q', '-w', 'net.ipv4.ip_forward=0'], { check: true });
    try {
      const fwCap = await t.capture({ ns: fw.ns, ifname: fw.ifname, filter: `tcp port ${PORTS.http}` });
      const upCap = await t.capture();
      const r = await client.curl(['--max-time', '3', `http://${UPSTREAM_IP}/hello`]);
      const seenByFw = await fwCap.stop();
      const pkts = t.fromRouterTraffic(await upCap.stop());
      expect(r.code).not.toBe(0);
      const fwMac = await fw.ns.mac(fw.ifname);
      // The SYNs reached the firewall, which no longer passed them on.
      expect(seenByFw.filter((p) => p.srcMac !== fwMac).length).toBeGreaterThan(0);
      expect(seenByFw.filter((p) => p.srcMac === fwMac).map((p) => p.line)).toEqual([]);
      expect(pkts.map((p) => p.line)).toEqual([]);
    } finally {
      await fw.exec(['sysctl', '-q', '-w', 'net.ipv4.ip_forward=1'], { check: true });
    }
  });

  it('refuses loops with a one-line error', async () => {
    await t.addVm('la', 'lan', { ip: '10.250.0.21' });
    await t.addVm('lb', 'lan', { ip: '10.250.0.22' });
    await t.cli(['route', '--via', 'la', 'lb']);
    const r = await t.daemon.cli(['route', '--via', 'lb', 'la']);
    expect(r.code).not.toBe(0);
    expect(r.stdout).toBe('');
    const lines = r.stderr.trimEnd().split('\n');
    expect(lines, r.stderr).toHaveLength(1);
    expect(lines[0]).toMatch(/loop/i);
    // A longer loop through the firewall too: fw -> la -> lb -> fw.
    await t.cli(['route', '--via', 'lb', 'fw']);
    const r2 = await t.daemon.cli(['route', '--via', 'fw', 'la']);
    expect(r2.code).not.toBe(0);
    expect(r2.stderr.trimEnd().split('\n')).toHaveLength(1);
    // And the routes are unchanged by the refused requests.
    const shown = JSON.parse(await t.daemon.cliOk(['--json', 'route', 'show'])) as { vm: string; route: { kind: string; vm?: string } }[];
    const byVm = Object.fromEntries(shown.map((s) => [s.vm, s.route]));
    expect(byVm.la).toEqual({ kind: 'none', torPorts: null });
    expect(byVm.lb).toEqual({ kind: 'via', vm: 'la' });
    await t.cli(['route', '--direct', 'fw']);
  });
});
