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
    expect(new StateStore(dir).load()).toEqual({ ...st, leases: {}, forwards: [], tees: [] });
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
  it('puts tee files under <stateDir>/captures unless captureDir says otherwise', () => {
    const dir = tmp();
    const f = path.join(dir, 'c.json');
    expect(loadConfig(undefined, {}).captureDir).toBe('/var/lib/mvnet/captures');
    expect(loadConfig(undefined, { stateDir: '/srv/st' }).captureDir).toBe('/srv/st/captures');
    fs.writeFileSync(f, JSON.stringify({ captureDir: '/srv/cap/' }));
    expect(loadConfig(f, { stateDir: '/srv/st' }).captureDir).toBe('/srv/cap/');
    fs.writeFileSync(f, JSON.stringify({ captureDir: 'cap' }));
    expect(() => loadConfig(f, {})).toThrow(/captureDir must be an absolute path/);
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

describe('config: direct.hostLoopbackPorts', () => {
  function cfgFile(o: unknown): string {
    const f = path.join(tmp(), 'c.json');
    fs.writeFileSync(f, JSON.stringify(o));
    return f;
  }

  it('parses ports and ranges; --host-loopback PORTS turns it on', () => {
    const c = loadConfig(cfgFile({ direct: { hostLoopback: true, hostLoopbackPorts: [8080, '9000-9010'] } }), {});
    expect(c.direct.hostLoopbackPorts).toEqual([[8080, 8080], [9000, 9010]]);
    const f = loadConfig(undefined, { hostLoopback: '22,8000-8001' });
    expect(f.direct).toMatchObject({ hostLoopback: true, hostLoopbackPorts: [[22, 22], [8000, 8001]] });
    expect(loadConfig(undefined, {}).direct).toMatchObject({ hostLoopback: false, hostLoopbackPorts: [] });
  });

  it('hostLoopback with no ports listed is refused (it would expose nothing, or once everything)', () => {
    expect(() => loadConfig(cfgFile({ direct: { hostLoopback: true } }), {})).toThrow(/none are listed/);
    expect(() => loadConfig(cfgFile({ direct: { hostLoopback: true, hostLoopbackPorts: [] } }), {})).toThrow(/none are listed/);
  });

  it('bad items are refused in one line', () => {
    for (const bad of [[0], [65536], ['80-'], ['90-80'], [1.5], ['x'], 'all', [null]]) {
      expect(() => loadConfig(cfgFile({ direct: { hostLoopback: true, hostLoopbackPorts: bad } }), {})).toThrow(/hostLoopbackPorts/);
    }
    expect(() => loadConfig(undefined, { hostLoopback: '22,,23' })).toThrow(/--host-loopback/);
  });

  it("Tor's SOCKS and control ports are never listed", () => {
    expect(() => loadConfig(undefined, { hostLoopback: '9050' })).toThrow(/9050.*Tor/);
    expect(() => loadConfig(undefined, { hostLoopback: '9000-9100' })).toThrow(/9050/);
    const ext = { mode: 'external', socks: '127.0.0.1:7000', control: '127.0.0.1:7001' };
    expect(() => loadConfig(cfgFile({ tor: ext, direct: { hostLoopback: true, hostLoopbackPorts: [7000] } }), {})).toThrow(/tor\.socks/);
    expect(() => loadConfig(cfgFile({ tor: ext, direct: { hostLoopback: true, hostLoopbackPorts: ['6000-7001'] } }), {})).toThrow(/7000|tor\.control/);
    expect(() => loadConfig(cfgFile({ tor: ext, direct: { hostLoopback: true, hostLoopbackPorts: [7001] } }), {})).toThrow(/tor\.control/);
    expect(loadConfig(cfgFile({ tor: ext, direct: { hostLoopback: true, hostLoopbackPorts: [7002] } }), {}).direct.hostLoopbackPorts).toEqual([[7002, 7002]]);
    // Embedded with a fixed SOCKS port; and "auto", which may land anywhere in the ephemeral range.
    expect(() => loadConfig(cfgFile({ tor: { socks: '127.0.0.1:9999' }, direct: { hostLoopback: true, hostLoopbackPorts: [9999] } }), {})).toThrow(/tor\.socks/);
    expect(() => loadConfig(cfgFile({ tor: { socks: '127.0.0.1:auto' }, direct: { hostLoopback: true, hostLoopbackPorts: ['40000-40010'] } }), {})).toThrow(/auto/);
    expect(loadConfig(cfgFile({ tor: { socks: '127.0.0.1:auto' }, direct: { hostLoopback: true, hostLoopbackPorts: [8080] } }), {}).direct.hostLoopback).toBe(true);
  });
});
