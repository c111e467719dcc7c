/**
 * The direct route's egress filter, tried by a hostile VM: TCP SYNs and UDP datagrams to every
 * forbidden class (loopback, the router namespace's own addresses, 0.0.0.0, broadcasts, IPv4
 * inside IPv6 in every form, the discard prefix) while counting servers listen on the daemon
 * namespace's wildcard and loopback: none of it arrives. The frames are written raw onto the
 * VM's TAP (an AF_PACKET socket in the VM namespace), since the VM's own kernel would never send
 * 127.0.0.1 or ::1 out; the same frames to the upstream do arrive (so the frames are right and
 * the test can fail). Also: an address added to the daemon's namespace is refused at once
 * (netlink), and `direct.hostLoopbackPorts` exposes only the listed port.
 */
import { closeSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadNative } from '../../plugins/native/index.js';
import { Address6 } from 'ip-address';
import { ETHERTYPE_IPV4, ETHERTYPE_IPV6, ethernet, inetChecksum, ipv4L4Checksum, ipv4Packet } from '../support/frames.js';
import { cleanupAll, waitFor, type ManagedProcess, type Netns } from '../support/netns.js';
import { ROUTER_IP, ROUTER_IP6, UPSTREAM_IP, UPSTREAM_IP6, startTopology, type StackVm, type Topology } from '../support/stack-topology.js';

afterAll(cleanupAll);

/** The port the counting servers listen on (TCP and UDP). */
const P = 7301;
/** Host loopback ports: listed in direct.hostLoopbackPorts, and not. */
const LISTED = 7302;
const UNLISTED = 7303;
const SUBNET = '10.231.0';
const GW = `${SUBNET}.1`;
const PREFIX6 = 'fd00:231::';

/** A Teredo address whose client (last 32 bits, inverted) is 127.0.0.1; server 192.0.2.1. */
const TEREDO_LOOPBACK = '2001:0:c000:201:8000:edcb:80ff:fffe';

const COUNTER = `
const net = require('node:net'); const dgram = require('node:dgram');
const [binds] = [JSON.parse(process.argv[2])];
const out = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
let pending = 0;
for (const { host, port, v6only } of binds) {
  pending += 2;
  const s = net.createServer((c) => { out({ ev: 'tcp', host, port, local: c.localAddress, remote: c.remoteAddress }); c.destroy(); });
  s.listen({ host, port, ipv6Only: v6only === true }, () => { if (--pending === 0) out({ ev: 'ready' }); });
  const u = dgram.createSocket({ type: host.includes(':') ? 'udp6' : 'udp4', ipv6Only: v6only === true });
  u.on('message', (m, r) => out({ ev: 'udp', host, port, data: m.toString(), remote: r.address }));
  u.bind({ address: host, port }, () => { if (--pending === 0) out({ ev: 'ready' }); });
}
`;

function ip6Bytes(text: string): Buffer {
  return Buffer.from(new Address6(text).canonicalForm().replace(/:/g, ''), 'hex');
}

function ipv6Packet(src: string, dst: string, nextHeader: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(40 + payload.length);
  h.writeUInt32BE(0x60000000, 0);
  h.writeUInt16BE(payload.length, 4);
  h[6] = nextHeader;
  h[7] = 64;
  ip6Bytes(src).copy(h, 8);
  ip6Bytes(dst).copy(h, 24);
  payload.copy(h, 40);
  return h;
}

function ipv6L4Checksum(src: string, dst: string, nextHeader: number, seg: Buffer): number {
  const pseudo = Buffer.alloc(40 + seg.length);
  ip6Bytes(src).copy(pseudo, 0);
  ip6Bytes(dst).copy(pseudo, 16);
  pseudo.writeUInt32BE(seg.length, 32);
  pseudo[39] = nextHeader;
  seg.copy(pseudo, 40);
  return inetChecksum(pseudo);
}

