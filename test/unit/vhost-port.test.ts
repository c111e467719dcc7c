/**
 * The vhost-user port's parts that need no guest: `vm attach --vhost-user` to the port
 * parameters, the port as answers and people see it, the device's drop counters as DropReasons,
 * and which frames for the guest need an offload done first (those it did not negotiate).
 */
import { describe, expect, it } from 'vitest';
import { describePort, portParams } from '../../cli/commands/vm-port.js';
import { parseBatch } from '../../cli/commands/vm-batch.js';
import { portView } from '../../daemon/control/views.js';
import { needsOffloadFix, vhostCounters } from '../../plugins/vhost-user/port.js';
import type { VhostDeviceStats } from '../../plugins/native/types.js';
import type { VmInfo } from '../../daemon/control/api.js';

describe('vm attach --vhost-user', () => {
  it('a path, a bare name or none (the daemon names it after the VM)', async () => {
    expect(await portParams({ net: 'n', vhostUser: '/run/vm/a.sock' }, '/x')).toEqual({ kind: 'vhost-user', path: '/run/vm/a.sock' });
    expect(await portParams({ net: 'n', vhostUser: 'a.sock' }, '/x')).toEqual({ kind: 'vhost-user', path: 'a.sock' });
    expect(await portParams({ net: 'n', vhostUser: true }, '/x')).toEqual({ kind: 'vhost-user' });
  });

  it('exactly one device', async () => {
    await expect(portParams({ net: 'n', vhostUser: true, tap: 't0' }, '/x')).rejects.toThrow(/exactly one of .*--vhost-user/);
    await expect(portParams({ net: 'n', vhostUser: true, vnetHdr: true }, '/x')).rejects.toThrow(/--vnet-hdr applies to --tap only/);
  });

  it('in a --batch file: vhostUser takes a path or true', async () => {
    const entries = await parseBatch(JSON.stringify([{ vm: 'a', net: 'n', vhostUser: true }, { vm: 'b', net: 'n', vhostUser: 'b.sock' }]), 'x.json', '/x');
    expect(entries.map((e) => e.params.port)).toEqual([{ kind: 'vhost-user' }, { kind: 'vhost-user', path: 'b.sock' }]);
    await expect(parseBatch(JSON.stringify([{ vm: 'a', net: 'n', vhostUser: 5 }]), 'x.json', '/x')).rejects.toThrow(/vhostUser takes a path or true/);
  });

  it('answers carry kind and path; people read "vhost-user PATH"', () => {
    const v = portView({ kind: 'vhost-user', path: '/run/vm/a.sock' });
    expect(v).toEqual({ kind: 'vhost-user', path: '/run/vm/a.sock' });
    const p = { ...v, state: 'up', detail: 'running', lastError: null, device: 'running', stats: { rxFrames: 0, rxBytes: 0, txFrames: 0, txBytes: 0, drops: {} } } as VmInfo['port'];
    expect(describePort(p)).toBe('vhost-user /run/vm/a.sock');
  });
});

describe('the vhost-user port', () => {
  const stats: VhostDeviceStats = {
    state: 'running', detail: '', rxFrames: 1, rxBytes: 2, txFrames: 3, txBytes: 4,
    dropNoBuffers: 5, dropNotRunning: 6, dropOversize: 7, dropBadOffload: 8, callbackErrors: 9,
    connections: 1, violations: 0, features: '0x0', guestCsum: false, guestTso4: false, guestTso6: false, regions: 1, memBytes: 1, descriptorsRead: 0,
  };

  it("maps the device's drops: no RX buffers → queue-full, not running → no-peer", () => {
    expect(vhostCounters(stats)).toEqual({ txFrames: 3, txBytes: 4, drops: { 'queue-full': 5, 'no-peer': 6, oversize: 7, 'bad-offload': 8 }, callbackErrors: 9 });
  });

  it('fixes only what the guest did not negotiate', () => {
    const hdr = (flags: number, gso: number): Buffer => Buffer.concat([Buffer.from([flags, gso, 0, 0, 0x5a, 0x05, 34, 0, 16, 0]), Buffer.alloc(60)]);
    const none = { csum: false, tso4: false, tso6: false };
    const csum = { csum: true, tso4: false, tso6: false };
    const all = { csum: true, tso4: true, tso6: true };
    expect(needsOffloadFix(hdr(0, 0), none)).toBe(false);
    expect(needsOffloadFix(hdr(1, 0), none)).toBe(true);
    expect(needsOffloadFix(hdr(1, 0), csum)).toBe(false);
    expect(needsOffloadFix(hdr(1, 1), csum)).toBe(true);
    expect(needsOffloadFix(hdr(1, 1), { ...csum, tso4: true })).toBe(false);
    expect(needsOffloadFix(hdr(1, 4), { ...csum, tso4: true })).toBe(true);
    expect(needsOffloadFix(hdr(1, 4), all)).toBe(false);
    // UDP fragmentation and ECN are never offered to the guest.
    expect(needsOffloadFix(hdr(1, 3), all)).toBe(true);
    expect(needsOffloadFix(hdr(1, 0x81), all)).toBe(true);
    // TSO without the checksum offload cannot be (the spec needs GUEST_CSUM for it).
    expect(needsOffloadFix(hdr(1, 1), { csum: false, tso4: true, tso6: true })).toBe(true);
    // A runt is left to the port's checks.
    expect(needsOffloadFix(Buffer.from([1, 1]), none)).toBe(false);
  });
});
