/** What SIGHUP compares and which keys it may apply to a running daemon. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { configChanges, loadConfig, RELOADABLE } from '../../daemon/config.js';

function file(data: unknown): string {
  const p = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'mvnet-cfg-')), 'c.json');
  fs.writeFileSync(p, JSON.stringify(data));
  return p;
}

describe('config reload', () => {
  it('lists changed keys as dotted paths, and nothing when nothing changed', () => {
    const a = loadConfig(file({ logLevel: 'info' }), {});
    expect(configChanges(a, loadConfig(file({ logLevel: 'info' }), {}))).toEqual([]);
    const b = loadConfig(file({ logLevel: 'debug', limits: { udpPerVm: 9 }, dns: { upstream: '127.0.0.1:5353' }, direct: { hostLoopback: true, hostLoopbackPorts: [8080] }, tor: { mode: 'external', socks: '127.0.0.1:9050', control: '127.0.0.1:9051' } }), {});
    expect(configChanges(a, b).map((c) => c.key).sort()).toEqual(['direct.hostLoopback', 'direct.hostLoopbackPorts', 'dns.upstream', 'limits.udpPerVm', 'logLevel', 'tor']);
    expect(configChanges(a, b).find((c) => c.key === 'limits.udpPerVm')).toEqual({ key: 'limits.udpPerVm', from: 256, to: 9 });
  });

  it('reloads only what is safe while running; the rest needs a restart', () => {
    for (const k of ['logLevel', 'limits.tcpPerVm', 'limits.udpPerVm', 'limits.udpIdleMs', 'dns.upstream']) expect(RELOADABLE.has(k)).toBe(true);
    for (const k of ['stateDir', 'socket', 'socketGroup', 'direct.hostLoopback', 'direct.bind4', 'direct.connectTimeoutMs', 'tor']) expect(RELOADABLE.has(k)).toBe(false);
  });

  it('command-line flags still win over a reloaded file', () => {
    expect(loadConfig(file({ logLevel: 'debug' }), { logLevel: 'warn' }).logLevel).toBe('warn');
  });
});
