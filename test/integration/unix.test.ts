/**
 * Socket-attached VMs, driven by peers that frame exactly as QEMU 7.2 does, talking to TAP VMs
 * whose namespace kernels answer: `--unix` (QEMU server=on, the daemon connects and reconnects),
 * `--unix-listen` (QEMU server=off connects to the daemon), `--dgram` (one frame per datagram).
 * Broken framing closes the stream, is counted as 'framing', and the port recovers; runts are
 * dropped and counted; the other VMs never notice.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { drops, startDaemon, type Daemon } from '../support/daemon.js';
import { arpReplyFor, arpRequest, icmpEchoRequestFrame, isEchoReply, randomMac } from '../support/frames.js';
import { cleanupAll, makeTempDir, waitFor } from '../support/netns.js';
import { actAsHost, QemuDgramPeer, QemuStreamClient, QemuStreamServer, type FramePeer } from '../support/qemu-peer.js';
import { attachTapVm, type TapVm } from '../support/vms.js';

const MTU = 1500;
const MAX_FRAME = MTU + 14 + 4; // Ethernet header + one VLAN tag

interface Guest {
  mac: string;
  ip: string;
}

let seq = 1;

/** ARP for the TAP VM, then ping it, from the peer's own guest identity. */
async function exchange(peer: FramePeer, me: Guest, tap: TapVm): Promise<void> {
  peer.send(arpRequest({ srcMac: me.mac, srcIp: me.ip, targetIp: tap.ip }));
  const reply = await peer.frames.nextFrame((f) => arpReplyFor(f, tap.ip) !== undefined, 5_000);
  expect(arpReplyFor(reply, tap.ip)).toBe(tap.mac);
  const s = seq++;
  peer.send(icmpEchoRequestFrame({ srcMac: me.mac, dstMac: tap.mac, srcIp: me.ip, dstIp: tap.ip, id: 0x4d56, seq: s }));
  await peer.frames.nextFrame((f) => isEchoReply(f, { id: 0x4d56, seq: s, from: tap.ip }), 5_000);
  // And the other way: the namespace kernel pings the socket VM (actAsHost answers).
  expect(await tap.ns.ping(me.ip, { count: 2 })).toBe(true);
}

async function vmDrops(d: Daemon, vm: string, reason: string): Promise<number> {
  return drops((await d.vm(vm)).port.stats.drops, reason);
}

async function waitState(d: Daemon, vm: string, state: 'up' | 'waiting' | 'down'): Promise<void> {
  await waitFor(async () => (await d.vm(vm)).port.state === state, { what: `VM ${vm} to be ${state}`, timeoutMs: 10_000 });
}

