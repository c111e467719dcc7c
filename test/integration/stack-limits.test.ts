/**
 * Per-VM flow limits (`limits.tcpPerVm`, `limits.udpPerVm` in the daemon's config file). One VM
 * floods: 200 connections to an upstream port whose SYNs vanish (a tc drop filter in the
 * upstream namespace), so every admitted flow stays pending in the daemon; the 50 the limit
 * admits stay pending, the excess gets a RST at once (ECONNREFUSED in the VM). Then 60 UDP
 * flows to an echo server: exactly the 20 admitted get their echo. Meanwhile a second VM on the
 * same network still downloads intact. The limit is visible to the operator (status or logs).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupAll, waitFor, type ManagedProcess } from '../support/netns.js';
import { PORTS, UPSTREAM_IP, startTopology, type StackVm, type Topology } from '../support/stack-topology.js';

afterAll(cleanupAll);

const TCP_LIMIT = 50;
const UDP_LIMIT = 20;
const CONNECT_TIMEOUT_MS = 8_000;

interface FloodResult {
  why: string;
  n: number;
  refused: number;
  connected: number;
  pending: number;
  otherErrors: Record<string, number>;
  ms: number;
}

describe('stack: per-VM flow limits', () => {
  let t: Topology;
  let flooder: StackVm;
  let good: StackVm;
  const holders: ManagedProcess[] = [];
  /** Daemon log lines before the floods (start-up, attach, routes) are not evidence. */
  let logStart = 0;

  beforeAll(async () => {
    t = await startTopology({
      prefix: 'sli',
      config: { limits: { tcpPerVm: TCP_LIMIT, udpPerVm: UDP_LIMIT, udpIdleMs: 30_000 }, direct: { connectTimeoutMs: CONNECT_TIMEOUT_MS } },
    });
    await t.cli(['net', 'create', 'lan', '--subnet', '10.213.0.0/24']);
    flooder = await t.addVm('f', 'lan');
    good = await t.addVm('g', 'lan');
    await t.cli(['route', '--direct', 'f']);
    await t.cli(['route', '--direct', 'g']);
    await flooder.configure();
    await good.configure();
    await t.blackholePort(PORTS.blackhole);
    logStart = t.daemon.logs.length;
  });

  afterAll(async () => {
    for (const h of holders) await h.stop();
  });

  it(`a SYN flood hits tcpPerVm=${TCP_LIMIT}: the excess is reset at once, the admitted stay pending`, async () => {
    const n = 200;
    const { proc, result } = await flooder.clientHold<FloodResult>(['flood', UPSTREAM_IP, PORTS.blackhole, n, n - TCP_LIMIT, 15_000], 30_000);
    holders.push(proc);
    expect(result.why).toBe('target');
    expect(result.otherErrors).toEqual({});
    expect(result.connected).toBe(0);
    expect(result.refused).toBe(n - TCP_LIMIT);
    expect(result.pending).toBe(TCP_LIMIT);
    expect(result.ms).toBeLessThan(5_000);
    // A further connection from the same VM, even to an open port, is over the limit too.
    const more = await flooder.client<{ ok: boolean; code?: string }>(['tcp', UPSTREAM_IP, PORTS.http, 5000]);
    expect(more).toMatchObject({ ok: false, code: 'ECONNREFUSED' });
  });

  it('while the flood is held, a second VM on the same network downloads intact', async () => {
    const size = 8 * 1024 * 1024;
    const want = await t.blobSha(size);
    const r = await good.download(`http://${UPSTREAM_IP}/bytes/${size}`, { timeoutMs: 60_000 });
    expect(r.code, r.stderr).toBe(0);
    expect(r.sha256).toBe(want);
    const hello = await good.client<{ why: string; ok: number }>(['conns', UPSTREAM_IP, PORTS.http, '/hello', 40, 30_000]);
    expect(hello).toMatchObject({ why: 'done', ok: 40 });
  }, 90_000);

  it('the TCP limit is visible to the operator: status counts every reset, the log says so once', async () => {
    const status = await t.daemon.status();
    const f = status.vms.find((v) => v.name === 'f')!;
    const g = status.vms.find((v) => v.name === 'g')!;
    // The 150 flood connections over the limit and the one more after it: each was a limit RST.
    expect(f.flows!.tcpLimit, JSON.stringify(f.flows)).toBeGreaterThanOrEqual(200 - TCP_LIMIT + 1);
    expect(g.flows?.tcpLimit).toBe(0);
    const logged = t.daemon.logs.slice(logStart).filter((l) => l.vm === 'f' && l.table === 'tcp' && l.limit === TCP_LIMIT && /TCP connection limit reached/.test(l.msg ?? ''));
    // Rate-limited: one line for the flood, not one per reset.
    expect(logged, JSON.stringify(t.daemon.logs.slice(logStart).map((l) => l.msg))).toHaveLength(1);
  });

  it('the flooder recovers once its pending flows are gone', async () => {
    for (const h of holders.splice(0)) await h.stop();
    // The daemon gives up its pending host connects after direct.connectTimeoutMs.
    await waitFor(
      async () => {
        const r = await flooder.client<{ ok: boolean }>(['tcp', UPSTREAM_IP, PORTS.http, 2000]);
        return r.ok;
      },
      { timeoutMs: CONNECT_TIMEOUT_MS + 15_000, intervalMs: 500, what: 'the flooder to connect again' },
    );
  }, 40_000);

  it(`a UDP flood hits udpPerVm=${UDP_LIMIT}: only the admitted flows get answers, the other VM is unaffected`, async () => {
    const n = 60;
    const { proc, result } = await flooder.clientHold<{ why: string; n: number; replies: number }>(
      ['udpflood', UPSTREAM_IP, PORTS.udpEcho, n, UDP_LIMIT, 1000, 10_000],
      30_000,
    );
    holders.push(proc);
    expect(result.why).toBe('settled');
    expect(result.replies).toBe(UDP_LIMIT);
    // Another flow of the flooder is over the limit...
    const more = await flooder.client<{ ok: boolean }>(['udp', UPSTREAM_IP, PORTS.udpEcho, 1000]);
    expect(more.ok).toBe(false);
    // ...while the other VM's UDP and DNS work.
    const udp = await good.client<{ ok: boolean; echo?: string }>(['udp', UPSTREAM_IP, PORTS.udpEcho, 3000]);
    expect(udp).toMatchObject({ ok: true, echo: 'hello-udp' });
    const dns = await good.client<{ ok: boolean; addresses?: string[] }>(['dns', 'www.example.test', 'A']);
    expect(dns).toMatchObject({ ok: true, addresses: [UPSTREAM_IP] });
  });

  it('the UDP limit is visible to the operator: status counts every dropped flow, the log says so once', async () => {
    const status = await t.daemon.status();
    const f = status.vms.find((v) => v.name === 'f')!;
    const g = status.vms.find((v) => v.name === 'g')!;
    // The flood's 60 flows less the 20 admitted, and the one more after it (retries of a refused
    // flow count again, so at least that many).
    expect(f.flows!.udpLimit, JSON.stringify(f.flows)).toBeGreaterThanOrEqual(60 - UDP_LIMIT + 1);
    expect(g.flows?.udpLimit).toBe(0);
    const logged = t.daemon.logs.slice(logStart).filter((l) => l.vm === 'f' && l.table === 'udp' && l.limit === UDP_LIMIT && /UDP flow limit reached/.test(l.msg ?? ''));
    expect(logged, JSON.stringify(t.daemon.logs.slice(logStart).map((l) => l.msg))).toHaveLength(1);
  });
});
