/**
 * Offloads through the direct route with a `--vnet-hdr` TAP at MTU 1500: the VM's kernel has TSO
 * and checksum offload on (the daemon turns them on with TUNSETOFFLOAD), so it sends TCP
 * super-frames and takes them whole. 50 MB each way must arrive intact, and the daemon's
 * counters prove super-frames crossed both ways: GSO frames the endpoint sent (tcpSuperOut,
 * many segments per frame) and VM segments longer than the MSS it took whole (tcpSuperIn). A
 * capture on the VM's TAP (inside its namespace) sees frames far larger than the MTU arriving.
 * A second VM without the header on the same network downloads intact too (plain frames).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupAll } from '../support/netns.js';
import { UPSTREAM_IP6, UPSTREAM_NAME, startTopology, type StackVm, type Topology } from '../support/stack-topology.js';
import { waitFor } from '../support/netns.js';
import { startCapture } from '../support/capture-client.js';
import { readPcapng } from '../support/pcapng-read.js';

const MB50 = 50 * 1024 * 1024;

afterAll(cleanupAll);

describe('stack: TSO super-frames to and from a --vnet-hdr VM', () => {
  let t: Topology;
  let vm: StackVm;
  let plain: StackVm;

  beforeAll(async () => {
    t = await startTopology({ prefix: 'sof' });
    await t.cli(['net', 'create', 'lan', '--subnet', '10.231.0.0/24']);
    vm = await t.addVm('o', 'lan', { vnetHdr: true });
    plain = await t.addVm('p', 'lan');
    await t.cli(['route', '--direct', 'o']);
    await t.cli(['route', '--direct', 'p']);
    await vm.configure();
    await plain.configure();
  });

  async function counters(): Promise<Record<string, number>> {
    return (await t.daemon.network('lan')).router;
  }

  it('the VM side of the TAP has TSO and checksum offload on', async () => {
    const r = await vm.ns.exec(['ethtool', '-k', vm.ifname]);
    expect(r.stdout).toMatch(/tcp-segmentation-offload: on/);
    expect(r.stdout).toMatch(/tx-checksumming: on/);
  });

  it('downloads 50 MB intact through GSO super-frames', async () => {
    const want = await t.blobSha(MB50);
    const before = await counters();
    const cap = await t.capture({ ns: vm.ns, ifname: vm.ifname, filter: 'tcp and src port 80 and greater 3000' });
    const r = await vm.download(`http://${UPSTREAM_NAME}/bytes/${MB50}`);
    const big = await cap.stop();
    expect(r.code, r.stderr).toBe(0);
    expect(r.bytes).toBe(MB50);
    expect(r.sha256).toBe(want);
    const after = await counters();
    const frames = after.tcpSuperOut! - before.tcpSuperOut!;
    const segs = after.tcpOffloadSegments! - before.tcpOffloadSegments!;
    const writes = after.tcpOffloadFrames! - before.tcpOffloadFrames!;
    console.info(`offload download: ${segs} segments in ${writes} frames (${(segs / writes).toFixed(1)} per write), ${frames} GSO; ${big.length} frames > 3000 bytes seen on the TAP`);
    // 50 MB is ~36,000 segments of 1460: most of them went in GSO frames, several per write.
    expect(frames).toBeGreaterThan(100);
    expect(segs).toBeGreaterThan(30_000);
    expect(segs / writes).toBeGreaterThan(3);
    // The VM's kernel saw frames much larger than the MTU (the capture reads before segmentation).
    expect(big.length).toBeGreaterThan(50);
  }, 180_000);

  it('uploads 50 MB intact, the VM’s TSO frames taken whole', async () => {
    const before = await counters();
    const r = await vm.upload(`http://${UPSTREAM_NAME}/upload`, MB50);
    expect(r.code, r.stderr).toBe(0);
    expect(r.server).toEqual({ bytes: MB50, sha256: r.sentSha256 });
    const after = await counters();
    console.info(`offload upload: ${after.tcpSuperIn! - before.tcpSuperIn!} segments longer than the MSS taken whole`);
    expect(after.tcpSuperIn! - before.tcpSuperIn!).toBeGreaterThan(100);
    expect(after.invalid).toBe(before.invalid);
  }, 180_000);

  it('while the network is captured the endpoint sends plain frames (the capture sees them as the VM gets them); after, super-frames again', async () => {
    const size = 5 * 1024 * 1024;
    const want = await t.blobSha(size);
    const c0 = await counters();
    const cap = await startCapture(t.daemon.socket, { from: { net: 'lan' }, filter: 'tcp and src port 80' });
    const r = await vm.download(`http://${UPSTREAM_NAME}/bytes/${size}`);
    cap.end();
    const pkts = readPcapng(await cap.done).packets;
    expect(r.code, r.stderr).toBe(0);
    expect(r.sha256).toBe(want);
    const c1 = await counters();
    // ~3,600 segments went plain; at most the close's last few (after the capture ended) did not.
    expect(c1.tcpOffloadSegments! - c0.tcpOffloadSegments!).toBeLessThan(10);
    expect(pkts.length).toBeGreaterThan(1000);
    expect(Math.max(...pkts.map((p) => p.origLen))).toBeLessThanOrEqual(1514);
    const r2 = await vm.download(`http://${UPSTREAM_NAME}/bytes/${size}`);
    expect(r2.sha256).toBe(want);
    expect((await counters()).tcpSuperOut!).toBeGreaterThan(c1.tcpSuperOut!);
  }, 120_000);

  it('a VM without the header on the same network gets plain frames, intact', async () => {
    const want = await t.blobSha(MB50);
    const before = await counters();
    const r = await plain.download(`http://${UPSTREAM_NAME}/bytes/${MB50}`);
    expect(r.code, r.stderr).toBe(0);
    expect(r.sha256).toBe(want);
    const after = await counters();
    expect(after.tcpOffloadFrames).toBe(before.tcpOffloadFrames);
  }, 180_000);
});

describe('stack: TSO super-frames over IPv6 (GSO TCPV6)', () => {
  let t: Topology;
  let vm: StackVm;

  beforeAll(async () => {
    t = await startTopology({ prefix: 'sof6', ipv6: true });
    await t.cli(['net', 'create', 'lan', '--subnet', '10.232.0.0/24', '--ipv6', 'fd00:78::/64']);
    vm = await t.addVm('o6', 'lan', { vnetHdr: true, ipv6: true });
    await t.cli(['route', '--direct', 'o6']);
    // Link down/up sends a router solicitation: SLAAC from the gateway's answer.
    await vm.exec(['ip', 'link', 'set', vm.ifname, 'down'], { check: true });
    await vm.exec(['ip', 'link', 'set', vm.ifname, 'up'], { check: true });
    await waitFor(async () => ((await vm.ipv6Addresses()).some((a) => a.startsWith('fd00:78::')) ? true : undefined), { timeoutMs: 15_000, what: 'a SLAAC address in fd00:78::/64' });
  });

  it('downloads and uploads 20 MB intact, super-frames both ways', async () => {
    const size = 20 * 1024 * 1024;
    const want = await t.blobSha(size);
    const c0 = (await t.daemon.network('lan')).router;
    const dl = await vm.download(`http://[${UPSTREAM_IP6}]/bytes/${size}`);
    expect(dl.code, dl.stderr).toBe(0);
    expect(dl.sha256).toBe(want);
    const c1 = (await t.daemon.network('lan')).router;
    expect(c1.tcpSuperOut! - c0.tcpSuperOut!).toBeGreaterThan(50);
    const ul = await vm.upload(`http://[${UPSTREAM_IP6}]/upload`, size);
    expect(ul.code, ul.stderr).toBe(0);
    expect(ul.server).toEqual({ bytes: size, sha256: ul.sentSha256 });
    const c2 = (await t.daemon.network('lan')).router;
    expect(c2.tcpSuperIn! - c1.tcpSuperIn!).toBeGreaterThan(50);
  }, 180_000);
});
