/**
 * The capture hub in memory: the real switch and router (router-lab), ports teed through withTee
 * and the real TeeRing, sessions into in-memory sinks read back by a pcapng reader. Counters,
 * filters, snaplen, count and duration, a slow sink and a full ring (capture drops counted,
 * forwarding untouched), the net point's "each frame once" and time order, exit comments per route
 * decision, drop reasons, and the producers switched off when nothing captures.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { CaptureHub, MAX_LIVE_CAPTURES } from '../../daemon/capture/hub.js';
import { Network } from '../../daemon/switch/network.js';
import { checkCaptureParams } from '../../daemon/capture/params.js';
import { encodeIcmpv4 } from '../../daemon/wire/icmpv4.js';
import { IPPROTO_ICMP, IPPROTO_TCP } from '../../daemon/wire/ipv4.js';
import { TCP_ACK, TCP_SYN } from '../../daemon/wire/tcp.js';
import { TeeRing } from '../../plugins/common/tee-ring.js';
import { withTee } from '../../plugins/common/tee-port.js';
import type { Port } from '../../plugins/types.js';
import { Automap } from '../../daemon/tor/automap.js';
import type { TorAccess } from '../../daemon/tor/access.js';
import { MemPort } from '../support/mem-port.js';
import { GW, GW_MAC, OUT, RouterLab, ip } from '../support/router-lab.js';
import { arpish, echo, IP1, IP2, ipv4, MAC1, MAC2, MemSink, newHub, silent, start, syn } from '../support/capture-lab.js';

describe('capture hub: ports and the switch', () => {
  let hub: CaptureHub;
  let sw: Network;
  let p1: MemPort;
  let p2: MemPort;
  let t1: Port;

  beforeEach(() => {
    hub = newHub();
    sw = new Network({ name: 'lan', mtu: 1500, gatewayMac: GW_MAC, clock: () => 0 });
    p1 = new MemPort('mem:vm1');
    p2 = new MemPort('mem:vm2');
    t1 = withTee(p1);
    const t2 = withTee(p2);
    sw.attach('vm1', t1, MAC1);
    sw.attach('vm2', t2, MAC2);
    hub.netAdded('lan', sw, null);
    hub.portAdded('vm1', 'lan', t1);
    hub.portAdded('vm2', 'lan', t2);
  });
  afterEach(() => {
    hub.close();
    sw.close();
  });

  it('counts seen, filtered out and captured; directions as seen from the port; ISBs at the end', () => {
    const sink = new MemSink();
    const s = start(hub, { from: { vm: 'vm1' }, filter: 'icmp' }, sink);
    p1.inject(echo(MAC1, MAC2, IP1, IP2, 'echo-request'), arpish(MAC1));
    p2.inject(echo(MAC2, MAC1, IP2, IP1, 'echo-reply'));
    hub.drainAll();
    expect(s.counters).toEqual({ seen: 3, filteredOut: 1, captured: 2, dropped: 0, bytes: expect.any(Number) as number });
    s.stop('test');
    const r = sink.read();
    expect(r.ifaces).toEqual([{ name: 'vm1', linkType: 1, snaplen: 262144 }]);
    expect(r.packets.map((p) => [p.ifName, p.dir, p.data[34]])).toEqual([
      ['vm1', 'in', 8],
      ['vm1', 'out', 0],
    ]);
    expect(r.isbs).toEqual([{ iface: 0, ifRecv: 3n, filterAccept: 2n, osDrop: 0n }]);
    expect(sink.finished).toBe(true);
  });

  it('snaplen cuts the packets and keeps their true length', () => {
    const sink = new MemSink();
    start(hub, { from: { vm: 'vm1' }, snaplen: 20 }, sink);
    p1.inject(echo(MAC1, MAC2, IP1, IP2, 'echo-request'));
    hub.drainAll();
    const [p] = sink.read().packets;
    expect(p!.capLen).toBe(20);
    expect(p!.origLen).toBe(echo(MAC1, MAC2, IP1, IP2, 'echo-request').length);
  });

  it('count ends the capture; then nothing is teed or hooked any more', async () => {
    const tee = vi.spyOn(t1, 'tee');
    const sink = new MemSink();
    const s = start(hub, { from: { vm: 'vm1' }, count: 2 }, sink);
    expect(tee).toHaveBeenLastCalledWith(expect.any(TeeRing), 3);
    p1.inject(arpish(MAC1), arpish(MAC1), arpish(MAC1));
    hub.drainAll();
    expect(s.ended).toBe(true);
    expect(s.counters.captured).toBe(2);
    expect(sink.finished).toBe(true);
    await Promise.resolve();
    expect(tee).toHaveBeenLastCalledWith(null, 0);
    expect(hub.list()).toEqual([]);
    expect(sw.capture).toBeNull();
  });

  it('duration ends the capture', () => {
    vi.useFakeTimers();
    try {
      const sink = new MemSink();
      const s = start(hub, { from: { vm: 'vm1' }, durationSec: 2 }, sink);
      vi.advanceTimersByTime(1999);
      expect(s.ended).toBe(false);
      vi.advanceTimersByTime(1);
      expect(s.ended).toBe(true);
      expect(sink.read().isbs.length).toBe(1);
    } finally {
      vi.useRealTimers();
    }
  });

  it('a sink that cannot keep up loses capture packets, counted; forwarding is untouched', () => {
    const s = start(hub, { from: { vm: 'vm1' } }, new MemSink(2));
    const frames = Array.from({ length: 10 }, (_, i) => echo(MAC1, MAC2, IP1, IP2, 'echo-request', i));
    p1.inject(...frames);
    hub.drainAll();
    expect(p2.sent.length).toBe(10);
    expect(s.counters).toMatchObject({ seen: 10, captured: 2, dropped: 8 });
  });

  it('an output that cannot take packets leaves the ring alone: the ring refuses the copies, counted; they come again once it reads', () => {
    hub.close();
    hub = newHub({ ringBytes: 4096 });
    hub.portAdded('vm1', 'lan', t1);
    const sink = new MemSink(0);
    const s = start(hub, { from: { vm: 'vm1' } }, sink);
    const frames = Array.from({ length: 100 }, (_, i) => echo(MAC1, MAC2, IP1, IP2, 'echo-request', i));
    p1.inject(...frames);
    hub.drainAll();
    // Nothing was drained: no packet was seen (filtered or encoded), the ring's refusals are the drops.
    expect(p2.sent.length).toBe(100);
    expect(s.counters.seen).toBe(0);
    expect(s.counters.dropped).toBeGreaterThan(0);
    const lost = s.counters.dropped;
    // The reader reads again: what the ring held is delivered, newer frames too.
    sink.left = Infinity;
    hub.drainAll();
    expect(s.counters.captured).toBe(100 - lost);
    p1.inject(echo(MAC1, MAC2, IP1, IP2, 'echo-request', 100));
    hub.drainAll();
    expect(s.counters.captured + s.counters.dropped).toBe(101);
    expect(s.counters.dropped).toBe(lost);
  });

  it("a full tee ring drops copies, counted as the session's drops; forwarding is untouched", () => {
    hub.close();
    hub = newHub({ ringBytes: 1024 });
    hub.portAdded('vm1', 'lan', t1);
    const sink = new MemSink();
    const s = start(hub, { from: { vm: 'vm1' } }, sink);
    const frames = Array.from({ length: 50 }, (_, i) => echo(MAC1, MAC2, IP1, IP2, 'echo-request', i));
    p1.inject(...frames);
    hub.drainAll();
    expect(p2.sent.length).toBe(50);
    expect(s.counters.dropped).toBeGreaterThan(0);
    expect(s.counters.captured + s.counters.dropped).toBe(50);
    s.stop('test');
    expect(sink.read().isbs[0]!.osDrop).toBe(BigInt(s.counters.dropped));
  });

  it('net:NAME has each frame once: sent by a VM inbound, sent by the gateway outbound', () => {
    const sink = new MemSink();
    start(hub, { from: { net: 'lan' } }, sink);
    p1.inject(echo(MAC1, MAC2, IP1, IP2, 'echo-request'));
    sw.fromGateway([echo(GW_MAC, MAC1, GW, IP1, 'echo-reply')]);
    hub.drainAll();
    const r = sink.read();
    expect(r.packets.map((p) => [p.ifName, p.dir, p.data[34]])).toEqual([
      ['net:lan', 'in', 8],
      ['net:lan', 'out', 0],
    ]);
  });

  it('drops carry their reason; hooks are null whenever nothing captures them', () => {
    expect(sw.capture).toBeNull();
    const sink = new MemSink();
    const s = start(hub, { from: { point: ['drops'] } }, sink);
    expect(sw.capture).not.toBeNull();
    // A router advertisement from a VM (ICMPv6 type 134 from fe80::1 to ff02::1).
    const ra = Buffer.alloc(14 + 40 + 16);
    Buffer.from('333300000001', 'hex').copy(ra, 0);
    ra.writeUIntBE(MAC1, 6, 6);
    ra.writeUInt16BE(0x86dd, 12);
    ra[14] = 0x60;
    ra.writeUInt16BE(16, 18);
    ra[20] = 58;
    ra[21] = 255;
    Buffer.from('fe800000000000000000000000000001', 'hex').copy(ra, 22);
    Buffer.from('ff020000000000000000000000000001', 'hex').copy(ra, 38);
    ra[54] = 134;
    p1.inject(echo(0x0200_0000_0099, MAC2, IP1, IP2, 'echo-request'), Buffer.alloc(10), ra);
    s.stop('test');
    expect(sink.read().packets.map((p) => p.comment)).toEqual(['dropped: spoofed source MAC (from vm1 on lan)', 'dropped: runt frame (from vm1 on lan)', 'dropped: rogue RA (from vm1 on lan)']);
    return Promise.resolve().then(() => expect(sw.capture).toBeNull());
  });

  it('refuses more live captures than MAX_LIVE_CAPTURES (each may hold a full queue)', () => {
    for (let i = 0; i < MAX_LIVE_CAPTURES; i++) hub.open(hub.prepare(checkCaptureParams({ from: { point: ['drops'] } }), true), new MemSink());
    expect(() => hub.prepare(checkCaptureParams({ from: { point: ['drops'] } }), true)).toThrow(/captures are running already/);
    hub.list()[0]!.stop('test');
    expect(() => hub.prepare(checkCaptureParams({ from: { point: ['drops'] } }), true)).not.toThrow();
  });

  it('refuses unknown points and bad filters with a clear message', () => {
    expect(() => hub.prepare(checkCaptureParams({ from: { vm: 'nope' } }))).toThrow(/no VM named nope/);
    expect(() => hub.prepare(checkCaptureParams({ from: { point: ['exit:moon'] } }))).toThrow(/no capture point named exit:moon/);
    expect(() => hub.prepare(checkCaptureParams({ from: { vm: 'vm1' }, filter: 'port 99999' }))).toThrow(/bad filter/);
    expect(() => checkCaptureParams({ from: { vm: 'vm1', net: 'lan' } })).toThrow(/exactly one/);
  });

  it('a VM that goes away ends its capture cleanly', () => {
    const sink = new MemSink();
    const s = start(hub, { from: { vm: 'vm2' } }, sink);
    hub.portRemoved('vm2');
    expect(s.ended).toBe(true);
    expect(sink.read().isbs.length).toBe(1);
  });
});

describe('capture hub: what the port tee records', () => {
  /** A port with its own tee (as DevicePort): the test writes into the ring the hub gave it. */
  class TeePort {
    ring: TeeRing | null = null;
    dirs = 0;
    constructor(readonly layer: 2 | 3) {}
    tee(ring: TeeRing | null, dirs: number): void {
      this.ring = ring;
      this.dirs = dirs;
    }
  }

  it('a TSO super-frame is written as it crossed the port, with its true length and a comment', () => {
    const hub = newHub();
    const port = new TeePort(2);
    hub.portAdded('vm1', 'lan', port);
    const sink = new MemSink();
    start(hub, { from: { vm: 'vm1' } }, sink);
    const frame = echo(MAC1, MAC2, IP1, IP2, 'echo-request');
    // virtio_net_hdr: flags, gso_type tcpv4, hdr_len, gso_size 1448, csum_start, csum_offset.
    const hdr = Buffer.alloc(10);
    hdr[1] = 1;
    hdr.writeUInt16LE(1448, 4);
    port.ring!.write(Buffer.concat([hdr, frame]), 10, 1);
    hub.drainAll();
    const [p] = sink.read().packets;
    expect(p!.comment).toBe('TSO super-frame (gso tcpv4, mss 1448) as it crossed the port');
    expect(p!.origLen).toBe(frame.length);
    expect(p!.data).toEqual(frame);
    hub.close();
    expect(port.ring).toBeNull();
  });

  it("several ports' records are merged in time order; a capture never goes back in time", () => {
    /** A ring whose records the test writes with chosen timestamps. */
    class ScriptedRing extends TeeRing {
      readonly recs: { frame: Buffer; dir: 1 | 2; ns: number }[] = [];
      override drain(fn: Parameters<TeeRing['drain']>[0]): number {
        const n = this.recs.length;
        for (const r of this.recs.splice(0)) fn({ frame: r.frame, origLen: r.frame.length, dir: r.dir, gsoType: 0, gsoSize: 0, tsSec: Math.floor(r.ns / 1e9), tsNsec: r.ns % 1e9 });
        return n;
      }
    }
    const hub = new CaptureHub({ log: silent, userappl: 'mvnet test', newRing: (b, sl) => new ScriptedRing(b, sl), now: () => 5_000_000_000, drainMs: 60_000 });
    const sw = new Network({ name: 'lan', mtu: 1500, gatewayMac: GW_MAC, clock: () => 0 });
    hub.netAdded('lan', sw, null);
    const a = new TeePort(2);
    const b = new TeePort(2);
    hub.portAdded('a', 'lan', a);
    hub.portAdded('b', 'lan', b);
    const sink = new MemSink();
    start(hub, { from: { net: 'lan' } }, sink);
    const f = (seq: number): Buffer => echo(MAC1, MAC2, IP1, IP2, 'echo-request', seq);
    (a.ring as ScriptedRing).recs.push({ frame: f(2), dir: 1, ns: 2_000_000_000 }, { frame: f(4), dir: 1, ns: 4_000_000_000 });
    (b.ring as ScriptedRing).recs.push({ frame: f(1), dir: 1, ns: 1_000_000_000 }, { frame: f(3), dir: 1, ns: 3_000_000_000 });
    hub.drainAll();
    // A gateway frame stamped (by another clock) before the last tee record: written after it, not before.
    (b.ring as ScriptedRing).recs.push({ frame: f(5), dir: 1, ns: 6_000_000_000 });
    sw.fromGateway([echo(GW_MAC, MAC1, GW, IP1, 'echo-reply', 6)]);
    const r = sink.read();
    expect(r.packets.map((p) => p.data.readUInt16BE(14 + 20 + 6))).toEqual([1, 2, 3, 4, 5, 6]);
    const ts = r.packets.map((p) => p.tsNs);
    expect([...ts].sort((x, y) => (x < y ? -1 : x > y ? 1 : 0))).toEqual(ts);
    hub.close();
    sw.close();
  });

  it("a TUN port is raw IP at its own point, and gets a synthetic Ethernet header in its network's", () => {
    const hub = newHub();
    const sw = new Network({ name: 'lan', mtu: 1500, gatewayMac: GW_MAC, clock: () => 0 });
    hub.netAdded('lan', sw, null);
    const port = new TeePort(3);
    hub.portAdded('tun1', 'lan', port);
    const own = new MemSink();
    const net = new MemSink();
    start(hub, { from: { vm: 'tun1' } }, own);
    start(hub, { from: { net: 'lan' } }, net);
    expect(port.dirs).toBe(3);
    const packet = ipv4(IP1, IP2, IPPROTO_ICMP, encodeIcmpv4({ kind: 'echo-request', id: 1, seq: 1, data: Buffer.alloc(4) }));
    port.ring!.write(packet, 0, 1);
    port.ring!.write(packet, 0, 2);
    hub.drainAll();
    const o = own.read();
    expect(o.ifaces[0]!.linkType).toBe(101);
    expect(o.packets.map((p) => [p.dir, p.data.equals(packet)])).toEqual([
      ['in', true],
      ['out', true],
    ]);
    const n = net.read();
    expect(n.ifaces[0]!.linkType).toBe(1);
    // Only what the VM sent: what it was given entered the network elsewhere.
    expect(n.packets.length).toBe(1);
    expect(n.packets[0]!.data.readUInt16BE(12)).toBe(0x0800);
    expect(n.packets[0]!.data.subarray(14).equals(packet)).toBe(true);
    hub.close();
    sw.close();
  });
});