describe('unix socket VMs (QEMU framing)', () => {
  let d: Daemon;
  let dir: string;
  let t1: TapVm;
  let t2: TapVm;

  beforeAll(async () => {
    d = await startDaemon();
    dir = makeTempDir('unix');
    await d.cliOk(['net', 'create', 'U', '--subnet', '10.77.3.0/24', '--mtu', String(MTU)]);
    t1 = await attachTapVm(d, { vm: 't1', net: 'U', cidr: '10.77.3.11/24', prefix: 'ux-t1' });
    t2 = await attachTapVm(d, { vm: 't2', net: 'U', cidr: '10.77.3.12/24', prefix: 'ux-t2' });
  });

  afterAll(cleanupAll);

  it('counts frames for a socket VM nobody is connected to as no-peer, and says what it waits for', async () => {
    const path = join(dir, 'nobody.sock');
    await d.cliOk(['vm', 'attach', 'qn', '--net', 'U', '--unix-listen', path]);
    const v = await d.vm('qn');
    expect(v.port.state).toBe('waiting');
    expect(v.port.detail).toContain(path);
    const before = drops(v.port.stats.drops, 'no-peer');
    // An ARP broadcast from a TAP VM is flooded to every member, qn included.
    await t1.ns.ping('10.77.3.99', { count: 1, waitS: 1 });
    await waitFor(async () => drops((await d.vm('qn')).port.stats.drops, 'no-peer') > before, { what: 'a no-peer drop on qn' });
    await d.cliOk(['vm', 'detach', 'qn']);
  });

  describe('--unix (QEMU server=on; the daemon connects)', () => {
    let peer: QemuStreamServer;
    const me: Guest = { mac: randomMac(), ip: '10.77.3.21' };

    beforeAll(async () => {
      peer = await QemuStreamServer.listen(join(dir, 'qs.sock'));
      actAsHost(peer, me);
      await d.cliOk(['vm', 'attach', 'qs', '--net', 'U', '--unix', peer.path]);
      await peer.waitConnected();
    });

    it('exchanges ARP and ping with a TAP VM', async () => {
      await waitState(d, 'qs', 'up');
      await exchange(peer, me, t1);
    });

    it('reconnects after the peer restarts', async () => {
      const n = peer.connections;
      await peer.restart();
      await peer.waitConnection(n, 15_000);
      await waitState(d, 'qs', 'up');
      await exchange(peer, me, t1);
    });

    for (const [what, len] of [
      ['a zero length prefix', 0],
      ['a length above MTU + headers', MAX_FRAME + 1],
      ['a 4 GiB length prefix', 0xffffffff],
    ] as const) {
      it(`closes the stream on ${what}, counts it, and recovers on reconnect`, async () => {
        const before = await vmDrops(d, 'qs', 'framing');
        const n = peer.connections;
        const prefix = Buffer.alloc(4);
        prefix.writeUInt32BE(len >>> 0, 0);
        peer.sendRaw(Buffer.concat([prefix, Buffer.alloc(64, 0xab)]));
        await peer.waitDisconnected();
        expect(await vmDrops(d, 'qs', 'framing')).toBe(before + 1);
        // The daemon connects again by itself; the port works as before.
        await peer.waitConnection(n, 15_000);
        await exchange(peer, me, t1);
        // Other VMs never noticed.
        expect(await t1.ns.ping(t2.ip)).toBe(true);
        expect((await d.vm('t2')).port.state).toBe('up');
      });
    }

    it('drops and counts a frame shorter than an Ethernet header, keeping the stream', async () => {
      const s0 = (await d.vm('qs')).port.stats.drops;
      const runts = drops(s0, 'runt');
      const framing = drops(s0, 'framing');
      const n = peer.connections;
      // A well-framed runt is a bad frame, not broken framing: dropped, counted, stream kept.
      peer.send(Buffer.alloc(10, 0xcd));
      await waitFor(async () => drops((await d.vm('qs')).port.stats.drops, 'runt') === runts + 1, { what: 'the runt to be counted' });
      expect(drops((await d.vm('qs')).port.stats.drops, 'framing')).toBe(framing);
      expect(peer.connected).toBe(true);
      expect(peer.connections).toBe(n);
      await exchange(peer, me, t1);
    });
  });

  describe('--unix-listen (QEMU server=off; the peer connects)', () => {
    let peer: QemuStreamClient;
    const me: Guest = { mac: randomMac(), ip: '10.77.3.22' };

    beforeAll(async () => {
      const path = join(dir, 'ql.sock');
      const r = await d.cliJson<{ port: { state: string } }>(['vm', 'attach', 'ql', '--net', 'U', '--unix-listen', path]);
      expect(r.port.state).toBe('waiting');
      peer = await QemuStreamClient.connect(path);
      actAsHost(peer, me);
    });

    it('exchanges ARP and ping with a TAP VM', async () => {
      await waitState(d, 'ql', 'up');
      await exchange(peer, me, t2);
    });

    it('takes the peer back after it reconnects', async () => {
      peer.disconnect();
      await waitState(d, 'ql', 'waiting');
      await peer.reconnect();
      await waitState(d, 'ql', 'up');
      await exchange(peer, me, t2);
    });

    it('closes the stream on a bad length prefix, counts it, and accepts the peer again', async () => {
      const before = await vmDrops(d, 'ql', 'framing');
      peer.sendRaw(Buffer.from([0, 0, 0, 0]));
      await peer.waitDisconnected();
      expect(await vmDrops(d, 'ql', 'framing')).toBe(before + 1);
      await peer.reconnect();
      await waitState(d, 'ql', 'up');
      await exchange(peer, me, t2);
      expect(await t2.ns.ping(t1.ip)).toBe(true);
    });
  });

  describe('--dgram (one frame per datagram)', () => {
    let peer: QemuDgramPeer;
    const me: Guest = { mac: randomMac(), ip: '10.77.3.23' };

    beforeAll(async () => {
      const local = join(dir, 'qd-qemu.sock');
      const remote = join(dir, 'qd-mvnet.sock');
      peer = await QemuDgramPeer.open(local, remote);
      actAsHost(peer, me);
      await d.cliOk(['vm', 'attach', 'qd', '--net', 'U', '--dgram', remote, '--dgram-peer', local]);
    });

    it('exchanges ARP and ping with a TAP VM', async () => {
      await exchange(peer, me, t1);
    });

    it('drops and counts runt datagrams', async () => {
      const before = await vmDrops(d, 'qd', 'runt');
      peer.sendRaw(Buffer.alloc(10, 0xee));
      peer.sendRaw(Buffer.alloc(1, 0xee));
      await waitFor(async () => (await vmDrops(d, 'qd', 'runt')) === before + 2, { what: 'two runts counted' });
      await exchange(peer, me, t1);
    });

    it('drops and counts oversize datagrams', async () => {
      const before = await vmDrops(d, 'qd', 'oversize');
      const big = Buffer.alloc(MAX_FRAME + 100, 0);
      Buffer.from('ffffffffffff', 'hex').copy(big, 0);
      Buffer.from(me.mac.replace(/:/g, ''), 'hex').copy(big, 6);
      big.writeUInt16BE(0x0800, 12);
      peer.sendRaw(big);
      await waitFor(async () => (await vmDrops(d, 'qd', 'oversize')) === before + 1, { what: 'the oversize datagram counted' });
      await exchange(peer, me, t1);
    });
  });
});
