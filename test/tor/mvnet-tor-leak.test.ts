/**
 * The Tails-style leak test for `mvnet route --all-tor`: everything the router namespace sends
 * or receives, on every interface, is captured (tcpdump -i any, from before the daemon starts
 * until the end) and every packet must belong to a TCP flow between the embedded Tor's address
 * and an allow-listed relay ORPort/DirPort (privateTor().relays). No DNS, no direct connection to
 * the upstream, no UDP, no ICMP, no IPv6 beyond link housekeeping.
 *
 * To make leaks visible at all, the router namespace has default routes (IPv4 and IPv6) into a
 * sink namespace that forwards and answers nothing: a leaking connect() emits a SYN the capture
 * sees, instead of failing with ENETUNREACH and leaving no trace.
 *
 * While capturing, the all-tor VM fetches the onion and the upstream by name, and probes: UDP
 * (to the upstream's DNS server, to a relay), ICMP echo to the upstream and to a relay, IPv6 TCP,
 * UDP and ICMP, TCP straight to the upstream's IP (which goes through Tor) and to an address
 * that exists nowhere. Then the test of the test: the VM is switched to `--direct`, and the same
 * detector must flag its direct SYN to the upstream address and its DNS query leaving the router
 * namespace (they go nowhere: into the sink).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupAll } from '../support/netns.js';
import { privateTor, torUpstream } from './context.js';
import {
  DIRECT_DNS_UPSTREAM,
  SINK_ROUTER_IP,
  TorRouter,
  classifyLeaks,
  flows,
  type LeakVerdict,
  type NsCapture,
  type Pkt,
  type TorVm,
} from './mvnet-harness.js';
import { ONION_HELLO } from './private-network.js';

const tor = privateTor();
const up = torUpstream();

afterAll(cleanupAll);

const V6_PREFIX = 'fd00:232::';
const GW6 = 'fd00:232::1';
const VM6 = 'fd00:232::10';
/** Addresses that exist nowhere (documentation ranges). */
const NOWHERE4 = '192.0.2.1';
const NOWHERE6 = '2001:db8::80';

interface RouterCounters {
  torRefused: number;
  torDropped: number;
  icmpDropped: number;
  [k: string]: number;
}