describe('capture hub: route exits', () => {
  let lab: RouterLab;
  let hub: CaptureHub;

  beforeEach(() => {
    lab = new RouterLab();
    hub = newHub();
    hub.netAdded('lan', lab.sw, lab.router);
  });
  afterEach(() => {
    hub.close();
    lab.close();
  });

  it('each packet at an exit carries its flow decision; the exit reply comes back inbound', async () => {
    const vm = lab.attachPort('vm1', { mac: MAC1, ip: '10.1.0.5', route: { kind: 'direct' } });
    lab.attachPort('vm2', { mac: MAC2, ip: '10.1.0.6', route: { kind: 'tor' } });
    const MAC3 = 0x0200_0000_0003;
    lab.attachPort('vm3', { mac: MAC3, ip: '10.1.0.7', route: { kind: 'via', vm: 'vm1' } });
    expect(lab.router.capture).toBeNull();
    const sink = new MemSink();
    start(hub, { from: { point: ['exit:direct', 'exit:local', 'exit:tor', 'exit:via'] }, drops: true }, sink);
    expect(lab.router.capture).not.toBeNull();
    const up = lab.egress.nextTcp();
    vm.port.inject(syn(MAC1, IP1, OUT, 80));
    (await up).accept();
    await vm.port.next((f) => f.length > 47 && f[23] === IPPROTO_TCP && (f[47]! & (TCP_SYN | TCP_ACK)) === (TCP_SYN | TCP_ACK));
    vm.port.inject(syn(MAC1, IP1, GW, 53, 40001));
    lab.vms.get('vm2')!.port.inject(syn(MAC2, IP2, OUT, 443, 40002));
    lab.vms.get('vm3')!.port.inject(syn(MAC3, ip('10.1.0.7'), OUT, 80, 40003));
    // A source address that is not the VM's.
    vm.port.inject(echo(MAC1, GW_MAC, ip('10.1.0.77'), OUT, 'echo-request'));
    const r = sink.read();
    expect(r.ifaces.map((i) => [i.name, i.linkType])).toEqual([
      ['exit:direct', 101],
      ['exit:local', 101],
      ['exit:tor', 101],
      ['exit:via', 101],
      ['drops', 1],
    ]);
    const rows = r.packets.map((p) => [p.ifName, p.dir, p.comment]);
    expect(rows).toEqual([
      ['exit:direct', 'out', 'direct'],
      ['exit:direct', 'in', 'direct'],
      ['exit:local', 'out', 'local dns'],
      ['exit:tor', 'out', 'refused: Tor not configured'],
      ['drops', 'in', 'refused: Tor not configured (from vm2 on lan)'],
      ['exit:via', 'out', 'via vm1'],
      ['drops', 'in', 'dropped: routed via vm1, not through the gateway (from vm3 on lan)'],
      ['drops', 'in', 'dropped: spoofed source address (from vm1 on lan)'],
    ]);
    // Raw IP at the exits: the first byte is the IP version.
    expect(r.packets[0]!.data[0]! >> 4).toBe(4);
  });
});

