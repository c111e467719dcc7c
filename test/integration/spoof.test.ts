/**
 * Source MAC enforcement: a VM may only send from its own MAC (given with --mac, or learned from
 * its first frame). Frames from any other source — including group addresses — are dropped,
 * counted as 'spoofed' on the VM's port and the network, and never reach anyone.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { drops, startDaemon, type Daemon } from '../support/daemon.js';
import { arpRequest, parseArp, randomMac } from '../support/frames.js';
import { cleanupAll, makeTempDir, waitFor } from '../support/netns.js';
import { QemuStreamServer } from '../support/qemu-peer.js';
import { attachTapVm, type TapVm } from '../support/vms.js';

async function spoofed(d: Daemon, vm: string): Promise<number> {
  return drops((await d.vm(vm)).port.stats.drops, 'spoofed');
}

async function netSpoofed(d: Daemon, net: string): Promise<number> {
  return drops((await d.network(net)).stats.drops, 'spoofed');
}

describe('spoofed source MACs', () => {
  let d: Daemon;
  let dir: string;

  beforeAll(async () => {
    d = await startDaemon();
    dir = makeTempDir('spoof');
    await d.cliOk(['net', 'create', 'S', '--subnet', '10.77.4.0/24']);
  });

  afterAll(cleanupAll);

  describe('from a TAP namespace whose MAC changes after attach --mac', () => {
    const fixed = randomMac();
    let a: TapVm;
    let b: TapVm;

    beforeAll(async () => {
      a = await attachTapVm(d, { vm: 'ta', net: 'S', cidr: '10.77.4.11/24', prefix: 'sp-a', mac: fixed });
      b = await attachTapVm(d, { vm: 'tb', net: 'S', cidr: '10.77.4.12/24', prefix: 'sp-b' });
    });

    it('the daemon gave the TAP the MAC from --mac', () => {
      expect(a.mac).toBe(fixed);
    });

    it('passes traffic from the attached MAC', async () => {
      expect(await a.ns.ping(b.ip)).toBe(true);
      expect(await spoofed(d, 'ta')).toBe(0);
    });

    it('drops and counts everything once the namespace uses another MAC', async () => {
      const vm0 = await spoofed(d, 'ta');
      const net0 = await netSpoofed(d, 'S');
      const bTx0 = (await d.vm('tb')).port.stats.txFrames;
      await a.ns.setMac(a.ifname, randomMac());
      await a.ns.exec(['ip', 'neigh', 'flush', 'dev', a.ifname]);
      expect(await a.ns.ping(b.ip, { count: 2, waitS: 1 })).toBe(false);
      const vm1 = await spoofed(d, 'ta');
      expect(vm1).toBeGreaterThan(vm0);
      expect(await netSpoofed(d, 'S')).toBeGreaterThanOrEqual(net0 + (vm1 - vm0));
      // Nothing of it reached tb.
      expect((await d.vm('tb')).port.stats.txFrames).toBe(bTx0);
    });

    it('passes again with the attached MAC restored', async () => {
      await a.ns.setMac(a.ifname, fixed);
      expect(await a.ns.ping(b.ip)).toBe(true);
    });
  });

  describe('from a socket peer', () => {
    let p1: QemuStreamServer;
    let p2: QemuStreamServer;
    let p3: QemuStreamServer;
    const mac1 = randomMac();
    const mac3 = randomMac();

    beforeAll(async () => {
      p1 = await QemuStreamServer.listen(join(dir, 'p1.sock'));
      p2 = await QemuStreamServer.listen(join(dir, 'p2.sock'));
      p3 = await QemuStreamServer.listen(join(dir, 'p3.sock'));
      await d.cliOk(['vm', 'attach', 'p1', '--net', 'S', '--unix', p1.path]); // MAC learned
      await d.cliOk(['vm', 'attach', 'p2', '--net', 'S', '--unix', p2.path]); // observer
      await d.cliOk(['vm', 'attach', 'p3', '--net', 'S', '--unix', p3.path, '--mac', mac3]); // MAC fixed
      await Promise.all([p1.waitConnected(), p2.waitConnected(), p3.waitConnected()]);
    });

    /**
     * Sends `bad` and then a good broadcast marker from the same peer, and checks at the
     * observer that the marker arrives and `bad` did not arrive before it (a stream keeps order,
     * so had `bad` been forwarded it would be seen first).
     */
    async function expectDropped(from: QemuStreamServer, goodMac: string, bad: Buffer, vm: string): Promise<void> {
      const before = await spoofed(d, vm);
      const markerIp = `10.77.4.${100 + Math.floor(Math.random() * 100)}`;
      const badArp = parseArp(bad);
      let sawBad = false;
      const off = p2.frames.onFrame((f) => {
        if (f.equals(bad)) sawBad = true;
      });
      try {
        from.send(bad);
        from.send(arpRequest({ srcMac: goodMac, srcIp: '10.77.4.90', targetIp: markerIp }));
        await p2.nextFrame((f) => parseArp(f)?.targetIp === markerIp, 5_000);
      } finally {
        off();
      }
      expect(sawBad, `spoofed frame ${badArp ? `from ${badArp.senderMac}` : ''} was forwarded`).toBe(false);
      await waitFor(async () => (await spoofed(d, vm)) === before + 1, { what: `spoofed count of ${vm} +1` });
    }

    it('learns the MAC from the first frame and drops others afterwards', async () => {
      p1.send(arpRequest({ srcMac: mac1, srcIp: '10.77.4.31', targetIp: '10.77.4.200' }));
      await p2.nextFrame((f) => parseArp(f)?.senderMac === mac1, 5_000);
      await waitFor(async () => (await d.vm('p1')).mac === mac1, { what: 'p1 MAC learned in status' });
      const other = randomMac();
      await expectDropped(p1, mac1, arpRequest({ srcMac: other, srcIp: '10.77.4.31', targetIp: '10.77.4.201' }), 'p1');
    });

    it('drops frames with a group (multicast/broadcast) source MAC', async () => {
      const bad = arpRequest({ srcMac: mac1, srcIp: '10.77.4.31', targetIp: '10.77.4.202' });
      Buffer.from('ffffffffffff', 'hex').copy(bad, 6);
      await expectDropped(p1, mac1, bad, 'p1');
      const bad2 = arpRequest({ srcMac: mac1, srcIp: '10.77.4.31', targetIp: '10.77.4.203' });
      Buffer.from('01005e000001', 'hex').copy(bad2, 6);
      await expectDropped(p1, mac1, bad2, 'p1');
    });

    it('with --mac, drops even the first frame from another MAC', async () => {
      await expectDropped(p3, mac3, arpRequest({ srcMac: randomMac(), srcIp: '10.77.4.33', targetIp: '10.77.4.204' }), 'p3');
    });

    it('does not let a VM claim another VM’s MAC', async () => {
      const p4 = await QemuStreamServer.listen(join(dir, 'p4.sock'));
      await d.cliOk(['vm', 'attach', 'p4', '--net', 'S', '--unix', p4.path]);
      await p4.waitConnected();
      const before = await spoofed(d, 'p4');
      let sawBad = false;
      const off = p2.frames.onFrame((f) => {
        if (parseArp(f)?.targetIp === '10.77.4.205') sawBad = true;
      });
      // p4's very first frame uses p1's MAC: must not be learned nor forwarded.
      p4.send(arpRequest({ srcMac: mac1, srcIp: '10.77.4.34', targetIp: '10.77.4.205' }));
      await waitFor(async () => (await spoofed(d, 'p4')) === before + 1, { what: 'p4 spoofed count +1' });
      // Then its own MAC works (and serves as the ordering marker).
      const own = randomMac();
      p4.send(arpRequest({ srcMac: own, srcIp: '10.77.4.34', targetIp: '10.77.4.206' }));
      await p2.nextFrame((f) => parseArp(f)?.targetIp === '10.77.4.206', 5_000);
      off();
      expect(sawBad).toBe(false);
    });
  });
});
