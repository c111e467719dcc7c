/**
 * `mvnet route --all-tor VM`, end to end, with the daemon's Tor embedded (a child tor in the
 * router namespace joining the private network through `routerLink()`) and external (the
 * private network's client, over its unix SOCKS and control sockets): a VM namespace that
 * configures itself like a real VM (TAP, udhcpc, the kernel resolver through
 * /etc/netns/<ns>/resolv.conf, curl) fetches the private network's onion service by name and the
 * upstream site by name through the exit; the upstream sees the exit relay's address, never the
 * router's. The gateway's DNS for Tor-routed VMs answers as specified (A through Tor, .onion
 * from the automap range, AAAA of an onion empty, PTR refused, unknown names NXDOMAIN). In
 * external mode the router namespace has default routes into a sink (mvnet-harness.ts) and is
 * captured: with the Tor in another namespace, nothing at all may leave it.
 *
 * Also `mvnet route --tor-ports 80 VM` (on the default --none): port 80 goes through Tor, other
 * ports are refused as for --none, and the VM's DNS is Tor's.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupAll } from '../support/netns.js';
import { privateTor, torUpstream } from './context.js';
import { TorRouter, flows, type DhcpLease, type NsCapture, type TorVm } from './mvnet-harness.js';
import { ONION_HELLO } from './private-network.js';
import type { OnionAliasInfo, RouteInfo } from '../../daemon/control/api.js';

const tor = privateTor();
const up = torUpstream();

afterAll(cleanupAll);

/** Inside tor.automap (default 10.192.0.0/10). */
function inAutomap(ip: string): boolean {
  const [a, b] = ip.split('.').map(Number);
  return a === 10 && b! >= 192 && b! < 256;
}