describe('capture hub: the Tor exit', () => {
  it("a Tor-routed flow's packets carry its circuit identity (VM and credentials generation)", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mvcap-tor-'));
    // Ready (a SOCKS endpoint is known) but nothing listens there: the stream fails, no traffic leaves.
    const tor: TorAccess = {
      socks: () => ({ path: path.join(dir, 'no-socks.sock') }),
      timeoutMs: 1000,
      alive: () => Promise.resolve(true),
      creds: (vm) => ({ user: `mvnet-${vm}-3`, pass: 'p' }),
      automap: new Automap('10.192.0.0/10'),
      resolver: { resolve: () => Promise.resolve({ kind: 'servfail' }) },
    };
    const lab = new RouterLab({ tor });
    const hub = newHub();
    hub.netAdded('lan', lab.sw, lab.router);
    const vm = lab.attachPort('vm1', { mac: MAC1, ip: '10.1.0.5', route: { kind: 'tor' } });
    const sink = new MemSink();
    const s = start(hub, { from: { point: ['exit:tor'] } }, sink);
    vm.port.inject(syn(MAC1, IP1, OUT, 443));
    s.stop('test');
    expect(sink.read().packets.map((p) => [p.ifName, p.dir, p.comment])).toEqual([['exit:tor', 'out', 'tor circuit-identity vm1/3']]);
    hub.close();
    lab.close();
  });
});
