/**
 * AF_PACKET on one end of a veth whose other end is in another namespace: the iface driver sees
 * the far namespace's frames (and not its own writes or the near kernel's output), its writes
 * reach the far namespace, and TCP that the far kernel hands over as TSO super-frames with
 * partial checksums arrives as plain, correctly checksummed segments.
 */
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ifaceDriver } from '../../plugins/iface/index.js';
import { native } from '../../plugins/native/index.js';
import type { NativeDevice } from '../../plugins/native/types.js';
import type { Port, PortContext } from '../../plugins/types.js';
import { arpReplyFor, arpRequest, inetChecksum, isArpRequestFor, isEchoRequest, macString, parseIpv4 } from '../support/frames.js';
import { Netns, addVeth, cleanupAll, randomSuffix, run, uniqueName, waitFor } from '../support/netns.js';

const log = pino({ level: 'silent' });
const ctx: PortContext = { log, mtu: 1500, restoring: false };
const FAKE_MAC = '02:6d:76:00:00:09';

async function makeNs(tag: string): Promise<Netns> {
  const name = `mvna-${tag}-${randomSuffix(6)}`;
  await run(['ip', 'netns', 'add', name]);
  const ns = new Netns(name);
  await ns.exec(['ip', 'link', 'set', 'lo', 'up']);
  await ns.exec(['sysctl', '-q', '-w', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
  return ns;
}

/** TCP checksum of an IPv4 frame's segment verifies (pseudo-header included). */
function tcpChecksumOk(frame: Buffer): boolean {
  const ip = parseIpv4(frame)!;
  const ipHdr = frame.subarray(14);
  const seg = ip.payload;
  const pseudo = Buffer.alloc(12);
  ipHdr.copy(pseudo, 0, 12, 20);
  pseudo[9] = 6;
  pseudo.writeUInt16BE(seg.length, 10);
  return inetChecksum(Buffer.concat([pseudo, seg])) === 0;
}

let a: Netns; // the far side: the "VM"
let b: Netns; // where the port's interface lives
let va: string;
let vb: string;
let port: Port;
const got: Buffer[] = [];

beforeAll(async () => {
  a = await makeNs('ifa');
  b = await makeNs('ifb');
  va = uniqueName('mvnava');
  vb = uniqueName('mvnavb');
  await addVeth({ name: va, netns: a }, { name: vb, netns: b });
  await a.exec(['ip', 'addr', 'add', '10.79.0.1/24', 'dev', va]);
  await b.exec(['ip', 'addr', 'add', '10.79.0.2/24', 'dev', vb]);
  port = await ifaceDriver.open({ kind: 'iface', ifname: vb, netns: b.name }, ctx);
  port.onFrames((frames) => {
    for (const f of frames) got.push(Buffer.from(f));
  });
});

afterAll(async () => {
  await port?.close();
  await cleanupAll();
});

describe('native AF_PACKET / iface driver', () => {
  it('refuses an interface that does not exist', async () => {
    await expect(ifaceDriver.open({ kind: 'iface', ifname: 'mvna-nope0', netns: b.name }, ctx)).rejects.toThrow(/does not exist/);
    expect(() => native.openPacket({ ifname: 'mvna-nope0', netns: b.path })).toThrow(expect.objectContaining({ code: 'ENODEV' }) as Error);
  });

  it("sees the far namespace's frames but not the near kernel's output", async () => {
    expect(port).toMatchObject({ kind: 'iface', layer: 2, vnetHdrLen: 0, maxFrame: 1518 });
    expect(port.status().state).toBe('up');
    const vbMac = await b.mac(vb);
    expect(await a.ping('10.79.0.2', { count: 2 })).toBe(true);
    await waitFor(() => got.filter((f) => isEchoRequest(f, { from: '10.79.0.1', to: '10.79.0.2' })).length >= 2, { what: 'echo requests' });
    // b's replies leave through vb: PACKET_IGNORE_OUTGOING keeps them out.
    expect(got.some((f) => macString(f.subarray(6, 12)) === vbMac)).toBe(false);
  });

  it('writes frames out of the interface (with an all-zero vnet header under the hood)', async () => {
    const req = arpRequest({ srcMac: FAKE_MAC, srcIp: '10.79.0.9', targetIp: '10.79.0.1' });
    const txBefore = port.stats().txFrames;
    port.send([req]);
    const vaMac = await a.mac(va);
    await waitFor(() => got.some((f) => arpReplyFor(f, '10.79.0.1') === vaMac && macString(f.subarray(0, 6)) === FAKE_MAC), {
      what: "a's ARP reply to the fake MAC",
    });
    expect(port.stats().txFrames).toBe(txBefore + 1);
    expect(port.stats().txBytes).toBeGreaterThanOrEqual(req.length);
  });

  it('normalizes TSO super-frames with partial checksums into plain checksummed segments', async () => {
    // A raw second socket shows what the kernel really hands over: GSO super-frames.
    const slot = 65560;
    let gsoReads = 0;
    let csumReads = 0;
    const raw: NativeDevice = new native.Device({
      fd: native.openPacket({ ifname: vb, netns: b.path, vnetHdr: true }).fd,
      mode: 'packet',
      maxFrame: slot,
      batch: 16,
      queueFrames: 0,
      queueBytes: 0,
      onRead: (count) => {
        for (let i = 0; i < count; i++) {
          if (raw.buffer[i * slot + 1] !== 0) gsoReads++;
          if ((raw.buffer[i * slot]! & 1) !== 0) csumReads++;
        }
      },
      onError: () => {},
    });
    raw.start();
    try {
      const total = 512 * 1024;
      const server = b.spawn([
        process.execPath,
        '-e',
        `let n=0;const s=require('net').createServer((c)=>{c.on('data',(d)=>{n+=d.length});c.on('end',()=>{console.log('got '+n);c.end();s.close()})});` +
          `s.listen(5001,'10.79.0.2',()=>console.log('listening'))`,
      ]);
      await server.waitForLine((l) => l === 'listening');
      const startIdx = got.length;
      await a.exec([
        process.execPath,
        '-e',
        `const c=require('net').connect(5001,'10.79.0.2',()=>{c.end(Buffer.alloc(${total},0x61))});c.on('data',()=>{});c.on('close',()=>process.exit(0))`,
      ]);
      await server.waitForLine((l) => l === `got ${total}`);

      const seg = got.slice(startIdx).filter((f) => {
        const ip = parseIpv4(f);
        return ip !== undefined && ip.protocol === 6 && ip.src === '10.79.0.1';
      });
      let payload = 0;
      for (const f of seg) {
        expect(f.length).toBeLessThanOrEqual(1514);
        expect(parseIpv4(f)!.checksumOk).toBe(true);
        expect(tcpChecksumOk(f)).toBe(true);
        const ip = parseIpv4(f)!;
        payload += ip.payload.length - (ip.payload[12]! >> 4) * 4;
      }
      expect(payload).toBeGreaterThanOrEqual(total);
      expect(gsoReads).toBeGreaterThan(0);
      expect(csumReads).toBeGreaterThan(0);
      expect(port.stats().drops['bad-offload'] ?? 0).toBe(0);
      expect(port.stats().drops.oversize ?? 0).toBe(0);
    } finally {
      raw.close();
    }
  });

  it('fails the port when the interface is deleted', async () => {
    const vc = uniqueName('mvnavc');
    const vd = uniqueName('mvnavd');
    await addVeth({ name: vc, netns: a }, { name: vd, netns: b });
    const p2 = await ifaceDriver.open({ kind: 'iface', ifname: vd, netns: b.name }, ctx);
    expect(p2.status().state).toBe('up');
    const seen: Buffer[] = [];
    p2.onFrames((frames) => {
      for (const f of frames) seen.push(Buffer.from(f));
    });
    await b.exec(['ip', 'link', 'set', vd, 'down']);
    await b.exec(['ip', 'link', 'set', vd, 'up']);
    // Down/up is survived: frames still arrive afterwards.
    await a.exec(['ip', 'addr', 'add', '10.80.0.1/24', 'dev', vc]);
    await a.exec(['ping', '-n', '-c', '1', '-W', '1', '10.80.0.2'], { check: false });
    await waitFor(() => seen.some((f) => isArpRequestFor(f, '10.80.0.2')), { what: 'ARP request after down/up' });
    expect(p2.status().state).toBe('up');
    await b.exec(['ip', 'link', 'del', vd]);
    await waitFor(() => p2.status().state === 'down', { what: 'port to go down' });
    expect(p2.status().detail).toMatch(/ENODEV/);
    await p2.close();
  });
});
