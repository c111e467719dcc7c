/**
 * The switch, end to end: namespaces are the VMs, each with a TAP the daemon creates inside it,
 * and the namespaces' own kernels do ARP, ICMP and TCP through mvnet.
 *
 * Network A has vm1 and vm2; network B has vm3, whose address is in A's subnet on purpose, so
 * it tries to reach A's VMs directly on its own L2 segment (ARP) — the strongest isolation
 * probe. The isolation test runs first, while A is silent, so A's counters can be compared
 * exactly.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDaemon, type Daemon, type StatusJson } from '../support/daemon.js';
import { cleanupAll } from '../support/netns.js';
import { attachTapVm, tcpSend, tcpSink, type TapVm } from '../support/vms.js';

const MB10 = 10 * 1024 * 1024;

function txOf(s: StatusJson, vm: string): number {
  const v = s.vms.find((x) => x.name === vm);
  if (!v) throw new Error(`no VM ${vm} in status`);
  return v.port.stats.txFrames;
}

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

  afterAll(cleanupAll);

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
