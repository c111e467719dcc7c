/**
 * Smoke test of test/support/link-topology.ts (and of `mvnet link`): two routers, each with its
 * own daemon and VM, joined by a link over a veth between the router namespaces. VM A pings VM B
 * across the link; both sides list their link.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDaemon, type Daemon } from '../support/daemon.js';
import { cleanupAll } from '../support/netns.js';
import { VM_A_IP, VM_B_IP, startLinkTopology, type LinkTopology } from '../support/link-topology.js';

afterAll(cleanupAll);

describe('link topology', () => {
  let t: LinkTopology<Daemon>;

  beforeAll(async () => {
    t = await startLinkTopology<Daemon>({ prefix: 'ltp', startDaemon: ({ netns }) => startDaemon({ netns }) });
  });

  it('VM A reaches VM B across the link, and back', async () => {
    await t.waitConnected('a');
    const ab = await t.ping('a', { count: 3 });
    expect(ab.stdout, ab.stderr).toMatch(/3 packets transmitted, 3 received/);
    expect(ab.stdout).toContain(`from ${VM_B_IP}`);
    const ba = await t.ping('b', { count: 3 });
    expect(ba.stdout, ba.stderr).toMatch(/3 packets transmitted, 3 received/);
    expect(ba.stdout).toContain(`from ${VM_A_IP}`);
  });

  it('carries a full-size frame (the network MTU, no fragments: -M do)', async () => {
    // 1500-byte IP packets: 1472 bytes of ICMP data.
    const r = await t.ping('a', { count: 2, size: 1472 });
    expect(r.stdout, r.stderr).toMatch(/2 packets transmitted, 2 received/);
  });

  it('both daemons list their link', async () => {
    for (const side of [t.a, t.b]) {
      const out = await side.daemon.cliOk(['link', 'list']);
      expect(out).toContain(side.linkName!);
    }
  });
});
