/**
 * State survives the daemon: after `kill -9` (and after a graceful stop), a daemon started
 * again on the same state dir brings every attachment back — the TAPs inside the namespaces
 * (the same devices, so the addresses the namespaces gave them are still there) and socket
 * VMs — and traffic resumes without anyone re-attaching.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDaemon, type Daemon } from '../support/daemon.js';
import { arpReplyFor, arpRequest, randomMac } from '../support/frames.js';
import { cleanupAll, makeTempDir, waitFor } from '../support/netns.js';
import { actAsHost, QemuDgramPeer, QemuStreamClient, QemuStreamServer } from '../support/qemu-peer.js';
import { attachTapVm, type TapVm } from '../support/vms.js';

interface IfIndexed {
  ifindex?: number;
}

afterAll(cleanupAll);

describe('daemon restart on the same state dir', () => {
  let d: Daemon;
  let a: TapVm;
  let b: TapVm;
  let peer: QemuStreamServer;
  const guest = { mac: randomMac(), ip: '10.77.9.21' };
  let ifindexA = 0;

  async function allUp(): Promise<void> {
    await waitFor(
      async () => {
        const s = await d.status();
        return s.vms.length === 3 && s.vms.every((v) => v.port.state === 'up');
      },
      { what: 'all three VMs up again', timeoutMs: 15_000 },
    );
  }

  async function trafficFlows(): Promise<void> {
    expect(await a.ns.ping(b.ip, { count: 5 })).toBe(true);
    expect(await b.ns.ping(a.ip)).toBe(true);
    expect(await a.ns.ping(guest.ip)).toBe(true);
    peer.send(arpRequest({ srcMac: guest.mac, srcIp: guest.ip, targetIp: b.ip }));
    const reply = await peer.nextFrame((f) => arpReplyFor(f, b.ip) !== undefined, 5_000);
    expect(arpReplyFor(reply, b.ip)).toBe(b.mac);
  }

  beforeAll(async () => {
    d = await startDaemon();
    await d.cliOk(['net', 'create', 'R', '--subnet', '10.77.9.0/24']);
    a = await attachTapVm(d, { vm: 'ra', net: 'R', cidr: '10.77.9.11/24', prefix: 'rs-a' });
    b = await attachTapVm(d, { vm: 'rb', net: 'R', cidr: '10.77.9.12/24', prefix: 'rs-b', vnetHdr: true });
    peer = await QemuStreamServer.listen(join(makeTempDir('rs'), 'q.sock'));
    actAsHost(peer, guest);
    await d.cliOk(['vm', 'attach', 'rq', '--net', 'R', '--unix', peer.path]);
    await peer.waitConnected();
    const link = (await a.ns.link(a.ifname)) as IfIndexed | undefined;
    ifindexA = link?.ifindex ?? 0;
    await allUp();
    await trafficFlows();
  });

  it('comes back after kill -9 with every attachment, and traffic resumes', async () => {
    const oldPid = d.pid;
    const n = peer.connections;
    const exit = await d.kill('SIGKILL');
    expect(exit.signal).toBe('SIGKILL');
    // The TAPs outlive the daemon (persistent devices) with their addresses.
    expect(await a.ns.link(a.ifname)).toBeDefined();

    await d.start();
    expect(d.pid).not.toBe(oldPid);
    await peer.waitConnection(n, 15_000);
    await allUp();
    const s = await d.status();
    expect(s.networks.map((x) => x.name)).toEqual(['R']);
    expect(s.vms.map((v) => v.name).sort()).toEqual(['ra', 'rb', 'rq']);
    expect(s.vms.find((v) => v.name === 'rq')?.mac).toBe(guest.mac); // learned MAC persisted
    // The same device, not a new one (a new TAP would have lost the namespace's address).
    const link = (await a.ns.link(a.ifname)) as IfIndexed | undefined;
    expect(link?.ifindex).toBe(ifindexA);
    await trafficFlows();
  });

  it('comes back after a graceful stop too', async () => {
    const n = peer.connections;
    const exit = await d.stop();
    expect(exit?.code).toBe(0);
    await d.start();
    await peer.waitConnection(n, 15_000);
    await allUp();
    await trafficFlows();
  });

  it('keeps a detach across a restart', async () => {
    await d.cliOk(['vm', 'detach', 'rq']);
    await d.kill('SIGKILL');
    await d.start();
    const s = await d.status();
    expect(s.vms.map((v) => v.name).sort()).toEqual(['ra', 'rb']);
    expect(await a.ns.ping(b.ip, { count: 5 })).toBe(true);
  });
});

describe('daemon restart: listening and datagram sockets', () => {
  it('re-creates --unix-listen and --dgram sockets after kill -9; peers resume', async () => {
    const d = await startDaemon();
    const dir = makeTempDir('rs2');
    await d.cliOk(['net', 'create', 'R2', '--subnet', '10.77.16.0/24']);
    const t = await attachTapVm(d, { vm: 'rt', net: 'R2', cidr: '10.77.16.11/24', prefix: 'rs2-t' });
    const listenPath = join(dir, 'listen.sock');
    await d.cliOk(['vm', 'attach', 'rl', '--net', 'R2', '--unix-listen', listenPath]);
    const client = await QemuStreamClient.connect(listenPath);
    const g1 = { mac: randomMac(), ip: '10.77.16.21' };
    actAsHost(client, g1);
    const dg = await QemuDgramPeer.open(join(dir, 'dg-qemu.sock'), join(dir, 'dg-mvnet.sock'));
    const g2 = { mac: randomMac(), ip: '10.77.16.22' };
    actAsHost(dg, g2);
    await d.cliOk(['vm', 'attach', 'rd', '--net', 'R2', '--dgram', dg.remotePath, '--dgram-peer', dg.localPath]);
    expect(await t.ns.ping(g1.ip)).toBe(true);
    expect(await t.ns.ping(g2.ip)).toBe(true);

    await d.kill('SIGKILL');
    await client.waitDisconnected();
    await d.start();
    // QEMU with reconnect=N connects again to the re-created listening socket.
    await client.reconnect();
    await waitFor(async () => (await d.vm('rl')).port.state === 'up', { what: 'rl up again' });
    expect(await t.ns.ping(g1.ip)).toBe(true);
    // The datagram socket is bound again at the same path; the peer never noticed.
    expect(await t.ns.ping(g2.ip)).toBe(true);
  });
});
