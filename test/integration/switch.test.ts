/**
 * The switch, end to end: namespaces are the VMs, each with a TAP the daemon creates inside it,
 * and the namespaces' own kernels do ARP, ICMP and TCP through mvnet.
 *
 * Network A has vm1 and vm2; network B has vm3, whose address is in A's subnet on purpose, so
 * it tries to reach A's VMs directly on its own L2 segment (ARP) — the strongest isolation
 * probe. The isolation test runs first, while A is silent, so A's counters can be compared
 * exactly.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDaemon, type Daemon } from '../support/daemon.js';
import type { StatusInfo } from '../../daemon/control/api.js';
import { parseL4, randomMac, TCP_SYN } from '../support/frames.js';
import { cleanupAll, makeTempDir } from '../support/netns.js';
import { actAsHost, QemuStreamServer } from '../support/qemu-peer.js';
import { attachTapVm, tcpConnectAttempt, tcpSend, tcpSink, udpSend, type TapVm } from '../support/vms.js';

const MB10 = 10 * 1024 * 1024;

function txOf(s: StatusInfo, vm: string): number {
  const v = s.vms.find((x) => x.name === vm);
  if (!v) throw new Error(`no VM ${vm} in status`);
  return v.port.stats.txFrames;
}

afterAll(cleanupAll);

describe('switch: TAP VMs in namespaces', () => {
  let d: Daemon;
  let vm1: TapVm;
  let vm2: TapVm;
  let vm3: TapVm;

  beforeAll(async () => {
    d = await startDaemon();
    await d.cliOk(['net', 'create', 'A', '--subnet', '10.77.1.0/24']);
    await d.cliOk(['net', 'create', 'B', '--subnet', '10.77.2.0/24']);
    vm1 = await attachTapVm(d, { vm: 'vm1', net: 'A', cidr: '10.77.1.11/24', prefix: 'sw-vm1' });
    vm2 = await attachTapVm(d, { vm: 'vm2', net: 'A', cidr: '10.77.1.12/24', prefix: 'sw-vm2' });
    // Same subnet as A: vm3 will ARP for vm1/vm2 on network B.
    vm3 = await attachTapVm(d, { vm: 'vm3', net: 'B', cidr: '10.77.1.13/24', prefix: 'sw-vm3' });
  });

  it('attaches all three TAPs up, on the right networks', async () => {
    const s = await d.status();
    expect(s.networks.find((n) => n.name === 'A')?.vms.sort()).toEqual(['vm1', 'vm2']);
    expect(s.networks.find((n) => n.name === 'B')?.vms).toEqual(['vm3']);
    for (const name of ['vm1', 'vm2', 'vm3']) {
      const v = s.vms.find((x) => x.name === name);
      expect(v?.port.kind, name).toBe('tap');
      expect(v?.port.state, `${name}: ${v?.port.detail}`).toBe('up');
    }
  });

  it('a VM on network B reaches neither VM on A, and nothing crosses', async () => {
    const sink = await tcpSink(vm1.ns, vm1.ip, 5001);
    const before = await d.status();
    const netA0 = before.networks.find((n) => n.name === 'A')!;
    const netB0 = before.networks.find((n) => n.name === 'B')!;
    const vm3rx0 = before.vms.find((v) => v.name === 'vm3')!.port.stats.rxFrames;

    expect(await vm3.ns.ping(vm1.ip, { count: 2, waitS: 1 })).toBe(false);
    expect(await vm3.ns.ping(vm2.ip, { count: 2, waitS: 1 })).toBe(false);
    const tcp = await tcpSend(vm3.ns, vm1.ip, 5001, 1024, 5_000);
    expect(tcp.ok).toBe(false);

    const after = await d.status();
    const netA1 = after.networks.find((n) => n.name === 'A')!;
    const netB1 = after.networks.find((n) => n.name === 'B')!;
    // The probes did reach the switch (vm3's ARP requests were flooded on B)...
    expect(after.vms.find((v) => v.name === 'vm3')!.port.stats.rxFrames).toBeGreaterThan(vm3rx0);
    expect(netB1.stats.flooded).toBeGreaterThan(netB0.stats.flooded);
    // ...and nothing of them reached network A.
    expect(netA1.stats.forwarded).toBe(netA0.stats.forwarded);
    expect(netA1.stats.flooded).toBe(netA0.stats.flooded);
    expect(txOf(after, 'vm1')).toBe(txOf(before, 'vm1'));
    expect(txOf(after, 'vm2')).toBe(txOf(before, 'vm2'));
    expect(netB1.stats.forwarded).toBe(netB0.stats.forwarded);

    // The sink on vm1 saw no connection: still listening, nothing printed.
    expect(sink.proc.running).toBe(true);
    expect(sink.proc.lines).toEqual(['listening']);
    await sink.proc.stop();
  });

  it('VMs on the same network ping each other', async () => {
    expect(await vm1.ns.ping(vm2.ip)).toBe(true);
    expect(await vm2.ns.ping(vm1.ip)).toBe(true);
    const s = await d.status();
    const a = s.networks.find((n) => n.name === 'A')!;
    expect(a.stats.forwarded).toBeGreaterThan(0);
  });

  it('moves a 10 MB TCP stream intact between two VMs', async () => {
    const sink = await tcpSink(vm2.ns, vm2.ip, 5002);
    const sent = await tcpSend(vm1.ns, vm2.ip, 5002, MB10, 60_000);
    expect(sent.error).toBeUndefined();
    expect(sent.ok).toBe(true);
    const got = await sink.result();
    expect(got.error).toBeUndefined();
    expect(got.bytes).toBe(MB10);
    expect(got.sha256).toBe(sent.sha256);

    const s = await d.status();
    const v1 = s.vms.find((v) => v.name === 'vm1')!.port.stats;
    expect(v1.rxBytes).toBeGreaterThan(MB10);
  });
});

/**
 * TAPs with `--vnet-hdr` hand the switch TSO super-frames and partial checksums. Whatever the
 * mix of ports, what comes out must be what a plain Ethernet peer can take: segmented to the
 * MTU with correct checksums (else the receiving kernel drops it and TCP stalls or corrupts).
 */
