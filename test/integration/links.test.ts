/**
 * Encrypted links between two daemons, each in its own namespace, joined by a veth (the "host
 * pipe"): VMs on both sides share one network; what crosses the veth is ciphertext only; a
 * restart re-handshakes by itself; a peer that changes address is followed; the link also runs
 * over TCP and unix sockets; `mvnet agent` in a namespace brings its TAP onto a remote router's
 * network.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startDaemon, CLI_JS, type Daemon } from '../support/daemon.js';
import { cleanupAll, makeTempDir, spawnProcess, waitFor, withTimeout, type Netns } from '../support/netns.js';
import { ROUTER_A_IP, ROUTER_B_IP, VM_A_IP, VM_B_IP, LINK_PORT, startLinkTopology, type LinkTopology } from '../support/link-topology.js';
import type { LinksInfo, VmInfo } from '../../daemon/control/api.js';
import { QemuStreamClient } from '../support/qemu-peer.js';
import { arpRequest, macBytes, randomMac, ETHERTYPE_ARP } from '../support/frames.js';

afterAll(cleanupAll);

const MARKER = 'MVNET-PLAINTEXT-MARKER-7f3a9c';

async function links(d: Daemon): Promise<LinksInfo> {
  return d.cliJson<LinksInfo>(['link', 'list']);
}

/** Sends `file` from `from` to `to` over TCP (socat), returning the sha256 of what arrived. */
async function transfer(from: Netns, to: Netns, toIp: string, file: string, port: number, out: string): Promise<string> {
  const server = spawnProcess(['ip', 'netns', 'exec', to.name, 'socat', '-u', `TCP-LISTEN:${port},reuseaddr`, `CREATE:${out}`]);
  await waitFor(async () => (await to.exec(['ss', '-Htln', `sport = :${port}`], { check: false })).stdout.includes(String(port)), { timeoutMs: 5000, intervalMs: 50, what: 'socat to listen' });
  await from.exec(['socat', '-u', `OPEN:${file}`, `TCP:${toIp}:${port}`], { timeoutMs: 120_000 });
  await withTimeout(server.exited, 30_000, 'socat to finish');
  return createHash('sha256').update(readFileSync(out)).digest('hex');
}

