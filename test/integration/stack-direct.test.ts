/**
 * Route direct: each VM flow becomes a host socket from the router namespace to the same
 * destination. Through the gateway's userland TCP/IP endpoint, with the VM's own kernel stack
 * and curl: DNS forwarded upstream, 50 MB each way intact, 500 connections open at once, a
 * half-close, a server's RST, and `--allow` limiting destinations (a forbidden port fails at
 * once instead of hanging).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupAll } from '../support/netns.js';
import { HALF_REPLY_BYTES, PORTS, ROUTER_IP, UPSTREAM_IP, UPSTREAM_NAME, startTopology, type StackVm, type Topology } from '../support/stack-topology.js';

const MB50 = 50 * 1024 * 1024;

afterAll(cleanupAll);

describe('stack: route direct', () => {
  let t: Topology;
  let vm: StackVm;

  beforeAll(async () => {
    t = await startTopology({ prefix: 'sdi' });
    await t.cli(['net', 'create', 'lan', '--subnet', '10.230.0.0/24']);
    vm = await t.addVm('d', 'lan');
    await t.cli(['route', '--direct', 'd']);
    await vm.configure();
  });

  it('resolves an upstream name through the gateway (forwarded to the upstream resolver)', async () => {
    const r = await vm.exec(['getent', 'ahostsv4', UPSTREAM_NAME]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.split('\n')[0]).toMatch(new RegExp(`^${UPSTREAM_IP.replace(/\./g, '\\.')}\\s`));
    // The upstream resolver got the query from the router namespace.
    expect(t.dnsmasq.stderr).toMatch(new RegExp(`query\\[A\\] ${UPSTREAM_NAME.replace(/\./g, '\\.')} from ${ROUTER_IP.replace(/\./g, '\\.')}`));
  });

  it('downloads 50 MB intact', async () => {
    const want = await t.blobSha(MB50);
    const r = await vm.download(`http://${UPSTREAM_NAME}/bytes/${MB50}`);
    expect(r.code, r.stderr).toBe(0);
    expect(r.bytes).toBe(MB50);
    expect(r.sha256).toBe(want);
  }, 180_000);

  it('uploads 50 MB intact', async () => {
    const r = await vm.upload(`http://${UPSTREAM_NAME}/upload`, MB50);
    expect(r.code, r.stderr).toBe(0);
    expect(r.server).toEqual({ bytes: MB50, sha256: r.sentSha256 });
  }, 180_000);

  it('500 connections open at once all succeed', async () => {
    const r = await vm.client<{ why: string; n: number; connected: number; ok: number; failed: number; errors: Record<string, number> }>(
      ['conns', UPSTREAM_IP, PORTS.http, '/hello', 500, 90_000],
      120_000,
    );
    expect(r.why).toBe('done');
    expect(r.connected).toBe(500);
    expect(r.errors).toEqual({});
    expect(r.ok).toBe(500);
  }, 150_000);

  it('half-close: the VM shuts its write side, the server still sends, the VM receives everything', async () => {
    const r = await vm.client<{
      ok: boolean;
      error?: string;
      sentBytes: number;
      sentSha256: string;
      head: { received: number; sha256: string; replyBytes: number; replySha256: string } | null;
      bodyBytes: number;
      bodySha256: string;
    }>(['halfclose', UPSTREAM_IP, PORTS.half, 300_000]);
    expect(r.ok, r.error).toBe(true);
    // The server saw all the VM sent, then the FIN...
    expect(r.head).toMatchObject({ received: r.sentBytes, sha256: r.sentSha256 });
    // ...and everything it sent after that reached the VM.
    expect(r.bodyBytes).toBe(HALF_REPLY_BYTES);
    expect(r.bodySha256).toBe(r.head?.replySha256);
  });

  it("a server's RST reaches the VM as a reset", async () => {
    const r = await vm.client<{ outcome: string; code?: string }>(['rst', UPSTREAM_IP, PORTS.rst]);
    expect(r).toMatchObject({ outcome: 'error', code: 'ECONNRESET' });
    expect(t.serverEvents().some((e) => e.ev === 'rst-sent')).toBe(true);
  });

  it('--allow limits destinations: the allowed port works, another fails at once', async () => {
    await t.cli(['route', '--direct', '--allow', `${UPSTREAM_IP}/32:${PORTS.http}`, 'd']);
    try {
      const ok = await vm.curl(['--max-time', '10', `http://${UPSTREAM_IP}/hello`]);
      expect(ok.code, ok.stderr).toBe(0);
      expect(ok.stdout).toBe('hello\n');
      const cap = await t.capture({ filter: `tcp port ${PORTS.half}` });
      const denied = await vm.client<{ ok: boolean; code?: string; ms: number }>(['tcp', UPSTREAM_IP, PORTS.half, 10_000]);
      const pkts = t.fromRouterTraffic(await cap.stop());
      expect(denied.ok).toBe(false);
      expect(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ECONNRESET']).toContain(denied.code);
      expect(denied.ms).toBeLessThan(3000);
      expect(pkts.map((p) => p.line)).toEqual([]);
      // UDP to a port the rule does not name does not leave either.
      const udp = await vm.client<{ ok: boolean }>(['udp', UPSTREAM_IP, PORTS.udpEcho, 1500]);
      expect(udp.ok).toBe(false);
    } finally {
      await t.cli(['route', '--direct', 'd']);
    }
    // Without the allow-list the same destinations work again.
    const udp = await vm.client<{ ok: boolean; echo?: string }>(['udp', UPSTREAM_IP, PORTS.udpEcho, 3000]);
    expect(udp).toMatchObject({ ok: true, echo: 'hello-udp' });
    const tcp = await vm.client<{ ok: boolean }>(['tcp', UPSTREAM_IP, PORTS.half, 5000]);
    expect(tcp.ok).toBe(true);
  });
});
