/**
 * A live route change: a long download runs through route direct; `route --none` is issued
 * while it runs. The change itself counts nothing as dropped or refused. The CLI returns only
 * once the change is live, so from that moment:
 *   - the VM's stream is reset (curl fails with a reset/receive error) promptly;
 *   - no new packet from the router namespace carries anything to the upstream: the capture on
 *     the upstream link shows, after the CLI's return, nothing from the router but RSTs answering
 *     the server's segments that were already in flight for the torn-down socket;
 *   - new TCP, UDP and DNS attempts from the VM cause no packet at all on the upstream link.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupAll, waitFor, withTimeout } from '../support/netns.js';
import { PORTS, UPSTREAM_IP, UPSTREAM_NAME, startTopology, type StackVm, type Topology } from '../support/stack-topology.js';

afterAll(cleanupAll);

function tcpFlags(text: string): string | undefined {
  return /Flags \[([^\]]*)\]/.exec(text)?.[1];
}

function tcpPayloadLength(text: string): number {
  const m = /Flags \[[^\]]*\].*?, length (\d+)/.exec(text);
  return m ? Number(m[1]) : -1;
}

describe('stack: route change while a stream runs', () => {
  let t: Topology;
  let vm: StackVm;

  beforeAll(async () => {
    t = await startTopology({ prefix: 'src' });
    await t.cli(['net', 'create', 'lan', '--subnet', '10.240.0.0/24']);
    vm = await t.addVm('c', 'lan');
    await t.cli(['route', '--direct', 'c']);
    await vm.configure();
  });

  /** Every drop/refusal counter of the network's router and of the VM's flows. */
  async function dropCounters(): Promise<{ router: Record<string, number>; flows: unknown }> {
    const net = await t.daemon.network('lan');
    const router = Object.fromEntries(Object.entries(net.router).filter(([k]) => !/Opened$|^reassembled$/.test(k)));
    const f = (await t.daemon.vm('c')).flows;
    return { router, flows: f === null ? null : { tcpLimit: f.tcpLimit, udpLimit: f.udpLimit, tcpRefused: f.tcpRefused, udpDropped: f.udpDropped } };
  }

  it('route --none resets the running download and nothing more leaves after the CLI returns', async () => {
    // A paced download that would take minutes: 64 KiB every 10 ms, 2 GB.
    const url = `http://${UPSTREAM_IP}:${PORTS.http}/slow?total=2000000000&chunk=65536&ms=10&id=long`;
    const curl = vm.ns.spawn(['curl', '-q', '--noproxy', '*', '-sS', '-o', '/dev/null', '--max-time', '120', url], { label: 'long curl' });
    await t.server.waitForLine((l) => l.includes('"ev":"slow-start"') && l.includes('"id":"long"'), { timeoutMs: 15_000 });
    // Bytes are flowing: the VM's port is sending it frames.
    const tx0 = (await t.daemon.vm('c')).port.stats.txFrames;
    await waitFor(async () => (await t.daemon.vm('c')).port.stats.txFrames > tx0 + 100, {
      timeoutMs: 10_000,
      intervalMs: 100,
      what: 'download frames to the VM',
    });

    const cap = await t.capture();
    const countersBefore = await dropCounters();
    const t0 = Date.now();
    await t.cli(['route', '--none', 'c']);
    const acked = Date.now();

    // The stream is reset promptly after the CLI returned.
    const exit = await withTimeout(curl.exited, 5_000, 'curl to fail after the route change');
    const failedAt = Date.now();
    // The flows the change reset are not drops: no counter moved (they once did: the recheck
    // asked the policy, which counted).
    expect(await dropCounters()).toEqual(countersBefore);
    expect(exit.code, curl.stderr).not.toBe(0);
    // 56: failure receiving network data (connection reset); 18: transfer closed with data outstanding.
    expect([18, 56], curl.stderr).toContain(exit.code);
    expect(curl.stderr).toMatch(/reset|Recv failure|transfer closed|outstanding/i);
    expect(failedAt - acked).toBeLessThan(2_000);
    // The server's side was torn down too (not left streaming into a dead socket).
    const closed = await t.server.waitForLine((l) => l.includes('"ev":"slow-closed"') && l.includes('"id":"long"'), { timeoutMs: 5_000 });
    expect(JSON.parse(closed)).toMatchObject({ complete: false });

    // New attempts after the change: refused locally, nothing reaches the upstream.
    const tcp = await vm.client<{ ok: boolean; code?: string }>(['tcp', UPSTREAM_IP, PORTS.http, 3000]);
    expect(tcp.ok).toBe(false);
    const udp = await vm.client<{ ok: boolean }>(['udp', UPSTREAM_IP, PORTS.udpEcho, 1000]);
    expect(udp.ok).toBe(false);
    const dns = await vm.client<{ ok: boolean; code?: string }>(['dns', UPSTREAM_NAME, 'A']);
    expect(dns).toMatchObject({ ok: false, code: 'EREFUSED' });

    const pkts = t.fromRouterTraffic(await cap.stop());
    const before = pkts.filter((p) => p.ts * 1000 < t0);
    const after = pkts.filter((p) => p.ts * 1000 > acked);
    // The capture did see the download until the change (the link was watched).
    expect(before.length + pkts.filter((p) => p.ts * 1000 >= t0 && p.ts * 1000 <= acked).length).toBeGreaterThan(0);
    // After the CLI returned: only RSTs without payload (the kernel answering the server's
    // in-flight segments to the socket the daemon reset), nothing new.
    const notRst = after.filter((p) => !(tcpFlags(p.text)?.startsWith('R') && tcpPayloadLength(p.text) === 0));
    expect(notRst.map((p) => p.line), `router packets after the CLI returned (acked at ${acked / 1000})`).toEqual([]);
    const rsts = after.filter((p) => tcpFlags(p.text)?.startsWith('R'));
    for (const p of rsts) expect(p.text).toMatch(new RegExp(`10\\.200\\.0\\.1\\.\\d+ > ${UPSTREAM_IP.replace(/\./g, '\\.')}\\.${PORTS.http}: Flags \\[R`));
  });

  it('a change to --via (whose flows the mvnet gateway drops) resets the stream and counts no drop', async () => {
    await t.cli(['route', '--direct', 'c']);
    await t.addVm('fw', 'lan', { ip: '10.240.0.50' });
    const url = `http://${UPSTREAM_IP}:${PORTS.http}/slow?total=2000000000&chunk=65536&ms=10&id=via`;
    const curl = vm.ns.spawn(['curl', '-q', '--noproxy', '*', '-sS', '-o', '/dev/null', '--max-time', '120', url], { label: 'via curl' });
    await t.server.waitForLine((l) => l.includes('"ev":"slow-start"') && l.includes('"id":"via"'), { timeoutMs: 15_000 });
    const countersBefore = await dropCounters();
    await t.cli(['route', '--via', 'fw', 'c']);
    // The recheck once built the new route's verdict through the counting policy: viaDropped grew.
    expect(await dropCounters()).toEqual(countersBefore);
    const exit = await withTimeout(curl.exited, 5_000, 'curl to fail after the route change');
    expect(exit.code, curl.stderr).not.toBe(0);
  });
});