function l4(proto: 'tcp' | 'udp', sport: number, dport: number, data: string): Buffer {
  if (proto === 'udp') {
    const b = Buffer.alloc(8 + data.length);
    b.writeUInt16BE(sport, 0);
    b.writeUInt16BE(dport, 2);
    b.writeUInt16BE(b.length, 4);
    b.write(data, 8);
    return b;
  }
  const b = Buffer.alloc(20);
  b.writeUInt16BE(sport, 0);
  b.writeUInt16BE(dport, 2);
  b.writeUInt32BE(0x10000000 + sport, 4);
  b[12] = 5 << 4;
  b[13] = 0x02; // SYN
  b.writeUInt16BE(65535, 14);
  return b;
}

/** A whole frame from the VM to `dst` (TCP SYN or UDP with `data`), checksums filled in. */
function frame(o: { srcMac: string; gwMac: string; src4: string; src6: string; dst: string; proto: 'tcp' | 'udp'; sport: number; dport: number; data: string }): Buffer {
  const seg = l4(o.proto, o.sport, o.dport, o.data);
  const pn = o.proto === 'tcp' ? 6 : 17;
  const at = o.proto === 'tcp' ? 16 : 6;
  if (!o.dst.includes(':')) {
    seg.writeUInt16BE(ipv4L4Checksum(o.src4, o.dst, pn, seg), at);
    const dstMac = o.dst === '255.255.255.255' ? 'ff:ff:ff:ff:ff:ff' : o.gwMac;
    return ethernet(dstMac, o.srcMac, ETHERTYPE_IPV4, ipv4Packet({ src: o.src4, dst: o.dst, protocol: pn, payload: seg }));
  }
  seg.writeUInt16BE(ipv6L4Checksum(o.src6, o.dst, pn, seg), at);
  return ethernet(o.gwMac, o.srcMac, ETHERTYPE_IPV6, ipv6Packet(o.src6, o.dst, pn, seg));
}

interface Ev {
  ev: string;
  host?: string;
  port?: number;
  data?: string;
  local?: string;
}

function events(p: ManagedProcess): Ev[] {
  const out: Ev[] = [];
  for (const l of p.lines) {
    try {
      out.push(JSON.parse(l) as Ev);
    } catch {
      // not an event
    }
  }
  return out.filter((e) => e.ev !== 'ready');
}

async function counter(ns: Netns, dir: string, name: string, binds: { host: string; port: number; v6only?: boolean }[]): Promise<ManagedProcess> {
  const file = join(dir, `${name}.cjs`);
  writeFileSync(file, COUNTER);
  const p = ns.spawn(['node', file, JSON.stringify(binds)], { label: `counter ${name}` });
  await p.waitForLine((l) => l.includes('"ev":"ready"'), { timeoutMs: 15_000 });
  return p;
}

