/**
 * Self-test of the test support library, without the daemon: if these fail, the other
 * integration failures say nothing about mvnet. Peers talk to each other here; namespaces are
 * created and removed; hand-built frames are checked against the kernel (a namespace answers
 * our ARP and ICMP bytes written to a raw TAP opened with the addon).
 */
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  arpReplyFor,
  arpRequest,
  icmpEchoRequestFrame,
  inetChecksum,
  isEchoReply,
  parseArp,
  parseIcmpEcho,
  randomMac,
} from '../support/frames.js';
import { cleanupAll, createNetns, makeTempDir, run, uniqueName, waitFor } from '../support/netns.js';
import { QemuDgramPeer, QemuStreamClient, QemuStreamServer } from '../support/qemu-peer.js';
import { loadNative } from '../../plugins/native/index.js';

afterAll(cleanupAll);

describe('frames', () => {
  it('computes the RFC 1071 checksum', () => {
    // The example header from RFC 1071 / common references: checksum of this IPv4 header is 0xb861.
    const hdr = Buffer.from('450000730000400040110000c0a80001c0a800c7', 'hex');
    expect(inetChecksum(hdr)).toBe(0xb861);
    hdr.writeUInt16BE(0xb861, 10);
    expect(inetChecksum(hdr)).toBe(0);
    expect(inetChecksum(Buffer.from([0x01]))).toBe(0xfeff);
  });

  it('round-trips ARP and ICMP echo', () => {
    const mac = randomMac();
    const req = arpRequest({ srcMac: mac, srcIp: '10.77.0.1', targetIp: '10.77.0.2' });
    expect(req.length).toBe(60);
    expect(parseArp(req)).toMatchObject({ op: 1, senderMac: mac, senderIp: '10.77.0.1', targetIp: '10.77.0.2' });
    const ping = icmpEchoRequestFrame({ srcMac: mac, dstMac: randomMac(), srcIp: '10.77.0.1', dstIp: '10.77.0.2', id: 7, seq: 9 });
    const e = parseIcmpEcho(ping);
    expect(e).toMatchObject({ type: 8, id: 7, seq: 9, checksumOk: true });
    expect(e?.ip.checksumOk).toBe(true);
  });

  it('are understood by a real kernel (a namespace answers them on a TAP)', async () => {
    const ns = await createNetns('sup-tap');
    const native = loadNative();
    const ifname = uniqueName('mvt');
    const { fd } = native.openTun({ name: ifname, tap: true, netns: ns.path });
    const got: Buffer[] = [];
    const dev = new native.Device({
      fd,
      mode: 'packet',
      maxFrame: 2048,
      batch: 16,
      queueFrames: 64,
      queueBytes: 1 << 20,
      onRead: (n) => {
        for (let i = 0; i < n; i++) got.push(Buffer.from(dev.buffer.subarray(i * 2048, i * 2048 + dev.lengths[i]!)));
      },
      onError: () => {},
    });
    try {
      dev.start();
      await ns.addAddr(ifname, '10.77.0.2/24');
      const mac = randomMac();
      dev.write([arpRequest({ srcMac: mac, srcIp: '10.77.0.1', targetIp: '10.77.0.2' })], 1);
      const reply = await waitFor(() => got.find((f) => arpReplyFor(f, '10.77.0.2')), { what: 'ARP reply from the kernel' });
      const kmac = parseArp(reply)!.senderMac;
      expect(kmac).toBe(await ns.mac(ifname));
      dev.write([icmpEchoRequestFrame({ srcMac: mac, dstMac: kmac, srcIp: '10.77.0.1', dstIp: '10.77.0.2', id: 0x4d56, seq: 1 })], 1);
      const echo = await waitFor(() => got.find((f) => isEchoReply(f, { id: 0x4d56, seq: 1, from: '10.77.0.2' })), {
        what: 'ICMP echo reply from the kernel',
      });
      expect(parseIcmpEcho(echo)?.checksumOk).toBe(true);
    } finally {
      dev.close();
    }
  });
});

describe('namespaces and processes', () => {
  it('creates, runs inside and deletes namespaces', async () => {
    const ns = await createNetns('sup');
    expect(ns.name).toMatch(/^mvt-sup-[a-z0-9]{6}$/);
    const r = await ns.exec(['ip', '-br', 'link']);
    expect(r.stdout).toContain('lo');
    const p = ns.spawn(['sh', '-c', 'echo hello; exec sleep 60']);
    await p.waitForLine((l) => l === 'hello');
    await ns.delete();
    await p.exited;
    const list = await run(['ip', 'netns', 'list']);
    expect(list.stdout).not.toContain(ns.name);
  });

  it('keeps interface names within 15 characters', () => {
    for (const prefix of ['mvt', 'averyveryverylongprefix']) expect(uniqueName(prefix).length).toBeLessThanOrEqual(15);
  });
});

describe('QEMU peers', () => {
  it('stream server and client exchange length-prefixed frames', async () => {
    const dir = makeTempDir('sup');
    const path = join(dir, 'q.sock');
    const server = await QemuStreamServer.listen(path);
    const client = await QemuStreamClient.connect(path);
    await server.waitConnected();
    const f = arpRequest({ srcMac: randomMac(), srcIp: '10.77.0.1', targetIp: '10.77.0.2' });
    client.send(f);
    expect(await server.nextFrame()).toEqual(f);
    // Split a frame over writes: the decoder must reassemble it.
    const framed = Buffer.concat([Buffer.from([0, 0, 0, f.length]), f]);
    server.sendRaw(framed.subarray(0, 3));
    server.sendRaw(framed.subarray(3, 20));
    server.sendRaw(framed.subarray(20));
    expect(await client.nextFrame()).toEqual(f);
    const n = server.connections;
    client.disconnect();
    await server.waitDisconnected();
    await client.reconnect();
    await server.waitConnection(n);
    await server.close();
    await client.close();
  });

  it('iterates received frames in order and ends when the peer closes', async () => {
    const dir = makeTempDir('sup');
    const path = join(dir, 'it.sock');
    const server = await QemuStreamServer.listen(path);
    const client = await QemuStreamClient.connect(path);
    await server.waitConnected();
    const sent = [1, 2, 3].map((i) => Buffer.alloc(20 + i, i));
    for (const f of sent) client.send(f);
    const got: Buffer[] = [];
    for await (const f of server) {
      got.push(f);
      if (got.length === 3) await server.close();
    }
    expect(got).toEqual(sent);
    await client.close();
  });

  it('dgram peers exchange one frame per datagram through the native addon', async () => {
    const dir = makeTempDir('sup');
    const a = await QemuDgramPeer.open(join(dir, 'a.sock'), join(dir, 'b.sock'));
    const b = await QemuDgramPeer.open(join(dir, 'b.sock'), join(dir, 'a.sock'));
    const f = arpRequest({ srcMac: randomMac(), srcIp: '10.77.0.1', targetIp: '10.77.0.2' });
    a.send(f);
    expect(await b.nextFrame()).toEqual(f);
    b.sendRaw(Buffer.from([1, 2, 3]));
    expect(await a.nextFrame()).toEqual(Buffer.from([1, 2, 3]));
    await a.close();
    await b.close();
  });
});
