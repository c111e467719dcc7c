/**
 * systemd/mvnet.service as systemd reads it: `systemd-analyze verify` accepts it (its man page
 * found where `npm install -g` would put it), `systemd-analyze security` scores it at most 4.5
 * (README, Security model: 9.3 before hardening, 4.0 now), and it keeps exactly the
 * capabilities the daemon keeps itself (daemon/service.ts KEPT_CAPS). The daemon's side of
 * Type=notify is tested without systemd in service.test.ts.
 */
import { copyFileSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../support/daemon.js';
import { cleanupAll, makeTempDir, run } from '../support/netns.js';
import { KEPT_CAPS } from '../../daemon/service.js';

afterAll(cleanupAll);

const UNIT = join(REPO_ROOT, 'systemd', 'mvnet.service');
const MAX_EXPOSURE = 4.5;

/** `Key=value` lines of the unit (the last one wins, as in systemd for most keys). */
function keys(): Map<string, string> {
  const m = new Map<string, string>();
  for (const l of readFileSync(UNIT, 'utf8').split('\n')) {
    const kv = /^([A-Za-z]+)=(.*)$/.exec(l);
    if (kv) m.set(kv[1]!, kv[2]!);
  }
  return m;
}

describe('systemd/mvnet.service', () => {
  it('systemd-analyze verify accepts it', async () => {
    // Documentation=man:mvnet(1) is checked with man: give it the page as installed.
    const manRoot = makeTempDir('man');
    mkdirSync(join(manRoot, 'man1'));
    copyFileSync(join(REPO_ROOT, 'man', 'mvnet.1'), join(manRoot, 'man1', 'mvnet.1'));
    const r = await run(['systemd-analyze', 'verify', UNIT], { check: false, env: { ...process.env, MANPATH: manRoot } });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
  });

  it(`systemd-analyze security scores it at most ${MAX_EXPOSURE}`, async () => {
    const r = await run(['systemd-analyze', 'security', '--offline=yes', '--no-pager', UNIT], { check: false });
    const m = /Overall exposure level for mvnet\.service: (\d+\.\d)/.exec(r.stdout);
    expect(m, r.stdout + r.stderr).not.toBeNull();
    expect(Number(m![1])).toBeLessThanOrEqual(MAX_EXPOSURE);
  });

  it('Type=notify with a reload, and the capabilities the daemon keeps, no more', () => {
    const k = keys();
    expect(k.get('Type')).toBe('notify');
    expect(k.get('ExecReload')).toBe('/bin/kill -HUP $MAINPID');
    expect(k.get('ExecStart')).toMatch(/^\/usr\/bin\/env mvnet daemon /);
    const kept = Object.keys(KEPT_CAPS).sort();
    expect(k.get('CapabilityBoundingSet')!.split(' ').sort()).toEqual(kept);
    expect(k.get('AmbientCapabilities')!.split(' ').sort()).toEqual(kept);
    expect(k.get('RestrictNamespaces')).toBe('net');
    expect(k.get('ProtectSystem')).toBe('strict');
    expect(k.get('ReadWritePaths')).toBe('/var/lib/mvnet /run/mvnet');
    expect(k.get('DeviceAllow')).toBe('/dev/net/tun rw');
  });
});
