/**
 * The QEMU arguments `mvnet hook ADD` hands out for `device: "vhost-user"` (cli/hook/mvnet/
 * vhost-args.ts): the shared memory backend sized as the VM's memory, the chardev that
 * reconnects, the netdev, and the NIC with its MAC, host_mtu off 1500, vectors=0 under TCG.
 */
import { describe, expect, it } from 'vitest';
import { vhostMemory, vhostQemuArgs } from '../../cli/hook/mvnet/vhost-args.js';

describe('vhost-user QEMU arguments', () => {
  const base = { path: '/run/mvnet/vms/a.vhost.sock', netdevId: 'net0', model: 'virtio-net-pci', mac: '02:00:00:00:00:01', memory: '512M', mtu: 1500 };

  it('memory backend, numa node, chardev with reconnect=1, netdev and device, in that order', () => {
    expect(vhostQemuArgs(base)).toEqual([
      '-object', 'memory-backend-memfd,id=mem-net0,size=512M,share=on',
      '-numa', 'node,memdev=mem-net0',
      '-chardev', 'socket,id=chr-net0,path=/run/mvnet/vms/a.vhost.sock,reconnect=1',
      '-netdev', 'vhost-user,id=net0,chardev=chr-net0',
      '-device', 'virtio-net-pci,netdev=net0,mac=02:00:00:00:00:01',
    ]);
  });

  it('host_mtu when the network MTU is not 1500, vectors=0 only under TCG, commas in the path doubled', () => {
    const a = vhostQemuArgs({ ...base, mtu: 9000, accel: 'tcg', netdevId: 'n1', path: '/x,y/s' });
    expect(a[5]).toBe('socket,id=chr-n1,path=/x,,y/s,reconnect=1');
    expect(a[9]).toBe('virtio-net-pci,netdev=n1,mac=02:00:00:00:00:01,host_mtu=9000,vectors=0');
    expect(vhostQemuArgs({ ...base, accel: 'kvm' })[9]).toBe('virtio-net-pci,netdev=net0,mac=02:00:00:00:00:01');
  });

  it('memory "existing": no memory backend nor NUMA node (the VM has one from its first NIC), the rest the same', () => {
    const a = vhostQemuArgs({ ...base, memory: 'existing' });
    expect(a).toEqual(vhostQemuArgs(base).slice(4));
    expect(a.join(' ')).not.toMatch(/memory-backend|-numa/);
    expect(vhostMemory('existing')).toEqual({ size: 'existing' });
    expect(vhostMemory('Existing')).toHaveProperty('error');
  });

  it('memory as -m takes it: a bare number is MiB, suffixes K/M/G/T, at least 16M', () => {
    expect(vhostMemory(256)).toEqual({ size: '256M' });
    expect(vhostMemory('256')).toEqual({ size: '256M' });
    expect(vhostMemory('2g')).toEqual({ size: '2G' });
    expect(vhostMemory('16384K')).toEqual({ size: '16384K' });
    for (const bad of ['', '0', '-1', '1.5G', '512MB', 'lots', 8, 1.5, null, true, '15M', '1K']) {
      expect(vhostMemory(bad), JSON.stringify(bad)).toHaveProperty('error');
    }
  });
});
