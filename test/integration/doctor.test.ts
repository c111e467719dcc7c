/**
 * `mvnet doctor` against the real host and a real daemon: every check passes (or warns) with the
 * daemon up, the daemon-bound checks are skipped and one FAIL says so with it down, and a VM
 * whose TAP this test deleted under the daemon is one FAIL line naming the VM; --json carries
 * the same, and the exit code is 6 exactly when there is a FAIL.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, startDaemon, type Daemon } from '../support/daemon.js';
import { cleanupAll, createNetns, makeTempDir, run, type Netns } from '../support/netns.js';

afterAll(cleanupAll);

interface Check {
  id: string;
  status: 'ok' | 'fail' | 'warn' | 'skip';
  detail: string;
  fix?: string;
  vm?: string;
}

const HOST_CHECKS = ['tun', 'cap-net-admin', 'addon', 'tor', 'qemu', 'state-dir'];
const DAEMON_CHECKS = ['socket', 'vm-device', 'tor-bootstrap', 'ping-group'];

/** The doctor's text lines, as [status word, id, rest]. */
function lines(stdout: string): [string, string, string][] {
  return stdout
    .trimEnd()
    .split('\n')
    .filter((l) => !l.startsWith(' '))
    .map((l) => {
      const m = /^(ok|FAIL|warn|skip) +(\S+) +(.*)$/.exec(l);
      if (!m) throw new Error(`not a doctor line: ${l}`);
      return [m[1]!, m[2]!, m[3]!];
    });
}

