/**
 * Onion services and onion discovery with the daemon's embedded Tor:
 *
 * - `mvnet onion expose vmx 80` publishes the VM's HTTP server (busybox httpd in its namespace)
 *   as an onion service; the private network's own client reaches it through the network (its
 *   SOCKS unix socket), the descriptor having gone through the network's HSDirs;
 * - with `--persist`, the address is the same after the daemon is SIGKILLed (with its tor: the
 *   whole process group, as a crash of the service would) and started again on the same state
 *   directory, and it answers again; the key is kept in the state file (0600), never printed or
 *   logged; a service without --persist is gone after the restart;
 * - `mvnet onion list --json` shows every source: the private network's onion from the
 *   HiddenServiceDir parent given in `tor.hiddenServiceDirs` (hidden-service-dir), a named one
 *   (alias), the exposed ones (published, and tor's own onions/detached), and one the VM resolved
 *   (resolved); `onion discover` reports changes; `onion unexpose` removes the service.
 */
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupAll, waitFor } from '../support/netns.js';
import { TorControl } from '../support/tor-control.js';
import { SocksError, httpGetViaSocks } from '../support/tor-socks.js';
import { privateTor } from './context.js';
import { TorRouter, type TorVm } from './mvnet-harness.js';
import type { OnionDiscovery, OnionEndpoint, OnionExposeInfo, OnionUnexposeResult } from '../../daemon/control/api.js';

const tor = privateTor();
const HELLO = 'hello from vmx behind an onion';

afterAll(cleanupAll);

let attempt = 0;

/**
 * GET through the private network's client, retried (fresh isolation each time) while the
 * client cannot use the descriptor yet (e.g. a cached one whose introduction points died with
 * the old tor). Resolves with the body.
 */
async function fetchViaClient(url: string, timeoutMs: number): Promise<{ body: string; attempts: number; errors: string[] }> {
  const errors: string[] = [];
  let n = 0;
  const body = await waitFor(
    async () => {
      n++;
      try {
        const res = await httpGetViaSocks(tor.client.socksPath, url, { timeoutMs: 20_000, auth: { user: `onion-test-${process.pid}-${attempt++}`, pass: 'x' } });
        return res.status === 200 ? res.body.toString() : undefined;
      } catch (e) {
        errors.push(e instanceof SocksError ? `socks 0x${e.reply.toString(16)}` : (e as Error).message);
        return undefined;
      }
    },
    { timeoutMs, intervalMs: 250, what: `GET ${url} through the private client` },
  ).catch((e: Error) => {
    throw new Error(`${e.message}; errors: ${errors.join('; ')}`);
  });
  return { body, attempts: n, errors };
}

/** HS_DESC events of the daemon's tor; resolves once every upload of `id` has finished with one UPLOADED. */
class HsDescWatch {
  readonly events: string[][] = [];
  private constructor(readonly ctl: TorControl) {}
  static async open(target: { path: string; cookie: string }): Promise<HsDescWatch> {
    const ctl = await TorControl.open(target.path, target.cookie);
    const w = new HsDescWatch(ctl);
    ctl.onEvent((e) => {
      if (e.type === 'HS_DESC') w.events.push(e.words);
    });
    await ctl.setEvents(['HS_DESC']);
    return w;
  }
  uploaded(onion: string, timeoutMs = 30_000): Promise<true> {
    const id = onion.replace(/\.onion$/, '');
    return waitFor(
      () => {
        const mine = this.events.filter((w) => w[1] === id);
        const started = new Set(mine.filter((w) => w[0] === 'UPLOAD').map((w) => w[3]));
        const done = new Set(mine.filter((w) => w[0] === 'UPLOADED' || w[0] === 'FAILED').map((w) => w[3]));
        return mine.some((w) => w[0] === 'UPLOADED') && [...started].every((h) => done.has(h)) ? (true as const) : undefined;
      },
      { timeoutMs, intervalMs: 50, what: `the descriptor upload of ${onion}` },
    );
  }
  close(): void {
    this.ctl.close();
  }
}