describe('a network extended over an encrypted UDP link', () => {
  let t: LinkTopology<Daemon>;
  const dir = makeTempDir('links');

  beforeAll(async () => {
    t = await startLinkTopology<Daemon>({ prefix: 'lnk', startDaemon: ({ netns }) => startDaemon({ netns }) });
    await t.waitConnected('a');
  }, 60_000);

  it('VMs on both routers share the network: ping both ways, 50 MB over TCP intact, and the veth carries no plaintext', async () => {
    const ab = await t.ping('a', { count: 3 });
    expect(ab.stdout, ab.stderr).toMatch(/3 packets transmitted, 3 received/);
    const ba = await t.ping('b', { count: 3 });
    expect(ba.stdout, ba.stderr).toMatch(/3 packets transmitted, 3 received/);

    // 50 MB whose every 4 KiB carries the marker; captured on the veth while it crosses.
    const file = join(dir, 'payload.bin');
    const chunk = Buffer.concat([Buffer.from(MARKER), randomBytes(4096 - MARKER.length)]);
    writeFileSync(file, Buffer.concat(Array.from({ length: (50 << 20) / 4096 }, () => chunk)));
    const want = createHash('sha256').update(readFileSync(file)).digest('hex');
    const pcap = join(dir, 'veth.pcap');
    const cap = spawnProcess(['ip', 'netns', 'exec', t.routers.rA.name, 'tcpdump', '-i', t.routers.vethA, '-w', pcap, '-U', '-s', '0']);
    await waitFor(async () => cap.stderr.includes('listening on'), { timeoutMs: 5000, intervalMs: 20, what: 'tcpdump to start' });
    // A marker in ICMP too.
    await t.a.vm.ns.exec(['ping', '-n', '-c', '2', '-i', '0.2', '-p', Buffer.from(MARKER.slice(0, 16)).toString('hex'), VM_B_IP]);
    const got = await transfer(t.a.vm.ns, t.b.vm.ns, VM_B_IP, file, 5001, join(dir, 'received.bin'));
    expect(got).toBe(want);
    await cap.stop('SIGINT');
    const bytes = readFileSync(pcap);
    // The capture saw the transfer (as UDP to the link port), so its silence about the marker means something.
    expect(bytes.length).toBeGreaterThan(50 << 20);
    expect(bytes.includes(Buffer.from(MARKER))).toBe(false);
    expect(bytes.includes(Buffer.from(MARKER.slice(0, 16)))).toBe(false);
    const l = await links(t.a.daemon);
    const link = l.links.find((x) => x.name === 'to-b')!;
    expect(link.state).toBe('established');
    expect(link.tx.bytes).toBeGreaterThan(50 << 20);
    expect(link.macs).toBeGreaterThanOrEqual(1);
  }, 180_000);

  it("a capture of the link's port sees its plaintext side", async () => {
    const cap = t.a.daemon.cli(['capture', '--point', 'link:to-b', '-c', '2', '-w', '-', 'icmp'], { timeoutMs: 20_000 });
    await waitFor(async () => (await t.a.daemon.status()).captures.length > 0, { timeoutMs: 5000, intervalMs: 20, what: 'the capture to start' });
    await t.a.vm.ns.exec(['ping', '-n', '-c', '2', '-i', '0.2', '-p', Buffer.from(MARKER.slice(0, 16)).toString('hex'), VM_B_IP]);
    const r = await cap;
    expect(r.code, r.stderr).toBe(0);
    expect(Buffer.from(r.stdout, 'latin1').includes(Buffer.from(MARKER.slice(0, 16)))).toBe(true);
  }, 30_000);

  it('drops replayed and tampered packets injected on the veth, counts them in link list, and does not follow their source', async () => {
    // Capture some of B's link packets to A (transport messages, type 4) as they cross the veth.
    const pcap = join(dir, 'replay.pcap');
    const cap = spawnProcess(['ip', 'netns', 'exec', t.routers.rB.name, 'tcpdump', '-i', t.routers.vethB, '-w', pcap, '-U', '-c', '10', `udp and dst host ${ROUTER_A_IP} and dst port ${LINK_PORT} and udp[8] = 4`]);
    await waitFor(async () => cap.stderr.includes('listening on'), { timeoutMs: 5000, intervalMs: 20, what: 'tcpdump to start' });
    await t.b.vm.ns.exec(['ping', '-n', '-c', '12', '-i', '0.05', VM_A_IP]);
    await withTimeout(cap.exited, 10_000, 'tcpdump to capture 10 packets');
    const hex = (await t.routers.rB.exec(['tshark', '-r', pcap, '-T', 'fields', '-e', 'udp.payload'])).stdout.trim().split('\n').filter((l) => l !== '');
    expect(hex.length).toBe(10);
    const before = (await links(t.a.daemon)).links.find((x) => x.name === 'to-b')!;
    // Re-sent from another socket (another source port); and one with a fresh counter (so the
    // replay check, which comes first, passes), whose tag then fails.
    const tampered = Buffer.from(hex[0]!, 'hex');
    tampered.writeBigUInt64LE(1n << 40n, 8);
    const script = `const s=require('dgram').createSocket('udp4');const m=${JSON.stringify([...hex, tampered.toString('hex')])};let n=0;for(const h of m)s.send(Buffer.from(h,'hex'),${LINK_PORT},'${ROUTER_A_IP}',()=>{if(++n===m.length)s.close()});`;
    await t.routers.rB.exec([process.execPath, '-e', script]);
    const after = await waitFor(
      async () => {
        const l = (await links(t.a.daemon)).links.find((x) => x.name === 'to-b')!;
        return (l.drops.replay ?? 0) - (before.drops.replay ?? 0) >= 10 && (l.drops['bad-mac'] ?? 0) > (before.drops['bad-mac'] ?? 0) ? l : undefined;
      },
      { timeoutMs: 5000, intervalMs: 50, what: 'the replays and the tampered packet to be counted' },
    ).catch(async (e: Error) => {
      throw new Error(`${e.message}; before ${JSON.stringify(before.drops)}; now ${JSON.stringify(await links(t.a.daemon))}; lengths ${hex.map((h) => h.length / 2).join(',')}`);
    });
    expect((after.drops.replay ?? 0) - (before.drops.replay ?? 0)).toBe(10);
    expect((after.drops['bad-mac'] ?? 0) - (before.drops['bad-mac'] ?? 0)).toBe(1);
    // Nothing authenticated came from the injecting socket: A still sends to B's real address.
    expect(after.endpoint).toBe(before.endpoint);
    const r = await t.ping('a', { count: 3 });
    expect(r.stdout, r.stderr).toMatch(/3 packets transmitted, 3 received/);
  }, 60_000);

  it('follows a peer whose address changes (roaming)', async () => {
    // B's router moves to another address on the veth; B's keepalives and traffic now come from there.
    await t.routers.rB.exec(['ip', 'addr', 'add', '10.99.0.6/24', 'dev', t.routers.vethB]);
    await t.routers.rA.exec(['ip', 'addr', 'add', '10.99.0.5/24', 'dev', t.routers.vethA]);
    await t.routers.rB.exec(['ip', 'addr', 'del', `${ROUTER_B_IP}/30`, 'dev', t.routers.vethB]);
    // B still dials A's old address, which A also still holds; A must answer B at B's new address.
    const r = await t.ping('b', { count: 3 });
    expect(r.stdout, r.stderr).toMatch(/3 packets transmitted, 3 received/);
    const l = await links(t.a.daemon);
    expect(l.links.find((x) => x.name === 'to-b')!.endpoint).toMatch(/^\/ip4\/10\.99\.0\.6\/udp\//);
    const r2 = await t.ping('a', { count: 3 });
    expect(r2.stdout, r2.stderr).toMatch(/3 packets transmitted, 3 received/);
  }, 60_000);

  it('re-handshakes by itself after one side restarts (kill -9), and traffic resumes', async () => {
    const before = (await links(t.b.daemon)).links.find((x) => x.name === 'to-a')!.handshakes;
    expect(before).toBeGreaterThan(0);
    t.b.daemon.expectErrors();
    await t.b.daemon.kill('SIGKILL');
    await t.b.daemon.start();
    await t.waitConnected('a', 30_000);
    const l = (await links(t.b.daemon)).links.find((x) => x.name === 'to-a')!;
    expect(l.state).toBe('established');
    const r = await t.ping('b', { count: 3 });
    expect(r.stdout, r.stderr).toMatch(/3 packets transmitted, 3 received/);
  }, 60_000);
});

describe('links over TCP and unix sockets', () => {
  for (const kind of ['tcp', 'unix'] as const) {
    it(`carries the network over ${kind}`, async () => {
      const dir = makeTempDir(`lk${kind}`);
      const t = await startLinkTopology<Daemon>({ prefix: `lk${kind[0]}`, link: false, startDaemon: ({ netns }) => startDaemon({ netns }) });
      const listen = kind === 'tcp' ? `tcp:${LINK_PORT + 1}` : `unix:${join(dir, 'link.sock')}`;
      const endpoint = kind === 'tcp' ? ['--endpoint', `tcp:${ROUTER_A_IP}:${LINK_PORT + 1}`] : ['--unix', join(dir, 'link.sock')];
      await t.a.daemon.cliOk(['link', 'add', 'to-b', '--net', 'lan', '--peer', t.b.publicKey, '--listen', listen]);
      await t.b.daemon.cliOk(['link', 'add', 'to-a', '--net', 'lan', '--peer', t.a.publicKey, ...endpoint]);
      await t.waitConnected('a');
      const r = await t.ping('b', { count: 3, size: 1472 });
      expect(r.stdout, r.stderr).toMatch(/3 packets transmitted, 3 received/);
      const l = await links(t.b.daemon);
      expect(l.links[0]!.configuredEndpoint).toMatch(kind === 'tcp' ? /^\/ip4\/10\.99\.0\.1\/tcp\// : /^\/unix\//);
      expect(l.links[0]!.state).toBe('established');
      // The listener's side restarts: the dialler reconnects and the link comes back.
      await t.a.daemon.restart();
      try {
        await t.waitConnected('b', 15_000);
      } catch (e) {
        console.log(JSON.stringify(await links(t.a.daemon), null, 1), JSON.stringify(await links(t.b.daemon), null, 1));
        console.log(t.b.daemon.logs.slice(-15).map((l) => JSON.stringify(l)).join('\n'));
        console.log(t.a.daemon.logs.slice(-15).map((l) => JSON.stringify(l)).join('\n'));
        throw e;
      }
    }, 90_000);
  }
});

describe('mvnet agent', () => {
  it("brings a TAP in another namespace onto a remote router's network", async () => {
    const dir = makeTempDir('agent');
    const t = await startLinkTopology<Daemon>({ prefix: 'lka', link: false, startDaemon: ({ netns }) => startDaemon({ netns }) });
    const keyFile = join(dir, 'agent.key');
    const gen = await t.a.daemon.cliJson<{ publicKey: string }>(['key', 'generate', '--out', keyFile]);
    // Router A expects the agent's key on its UDP listener; the agent runs in router B's namespace (another "host").
    const vm = await t.a.daemon.cliJson<VmInfo>(['vm', 'attach', 'vmc', '--net', 'lan', '--agent', gen.publicKey, '--listen', `udp:${LINK_PORT}`, '--ip', '10.98.0.13']);
    expect(vm.port.kind).toBe('agent');
    const agent = spawnProcess(['ip', 'netns', 'exec', t.routers.rB.name, process.execPath, CLI_JS, 'agent', '--router', `${ROUTER_A_IP}:${LINK_PORT}`, '--peer', t.a.publicKey, '--tap', 'agt0', '--key', keyFile]);
    await t.routers.rB.waitForLink('agt0');
    await t.routers.rB.addAddr('agt0', '10.98.0.13/24');
    await waitFor(async () => (await t.routers.rB.exec(['ping', '-n', '-c', '1', '-W', '1', VM_A_IP], { check: false })).code === 0, { timeoutMs: 20_000, intervalMs: 100, what: 'the agent VM to reach VM A' });
    const r = await t.routers.rB.exec(['ping', '-n', '-c', '3', '-i', '0.2', VM_A_IP], { check: false });
    expect(r.stdout, r.stderr).toMatch(/3 packets transmitted, 3 received/);
    // On router A it is a VM like any other: its port is up, and its traffic is counted.
    const info = await t.a.daemon.vm('vmc');
    expect(info.port.state).toBe('up');
    expect(info.port.stats.rxFrames).toBeGreaterThan(0);
    const l = await links(t.a.daemon);
    expect(l.links.find((x) => x.kind === 'agent' && x.name === 'vmc')!.state).toBe('established');
    // Its gateway answers it too (the agent's port is an ordinary member of lan).
    const g = await t.routers.rB.exec(['ping', '-n', '-c', '1', '-W', '2', '10.98.0.1'], { check: false });
    expect(g.stdout, g.stderr).toMatch(/1 received/);
    const ex = await agent.stop('SIGTERM', 10_000);
    expect(ex.code, agent.stderr).toBe(0);
  }, 90_000);

  it("carries a QEMU stream socket (--unix): the VM's ARP reaches router A's gateway and is answered", async () => {
    const dir = makeTempDir('agunix');
    const t = await startLinkTopology<Daemon>({ prefix: 'lkq', link: false, startDaemon: ({ netns }) => startDaemon({ netns }) });
    const keyFile = join(dir, 'agent.key');
    const gen = await t.a.daemon.cliJson<{ publicKey: string }>(['key', 'generate', '--out', keyFile]);
    await t.a.daemon.cliOk(['vm', 'attach', 'vmq', '--net', 'lan', '--agent', gen.publicKey, '--listen', `udp:${LINK_PORT}`, '--ip', '10.98.0.15']);
    const sock = join(dir, 'vm.sock');
    const agent = spawnProcess(['ip', 'netns', 'exec', t.routers.rB.name, process.execPath, CLI_JS, 'agent', '--router', `${ROUTER_A_IP}:${LINK_PORT}`, '--peer', t.a.publicKey, '--unix', sock, '--key', keyFile]);
    // As QEMU with -netdev stream,server=off: connect to the agent's socket, then speak frames.
    const vm = await QemuStreamClient.connect(sock, 20_000);
    const mac = randomMac();
    const isReply = (f: Buffer): boolean => f.readUInt16BE(12) === ETHERTYPE_ARP && f.readUInt16BE(20) === 2;
    const reply = await waitFor(
      async () => {
        vm.send(arpRequest({ srcMac: mac, srcIp: '10.98.0.15', targetIp: '10.98.0.1' }));
        return vm.nextFrame(isReply, 500).catch(() => undefined);
      },
      { timeoutMs: 20_000, intervalMs: 10, what: "the gateway's ARP reply through the agent" },
    );
    expect(reply.subarray(0, 6).equals(macBytes(mac))).toBe(true);
    expect((await t.a.daemon.vm('vmq')).port.state).toBe('up');
    const ex = await agent.stop('SIGTERM', 10_000);
    expect(ex.code, agent.stderr).toBe(0);
  }, 90_000);

  it('carries a TUN (IP packets) when the router attaches it with --agent-tun', async () => {
    const dir = makeTempDir('agtun');
    const t = await startLinkTopology<Daemon>({ prefix: 'lku', link: false, startDaemon: ({ netns }) => startDaemon({ netns }) });
    const keyFile = join(dir, 'agent.key');
    const gen = await t.a.daemon.cliJson<{ publicKey: string }>(['key', 'generate', '--out', keyFile]);
    await t.a.daemon.cliOk(['vm', 'attach', 'vmt', '--net', 'lan', '--agent', gen.publicKey, '--listen', `tcp:${LINK_PORT}`, '--agent-tun', '--ip', '10.98.0.14']);
    const agent = spawnProcess(['ip', 'netns', 'exec', t.routers.rB.name, process.execPath, CLI_JS, 'agent', '--router', `tcp:${ROUTER_A_IP}:${LINK_PORT}`, '--peer', t.a.publicKey, '--tun', 'agtun0', '--key', keyFile]);
    await t.routers.rB.waitForLink('agtun0');
    await t.routers.rB.addAddr('agtun0', '10.98.0.14/24');
    await waitFor(async () => (await t.routers.rB.exec(['ping', '-n', '-c', '1', '-W', '1', VM_A_IP], { check: false })).code === 0, { timeoutMs: 20_000, intervalMs: 100, what: 'the TUN agent to reach VM A' });
    const info = await t.a.daemon.vm('vmt');
    expect(info.port.kind).toBe('agent');
    expect(info.port.state).toBe('up');
    const ex = await agent.stop('SIGTERM', 10_000);
    expect(ex.code, agent.stderr).toBe(0);
  }, 90_000);
});
