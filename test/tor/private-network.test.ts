/**
 * Proves the private Tor network fixture (test/tor/private-network.ts, started once per run by
 * test/tor/global-setup.ts): the client is bootstrapped, the exit reaches the upstream (by
 * address and by name, through the upstream's DNS), the onion answers, big transfers are
 * intact, nothing in the tor namespace can reach anything but our own namespaces, and a Tor
 * client in another namespace (mvnet's embedded Tor) joins through `routerLink()` with
 * `torrcForClient()`.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { cleanupAll, createNetns, makeTempDir, run, waitFor, type RunResult } from '../support/netns.js';
import { TorControl } from '../support/tor-control.js';
import { SocksError, httpGetViaSocks } from '../support/tor-socks.js';
import { privateTor, torUpstream } from './context.js';
import { ONION_HELLO } from './private-network.js';
import { isPattern } from './test-servers.js';

const tor = privateTor();
const up = torUpstream();

afterAll(async () => {
  await cleanupAll();
});

/** curl through a SOCKS5 unix socket (curl ≥ 7.84: `socks5h://localhost/<absolute path>`). */
function curlViaSocks(socksPath: string, url: string, extra: string[] = []): Promise<RunResult> {
  return run(['curl', '-sS', '--max-time', '30', '--proxy', `socks5h://localhost${socksPath}`, ...extra, url], {
    check: false,
    timeoutMs: 40_000,
  });
}

