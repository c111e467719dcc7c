/**
 * The 50 MB transfers of the direct route, both ways, over a bad link: 5% loss, 5 ms delay, 25%
 * of frames (correlation 50%) sent without the delay so they overtake the others — netem's
 * `loss 5% delay 5ms reorder 25% 50%`, applied in both directions between the daemon's TAP and
 * the VM's kernel. The kernel here has no sch_netem (nor tc actions), so the impairment is a
 * userland relay with netem's semantics (test/support/stack-impair.ts). Bytes must arrive
 * intact within the test timeout; this is not a performance assertion.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupAll } from '../support/netns.js';
import { addImpairedVm, NETEM_LIKE, type ImpairedVm, type RelayStats } from '../support/stack-impair.js';
import { UPSTREAM_IP, startTopology, type Topology } from '../support/stack-topology.js';

const MB50 = 50 * 1024 * 1024;

afterAll(cleanupAll);

function delta(a: RelayStats, b: RelayStats): RelayStats {
  const d = (x: RelayStats['toVm'], y: RelayStats['toVm']): RelayStats['toVm'] => ({
    frames: y.frames - x.frames,
    dropped: y.dropped - x.dropped,
    immediate: y.immediate - x.immediate,
    delayed: y.delayed - x.delayed,
    writeRejected: y.writeRejected - x.writeRejected,
  });
  return { toVm: d(a.toVm, b.toVm), fromVm: d(a.fromVm, b.fromVm) };
}

describe('stack: 50 MB both ways over a lossy, delaying, reordering link', () => {
  let t: Topology;
  let vm: ImpairedVm;

  beforeAll(async () => {
    t = await startTopology({ prefix: 'sne' });
    await t.cli(['net', 'create', 'lan', '--subnet', '10.214.0.0/24']);
    vm = await addImpairedVm(t, 'n', 'lan', NETEM_LIKE);
    await t.cli(['route', '--direct', 'n']);
    await vm.configure();
  });

  it('downloads 50 MB intact', async () => {
    const want = await t.blobSha(MB50);
    const s0 = await vm.relayStats();
    const r = await vm.download(`http://${UPSTREAM_IP}/bytes/${MB50}`, { timeoutMs: 280_000 });
    const d = delta(s0, await vm.relayStats());
    console.log(`netem download: ${r.ms} ms, relay ${JSON.stringify(d)}`);
    expect(r.code, r.stderr).toBe(0);
    expect(r.bytes).toBe(MB50);
    expect(r.sha256).toBe(want);
    // The link really was bad in the direction that carried the data (and the ACKs).
    expect(d.toVm.dropped / d.toVm.frames).toBeGreaterThan(0.03);
    expect(d.toVm.immediate).toBeGreaterThan(0);
    expect(d.toVm.delayed).toBeGreaterThan(d.toVm.immediate);
    expect(d.fromVm.dropped).toBeGreaterThan(0);
  }, 300_000);

  it('uploads 50 MB intact', async () => {
    const s0 = await vm.relayStats();
    const r = await vm.upload(`http://${UPSTREAM_IP}/upload`, MB50, { timeoutMs: 280_000 });
    const d = delta(s0, await vm.relayStats());
    console.log(`netem upload: ${r.ms} ms, relay ${JSON.stringify(d)}`);
    expect(r.code, r.stderr).toBe(0);
    expect(r.server).toEqual({ bytes: MB50, sha256: r.sentSha256 });
    expect(d.fromVm.dropped / d.fromVm.frames).toBeGreaterThan(0.03);
    expect(d.fromVm.immediate).toBeGreaterThan(0);
    expect(d.toVm.dropped).toBeGreaterThan(0);
  }, 300_000);
});