describe('switch: offloads (--vnet-hdr) mixed with plain ports', () => {
  let d: Daemon;
  let v1: TapVm; // vnet-hdr
  let v2: TapVm; // vnet-hdr
  let p1: TapVm; // plain
  let peer: QemuStreamServer;
  const guest = { mac: randomMac(), ip: '10.77.14.31' };

  beforeAll(async () => {
    d = await startDaemon();
    await d.cliOk(['net', 'create', 'O', '--subnet', '10.77.14.0/24']);
    v1 = await attachTapVm(d, { vm: 'v1', net: 'O', cidr: '10.77.14.11/24', prefix: 'of-v1', vnetHdr: true });
    v2 = await attachTapVm(d, { vm: 'v2', net: 'O', cidr: '10.77.14.12/24', prefix: 'of-v2', vnetHdr: true });
    p1 = await attachTapVm(d, { vm: 'p1', net: 'O', cidr: '10.77.14.21/24', prefix: 'of-p1' });
    peer = await QemuStreamServer.listen(join(makeTempDir('of'), 'q.sock'));
    actAsHost(peer, guest);
    await d.cliOk(['vm', 'attach', 'q1', '--net', 'O', '--unix', peer.path]);
    await peer.waitConnected();
  });

  /** Frames and bytes a port read from its VM (rx) and wrote to it (tx), by the daemon's counters. */
  const counters = async (): Promise<Map<string, { rxFrames: number; rxBytes: number; txFrames: number; txBytes: number }>> =>
    new Map((await d.status()).vms.map((v) => [v.name, { ...v.port.stats }]));

  /**
   * 10 MB from `from` to `to`, intact; returns the average size of the frames the sender's port
   * read and the receiver's port wrote during it (from the port counters).
   */
  const transfer = async (from: () => TapVm, to: () => TapVm, port: number): Promise<{ rxAvg: number; txAvg: number; txFrames: number }> => {
    const before = await counters();
    const sink = await tcpSink(to().ns, to().ip, port);
    const sent = await tcpSend(from().ns, to().ip, port, MB10, 60_000);
    expect(sent.ok, sent.error).toBe(true);
    const got = await sink.result();
    expect(got.bytes).toBe(MB10);
    expect(got.sha256).toBe(sent.sha256);
    const after = await counters();
    const a = after.get(from().name)!;
    const b = before.get(from().name)!;
    const c = after.get(to().name)!;
    const e = before.get(to().name)!;
    return {
      rxAvg: (a.rxBytes - b.rxBytes) / (a.rxFrames - b.rxFrames),
      txAvg: (c.txBytes - e.txBytes) / (c.txFrames - e.txFrames),
      txFrames: c.txFrames - e.txFrames,
    };
  };

  /** An Ethernet frame at the MTU, with its virtio-net header: anything bigger on average is TSO. */
  const MTU_FRAME = 1500 + 14 + 10;

  it('vnet-hdr → vnet-hdr: 10 MB TCP intact, carried as TSO super-frames both in and out', async () => {
    const r = await transfer(() => v1, () => v2, 5101);
    // Frames above the MTU went through: the sender's kernel handed over super-frames and the
    // switch passed them whole to the other offloading port.
    expect(r.rxAvg, JSON.stringify(r)).toBeGreaterThan(MTU_FRAME);
    expect(r.txAvg, JSON.stringify(r)).toBeGreaterThan(MTU_FRAME);
  });

  it('vnet-hdr → plain: 10 MB TCP intact, super-frames in, segmented to the MTU out', async () => {
    const r = await transfer(() => v1, () => p1, 5102);
    expect(r.rxAvg, JSON.stringify(r)).toBeGreaterThan(MTU_FRAME);
    expect(r.txAvg, JSON.stringify(r)).toBeLessThanOrEqual(1500 + 14);
    // At least one frame per MSS of data reached the plain VM.
    expect(r.txFrames).toBeGreaterThanOrEqual(Math.floor(MB10 / 1460));
  });

  it('plain → vnet-hdr: 10 MB TCP intact', async () => {
    const r = await transfer(() => p1, () => v2, 5103);
    expect(r.rxAvg, JSON.stringify(r)).toBeLessThanOrEqual(1500 + 14);
  });

  it('nothing was dropped for bad offload', async () => {
    const s = await d.status();
    for (const v of s.vms) expect(v.port.stats.drops['bad-offload'] ?? 0, v.name).toBe(0);
  });

  it('a socket port gets UDP from a vnet-hdr TAP with a complete checksum', async () => {
    expect(await v1.ns.ping(guest.ip)).toBe(true); // ARP resolved both ways
    await udpSend(v1.ns, guest.ip, 4444, 'x'.repeat(300));
    const f = await peer.nextFrame((fr) => parseL4(fr)?.dstPort === 4444, 5_000);
    const udp = parseL4(f)!;
    expect(udp.protocol).toBe('udp');
    expect(udp.payload.length).toBe(300);
    expect(udp.checksumOk).toBe(true);
  });

  it('a socket port gets a TCP SYN from a vnet-hdr TAP with a complete checksum', async () => {
    const attempt = tcpConnectAttempt(v1.ns, guest.ip, 4445);
    try {
      const f = await peer.nextFrame((fr) => {
        const l4 = parseL4(fr);
        return l4?.protocol === 'tcp' && l4.dstPort === 4445 && (l4.flags & TCP_SYN) !== 0;
      }, 5_000);
      expect(parseL4(f)!.checksumOk).toBe(true);
    } finally {
      await attempt.stop();
    }
  });

  it('a socket port never gets a frame above the MTU', async () => {
    let biggest = 0;
    const off = peer.frames.onFrame((f) => {
      biggest = Math.max(biggest, f.length);
    });
    try {
      // Large pings from a vnet-hdr VM (IP fragments at the MTU); TCP to the socket VM cannot
      // complete (the peer has no TCP), so this is what can reach it.
      expect(await v1.ns.ping(guest.ip, { count: 2 })).toBe(true);
      await v1.ns.exec(['ping', '-n', '-c', '2', '-i', '0.2', '-W', '1', '-s', '4000', guest.ip], { check: false });
    } finally {
      off();
    }
    expect(biggest).toBeGreaterThan(1000);
    expect(biggest).toBeLessThanOrEqual(1500 + 14 + 4);
  });
});

describe('switch: a 65520-byte MTU network', () => {
  it('moves a 10 MB TCP stream intact between plain TAPs at MTU 65520', async () => {
    const d = await startDaemon();
    await d.cliOk(['net', 'create', 'J', '--subnet', '10.77.15.0/24', '--mtu', '65520']);
    const a = await attachTapVm(d, { vm: 'ja', net: 'J', cidr: '10.77.15.11/24', prefix: 'jm-a' });
    const b = await attachTapVm(d, { vm: 'jb', net: 'J', cidr: '10.77.15.12/24', prefix: 'jm-b' });
    expect((await a.ns.link(a.ifname))?.mtu).toBe(65520);
    const sink = await tcpSink(b.ns, b.ip, 5201);
    const sent = await tcpSend(a.ns, b.ip, 5201, MB10, 60_000);
    expect(sent.ok, sent.error).toBe(true);
    expect((await sink.result()).sha256).toBe(sent.sha256);
    // Jumbo frames really went through (the sender's average frame is far above 1500 bytes).
    const st = (await d.vm('ja')).port.stats;
    expect(st.rxBytes / st.rxFrames).toBeGreaterThan(8000);
  });
});
