/** `tcp.congestion` in the daemon's config: checked at load, applied at start and on reload, to new connections. */
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { configChanges, DEFAULTS, loadConfig, RELOADABLE, type DaemonConfig } from '../../daemon/config.js';
import { Daemon } from '../../daemon/daemon.js';
import { getDefaultCongestion, setDefaultCongestion } from '../../daemon/endpoint/tcp/index.js';
import { StateStore } from '../../daemon/state/store.js';

const dirs: string[] = [];
function tmp(): string {
  const d = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'mvnet-tcpcfg-'));
  dirs.push(d);
  return d;
}
function file(data: unknown): string {
  const p = join(tmp(), 'c.json');
  writeFileSync(p, JSON.stringify(data));
  return p;
}

afterEach(() => {
  setDefaultCongestion('cubic');
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe('config tcp.congestion', () => {
  it('defaults to cubic, takes newreno, refuses anything else with one line', () => {
    expect(loadConfig(undefined, {}).tcp.congestion).toBe('cubic');
    expect(loadConfig(file({ tcp: { congestion: 'newreno' } }), {}).tcp.congestion).toBe('newreno');
    expect(() => loadConfig(file({ tcp: { congestion: 'bbr' } }), {})).toThrow(/tcp\.congestion must be "cubic" or "newreno", got "bbr"/);
    expect(() => loadConfig(file({ tcp: { cc: 'cubic' } }), {})).toThrow(/unknown key "tcp\.cc"/);
  });

  it('is reloadable, and a change is listed', () => {
    expect(RELOADABLE.has('tcp.congestion')).toBe(true);
    const a = loadConfig(undefined, {});
    const b = loadConfig(file({ tcp: { congestion: 'newreno' } }), {});
    expect(configChanges(a, b)).toEqual([{ key: 'tcp.congestion', from: 'cubic', to: 'newreno' }]);
  });

  it('the daemon applies it at start and on reload (for connections opened afterwards)', async () => {
    const dir = tmp();
    const cfg: DaemonConfig = { ...DEFAULTS, stateDir: dir, socket: join(dir, 'mvnet.sock'), tor: { ...DEFAULTS.tor, binary: join(dir, 'no-tor-here') }, tcp: { congestion: 'newreno' } };
    const daemon = new Daemon(pino({ level: 'silent' }), new StateStore(dir), cfg);
    try {
      expect(getDefaultCongestion()).toBe('newreno');
      daemon.reloadConfig({ ...cfg, tcp: { congestion: 'cubic' } });
      expect(getDefaultCongestion()).toBe('cubic');
      daemon.reloadConfig({ ...cfg, tcp: { congestion: 'newreno' } });
      expect(getDefaultCongestion()).toBe('newreno');
    } finally {
      await daemon.shutdown();
    }
  });
});