describe('onion services published for a VM, and onion discovery', () => {
  let r: TorRouter;
  let vmx: TorVm;
  let hs: HsDescWatch;
  let plain: OnionExposeInfo;
  let persisted: OnionExposeInfo;

  beforeAll(async () => {
    r = await TorRouter.create({ prefix: 'ton', mode: 'embedded', tor: { hiddenServiceDirs: [tor.client.dataDir] } });
    await r.cli(['net', 'create', 'lan', '--subnet', '10.236.0.0/24']);
    vmx = await r.addVm('vmx', 'lan');
    await r.cli(['route', '--all-tor', 'vmx']);
    await vmx.configure();
    // The VM's web server: busybox httpd on port 80 in its namespace.
    const docroot = join(r.dir, 'www');
    mkdirSync(docroot, { recursive: true });
    writeFileSync(join(docroot, 'index.html'), `${HELLO}\n`);
    vmx.ns.spawn(['busybox', 'httpd', '-f', '-p', '80', '-h', docroot], { label: 'httpd in vmx' });
    await waitFor(async () => (await vmx.exec(['ss', '-Hltn', 'sport = :80'])).stdout.includes(':80'), { timeoutMs: 10_000, what: 'httpd to listen' });
    await r.waitTorReady(90_000);
    hs = await HsDescWatch.open(r.controlTarget());
  }, 150_000);

  afterAll(() => hs?.close());

  it("onion expose vmx 80: the private network's client reaches the VM's server by the new onion", async () => {
    plain = await r.cliJson<OnionExposeInfo>(['onion', 'expose', 'vmx', '80']);
    expect(plain).toMatchObject({ vm: 'vmx', port: 80, onionPort: 80, persist: false });
    expect(plain.address).toMatch(/^[a-z2-7]{56}\.onion$/);
    await hs.uploaded(plain.address);
    const t0 = Date.now();
    const got = await fetchViaClient(`http://${plain.address}/`, 45_000);
    console.log(`[onion] ${plain.address} answered through the private client in ${Date.now() - t0} ms (${got.attempts} attempts) ${got.errors.join('; ')}`);
    expect(got.body).toBe(`${HELLO}\n`);
    // Exposing the same again is idempotent.
    expect(await r.cliJson<OnionExposeInfo>(['onion', 'expose', 'vmx', '80'])).toMatchObject({ address: plain.address });
  }, 90_000);

  it('onion list --json shows hidden-service-dir, alias, published, tor and resolved entries', async () => {
    await r.cli(['onion', 'add', 'fixture', tor.onion.hostname]);
    // The VM resolves the private network's onion (an automap address through the gateway).
    const g = await vmx.exec(['getent', 'ahostsv4', tor.onion.hostname]);
    expect(g.code, g.stderr).toBe(0);
    const list = await r.onionList();
    const msg = JSON.stringify(list, null, 1);
    const find = (source: OnionEndpoint['source'], address: string): OnionEndpoint | undefined => list.find((e) => e.source === source && e.address === address);
    expect(find('hidden-service-dir', tor.onion.hostname)?.detail, msg).toBe(join(tor.client.dataDir, 'hs'));
    expect(find('alias', tor.onion.hostname)?.detail, msg).toBe('fixture.onion.mvnet');
    expect(find('published', plain.address)?.detail, msg).toMatch(/^vmx:80/);
    expect(find('tor', plain.address), msg).toBeDefined();
    const resolved = find('resolved', tor.onion.hostname);
    expect(resolved?.detail, msg).toBe('vmx');
    expect(Date.parse(resolved!.at!)).toBeGreaterThan(Date.now() - 120_000);
    // discover: a first call reports everything as new, a second one nothing.
    const d1 = await r.cliJson<OnionDiscovery>(['onion', 'discover']);
    expect(d1.total).toBe(list.length);
    const d2 = await r.cliJson<OnionDiscovery>(['onion', 'discover']);
    expect(d2).toMatchObject({ added: [], removed: [], total: list.length });
  });

  it('--persist: the same address after kill -9 and restart on the same state dir, and it answers', async () => {
    persisted = await r.cliJson<OnionExposeInfo>(['onion', 'expose', 'vmx', '80', '--onion-port', '81', '--persist']);
    expect(persisted).toMatchObject({ vm: 'vmx', port: 80, onionPort: 81, persist: true });
    await hs.uploaded(persisted.address);
    expect((await fetchViaClient(`http://${persisted.address}:81/`, 45_000)).body).toBe(`${HELLO}\n`);
    // The key is in the state file, readable by root only, and nowhere in the logs.
    const stateFile = join(r.stateDir, 'state.json');
    expect(statSync(stateFile).mode & 0o077).toBe(0);
    const state = JSON.parse(readFileSync(stateFile, 'utf8')) as { tor?: { published?: { serviceId: string; key?: string; persist: boolean }[] } };
    const saved = state.tor?.published?.find((p) => `${p.serviceId}.onion` === persisted.address);
    expect(saved?.key, JSON.stringify(state.tor)).toMatch(/^[A-Za-z0-9+/=]{40,}$/);
    expect(state.tor?.published?.some((p) => `${p.serviceId}.onion` === plain.address)).toBe(false);
    const logs = JSON.stringify(r.daemon.allLogs);
    expect(logs.includes(saved!.key!)).toBe(false);

    // Crash: SIGKILL to the daemon's process group (its tor goes with it), then start again.
    hs.close();
    await r.daemon.kill('SIGKILL');
    await waitFor(() => r.embeddedTorPid() === undefined, { timeoutMs: 10_000, what: 'the embedded tor to be gone' });
    const t0 = Date.now();
    await r.daemon.start();
    await r.waitTorReady(90_000);
    hs = await HsDescWatch.open(r.controlTarget());
    const list = await r.onionList();
    const published = list.filter((e) => e.source === 'published');
    expect(published.map((e) => e.address), JSON.stringify(list)).toEqual([persisted.address]);
    expect(published[0]!.detail).toMatch(/persistent/);
    expect(list.some((e) => e.address === plain.address), 'the non-persistent service is gone').toBe(false);
    expect((await r.torStatus()).published).toBe(1);
    const got = await fetchViaClient(`http://${persisted.address}:81/`, 90_000);
    console.log(`[onion] persisted ${persisted.address} answered again ${Date.now() - t0} ms after the restart began (${got.attempts} attempts) ${got.errors.join('; ')}`);
    expect(got.body).toBe(`${HELLO}\n`);
    expect(JSON.stringify(r.daemon.allLogs).includes(saved!.key!)).toBe(false);
  }, 180_000);

  it('onion unexpose vmx removes the service from the list and from tor', async () => {
    const res = await r.cliJson<OnionUnexposeResult>(['onion', 'unexpose', 'vmx']);
    expect(res.removed).toEqual([persisted.address]);
    const list = await r.onionList();
    expect(list.filter((e) => e.address === persisted.address), JSON.stringify(list)).toEqual([]);
    expect((await r.torStatus()).published).toBe(0);
    const again = await r.daemon.cli(['onion', 'unexpose', 'vmx']);
    expect(again.code).not.toBe(0);
    expect(again.stderr).toMatch(/publishes no onion service/);
  });
});
