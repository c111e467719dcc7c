/**
 * IP source spoofing toward the gateway, end to end: a VM namespace on `--direct` gives its own
 * interface another VM's address or one outside the network (`ip addr add`) and sends from it
 * (UDP bound to that source, `ping -I`), IPv4 and IPv6. Nothing of it may leave the router
 * namespace (tcpdump on the upstream link), and the network's `router.spoofed` counter in
 * `mvnet status` grows. The same VM's own address works before and after (the marker), so
 * the test would see the spoofed packets if they had gone out.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupAll, waitFor } from '../support/netns.js';
import { PORTS, UPSTREAM_IP, UPSTREAM_IP6, startTopology, type CapturedPacket, type StackVm, type Topology } from '../support/stack-topology.js';

afterAll(cleanupAll);

/** Sends one datagram from `src` (bound) to dst:port; exits 0 once it left the socket. */
const SEND_FROM_JS = `
const dgram = require('node:dgram');
const [src, dst, port, msg] = process.argv.slice(1);
const s = dgram.createSocket(dst.includes(':') ? 'udp6' : 'udp4');
s.bind({ address: src }, () => s.send(msg, Number(port), dst, (e) => { if (e) { console.error(e.message); process.exit(1); } s.close(); }));
`;

const SPOOF_PORT0 = 7111;

describe('IP source spoofing toward the gateway', () => {
  let t: Topology;
  let a: StackVm;

  async function spoofed(): Promise<number> {
    return (await t.daemon.network('lan')).router.spoofed ?? 0;
  }

  beforeAll(async () => {
    t = await startTopology({ prefix: 'ssp', ipv6: true });
    await t.cli(['net', 'create', 'lan', '--subnet', '10.213.0.0/24', '--ipv6', 'fd00:78::/64']);
    a = await t.addVm('a', 'lan', { ipv6: true, ip: '10.213.0.10' });
    // The victim whose addresses are borrowed: a static IPv4 address the router knows as b's,
    // and an IPv6 address b has used (IPv6 sources are held first come, first served).
    const b = await t.addVm('b', 'lan', { ipv6: true, ip: '10.213.0.20' });
    await b.exec(['ip', '-6', 'addr', 'add', 'fd00:78::b/64', 'dev', b.ifname, 'nodad']);
    expect(await b.ns.ping('fd00:78::1', { count: 1, waitS: 5 })).toBe(true);
    await t.cli(['route', '--direct', 'a']);
    const ok = async (cmd: string[]): Promise<void> => {
      const r = await a.exec(cmd);
      if (r.code !== 0) throw new Error(`${cmd.join(' ')}: ${r.stderr}`);
    };
    await ok(['ip', 'addr', 'add', '10.213.0.10/24', 'dev', a.ifname]);
    await ok(['ip', 'route', 'replace', 'default', 'via', '10.213.0.1']);
    await ok(['ip', '-6', 'addr', 'add', 'fd00:78::a/64', 'dev', a.ifname, 'nodad']);
    // The foreign addresses, as a hostile VM would add them (IPv6 ones deprecated, so only an
    // explicit bind uses them and the VM's own address stays its default source).
    await ok(['ip', 'addr', 'add', '10.213.0.20/32', 'dev', a.ifname]); // b's
    await ok(['ip', 'addr', 'add', '10.99.0.5/32', 'dev', a.ifname]); // outside the subnet
    await ok(['ip', '-6', 'addr', 'add', 'fd00:78::b/128', 'dev', a.ifname, 'nodad', 'preferred_lft', '0']); // b's
    await ok(['ip', '-6', 'addr', 'add', 'fd99::5/128', 'dev', a.ifname, 'nodad', 'preferred_lft', '0']); // outside the prefix
    await ok(['ip', '-6', 'addr', 'add', '2001:db8:78::5/128', 'dev', a.ifname, 'nodad', 'preferred_lft', '0']);
    // IPv6 default route via the gateway's link-local address from its RA (or the prefix's ::1).
    await waitFor(
      async () => {
        const r = await a.exec(['ip', '-6', 'route', 'replace', 'default', 'via', 'fd00:78::1', 'dev', a.ifname]);
        return r.code === 0;
      },
      { timeoutMs: 10_000, what: 'an IPv6 default route in a' },
    );
  });

  /** The VM's own address reaches the upstream echo server (and warms ARP/NDP for the gateway). */
  async function ownAddressWorks(dst: string): Promise<void> {
    const r = await a.client<{ ok: boolean; echo?: string }>(['udp', dst, PORTS.udpEcho, 5000]);
    expect(r.ok, JSON.stringify(r)).toBe(true);
  }

  async function tryFrom(family: 4 | 6, sources: string[], dst: string): Promise<void> {
    await ownAddressWorks(dst);
    const cap = await t.capture({ filter: 'udp or icmp or icmp6' });
    const before = await spoofed();
    for (const [i, src] of sources.entries()) {
      const r = await a.exec(['node', '-e', SEND_FROM_JS, src, dst, String(SPOOF_PORT0 + i), `spoofed from ${src}`]);
      expect(r.code, r.stderr).toBe(0);
      const p = await a.exec(['ping', `-${family}`, '-n', '-c', '1', '-W', '1', '-I', src, dst], { timeoutMs: 10_000 });
      expect(p.code, `ping -I ${src} got an answer: ${p.stdout}`).not.toBe(0);
    }
    // Every spoofed datagram and echo request was dropped and counted.
    await waitFor(async () => (await spoofed()) - before >= 2 * sources.length, { timeoutMs: 10_000, what: `router.spoofed +${2 * sources.length}` });
    // The marker: the VM's own address still works, and went out after everything above.
    await ownAddressWorks(dst);
    const pkts = t.fromRouterTraffic(await cap.stop());
    const leaked = (p: CapturedPacket): boolean => /\.71[1-3]\d: /.test(p.text) || /echo request/.test(p.text);
    expect(pkts.filter(leaked).map((p) => p.line)).toEqual([]);
    // The capture did see the marker (it would have seen the rest).
    expect(pkts.some((p) => p.text.includes(`.${PORTS.udpEcho}: `))).toBe(true);
  }

  it('IPv4: another VM’s address and one outside the subnet are dropped and counted', async () => {
    await tryFrom(4, ['10.213.0.20', '10.99.0.5'], UPSTREAM_IP);
  });

  it('IPv6: another VM’s address and ones outside the network’s prefix are dropped and counted', async () => {
    await tryFrom(6, ['fd00:78::b', 'fd99::5', '2001:db8:78::5'], UPSTREAM_IP6);
  });
});
