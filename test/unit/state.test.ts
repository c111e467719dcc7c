import { describe, it, expect } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { StateStore } from '../../daemon/state/store.js';
import { loadConfig } from '../../daemon/config.js';

function tmp(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'mvnet-state-'));
}

describe('state store', () => {
  it('starts empty and round-trips', async () => {
    const dir = tmp();
    const s = new StateStore(dir);
    expect(s.load()).toEqual({ version: 1, networks: [], vms: [], routes: {} });
    const st = { version: 1, networks: [{ name: 'a', subnet: '10.0.0.0/24', gateway: '10.0.0.1', mtu: 1500 }], vms: [], routes: {} };
    await s.save(st);
    expect(new StateStore(dir).load()).toEqual({ ...st, leases: {}, forwards: [] });
    expect(fs.readdirSync(dir)).toEqual(['state.json']); // no temp file left behind
  });
  it('keeps saves in order', async () => {
    const s = new StateStore(tmp());
    await Promise.all([1, 2, 3, 4, 5].map((i) => s.save({ version: 1, networks: [], vms: [{ name: `v${i}`, net: 'a', port: { kind: 'tap', ifname: 't' } }], routes: {} })));
    expect(s.load().vms[0]!.name).toBe('v5');
  });
  it('refuses a corrupt or newer file with a clear message', () => {
    const dir = tmp();
    fs.writeFileSync(path.join(dir, 'state.json'), '{nope');
    expect(() => new StateStore(dir).load()).toThrow(/not valid JSON/);
    fs.writeFileSync(path.join(dir, 'state.json'), '{"version": 99}');
    expect(() => new StateStore(dir).load()).toThrow(/version 99/);
  });
});

describe('config', () => {
  it('uses defaults, then the file, then flags', () => {
    const dir = tmp();
    const f = path.join(dir, 'c.json');
    fs.writeFileSync(f, JSON.stringify({ stateDir: '/x', logLevel: 'debug' }));
    expect(loadConfig(undefined, {})).toMatchObject({ stateDir: '/var/lib/mvnet', socket: '/run/mvnet/mvnet.sock' });
    expect(loadConfig(f, { socket: '/s.sock' })).toMatchObject({ stateDir: '/x', logLevel: 'debug', socket: '/s.sock' });
  });
  it('puts VM sockets next to the control socket unless vmSocketDir says otherwise', () => {
    const dir = tmp();
    const f = path.join(dir, 'c.json');
    expect(loadConfig(undefined, {}).vmSocketDir).toBe('/run/mvnet/vms');
    expect(loadConfig(undefined, { socket: '/srv/m/ctl.sock' }).vmSocketDir).toBe('/srv/m/vms');
    fs.writeFileSync(f, JSON.stringify({ vmSocketDir: '/srv/vmsock' }));
    expect(loadConfig(f, { socket: '/srv/m/ctl.sock' }).vmSocketDir).toBe('/srv/vmsock');
    fs.writeFileSync(f, JSON.stringify({ vmSocketDir: 'rel' }));
    expect(() => loadConfig(f, {})).toThrow(/vmSocketDir must be an absolute path/);
  });
  it('rejects unknown keys and bad files in one line', () => {
    const dir = tmp();
    const f = path.join(dir, 'c.json');
    fs.writeFileSync(f, JSON.stringify({ stateDri: '/x' }));
    expect(() => loadConfig(f, {})).toThrow(/unknown key "stateDri"/);
    expect(() => loadConfig(path.join(dir, 'missing.json'), {})).toThrow(/cannot read config/);
    fs.writeFileSync(f, '[');
    expect(() => loadConfig(f, {})).toThrow(/not valid JSON/);
  });
});
