/**
 * The plugin registry's rules, in memory: names, no replacing a built-in kind or an earlier
 * registration, nothing left behind by a register() that throws, and a plugin port opened only
 * with options its own validate() returned.
 */
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { Registry } from '../../plugins/registry.js';
import type { JsonObject, PluginPortDriver, Port, PortContext } from '../../plugins/types.js';
import { MemPort } from '../support/mem-port.js';

const ctx: PortContext = { log: pino({ level: 'silent' }), mtu: 1500, restoring: false };

function driver(kind: string, seen: JsonObject[] = []): PluginPortDriver<{ label: string }> {
  return {
    kind,
    validate(o) {
      if (typeof o.label !== 'string') throw new Error('label must be a string');
      return { label: o.label };
    },
    key: (o) => o.label,
    open(o): Promise<Port> {
      seen.push(o);
      return Promise.resolve(new MemPort(o.label));
    },
  };
}

describe('Registry', () => {
  it('refuses built-in kinds, "plugin", bad names and a second registration of a kind', () => {
    const r = new Registry();
    for (const k of ['tap', 'tun', 'unix', 'unix-listen', 'dgram', 'fd', 'iface', 'vhost-user', 'plugin']) {
      expect(() => r.registerPortDriver(driver(k), 'x'), k).toThrow(/would replace a built-in kind/);
    }
    for (const k of ['', 'Null', '1abc', 'a b', 'x'.repeat(33), '../x']) expect(() => r.registerPortDriver(driver(k), 'x'), k).toThrow(/is invalid/);
    r.registerPortDriver(driver('null'), 'first');
    expect(() => r.registerPortDriver(driver('null'), 'second')).toThrow('port driver null is already registered by first');
    expect(r.pluginKinds()).toEqual(['null']);
  });

  it('a register() that throws leaves nothing; one that registers nothing is refused', async () => {
    const r = new Registry();
    await expect(
      r.register('bad', (api) => {
        api.portDriver(driver('half'));
        api.hookAdapter({ name: 'half', description: '', run: () => Promise.resolve(0) });
        throw new Error('then it fails');
      }),
    ).rejects.toThrow('then it fails');
    expect(r.pluginKinds()).toEqual([]);
    expect(r.hookAdapterNames()).toEqual([]);
    expect(r.plugins()).toEqual([]);
    await expect(r.register('empty', () => undefined)).rejects.toThrow('it registered nothing');
    const info = await r.register('good', (api) => api.portDriver(driver('half')));
    expect(info).toEqual({ source: 'good', portDrivers: ['half'], hookAdapters: [] });
    expect(r.plugins()).toEqual([info]);
  });

  it('opens a plugin port with the options its validate() returned, and keys by its key()', async () => {
    const seen: JsonObject[] = [];
    const r = new Registry();
    r.registerPortDriver(driver('null', seen), 'p');
    const d = r.pluginDriver('null')!;
    expect(d.key({ label: 'a', extra: 1 })).toBe('a');
    const port = await r.openPort({ kind: 'plugin', driver: 'null', options: { label: 'a', extra: 1 } }, ctx);
    expect(port.name).toBe('a');
    expect(seen).toEqual([{ label: 'a' }]);
    await expect(r.openPort({ kind: 'plugin', driver: 'null', options: {} }, ctx)).rejects.toThrow('label must be a string');
    await expect(r.openPort({ kind: 'plugin', driver: 'other', options: {} }, ctx)).rejects.toThrow('no port driver other is loaded');
    // The CLI's registry has no built-in drivers.
    await expect(r.openPort({ kind: 'unix', path: '/x' }, ctx)).rejects.toThrow('no built-in port drivers');
  });

  it('hook adapters: unique names', () => {
    const r = new Registry();
    r.registerHookAdapter({ name: 'mvnet', description: '', run: () => Promise.resolve(0) }, 'builtin');
    expect(() => r.registerHookAdapter({ name: 'mvnet', description: '', run: () => Promise.resolve(0) }, 'pkg')).toThrow('hook adapter mvnet is already registered by builtin');
    expect(r.hookAdapter('mvnet')?.source).toBe('builtin');
  });
});