describe.each(['embedded', 'external'] as const)('all-tor VM through %s Tor', (mode) => {
  let r: TorRouter;
  let vm: TorVm;
  let lease: DhcpLease;
  let cap: NsCapture | undefined;

  beforeAll(async () => {
    r = await TorRouter.create({ prefix: mode === 'embedded' ? 'trte' : 'trtx', mode, sink: mode === 'external', deferDaemon: true });
    if (mode === 'external') cap = await r.capture();
    await r.startDaemon();
    await r.cli(['net', 'create', 'lan', '--subnet', '10.231.0.0/24']);
    vm = await r.addVm('vm1', 'lan');
    await r.cli(['route', '--all-tor', 'vm1']);
    lease = await vm.configure();
    await r.waitTorReady(90_000);
  }, 150_000);

  it('the VM is configured by DHCP with the gateway as its resolver; tor status is ready and lists it', async () => {
    expect(lease.router).toBe('10.231.0.1');
    expect(lease.dns.trim()).toBe('10.231.0.1');
    const s = await r.torStatus();
    expect(s).toMatchObject({ mode, phase: 'ready', progress: 100, vms: ['vm1'] });
    expect(s.version).toMatch(/^\d+\.\d+\.\d+/);
    const route = await r.cliJson<RouteInfo[]>(['route', 'show', 'vm1']);
    expect(route[0]!.route.kind).toBe('tor');
  });

  it('fetches the onion service page by name (curl http://<onion>/)', async () => {
    const res = await vm.curl(['--max-time', '45', `http://${tor.onion.hostname}/`], 60_000);
    expect(res.stderr, r.logTail()).toBe('');
    expect(res.stdout).toBe(`${ONION_HELLO}\n`);
    // The kernel resolver got an automap address for it (A through the gateway's DNS).
    const g = await vm.exec(['getent', 'ahostsv4', tor.onion.hostname]);
    expect(g.code, g.stderr).toBe(0);
    const addr = g.stdout.split(/\s+/)[0]!;
    expect(inAutomap(addr), addr).toBe(true);
  }, 70_000);

  it('fetches the upstream page by name through the exit (the exit resolves it)', async () => {
    const res = await vm.curl(['--max-time', '30', up.nameUrl]);
    expect(res.stderr, r.logTail()).toBe('');
    expect(res.stdout).toBe(`${up.hello}\n`);
    // The VM's resolver answers the upstream name with the upstream's real address, resolved
    // by Tor (SOCKS RESOLVE): there is no other DNS server anywhere that knows it.
    const d = await vm.dns(up.name);
    expect(d).toMatchObject({ ok: true, addresses: [up.address] });
  });

  it("the upstream sees the exit relay's address, never the router's", async () => {
    const own = await r.ownAddresses();
    for (const url of [`${up.nameUrl}whoami`, `${up.url}whoami`]) {
      const res = await vm.curl(['--max-time', '30', url]);
      expect(res.stderr, `${url}\n${r.logTail()}`).toBe('');
      const seen = res.stdout.trim();
      expect(seen, url).toBe(up.exitAddress);
      expect(own).not.toContain(seen);
      expect(seen).not.toBe(lease.ip);
    }
    if (mode === 'embedded') expect(own).toContain(r.link!.routerAddr);
  });

  it('a named onion (mvnet onion add NAME X.onion) is reachable as NAME.onion.mvnet', async () => {
    const added = await r.cliJson<OnionAliasInfo>(['onion', 'add', 'hello', tor.onion.hostname]);
    expect(added).toEqual({ name: 'hello', address: tor.onion.hostname, resolvesAs: 'hello.onion.mvnet' });
    const res = await vm.curl(['--max-time', '45', 'http://hello.onion.mvnet/'], 60_000);
    expect(res.stderr, r.logTail()).toBe('');
    expect(res.stdout).toBe(`${ONION_HELLO}\n`);
    // Unknown names under .onion.mvnet are NXDOMAIN, not a lookup anywhere.
    const nx = await vm.dns('nosuch.onion.mvnet');
    expect(nx).toMatchObject({ ok: false, code: 'ENOTFOUND' });
  }, 70_000);

  it("the gateway's DNS for a Tor-routed VM: onion AAAA empty, PTR refused, unknown names NXDOMAIN", async () => {
    const gw = lease.router;
    const a = await vm.dnsRaw(gw, tor.onion.hostname, 'A');
    expect(a.rcode).toBe('NOERROR');
    expect(a.answers.length).toBe(1);
    expect(inAutomap(a.answers[0]!), a.answers[0]).toBe(true);
    // The same onion keeps its address.
    expect((await vm.dnsRaw(gw, tor.onion.hostname, 'A')).answers).toEqual(a.answers);
    expect(await vm.dnsRaw(gw, tor.onion.hostname, 'AAAA')).toMatchObject({ rcode: 'NOERROR', answers: [] });
    expect(await vm.dnsRaw(gw, '80.100.51.198.in-addr.arpa', 'PTR')).toMatchObject({ rcode: 'REFUSED', answers: [] });
    // The exit's resolver (the upstream's DNS) does not know it: NXDOMAIN through Tor.
    expect(await vm.dnsRaw(gw, 'no-such-host.test', 'A', 20_000)).toMatchObject({ rcode: 'NXDOMAIN', answers: [] });
    expect(await vm.dnsRaw(gw, up.name, 'A')).toMatchObject({ rcode: 'NOERROR', answers: [up.address] });
  }, 60_000);

  if (mode === 'external') {
    it('external Tor: nothing at all left the router namespace (its only links go to the VM and the sink)', async () => {
      const pkts = await cap!.stop();
      const outside = pkts.filter((p) => p.ifname !== 'lo' && p.proto !== 'arp' && p.proto !== 'icmp6');
      expect(flows(outside)).toEqual([]);
    });
  }

  if (mode === 'embedded') {
    it('--tor-ports 80 (on --none): port 80 through Tor, other ports refused, DNS through Tor', async () => {
      const vm2 = await r.addVm('vm2', 'lan');
      const shown = await r.cliJson<RouteInfo>(['route', '--tor-ports', '80', 'vm2']);
      expect(shown.route).toEqual({ kind: 'none', torPorts: [80] });
      await vm2.configure();
      const res = await vm2.curl(['--max-time', '30', `${up.nameUrl}whoami`]);
      expect(res.stderr, r.logTail()).toBe('');
      expect(res.stdout).toBe(`${up.exitAddress}\n`);
      // Port 81 is not a Tor port and the base route is none: refused at the gateway.
      const other = await vm2.curl(['--max-time', '5', `http://${up.address}:81/`], 20_000);
      expect(other.code).not.toBe(0);
      expect((await r.torStatus()).vms.sort()).toEqual(['vm1', 'vm2']);
      expect(await vm2.dnsRaw(lease.router, tor.onion.hostname, 'A')).toMatchObject({ rcode: 'NOERROR' });
    }, 60_000);
  }
});
