/**
 * A saved link whose listener cannot be opened at start (its port taken): the daemon starts
 * anyway, the link stays in the state file, `link list` shows it as failed with the reason, a
 * new link of that name is refused until it is removed, and `link remove` removes it.
 */
import { afterEach, describe, expect, it } from 'vitest';
import dgram from 'node:dgram';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { Links, type LinkTor } from '../../daemon/mesh/links.js';
import type { Network } from '../../daemon/switch/network.js';
import { fixedKeyPair } from '../support/links-lab.js';
import { keyToBase64, keyFromBase64 } from '../../daemon/links/keys.js';
import { LinkEngine } from '../../daemon/mesh/engine.js';
import { openUdp } from '../../daemon/carriers/udp.js';
import type { Member } from '../../daemon/switch/network.js';
import { vi } from 'vitest';

const cleanup: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

const tor: LinkTor = {
  ensure: () => {},
  socks: () => null,
  connected: () => false,
  publish: () => Promise.reject(new Error('no tor')),
  unpublish: () => Promise.resolve(),
  onConnected: () => {},
};

/** A Links on `dir` with the test's defaults (network "lan" on `sw`), closed after the test. */
function newLinks(dir: string, o: { log?: pino.Logger; save?: () => void; sw?: Network | null; tor?: LinkTor } = {}): Links {
  const sw = o.sw === undefined ? ({ attachTrunk: () => ({}) as Member, detach: () => {}, trunkMacs: () => 0 } as unknown as Network) : o.sw;
  const links = new Links({
    log: o.log ?? pino({ level: 'silent' }),
    stateDir: dir,
    tor: o.tor ?? tor,
    save: o.save ?? (() => {}),
    network: (n) => (sw !== null && n === 'lan' ? { sw, mtu: 1500 } : undefined),
    capture: { portAdded: () => {}, portRemoved: () => {} },
  });
  cleanup.push(() => links.close());
  return links;
}

describe('links: a saved link that cannot be restored', () => {
  it('is listed as failed with its reason, blocks its name, and can be removed', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mvnet-links-restore-'));
    cleanup.push(() => fs.rmSync(dir, { recursive: true, force: true }));
    // The port the saved link listens on is taken.
    const squatter = dgram.createSocket('udp4');
    await new Promise<void>((r) => squatter.bind(0, '127.0.0.1', () => r()));
    cleanup.push(() => new Promise<void>((r) => squatter.close(() => r())));
    const port = squatter.address().port;
    let saves = 0;
    const links = newLinks(dir, { save: () => saves++, sw: {} as Network });
    const peer = keyToBase64(fixedKeyPair('restore peer').publicKey);
    const spec = { name: 'l1', net: 'lan', peer, listen: `udp:127.0.0.1:${port}` };
    await links.restore({ specs: [spec], onions: {}, endpoints: {} });

    const listed = links.list().links;
    expect(listed).toHaveLength(1);
    expect(listed[0]).toMatchObject({ name: 'l1', net: 'lan', peer, state: 'failed', listen: `/ip4/127.0.0.1/udp/${port}` });
    expect(listed[0]!.error).toMatch(/cannot listen/);
    // Still saved, so a restart once the cause is fixed brings it back.
    expect(links.snapshot().specs).toEqual([spec]);
    // Its name is not free: a second spec of that name would be saved beside it.
    await expect(links.add(spec)).rejects.toThrow(/could not be restored.*remove it first/);
    expect(links.snapshot().specs).toHaveLength(1);
    // Nor is its peer: two saved links with one peer key would fight at the next start.
    await expect(links.add({ ...spec, name: 'l2', listen: undefined, endpoint: 'udp:127.0.0.1:9' })).rejects.toThrow(/already the peer of link l1/);
    expect(links.snapshot().specs).toHaveLength(1);

    const s0 = saves;
    await expect(links.remove('l1')).resolves.toEqual({ removed: 'l1' });
    expect(saves).toBeGreaterThan(s0);
    expect(links.list().links).toEqual([]);
    expect(links.snapshot().specs).toEqual([]);
    await expect(links.remove('l1')).rejects.toThrow(/no link named l1/);
  });
});

describe('links: a saved link whose cause of failure goes away', () => {
  it('is tried again by itself and comes up', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    cleanup.push(() => void vi.useRealTimers());
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mvnet-links-retry-'));
    cleanup.push(() => fs.rmSync(dir, { recursive: true, force: true }));
    const squatter = dgram.createSocket('udp4');
    await new Promise<void>((r) => squatter.bind(0, '127.0.0.1', () => r()));
    const port = squatter.address().port;
    let saves = 0;
    const links = newLinks(dir, { save: () => saves++ });
    const spec = { name: 'l1', net: 'lan', peer: keyToBase64(fixedKeyPair('retry peer').publicKey), listen: `udp:127.0.0.1:${port}` };
    await links.restore({ specs: [spec], onions: {}, endpoints: {} });
    expect(links.list().links[0]!.state).toBe('failed');
    // Still taken at the first retry: still failed.
    await vi.advanceTimersByTimeAsync(5000);
    expect(links.list().links[0]!.state).toBe('failed');
    await new Promise<void>((r) => squatter.close(() => r()));
    await vi.advanceTimersByTimeAsync(10_000);
    await vi.waitFor(() => expect(links.list().links[0]!.state).toBe('waiting'));
    expect(links.list().links).toHaveLength(1);
    expect(links.snapshot().specs).toEqual([spec]);
    expect(saves).toBeGreaterThan(0);
  });
});