describe('direct route: the egress filter against a hostile VM', () => {
  let t: Topology;
  let vm: StackVm;
  let inRouter: ManagedProcess;
  let inUpstream: ManagedProcess;
  let src4 = '';
  let src6 = '';
  let srcMac = '';
  let gwMac = '';
  let sport = 20000;

  /** Writes frames onto the VM's TAP from inside the VM namespace, as a VM's driver would. */
  function inject(frames: Buffer[]): void {
    const { fd } = loadNative().openPacket({ ifname: vm.ifname, netns: `/run/netns/${vm.ns.name}` });
    try {
      for (const f of frames) writeSync(fd, f);
    } finally {
      closeSync(fd);
    }
  }

  function frames(dsts: readonly string[], port = P, tag = 'x'): Buffer[] {
    const out: Buffer[] = [];
    for (const dst of dsts) {
      for (const proto of ['tcp', 'udp'] as const) out.push(frame({ srcMac, gwMac, src4, src6, dst, proto, sport: sport++, dport: port, data: `${tag}:${dst}` }));
    }
    return out;
  }

  /**
   * Sends `bad` frames, then one TCP SYN and one UDP datagram per family to the upstream's
   * counter (the same path, after them), and waits for those to arrive: by then the router has
   * decided every earlier frame. Returns what reached the router namespace's counters.
   */
  async function tryAll(bad: Buffer[], tag: string): Promise<Ev[]> {
    const before = events(inRouter).length;
    const upBefore = events(inUpstream).length;
    // Whatever the router namespace sends upstream: a destination the filter let through that
    // this kernel routes away (NAT64, 6to4, …: no translator here) would show up here instead.
    const cap = await t.capture({ filter: `port ${P}` });
    inject([...bad, ...frames([UPSTREAM_IP, UPSTREAM_IP6], P, tag)]);
    await waitFor(() => events(inUpstream).length - upBefore >= 4 || undefined, { timeoutMs: 15_000, what: 'the control frames to reach the upstream' });
    // A refused TCP open is decided at the SYN, an allowed one opens its host socket then too;
    // the grace covers a connect still under way on the loopback (none should be).
    await new Promise((r) => setTimeout(r, 300));
    const leaked = t
      .fromRouterTraffic(await cap.stop())
      .filter((p) => !p.text.includes(`> ${UPSTREAM_IP}.${P}:`) && !p.text.includes(`> ${UPSTREAM_IP6}.${P}:`));
    return [...events(inRouter).slice(before), ...leaked.map((p): Ev => ({ ev: 'leaked upstream', data: p.text }))];
  }

  beforeAll(async () => {
    t = await startTopology({ prefix: 'egf', ipv6: true, config: { direct: { hostLoopback: true, hostLoopbackPorts: [LISTED] } } });
    await t.cli(['net', 'create', 'lan', '--subnet', `${SUBNET}.0/24`, '--ipv6', `${PREFIX6}/64`]);
    vm = await t.addVm('e', 'lan', { ipv6: true });
    await t.cli(['route', '--direct', 'e']);
    // Link down and up sends a router solicitation (SLAAC); before DHCP, whose routes it would remove.
    await vm.exec(['ip', 'link', 'set', vm.ifname, 'down'], { check: true });
    await vm.exec(['ip', 'link', 'set', vm.ifname, 'up'], { check: true });
    const lease = await vm.configure();
    src4 = lease.ip;
    src6 = await waitFor(async () => (await vm.ipv6Addresses()).find((a) => a.startsWith(PREFIX6)), { timeoutMs: 15_000, what: 'a SLAAC address' });
    srcMac = await vm.ns.mac(vm.ifname);
    await vm.ns.ping(GW, { count: 1 });
    const neigh = await vm.exec(['ip', '-j', 'neigh', 'show', GW, 'dev', vm.ifname]);
    gwMac = (JSON.parse(neigh.stdout) as { lladdr: string }[])[0]!.lladdr;
    // The daemon namespace: every address of it (wildcards, both families) and its loopback's listed and unlisted ports.
    inRouter = await counter(t.router, t.dir, 'router', [
      { host: '0.0.0.0', port: P },
      { host: '::', port: P, v6only: true },
      { host: '127.0.0.1', port: LISTED },
      { host: '127.0.0.1', port: UNLISTED },
      { host: '::1', port: LISTED, v6only: true },
    ]);
    inUpstream = await counter(t.upstream, t.dir, 'upstream', [
      { host: UPSTREAM_IP, port: P },
      { host: UPSTREAM_IP6, port: P, v6only: true },
    ]);
  }, 120_000);

  it('a legitimate upstream works through the same raw frames (TCP and UDP, IPv4 and IPv6)', async () => {
    const got = await tryAll([], 'legit');
    expect(got).toEqual([]);
    const up = events(inUpstream).filter((e) => e.data?.startsWith('legit') === true || e.ev === 'tcp');
    expect(up.filter((e) => e.ev === 'udp').map((e) => e.data).sort()).toEqual([`legit:${UPSTREAM_IP}`, `legit:${UPSTREAM_IP6}`].sort());
    expect(up.filter((e) => e.ev === 'tcp').map((e) => e.host).sort()).toEqual([UPSTREAM_IP, UPSTREAM_IP6].sort());
    // And the VM's own kernel reaches the upstream (DHCP, DNS and the route all work).
    const r = await vm.client<{ ok: boolean }>(['tcp', UPSTREAM_IP, P, 5000]);
    expect(r.ok).toBe(true);
  });

  it("nothing reaches the daemon namespace: loopback, its own addresses, 0.0.0.0, broadcasts, IPv4 inside IPv6, 100::/64", async () => {
    const dsts = [
      '127.0.0.1',
      '127.1.2.3',
      '::1',
      ROUTER_IP,
      ROUTER_IP6,
      'fd00:200::', // the subnet-router anycast of the router's IPv6 network
      '0.0.0.0',
      '255.255.255.255',
      '10.200.0.255', // the directed broadcast of the router's upstream network
      '10.200.0.0',
      '::ffff:127.0.0.1',
      `::ffff:${ROUTER_IP}`,
      '::127.0.0.1',
      `::${ROUTER_IP}`,
      '64:ff9b::7f00:1',
      `64:ff9b::${ROUTER_IP}`,
      '64:ff9b:1::7f00:1',
      '2002:7f00:1::1',
      '2002:ac8:1::1', // 6to4 of 10.200.0.1, the router's own
      TEREDO_LOOPBACK,
      '100::1',
      '::',
    ];
    const got = await tryAll(frames(dsts, P, 'bad'), 'ctl1');
    expect(got).toEqual([]);
    // Host-loopback ports through the special addresses are just as closed.
    const got2 = await tryAll(frames(['127.0.0.1', '::1', '::ffff:127.0.0.1', '64:ff9b::7f00:1'], LISTED, 'badlo'), 'ctl2');
    expect(got2).toEqual([]);
  });

  it('an address added to the daemon namespace after start is refused at once (netlink, no cache)', async () => {
    // The filter has just decided (the test before): any cache is warm.
    await tryAll(frames(['127.0.0.1'], P, 'warm'), 'ctl3');
    await t.router.exec(['ip', 'addr', 'add', '10.99.0.1/32', 'dev', 'lo'], { check: true });
    await t.router.exec(['ip', '-6', 'addr', 'add', 'fd00:99::1/128', 'dev', 'lo', 'nodad'], { check: true });
    const got = await tryAll(frames(['10.99.0.1', 'fd00:99::1', '64:ff9b::a63:1'], P, 'new'), 'ctl4');
    expect(got).toEqual([]);
    // Through the VM's own kernel too.
    const r = await vm.client<{ ok: boolean }>(['tcp', '10.99.0.1', P, 3000]);
    expect(r.ok).toBe(false);
    expect(events(inRouter)).toEqual([]);
  });

  it('an address on a link without carrier (left out by os.networkInterfaces) is refused too', async () => {
    await t.router.exec(['ip', 'link', 'add', 'egfnc0', 'type', 'veth', 'peer', 'name', 'egfnc1'], { check: true });
    await t.router.exec(['ip', 'addr', 'add', '10.98.0.1/24', 'dev', 'egfnc0'], { check: true });
    await t.router.exec(['ip', 'link', 'set', 'egfnc0', 'up'], { check: true });
    const got = await tryAll(frames(['10.98.0.1', '10.98.0.255'], P, 'nocarrier'), 'ctl5');
    expect(got).toEqual([]);
  });

  it('direct.hostLoopback: the listed port answers at the gateway address, an unlisted one does not', async () => {
    const before = events(inRouter).length;
    const ok = await vm.client<{ ok: boolean }>(['tcp', GW, LISTED, 5000]);
    expect(ok.ok).toBe(true);
    const no = await vm.client<{ ok: boolean; code?: string }>(['tcp', GW, UNLISTED, 5000]);
    expect(no.ok).toBe(false);
    const u1 = await vm.client<{ ok: boolean }>(['udp', GW, LISTED, 1000]);
    const u2 = await vm.client<{ ok: boolean }>(['udp', GW, UNLISTED, 1000]);
    void u1;
    void u2;
    const ev = events(inRouter).slice(before);
    expect(ev.filter((e) => e.port === UNLISTED)).toEqual([]);
    expect(ev.filter((e) => e.port === LISTED).map((e) => e.ev).sort()).toEqual(['tcp', 'udp']);
    expect(ev.every((e) => e.port === LISTED && (e.local === '127.0.0.1' || e.local === undefined))).toBe(true);
  });
});
