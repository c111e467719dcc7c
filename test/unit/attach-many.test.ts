/**
 * vm.attachMany: many VMs in one call with one state write, a failure per VM that does not stop
 * the others, and nothing acknowledged that is not on disk. Real daemon core, real unix datagram
 * sockets (the native addon), a real state directory.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { Daemon, MAX_ATTACH_MANY, type AttachManyResult } from '../../daemon/daemon.js';
import { DEFAULTS, type DaemonConfig } from '../../daemon/config.js';
import { methods } from '../../daemon/control/methods.js';
import { StateStore } from '../../daemon/state/store.js';
import type { StateFile } from '../../daemon/state/model.js';
import { CONFLICT, INVALID_PARAMS, NOT_FOUND } from '../../daemon/errors.js';

/** A real store that counts its writes, and fails them when told to (a disk fault on demand). */
class CountingStore extends StateStore {
  saves = 0;
  failNext: Error | null = null;
  override save(state: StateFile): Promise<void> {
    this.saves++;
    if (this.failNext !== null) {
      const e = this.failNext;
      this.failNext = null;
      return Promise.reject(e);
    }
    return super.save(state);
  }
}

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});

async function harness(): Promise<{ d: Daemon; store: CountingStore; dir: string; call: (m: string, p: unknown) => Promise<unknown> }> {
  const base = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
  const dir = mkdtempSync(join(base, 'mvnet-attach-many-'));
  const cfg: DaemonConfig = { ...DEFAULTS, stateDir: dir, socket: join(dir, 'mvnet.sock'), tor: { ...DEFAULTS.tor, binary: join(dir, 'no-tor-here') } };
  const store = new CountingStore(dir);
  const d = new Daemon(pino({ level: 'silent' }), store, cfg);
  cleanups.push(async () => {
    await d.shutdown();
    rmSync(dir, { recursive: true, force: true });
  });
  const table = methods(d, { socket: cfg.socket, stateDir: dir, version: 'test' });
  await d.createNetwork({ name: 'a', subnet: '10.9.0.0/16' });
  return { d, store, dir, call: (m, p) => table[m]!(p) };
}

const dgram = (dir: string, name: string): object => ({ name, net: 'a', port: { kind: 'dgram', path: join(dir, `${name}.sock`) } });

describe('vm.attachMany', () => {
  it('attaches every VM with one state write and reports each refusal without stopping', async () => {
    const { d, store, dir, call } = await harness();
    await call('vm.attach', dgram(dir, 'old'));
    const before = store.saves;
    const specs = [
      ...Array.from({ length: 50 }, (_, i) => dgram(dir, `v${i}`)),
      dgram(dir, 'old'), // already attached
      { name: 'bad', net: 'nowhere', port: { kind: 'dgram', path: join(dir, 'bad.sock') } },
      { name: 'v60', net: 'a', port: { kind: 'dgram', path: join(dir, 'v0.sock') } }, // v0's socket
      42,
      dgram(dir, 'last'),
    ];
    const r = (await call('vm.attachMany', { vms: specs })) as AttachManyResult;
    expect(store.saves - before).toBe(1);
    expect(r.attached.map((v) => v.name)).toEqual([...Array.from({ length: 50 }, (_, i) => `v${i}`), 'last']);
    expect(r.attached.every((v) => v.port.kind === 'dgram')).toBe(true);
    expect(r.failed.map((f) => [f.index, f.name, f.code])).toEqual([
      [50, 'old', CONFLICT],
      [51, 'bad', NOT_FOUND],
      [52, 'v60', CONFLICT],
      [53, null, INVALID_PARAMS],
    ]);
    expect(r.failed[1]!.error).toMatch(/nowhere/);
    // On disk: the one write holds every VM attached so far.
    const saved = new StateStore(dir).load();
    expect(saved.vms.map((v) => v.name).sort()).toEqual(['old', 'last', ...Array.from({ length: 50 }, (_, i) => `v${i}`)].sort());
    expect(d.listVms()).toHaveLength(52);
  });

  it('detaches what it attached when the state write fails, and answers the failure', async () => {
    const { d, store, dir, call } = await harness();
    await call('vm.attach', dgram(dir, 'keep'));
    store.failNext = new Error('disk full');
    await expect(call('vm.attachMany', { vms: [dgram(dir, 'x1'), dgram(dir, 'x2')] })).rejects.toThrow('disk full');
    expect(d.listVms().map((v) => v.name)).toEqual(['keep']);
    // Their sockets are gone with them: the same names attach again.
    const r = (await call('vm.attachMany', { vms: [dgram(dir, 'x1'), dgram(dir, 'x2')] })) as AttachManyResult;
    expect(r.failed).toEqual([]);
    expect(new StateStore(dir).load().vms.map((v) => v.name).sort()).toEqual(['keep', 'x1', 'x2']);
  });

  it('refuses params that are not a list, or too long a list, before attaching anything', async () => {
    const { d, store, call } = await harness();
    const before = store.saves;
    await expect(call('vm.attachMany', { vms: {} })).rejects.toThrow(/must be a list/);
    await expect(call('vm.attachMany', { vms: new Array(MAX_ATTACH_MANY + 1).fill(0) })).rejects.toThrow(/at most/);
    const r = (await call('vm.attachMany', { vms: [] })) as AttachManyResult;
    expect(r).toEqual({ attached: [], failed: [] });
    expect(store.saves).toBe(before);
    expect(d.listVms()).toEqual([]);
  });
});