describe('links: a remembered (roamed) endpoint', () => {
  it('does not replace the configured one: a stale or planted address cannot cut the link off', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mvnet-links-roamed-'));
    cleanup.push(() => fs.rmSync(dir, { recursive: true, force: true }));
    const log = pino({ level: 'silent' });
    // A black hole: a bound UDP socket that never answers.
    const hole = dgram.createSocket('udp4');
    await new Promise<void>((r) => hole.bind(0, '127.0.0.1', () => r()));
    cleanup.push(() => new Promise<void>((r) => hole.close(() => r())));
    const links = newLinks(dir, { log });
    // The far side only listens: it never dials us, so only our initiations can bring the link up.
    const far = fixedKeyPair('roamed far');
    const engine = new LinkEngine({ privateKey: far.privateKey, log });
    cleanup.push(() => engine.close());
    const c = await openUdp({ id: 'far', host: '127.0.0.1', port: 0, log });
    engine.addCarrier(c);
    engine.addPeer({ name: 'near', publicKey: keyFromBase64(links.publicKey())! }, { frames: () => {} });
    const peer = keyToBase64(far.publicKey);
    await links.restore({
      specs: [{ name: 'l1', net: 'lan', peer, endpoint: `udp:127.0.0.1:${c.localPort}` }],
      onions: {},
      endpoints: { [peer]: `udp:127.0.0.1:${hole.address().port}` },
    });
    await vi.waitFor(() => expect(links.list().links[0]?.state).toBe('established'), { timeout: 3000, interval: 20 });
    expect(links.list().links[0]?.endpoint).toBe(`/ip4/127.0.0.1/udp/${c.localPort}`);
    expect(links.snapshot().endpoints).toEqual({ [peer]: `udp:127.0.0.1:${c.localPort}` });
    // A removed link's peer address is not kept in the state.
    await links.remove('l1');
    expect(links.snapshot().endpoints).toEqual({});
  });
});

describe('links: the shared UDP socket links dial from', () => {
  it('is closed once the last link using it is removed', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mvnet-links-udpout-'));
    cleanup.push(() => fs.rmSync(dir, { recursive: true, force: true }));
    const links = newLinks(dir);
    const carriers = (): string[] => (links as unknown as { engine: LinkEngine }).engine.allCarriers().map((c) => c.id);
    await links.add({ name: 'l1', net: 'lan', peer: keyToBase64(fixedKeyPair('udp-out 1').publicKey), endpoint: 'udp:127.0.0.1:9' });
    await links.add({ name: 'l2', net: 'lan', peer: keyToBase64(fixedKeyPair('udp-out 2').publicKey), endpoint: 'udp:127.0.0.1:9' });
    expect(carriers()).toEqual(['udp-out']);
    await links.remove('l1');
    expect(carriers()).toEqual(['udp-out']);
    await links.remove('l2');
    expect(carriers()).toEqual([]);
    // And opened again for the next one.
    await links.add({ name: 'l3', net: 'lan', peer: keyToBase64(fixedKeyPair('udp-out 3').publicKey), endpoint: 'udp:127.0.0.1:9' });
    expect(carriers()).toEqual(['udp-out']);
  });
});

describe('links: an agent on an onion listener', () => {
  it('keeps its onion key when the daemon stops (the agent dials that address), drops it when detached', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mvnet-links-onion-'));
    cleanup.push(() => fs.rmSync(dir, { recursive: true, force: true }));
    const unpublished: string[] = [];
    const onionTor: LinkTor = {
      ...tor,
      connected: () => true,
      publish: () => Promise.resolve({ serviceId: 'a'.repeat(56), key: 'ED25519-V3:secret' }),
      unpublish: (id) => {
        unpublished.push(id);
        return Promise.resolve();
      },
    };
    const links = newLinks(dir, { tor: onionTor, sw: null });
    const spec = { kind: 'agent' as const, peer: keyToBase64(fixedKeyPair('onion agent').publicKey), listen: 'onion:7000' };
    const saved = { 'onion:7000': { serviceId: 'a'.repeat(56), key: 'ED25519-V3:secret' } };
    // The daemon stopping closes every VM's port with remove: false.
    const p1 = await links.openAgent('vm1', spec, 1500);
    expect(links.snapshot().onions).toEqual(saved);
    await p1.close({ remove: false });
    expect(links.snapshot().onions).toEqual(saved);
    expect(unpublished).toEqual([]);
    // Detached: the service and its key go.
    const p2 = await links.openAgent('vm1', spec, 1500);
    await p2.close({ remove: true });
    expect(links.snapshot().onions).toEqual({});
    expect(unpublished).toEqual(['a'.repeat(56)]);
  });
});
