/**
 * SIGHUP applies `limits` to a running daemon: a VM that may open 256 UDP flows is cut to 5 by
 * a reloaded config, without a restart (the daemon is the same process before and after).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupAll, type ManagedProcess } from '../support/netns.js';
import { PORTS, UPSTREAM_IP, startTopology, type StackVm, type Topology } from '../support/stack-topology.js';

afterAll(cleanupAll);

describe('SIGHUP reloads limits', () => {
  let t: Topology;
  let vm: StackVm;
  const holders: ManagedProcess[] = [];

  beforeAll(async () => {
    t = await startTopology({ prefix: 'rld' });
    await t.cli(['net', 'create', 'lan', '--subnet', '10.214.0.0/24']);
    vm = await t.addVm('f', 'lan');
    await t.cli(['route', '--direct', 'f']);
    await vm.configure();
  });

  afterAll(async () => {
    for (const h of holders) await h.stop();
  });

  it('a lowered udpPerVm takes effect for new flows', async () => {
    const pid = t.daemon.pid;
    const file = join(t.dir, 'mvnet.json');
    const cfg = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
    writeFileSync(file, JSON.stringify({ ...cfg, limits: { udpPerVm: 5 } }));
    t.daemon.process.signal('SIGHUP');
    const line = await t.daemon.waitForLog((l) => l.msg === 'config reloaded');
    expect(line.changed).toEqual([{ key: 'limits.udpPerVm', from: 256, to: 5 }]);
    // 20 new flows, one datagram each to the echo server: only 5 are admitted, less any UDP
    // flow the VM still has open from before.
    const before = (await t.daemon.status()).vms.find((v) => v.name === 'f')?.flows?.udp ?? 0;
    const { proc, result } = await vm.clientHold<{ why: string; replies: number }>(['udpflood', UPSTREAM_IP, PORTS.udpEcho, 20, 5 - before, 1000, 10_000], 30_000);
    holders.push(proc);
    expect(result.replies).toBe(5 - before);
    expect(t.daemon.pid).toBe(pid);
    expect(t.daemon.running).toBe(true);
  });
});