describe('mvnet doctor', () => {
  let d: Daemon;
  let ns: Netns;

  beforeAll(async () => {
    // Deleting the TAP under the daemon makes its port log the device's loss: expected here.
    d = await startDaemon({ expectErrors: true });
    ns = await createNetns('doc');
    await d.cliOk(['net', 'create', 'A', '--subnet', '10.77.95.0/24']);
    await d.cliOk(['vm', 'attach', 'dv1', '--net', 'A', '--tap', 'doctap1', '--netns', ns.name]);
    await d.cliOk(['vm', 'attach', 'dv2', '--net', 'A', '--tap', 'doctap2', '--netns', ns.name]);
  });

  it('with the daemon up: every line ok, warn or skip, exit 0; the host checks and the daemon checks all ran', async () => {
    const r = await d.cli(['doctor']);
    const ls = lines(r.stdout);
    expect(ls.filter(([s]) => s === 'FAIL'), r.stdout).toEqual([]);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    const ids = ls.map(([, id]) => id);
    for (const id of [...HOST_CHECKS, 'daemon', ...DAEMON_CHECKS]) expect(ids).toContain(id);
    expect(ls.find(([, id]) => id === 'daemon')![0]).toBe('ok');
    expect(ls.filter(([, id]) => id === 'vm-device').map(([s, , rest]) => [s, rest.split(':')[0]])).toEqual([
      ['ok', 'VM dv1'],
      ['ok', 'VM dv2'],
    ]);
    // It checked this daemon's process and its state dir, not defaults.
    expect(ls.find(([, id]) => id === 'cap-net-admin')![2]).toContain(`pid ${d.pid}`);
    expect(ls.find(([, id]) => id === 'state-dir')![2]).toContain(d.stateDir);
  });

  it('a VM whose TAP was deleted: one FAIL line naming it, with the fix; exit 6; --json says the same', async () => {
    await run(['ip', '-n', ns.name, 'link', 'del', 'doctap1']);
    const r = await d.cli(['doctor']);
    expect(r.code).toBe(6);
    const fails = lines(r.stdout).filter(([s]) => s === 'FAIL');
    expect(fails).toEqual([['FAIL', 'vm-device', `VM dv1: TAP doctap1 in namespace ${ns.name} is missing`]]);
    expect(r.stdout).toMatch(/FAIL +vm-device .*\n +fix: mvnet vm detach dv1/);

    const jr = await runCli(d.socket, ['doctor'], { json: true });
    expect(jr.code).toBe(6);
    const report = JSON.parse(jr.stdout) as { ok: boolean; checks: Check[] };
    expect(report.ok).toBe(false);
    for (const c of report.checks) {
      expect(Object.keys(c).every((k) => ['id', 'status', 'detail', 'fix', 'vm'].includes(k))).toBe(true);
      expect(['ok', 'fail', 'warn', 'skip']).toContain(c.status);
      expect(typeof c.detail).toBe('string');
    }
    const failed = report.checks.filter((c) => c.status === 'fail');
    expect(failed).toHaveLength(1);
    expect(failed[0]).toMatchObject({ id: 'vm-device', vm: 'dv1', fix: expect.stringContaining('mvnet vm detach dv1') });
    expect(report.checks.find((c) => c.vm === 'dv2')?.status).toBe('ok');
    await d.cliOk(['vm', 'detach', 'dv1']);
  });

  it('with the daemon down: one FAIL (not reachable, with the fix), the daemon checks skipped, exit 6', async () => {
    const dir = makeTempDir('doc');
    const sock = `${dir}/none.sock`;
    const r = await runCli(sock, ['doctor', '--state-dir', dir]);
    expect(r.code).toBe(6);
    const ls = lines(r.stdout);
    expect(ls.filter(([s]) => s === 'FAIL').map(([, id]) => id)).toEqual(['daemon']);
    expect(ls.find(([, id]) => id === 'daemon')![2]).toContain(`not reachable on ${sock}`);
    expect(r.stdout).toMatch(/FAIL +daemon .*\n +fix: start it/);
    for (const id of DAEMON_CHECKS) expect(ls.find(([, i]) => i === id)).toEqual(['skip', id, '(daemon not reachable)']);
    const jr = await runCli(sock, ['doctor', '--state-dir', dir], { json: true });
    expect(jr.code).toBe(6);
    const report = JSON.parse(jr.stdout) as { ok: boolean; checks: Check[] };
    expect(report.checks.filter((c) => c.status === 'skip').map((c) => c.id)).toEqual(expect.arrayContaining(DAEMON_CHECKS));
  });

  it('a Tor-routed VM while Tor is down: a FAIL saying why, with the fix', async () => {
    // An external tor whose control socket does not exist: down at once, nothing contacted.
    const dir = makeTempDir('doct');
    const config = join(dir, 'mvnet.json');
    writeFileSync(config, JSON.stringify({ tor: { mode: 'external', socks: `unix:${dir}/no-socks`, control: `unix:${dir}/no-control` } }));
    const t = await startDaemon({ config, expectErrors: true });
    await t.cliOk(['net', 'create', 'T', '--subnet', '10.77.97.0/24']);
    await t.cliOk(['vm', 'attach', 'tv1', '--net', 'T', '--unix-listen']);
    const before = lines((await t.cli(['doctor'])).stdout).find(([, id]) => id === 'tor-bootstrap');
    expect(before).toEqual(['ok', 'tor-bootstrap', 'no VM is routed through Tor']);
    await t.cliOk(['route', '--all-tor', 'tv1']);
    const r = await t.cli(['doctor']);
    expect(r.code).toBe(6);
    const fails = lines(r.stdout).filter(([s]) => s === 'FAIL');
    expect(fails).toEqual([['FAIL', 'tor-bootstrap', expect.stringMatching(/^Tor is down 0% \(cannot connect to tor's control port .*\) and tv1 routes through it/)]]);
    expect(r.stdout).toMatch(/FAIL +tor-bootstrap .*\n +fix: mvnet tor status/);
  });

  it('a stopped (SIGSTOP) daemon does not hang it: not reachable within the timeout', async () => {
    const s = await startDaemon();
    s.process.signal('SIGSTOP');
    try {
      const t0 = Date.now();
      const r = await s.cli(['doctor'], { timeoutMs: 20_000 });
      expect(r.code).toBe(6);
      expect(lines(r.stdout).find(([, id]) => id === 'daemon')).toEqual(['FAIL', 'daemon', expect.stringContaining('within 3 s')]);
      expect(Date.now() - t0).toBeLessThan(15_000);
    } finally {
      s.process.signal('SIGCONT');
    }
  });
});