describe('private Tor network', () => {
  it('has a bootstrapped client and a consensus listing every relay', async () => {
    const ctl = await TorControl.open(tor.client.controlPath, tor.client.cookiePath);
    try {
      expect(await ctl.bootstrapProgress()).toBe(100);
      const ns = await ctl.getInfo('ns/all');
      for (const r of tor.relays) {
        expect(ns, r.nickname).toMatch(new RegExp(`^r ${r.nickname} .* ${r.address.replace(/\./g, '\\.')} ${r.orPort} `, 'm'));
      }
    } finally {
      ctl.close();
    }
    expect(tor.relays.map((r) => r.role)).toEqual(['authority', 'relay', 'relay', 'exit']);
    expect(tor.torrcForClient()).toEqual(expect.arrayContaining(['TestingTorNetwork 1', ...tor.dirAuthorities]));
  });

  it('reaches the upstream through the exit with curl over the SOCKS unix socket, by address and by name', async () => {
    const byAddr = await curlViaSocks(tor.client.socksPath, up.url);
    expect(byAddr.stderr).toBe('');
    expect(byAddr.stdout).toBe(`${up.hello}\n`);
    // The name is resolved by the exit, through the upstream's DNS server (its only resolver).
    const byName = await curlViaSocks(tor.client.socksPath, up.nameUrl);
    expect(byName.stdout).toBe(`${up.hello}\n`);
  });

  it('makes the upstream see the exit relay as the client', async () => {
    const res = await httpGetViaSocks(tor.client.socksPath, `${up.nameUrl}whoami`);
    expect(res.status).toBe(200);
    expect(res.body.toString()).toBe(`${tor.exit.address}\n`);
    expect(up.exitAddress).toBe(tor.exit.address);
  });

  it('serves the onion through the client (Node SOCKS client and curl)', async () => {
    const res = await httpGetViaSocks(tor.client.socksPath, `http://${tor.onion.hostname}:${tor.onion.port}/`);
    expect(res.status).toBe(200);
    expect(res.body.toString()).toBe(`${ONION_HELLO}\n`);
    const c = await curlViaSocks(tor.client.socksPath, `http://${tor.onion.hostname}/`);
    expect(c.stdout).toBe(`${ONION_HELLO}\n`);
  });

  it('fails fast and cleanly for a name the upstream DNS does not know', async () => {
    const t0 = Date.now();
    const err = await httpGetViaSocks(tor.client.socksPath, 'http://no-such-host.test/').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SocksError);
    expect((err as SocksError).reply).toBe(4); // host unreachable: the exit got NXDOMAIN
    expect(Date.now() - t0).toBeLessThan(10_000);
  });

  it('carries a large download intact', async () => {
    const t0 = Date.now();
    const res = await httpGetViaSocks(tor.client.socksPath, `${up.url}large`, { timeoutMs: 60_000 });
    const ms = Date.now() - t0;
    expect(res.status).toBe(200);
    expect(res.body.length).toBe(up.largeBytes);
    expect(isPattern(res.body)).toBe(true);
    const mbps = ((up.largeBytes / Math.max(1, ms)) * 1000) / 1e6;
    console.log(`[tor] ${up.largeBytes} bytes through Tor in ${ms} ms (${mbps.toFixed(1)} MB/s)`);
  });

  it('keeps every tor inside a namespace that reaches only our own namespaces', async () => {
    // Every tor process runs in the tor namespace.
    const pids = (await run(['ip', 'netns', 'pids', tor.ns])).stdout.split(/\s+/).filter(Boolean).map(Number);
    for (const pid of [tor.client.pid, ...tor.relays.map((r) => r.pid)]) {
      expect(pids, `pid ${pid}`).toContain(pid);
      expect((await run(['ip', 'netns', 'identify', String(pid)])).stdout.trim()).toBe(tor.ns);
    }
    // No default route, no gateway at all: only connected routes of our own links.
    const routes = JSON.parse((await run(['ip', '-n', tor.ns, '-j', 'route', 'show', 'table', 'all'])).stdout) as {
      dst: string;
      gateway?: string;
      type?: string;
    }[];
    expect(routes.filter((r) => r.dst === 'default' || r.gateway !== undefined)).toEqual([]);
    // A lookup for an address outside finds no route (nothing is sent: this is a table lookup).
    const get = await run(['ip', '-n', tor.ns, 'route', 'get', '192.0.2.1'], { check: false });
    expect(get.code).not.toBe(0);
    expect(get.stderr).toMatch(/unreachable/i);
    // No forwarding, no IPv6.
    expect((await run(['ip', 'netns', 'exec', tor.ns, 'sysctl', '-n', 'net.ipv4.ip_forward'])).stdout.trim()).toBe('0');
    expect((await run(['ip', 'netns', 'exec', tor.ns, 'sysctl', '-n', 'net.ipv6.conf.all.disable_ipv6'])).stdout.trim()).toBe('1');
    // Every link but lo is a veth whose other end lives in one of our (mvt-) namespaces.
    const links = JSON.parse((await run(['ip', '-n', tor.ns, '-j', 'link', 'show'])).stdout) as { ifname: string; link_netnsid?: number }[];
    const ids = (await run(['ip', '-n', tor.ns, 'netns', 'list-id'])).stdout;
    for (const l of links) {
      if (l.ifname === 'lo') continue;
      expect(l.link_netnsid, l.ifname).toBeDefined();
      expect(ids, l.ifname).toMatch(new RegExp(`nsid ${l.link_netnsid} \\(iproute2 netns name: mvt-`));
    }
    // Every torrc has TestingTorNetwork and our authority only.
    for (const dataDir of [tor.client.dataDir, ...tor.relays.map((r) => r.dataDir)]) {
      const rc = (await run(['cat', join(dataDir, 'torrc')])).stdout;
      expect(rc).toMatch(/^TestingTorNetwork 1$/m);
      expect(rc.match(/^(DirAuthority|AlternateDirAuthority|FallbackDir|Bridge) .*$/gm)).toEqual(tor.dirAuthorities);
    }
  });

  it('lets a Tor client in a router namespace join through routerLink() with torrcForClient()', async () => {
    const routerNs = await createNetns('torrt');
    const link = await tor.routerLink(routerNs.name);
    // The router namespace reaches the relays, and nothing else: not the upstream.
    const toUpstream = await routerNs.exec(['ip', 'route', 'get', up.address], { check: false });
    expect(toUpstream.code).not.toBe(0);

    const dir = makeTempDir('torrt');
    const socksPath = join(dir, 'socks');
    const controlPath = join(dir, 'control');
    const torrc = [
      ...tor.torrcForClient(),
      `DataDirectory ${dir}`,
      `SocksPort unix:${socksPath}`,
      `ControlPort unix:${controlPath}`,
      'CookieAuthentication 1',
      `__OwningControllerProcess ${process.pid}`,
      'Log notice stdout',
    ];
    writeFileSync(join(dir, 'torrc'), `${torrc.join('\n')}\n`);
    writeFileSync(join(dir, 'defaults'), '');
    const t0 = Date.now();
    const proc = routerNs.spawn(['tor', '-f', join(dir, 'torrc'), '--defaults-torrc', join(dir, 'defaults')], { label: 'tor (router ns)' });
    const ctl = await waitFor(() => TorControl.open(controlPath, join(dir, 'control_auth_cookie')), {
      timeoutMs: 10_000,
      what: 'the control port of the tor in the router namespace',
    });
    try {
      await waitFor(async () => (await ctl.bootstrapProgress()) === 100, {
        timeoutMs: 45_000,
        intervalMs: 100,
        what: 'the tor in the router namespace to bootstrap',
      }).catch((err: Error) => {
        throw new Error(`${err.message}\n${proc.tail()}`);
      });
      console.log(`[tor] client in a router namespace bootstrapped in ${Date.now() - t0} ms (link ${link.routerAddr} → ${link.torAddr})`);
      const res = await httpGetViaSocks(socksPath, up.nameUrl);
      expect(res.body.toString()).toBe(`${up.hello}\n`);
      const onion = await httpGetViaSocks(socksPath, `http://${tor.onion.hostname}/`);
      expect(onion.body.toString()).toBe(`${ONION_HELLO}\n`);
      // Every connection the router namespace has is to a relay's ORPort or the DirPort.
      const allowed = new Set(tor.relays.flatMap((r) => [`${r.address}:${r.orPort}`, ...(r.dirPort ? [`${r.address}:${r.dirPort}`] : [])]));
      const ss = (await routerNs.exec(['ss', '-Htn', 'state', 'established'])).stdout;
      const peers = ss
        .split('\n')
        .filter(Boolean)
        .map((l) => l.trim().split(/\s+/).at(-1)!);
      expect(peers.length).toBeGreaterThan(0);
      for (const p of peers) expect(allowed, p).toContain(p);
    } finally {
      ctl.close();
      await proc.stop();
    }
  });
});
