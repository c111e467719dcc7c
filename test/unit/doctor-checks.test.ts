/** The doctor's state-dir rule on real directories: read/write for others fails, search alone (Tor's user traversing) does not. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { checkStateDir, runChecks } from '../../cli/doctor/checks.js';

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