describe('leak test: all-tor VM, embedded Tor, everything the router namespace emits', () => {
  let r: TorRouter;
  let vm: TorVm;
  let cap: NsCapture;
  let vmIp: string;
  let verdict: LeakVerdict;
  let allow: { torAddrs: Set<string>; relays: Set<string> };

  const counters = async (): Promise<RouterCounters> => {
    const nets = await r.cliJson<{ name: string; router: RouterCounters }[]>(['net', 'list']);
    return nets.find((n) => n.name === 'lan')!.router;
  };

  beforeAll(async () => {
    r = await TorRouter.create({ prefix: 'tlk', mode: 'embedded', sink: true, deferDaemon: true });
    allow = { torAddrs: new Set([r.link!.routerAddr]), relays: r.relayEndpoints() };
    // From before the daemon (and its tor) start: bootstrap traffic is judged too.
    cap = await r.capture();
    await r.startDaemon();
    await r.cli(['net', 'create', 'lan', '--subnet', '10.232.0.0/24', '--ipv6', `${V6_PREFIX}/64`]);
    vm = await r.addVm('vm1', 'lan', { ipv6: true });
    await r.cli(['route', '--all-tor', 'vm1']);
    vmIp = (await vm.configure()).ip;
    // A static IPv6 address and default route through the gateway (no wait for SLAAC).
    await vm.exec(['ip', '-6', 'addr', 'add', `${VM6}/64`, 'dev', vm.ifname, 'nodad'], { check: true });
    await vm.exec(['ip', '-6', 'route', 'replace', 'default', 'via', GW6, 'dev', vm.ifname], { check: true });
    await r.waitTorReady(90_000);
  }, 150_000);

  it('the VM fetches the onion and the upstream by name while the capture runs', async () => {
    const onion = await vm.curl(['--max-time', '45', `http://${tor.onion.hostname}/`], 60_000);
    expect(onion.stderr, r.logTail()).toBe('');
    expect(onion.stdout).toBe(`${ONION_HELLO}\n`);
    const byName = await vm.curl(['--max-time', '30', `${up.nameUrl}whoami`]);
    expect(byName.stderr, r.logTail()).toBe('');
    expect(byName.stdout).toBe(`${up.exitAddress}\n`);
  }, 70_000);

  it('TCP straight to an IP goes through Tor (the upstream sees the exit), never directly', async () => {
    const res = await vm.curl(['--max-time', '30', `${up.url}whoami`]);
    expect(res.stderr, r.logTail()).toBe('');
    expect(res.stdout).toBe(`${up.exitAddress}\n`);
    // An address that exists nowhere: Tor cannot reach it either; the VM gets no connection
    // (the daemon leaves the SYN unanswered when Tor says "unreachable").
    const nowhere = await vm.tcp(NOWHERE4, 80, 4_000);
    expect(nowhere.ok).toBe(false);
  }, 60_000);

  it('UDP, ICMP and IPv6 probes of the VM get nothing and are counted as dropped', async () => {
    const before = await counters();
    // UDP: to the upstream's DNS server, a DNS query through it, and to a relay.
    const u1 = await vm.client<{ ok: boolean; code?: string }>(['udp', up.dns.address, up.dns.port, 1500]);
    expect(u1).toMatchObject({ ok: false, code: 'TIMEOUT' });
    const d1 = await vm.client<{ ok: boolean; code?: string }>(['dns', up.name, 'A', up.dns.address]);
    expect(d1.ok).toBe(false);
    const u2 = await vm.client<{ ok: boolean; code?: string }>(['udp', tor.relays[0]!.address, tor.relays[0]!.orPort, 1500]);
    expect(u2).toMatchObject({ ok: false, code: 'TIMEOUT' });
    // ICMP echo beyond the gateway.
    expect(await vm.ns.ping(up.address, { count: 2, waitS: 1 })).toBe(false);
    expect(await vm.ns.ping(tor.relays[0]!.address, { count: 2, waitS: 1 })).toBe(false);
    // The gateway itself answers (the probes above were not lost for lack of a path).
    expect(await vm.ns.ping('10.232.0.1', { count: 1, waitS: 2 })).toBe(true);
    // IPv6: TCP (into Tor by IP; the exit has no IPv6, so it fails), UDP, ICMP.
    const t6 = await vm.tcp(NOWHERE6, 80, 4_000);
    expect(t6.ok).toBe(false);
    const u6 = await vm.client<{ ok: boolean; code?: string }>(['udp', NOWHERE6, 53, 1500]);
    expect(u6).toMatchObject({ ok: false, code: 'TIMEOUT' });
    expect(await vm.ns.ping(NOWHERE6, { count: 2, waitS: 1 })).toBe(false);
    expect(await vm.ns.ping(GW6, { count: 1, waitS: 2 })).toBe(true);
    const after = await counters();
    // UDP is dropped as "does not go through Tor"; ICMP beyond the gateway as icmpDropped.
    expect(after.torDropped - before.torDropped, JSON.stringify({ before, after })).toBeGreaterThanOrEqual(4);
    expect(after.icmpDropped - before.icmpDropped, JSON.stringify({ before, after })).toBeGreaterThanOrEqual(4);
  }, 90_000);

  it('nothing but Tor relay flows left (or entered) the router namespace', async () => {
    const pkts = await cap.stop();
    verdict = classifyLeaks(pkts, allow);
    const report = `leaks:\n${flows(verdict.leaks).join('\n')}\nrelay flows:\n${flows(verdict.relay).slice(0, 20).join('\n')}`;
    // The detector looks at the right place: it saw Tor's own connections to the relays.
    expect(verdict.relay.length, report).toBeGreaterThan(0);
    expect(verdict.relay.some((p) => p.dir === 'out' && p.src === r.link!.routerAddr)).toBe(true);
    expect(verdict.leaks, report).toEqual([]);
    // Spelled out: none of these appear anywhere outside lo.
    const outside = pkts.filter((p) => p.ifname !== 'lo');
    const has = (f: (p: Pkt) => boolean): string[] => flows(outside.filter(f));
    expect(has((p) => p.proto === 'udp'), 'UDP (DNS included)').toEqual([]);
    expect(has((p) => p.proto === 'icmp'), 'ICMP').toEqual([]);
    expect(has((p) => p.v === 6 && p.proto !== 'icmp6'), 'IPv6 data').toEqual([]);
    expect(has((p) => p.src === up.address || p.dst === up.address), 'the upstream').toEqual([]);
    expect(has((p) => p.src === vmIp || p.dst === vmIp || p.dst === NOWHERE4 || p.dst === NOWHERE6), 'VM or probe addresses').toEqual([]);
    // Nothing at all went into the sink (every default-routed packet would be a leak).
    expect(has((p) => p.ifname === r.sink!.routerIf && p.proto !== 'icmp6' && p.proto !== 'arp'), 'via the sink').toEqual([]);
    console.log(
      `[leak] ${pkts.length} packets captured: ${verdict.relay.length} relay, ${verdict.housekeeping.length} housekeeping, ` +
        `${verdict.loopback.length} loopback, ${verdict.leaks.length} leaks; relay flows: ${new Set(verdict.relay.map((p) => (p.src === r.link!.routerAddr ? `${p.dst}:${p.dport}` : `${p.src}:${p.sport}`))).size} endpoints`,
    );
  });

  it('test of the test: the same detector flags a --direct VM (SYN to the upstream, DNS query)', async () => {
    const cap2 = await r.capture();
    await r.cli(['route', '--direct', 'vm1']);
    // The daemon's host connect goes into the sink and is never answered; direct DNS goes to
    // the configured upstream resolver (into the sink, too). Both run while we watch.
    const curl = vm.curl(['--max-time', '3', `${up.url}whoami`], 20_000);
    const dnsQuery = vm.dns('example.test');
    const isSyn = (p: Pkt): boolean => p.proto === 'tcp' && p.dst === up.address && p.dport === up.httpPort && p.dir === 'out' && (p.flags! & 0x12) === 0x02;
    const isDns = (p: Pkt): boolean => p.proto === 'udp' && p.dst === DIRECT_DNS_UPSTREAM && p.dport === 53 && p.dir === 'out';
    await cap2.waitFor((ps) => ps.some(isSyn) && ps.some(isDns), 15_000).catch(() => {});
    const pkts = await cap2.stop();
    expect((await curl).code).not.toBe(0);
    expect((await dnsQuery).ok).toBe(false);
    const v = classifyLeaks(pkts, allow);
    const leaked = flows(v.leaks);
    const syn = v.leaks.find(isSyn);
    expect(syn, `leaks flagged:\n${leaked.join('\n')}`).toBeDefined();
    expect(syn!.src).toBe(SINK_ROUTER_IP);
    expect(v.leaks.find(isDns), `leaks flagged:\n${leaked.join('\n')}`).toBeDefined();
    console.log(`[leak] test of the test, flagged:\n  ${leaked.join('\n  ')}`);
    // Back to all-tor: the VM works through Tor again without being touched.
    await r.cli(['route', '--all-tor', 'vm1']);
    const again = await vm.curl(['--max-time', '30', `${up.url}whoami`]);
    expect(again.stdout).toBe(`${up.exitAddress}\n`);
  }, 60_000);

  it('--direct --tor-ports 80: port 80 and every DNS lookup go through Tor; no DNS query leaves', async () => {
    const cap3 = await r.capture();
    await r.cli(['route', '--direct', '--tor-ports', '80', 'vm1']);
    const d = await vm.dnsRaw('10.232.0.1', up.name, 'A');
    expect(d).toMatchObject({ rcode: 'NOERROR', answers: [up.address] });
    const res = await vm.curl(['--max-time', '30', `${up.nameUrl}whoami`]);
    expect(res.stdout, res.stderr).toBe(`${up.exitAddress}\n`);
    const pkts = await cap3.stop();
    const v = classifyLeaks(pkts, allow);
    expect(flows(v.leaks)).toEqual([]);
    expect(v.relay.length).toBeGreaterThan(0);
  }, 60_000);
});
