/**
 * `route --clear` is a route change like any other: the VM falls back to the default (none),
 * and a stream the old route allowed is reset by the time the CLI returns.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupAll, waitFor, withTimeout } from '../support/netns.js';
import { PORTS, UPSTREAM_IP, startTopology, type StackVm, type Topology } from '../support/stack-topology.js';
import type { RouteInfo } from '../../daemon/control/api.js';

afterAll(cleanupAll);

describe('route --clear while a stream runs', () => {
  let t: Topology;
  let vm: StackVm;

  beforeAll(async () => {
    t = await startTopology({ prefix: 'rcl' });
    await t.cli(['net', 'create', 'lan', '--subnet', '10.241.0.0/24']);
    vm = await t.addVm('c', 'lan');
    await t.cli(['route', '--direct', 'c']);
    await vm.configure();
  });

  it('resets the download the direct route allowed, and nothing new gets out', async () => {
    const url = `http://${UPSTREAM_IP}:${PORTS.http}/slow?total=2000000000&chunk=65536&ms=10&id=clear`;
    const curl = vm.ns.spawn(['curl', '-q', '--noproxy', '*', '-sS', '-o', '/dev/null', '--max-time', '120', url], { label: 'long curl' });
    await t.server.waitForLine((l) => l.includes('"ev":"slow-start"') && l.includes('"id":"clear"'), { timeoutMs: 15_000 });
    const tx0 = (await t.daemon.vm('c')).port.stats.txFrames;
    await waitFor(async () => (await t.daemon.vm('c')).port.stats.txFrames > tx0 + 50, { timeoutMs: 10_000, intervalMs: 100, what: 'download frames to the VM' });

    const shown = JSON.parse(await t.daemon.cliOk(['--json', 'route', '--clear', 'c'])) as RouteInfo;
    const acked = Date.now();
    expect(shown).toMatchObject({ vm: 'c', attached: true, route: { kind: 'none' } });

    const exit = await withTimeout(curl.exited, 5_000, 'curl to fail after route --clear');
    expect(exit.code, curl.stderr).not.toBe(0);
    expect(curl.stderr).toMatch(/reset|Recv failure|transfer closed|outstanding/i);
    expect(Date.now() - acked).toBeLessThan(2_000);
    const tcp = await vm.client<{ ok: boolean }>(['tcp', UPSTREAM_IP, PORTS.http, 3000]);
    expect(tcp.ok).toBe(false);
  });
});
