/**
 * A static lease given at attach time (`vm attach --mac M --ip IP`), as a real DHCP client sees
 * it: busybox udhcpc in the VM namespace is offered exactly IP on the VM's very first DHCP
 * exchange (regression: the reservation used to be built before the VM was recorded, so a VM
 * with a fixed MAC got a pool address until something else refreshed the reservations), keeps
 * it across a `kill -9` of the daemon (renewal, and a new request after a release), and no other
 * client gets IP even when it asks for it by name.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupAll } from '../support/netns.js';
import { startTopology, type StackVm, type Topology } from '../support/stack-topology.js';

const SUBNET = '10.214.0.0/24';
const GATEWAY = '10.214.0.1';
const STATIC_IP = '10.214.0.50';

afterAll(cleanupAll);

/** A locally unique QEMU-style MAC (52:54:00:xx:xx:xx). */
function qemuMac(): string {
  return ['52', '54', '00', ...Array.from(randomBytes(3), (b) => b.toString(16).padStart(2, '0'))].join(':');
}

async function addresses(vm: StackVm): Promise<string> {
  return (await vm.exec(['ip', '-4', '-o', 'addr', 'show', 'dev', vm.ifname])).stdout;
}

describe('DHCP reservation from vm attach --mac/--ip', () => {
  let t: Topology;
  let s: StackVm;
  let other: StackVm;
  const mac = qemuMac();

  beforeAll(async () => {
    t = await startTopology({ prefix: 'dhr' });
    await t.cli(['net', 'create', 'lan', '--subnet', SUBNET]);
  });

  it('offers the --ip address on the very first DHCP after attach', async () => {
    s = await t.addVm('s', 'lan', { mac, ip: STATIC_IP });
    // For a TAP, --mac is also the device's MAC: the namespace's kernel sends from it.
    expect((await s.ns.mac(s.ifname)).toLowerCase()).toBe(mac);
    // -R: release the lease when udhcpc is stopped (used after the restart below).
    const lease = await s.dhcp({ extra: ['-R'] });
    expect(lease.ip, await t.describe()).toBe(STATIC_IP);
    expect(lease.router).toBe(GATEWAY);
    expect(lease.serverid).toBe(GATEWAY);
    expect(await addresses(s)).toContain(`${STATIC_IP}/24`);
    expect(await s.ns.ping(GATEWAY, { count: 2 })).toBe(true);
    // Only one exchange was needed: no NAK, no second bound.
    expect(s.dhcpEvents().map((e) => e.event)).toEqual(['deconfig', 'bound']);
  });

  it('another VM without --ip does not get that address, even when it requests it', async () => {
    other = await t.addVm('o', 'lan');
    const lease = await other.dhcp({ extra: ['-r', STATIC_IP] });
    expect(lease.ip).toMatch(/^10\.214\.0\.\d+$/);
    expect(lease.ip).not.toBe(STATIC_IP);
    expect(lease.ip).not.toBe(GATEWAY);
  });

  it('after kill -9 and a restart on the same state dir, the VM keeps (and gets again) the address', async () => {
    const oldPid = t.daemon.pid;
    const exit = await t.daemon.kill('SIGKILL');
    expect(exit.signal).toBe('SIGKILL');
    await t.daemon.start();
    expect(t.daemon.pid).not.toBe(oldPid);
    expect((await t.daemon.vm('s')).port.state).toBe('up');

    // The running client renews (unicast REQUEST to the restarted gateway): ACKed, same address.
    const renewed = await s.renew();
    expect(renewed.event).toBe('renew');
    expect(renewed.ip).toBe(STATIC_IP);
    expect(s.dhcpEvents().map((e) => e.event)).not.toContain('nak');

    // The client releases the lease (RELEASE on exit) and lets go of the address.
    await s.stopDhcp();
    await s.exec(['ip', '-4', 'addr', 'flush', 'dev', s.ifname], { check: true });

    // With the address released, a newcomer asking for it by name still does not get it...
    const late = await t.addVm('n', 'lan');
    const lateLease = await late.dhcp({ extra: ['-r', STATIC_IP] });
    expect(lateLease.ip).not.toBe(STATIC_IP);
    // ...nor does the VM that was already there, starting over.
    await other.stopDhcp();
    await other.exec(['ip', '-4', 'addr', 'flush', 'dev', other.ifname], { check: true });
    expect((await other.dhcp({ extra: ['-r', STATIC_IP] })).ip).not.toBe(STATIC_IP);

    // A new request (DISCOVER from scratch) from the reserved VM gets exactly its address.
    const again = await s.dhcp();
    expect(again.ip).toBe(STATIC_IP);
    expect(await addresses(s)).toContain(`${STATIC_IP}/24`);
    expect(await s.ns.ping(GATEWAY, { count: 2 })).toBe(true);
  });
});
