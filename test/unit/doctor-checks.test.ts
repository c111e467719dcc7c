/** The doctor's state-dir rule on real directories: read/write for others fails, search alone (Tor's user traversing) does not. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { checkStateDir, checkVmDevice, runChecks } from '../../cli/doctor/checks.js';
import type { VmInfo } from '../../daemon/control/api.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mvnet-doctor-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function dirWithMode(name: string, mode: number): string {
  const d = path.join(tmp, name);
  fs.mkdirSync(d);
  fs.chmodSync(d, mode);
  return d;
}

describe('checkStateDir', () => {
  it('0700 and 0711/0710 (traversable for the embedded Tor\'s user) are ok', () => {
    expect(checkStateDir(dirWithMode('a', 0o700)).status).toBe('ok');
    expect(checkStateDir(dirWithMode('b', 0o711)).status).toBe('ok');
    expect(checkStateDir(dirWithMode('c', 0o710)).status).toBe('ok');
  });

  it('readable or writable by group or others is a FAIL with the fix', () => {
    for (const [name, mode] of [['d', 0o755], ['e', 0o740], ['f', 0o702], ['g', 0o770]] as const) {
      const r = checkStateDir(dirWithMode(name, mode));
      expect(r.status, `mode ${mode.toString(8)}`).toBe('fail');
      expect(r.fix).toContain('chmod go-rw');
    }
  });
});

describe('the daemon check', () => {
  it('a daemon that does not answer in time is called hung, not stopped', async () => {
    const results = await runChecks({ socket: '/x.sock', stateDir: tmp, status: { error: 'the daemon on /x.sock did not answer daemon.status within 3 s (stopped or hung?)' } });
    const d = results.find((r) => r.id === 'daemon')!;
    expect(d.status).toBe('fail');
    expect(d.fix).toMatch(/kill -CONT/);
    const down = await runChecks({ socket: '/x.sock', stateDir: tmp, status: { error: 'the mvnet daemon is not running' } });
    expect(down.find((r) => r.id === 'daemon')!.fix).toMatch(/^start it/);
  });
});

describe('the vm-device check of a vhost-user VM', () => {
  const vm = (state: VmInfo['port']['state'], detail: string, p = path.join(tmp, 'v.sock')): VmInfo =>
    ({ name: 'v', port: { kind: 'vhost-user', path: p, state, detail, lastError: null, device: null, stats: { rxFrames: 0, rxBytes: 0, txFrames: 0, txBytes: 0, drops: {} } } }) as unknown as VmInfo;

  it('running is ok; listening warns with the QEMU arguments; broken fails; a missing socket fails', () => {
    fs.writeFileSync(path.join(tmp, 'v.sock'), '');
    expect(checkVmDevice(vm('up', 'running: ...')).status).toBe('ok');
    const w = checkVmDevice(vm('waiting', 'listening on x: waiting for QEMU to connect'));
    expect(w.status).toBe('warn');
    expect(w.fix).toMatch(/reconnect=1 -netdev vhost-user.*memory-backend-memfd,share=on/);
    const b = checkVmDevice(vm('down', 'broken: guest ring violation: descriptor loop'));
    expect(b.status).toBe('fail');
    expect(b.detail).toMatch(/guest ring violation/);
    expect(b.fix).toMatch(/restart the VM/);
    expect(checkVmDevice(vm('up', 'running', path.join(tmp, 'nope.sock'))).status).toBe('fail');
  });
});
