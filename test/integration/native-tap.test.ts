/**
 * The native addon's tun/tap side and the tap/tun port drivers, against real devices created
 * inside throwaway network namespaces (mvna-*). The namespace's kernel plays the VM's peer: it
 * answers ARP and ping written into the device, and its own traffic is read back in batches.
 */
import { closeSync, readlinkSync } from 'node:fs';
import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { native } from '../../plugins/native/index.js';
import type { NativeDevice } from '../../plugins/native/types.js';
import { tapDriver } from '../../plugins/tap/index.js';
import { tunDriver } from '../../plugins/tun/index.js';
import type { PortContext } from '../../plugins/types.js';
import {
  arpReplyFor,
  arpRequest,
  icmpEcho,
  icmpEchoRequestFrame,
  ipv4Packet,
  isArpRequestFor,
  isEchoReply,
  macBytes,
  parseIpv4,
} from '../support/frames.js';
import { Netns, cleanupAll, randomSuffix, run, uniqueName, waitFor } from '../support/netns.js';

const log = pino({ level: 'silent' });
const ctx = (mtu: number, restoring = false): PortContext => ({ log, mtu, restoring });

const TAP_MAC = '02:6d:76:00:00:01';
const VM_MAC = '02:6d:76:00:00:02';

/** A namespace `mvna-<tag>-<random>` with lo up and IPv6 off, deleted on cleanup (even on a crash). */
async function makeNs(tag: string): Promise<Netns> {
  const name = `mvna-${tag}-${randomSuffix(6)}`;
  await run(['ip', 'netns', 'add', name]);
  const ns = new Netns(name);
  await ns.exec(['ip', 'link', 'set', 'lo', 'up']);
  await ns.exec(['sysctl', '-q', '-w', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
  return ns;
}

interface Capture {
  dev: NativeDevice;
  frames: Buffer[];
  batches: number[];
  errors: string[];
}

/** A started Device on `fd` that copies every frame it reads. */
function capture(fd: number, slot: number, batch = 8): Capture {
  const frames: Buffer[] = [];
  const batches: number[] = [];
  const errors: string[] = [];
  const dev: NativeDevice = new native.Device({
    fd,
    mode: 'packet',
    maxFrame: slot,
    batch,
    queueFrames: 64,
    queueBytes: 1 << 20,
    onRead: (count) => {
      batches.push(count);
      for (let i = 0; i < count; i++) {
        frames.push(Buffer.from(dev.buffer.subarray(i * slot, i * slot + dev.lengths[i]!)));
      }
    },
    onError: (m) => errors.push(m),
  });
  dev.start();
  return { dev, frames, batches, errors };
}

/** Node one-liner that sends `n` UDP datagrams to ip:port, one after another, then exits. */
function udpBurst(ip: string, port: number, n: number): string[] {
  return [
    process.execPath,
    '-e',
    `const s=require('dgram').createSocket('udp4');let i=0;const go=()=>{if(i===${n}){s.close();return;}` +
      `s.send(Buffer.alloc(32,i),${port},'${ip}',(e)=>{if(e)throw e;i++;go();});};go();`,
  ];
}

afterAll(async () => {
  await cleanupAll();
});

describe('native tun/tap', () => {
  it('creates a TAP inside a namespace with MTU, MAC and UP, and returns to our namespace', async () => {
    const ns = await makeNs('tap');
    const name = uniqueName('mvnat');
    const before = readlinkSync('/proc/thread-self/ns/net');
    expect(native.ifIndex(name, ns.path)).toBe(0);
    const r = native.openTun({ name, tap: true, netns: ns.path });
    try {
      expect(r).toMatchObject({ name, created: true });
      expect(readlinkSync('/proc/thread-self/ns/net')).toBe(before);
      native.configureLink({ name, netns: ns.path, mtu: 1400, mac: macBytes(TAP_MAC), up: true });
      expect(readlinkSync('/proc/thread-self/ns/net')).toBe(before);
      const link = await ns.link(name);
      expect(link?.mtu).toBe(1400);
      expect(link?.address).toBe(TAP_MAC);
      expect(link?.flags).toContain('UP');
      expect(native.ifIndex(name)).toBe(0); // not in our namespace
      expect(native.ifIndex(name, ns.path)).toBeGreaterThan(0);
    } finally {
      closeSync(r.fd);
    }
    // Not persistent: closing the only fd deletes it.
    await waitFor(async () => (await ns.link(name)) === undefined, { what: `${name} to disappear` });
  });

  it('reports errors with errno codes and stays in our namespace on failure', () => {
    const before = readlinkSync('/proc/thread-self/ns/net');
    expect(() => native.openTun({ name: 'x', tap: true, netns: '/run/netns/mvna-does-not-exist' })).toThrow(
      expect.objectContaining({ code: 'ENOENT' }) as Error,
    );
    expect(() => native.openTun({ name: 'bad/name', tap: true })).toThrow(/invalid interface name/);
    expect(() => native.configureLink({ name: 'mvna-nonexist', mtu: 1400, netns: '/proc/self/ns/net' })).toThrow(
      expect.objectContaining({ code: 'ENODEV' }) as Error,
    );
    expect(readlinkSync('/proc/thread-self/ns/net')).toBe(before);
  });

  it('writes frames the namespace answers, and reads its traffic in batches', async () => {
    const ns = await makeNs('tapio');
    const name = uniqueName('mvnat');
    const r = native.openTun({ name, tap: true, netns: ns.path });
    const slot = 1518;
    const cap = capture(r.fd, slot, 8);
    try {
      native.configureLink({ name, netns: ns.path, mtu: 1500, mac: macBytes(TAP_MAC), up: true });
      await ns.exec(['ip', 'addr', 'add', '10.77.0.1/24', 'dev', name]);

      // ARP: the "VM" (10.77.0.2) asks for the namespace's address.
      expect(cap.dev.write([arpRequest({ srcMac: VM_MAC, srcIp: '10.77.0.2', targetIp: '10.77.0.1' })], 1)).toBe(1);
      await waitFor(() => cap.frames.some((f) => arpReplyFor(f, '10.77.0.1') === TAP_MAC), { what: 'ARP reply' });

      // Ping the namespace (it learnt our MAC from the request it answered).
      const echo = icmpEchoRequestFrame({ srcMac: VM_MAC, dstMac: TAP_MAC, srcIp: '10.77.0.2', dstIp: '10.77.0.1', id: 0x4d56, seq: 7 });
      expect(cap.dev.write([echo, echo], 2)).toBe(2);
      await waitFor(() => cap.frames.filter((f) => isEchoReply(f, { id: 0x4d56, seq: 7, from: '10.77.0.1' })).length === 2, {
        what: 'two echo replies',
      });

      // The namespace pinging an unknown neighbour makes its kernel ARP for it.
      await ns.exec(['ping', '-n', '-c', '1', '-W', '1', '10.77.0.9'], { check: false });
      await waitFor(() => cap.frames.some((f) => isArpRequestFor(f, '10.77.0.9')), { what: 'ARP request for 10.77.0.9' });

      // A burst queued in the device while we are not reading comes out in batches of <= 8.
      cap.dev.stop();
      await ns.exec(['ip', 'neigh', 'replace', '10.77.0.3', 'lladdr', '02:6d:76:00:00:03', 'dev', name]);
      await ns.exec(udpBurst('10.77.0.3', 9999, 20));
      const firstBatch = cap.batches.length;
      const isUdpTo3 = (f: Buffer): boolean => {
        const ip = parseIpv4(f);
        return ip !== undefined && ip.protocol === 17 && ip.dst === '10.77.0.3';
      };
      expect(cap.frames.filter(isUdpTo3)).toHaveLength(0);
      cap.dev.start();
      await waitFor(() => cap.frames.filter(isUdpTo3).length === 20, { what: '20 UDP frames' });
      const burst = cap.batches.slice(firstBatch);
      expect(Math.max(...burst)).toBe(8);
      expect(burst.every((n) => n >= 1 && n <= 8)).toBe(true);

      const s = cap.dev.stats();
      expect(s.txFrames).toBe(3);
      expect(s.rxFrames).toBe(cap.frames.length);
      expect(s.rxBytes).toBe(cap.frames.reduce((a, f) => a + f.length, 0));
      expect(s.dropIoError + s.dropQueueFull + s.callbackErrors).toBe(0);
      expect(cap.errors).toEqual([]);
    } finally {
      cap.dev.close();
      cap.dev.close(); // idempotent
    }
    await waitFor(async () => (await ns.link(name)) === undefined, { what: `${name} to disappear` });
  });

  it('keeps a persistent device after close; re-attaches; removeTun deletes it', async () => {
    const ns = await makeNs('tapp');
    const name = uniqueName('mvnat');
    const r = native.openTun({ name, tap: true, netns: ns.path });
    native.setPersist(r.fd, true);
    const dev = capture(r.fd, 1518).dev;
    dev.close();
    expect(await ns.link(name)).toBeDefined();

    const again = native.openTun({ name, tap: true, netns: ns.path });
    expect(again.created).toBe(false);
    closeSync(again.fd);
    expect(await ns.link(name)).toBeDefined();

    // A TUN open of a TAP is refused with a hint.
    expect(() => native.openTun({ name, tap: false, netns: ns.path })).toThrow(/TUNSETIFF.*EINVAL/);

    native.removeTun(name, true, ns.path);
    expect(await ns.link(name)).toBeUndefined();
    native.removeTun(name, true, ns.path); // absent: no-op
  });

  it('opens several queues of a multi-queue TAP and removes it', async () => {
    const ns = await makeNs('tapm');
    const name = uniqueName('mvnat');
    const q0 = native.openTun({ name, tap: true, multiQueue: true, netns: ns.path });
    const q1 = native.openTun({ name, tap: true, multiQueue: true, netns: ns.path });
    expect(q0.created).toBe(true);
    expect(q1.created).toBe(false);
    native.setPersist(q0.fd, true);
    closeSync(q0.fd);
    closeSync(q1.fd);
    expect(await ns.link(name)).toBeDefined();
    native.removeTun(name, true, ns.path); // retries with IFF_MULTI_QUEUE
    expect(await ns.link(name)).toBeUndefined();
  });

  it('tap driver: configures, moves frames, counts drops, survives close, removes on detach', async () => {
    const ns = await makeNs('tapd');
    const name = uniqueName('mvnat');
    const spec = { kind: 'tap' as const, ifname: name, netns: ns.name, mac: TAP_MAC };
    const port = await tapDriver.open(spec, ctx(1400));
    expect(port).toMatchObject({ kind: 'tap', layer: 2, vnetHdrLen: 0, maxFrame: 1418 });
    expect(port.status().state).toBe('up');
    const link = await ns.link(name);
    expect(link?.mtu).toBe(1400);
    expect(link?.address).toBe(TAP_MAC);
    expect(link?.flags).toContain('UP');

    const got: Buffer[] = [];
    port.onFrames((frames) => {
      for (const f of frames) got.push(Buffer.from(f));
    });
    await ns.exec(['ip', 'addr', 'add', '10.77.1.1/24', 'dev', name]);
    const req = arpRequest({ srcMac: VM_MAC, srcIp: '10.77.1.2', targetIp: '10.77.1.1' });
    port.send([Buffer.alloc(10), req, Buffer.alloc(2000)]);
    await waitFor(() => got.some((f) => arpReplyFor(f, '10.77.1.1') === TAP_MAC), { what: 'ARP reply' });
    const s = port.stats();
    expect(s.txFrames).toBe(1);
    expect(s.txBytes).toBe(req.length);
    expect(s.rxFrames).toBe(got.length);
    expect(s.drops).toMatchObject({ runt: 1, oversize: 1 });

    // A frame longer than the port's maxFrame (the namespace raised the MTU behind our back) is
    // truncated by the tun driver: it must be counted as oversize, not delivered cut short.
    await ns.exec(['ip', 'link', 'set', name, 'mtu', '9000']);
    await ns.exec(['ip', 'neigh', 'replace', '10.77.1.5', 'lladdr', '02:6d:76:00:00:05', 'dev', name]);
    await ns.exec(['ping', '-n', '-c', '1', '-W', '0.2', '-s', '3000', '10.77.1.5'], { check: false });
    await waitFor(() => port.stats().drops.oversize === 2, { what: 'the jumbo frame counted as oversize' });
    expect(got.every((f) => f.length <= 1418)).toBe(true);

    await port.close();
    await port.close();
    expect(port.status().state).toBe('down');
    expect(await ns.link(name)).toBeDefined(); // persistent: kept for a restarted daemon

    // The daemon hands a restored port the record saved at attach: mvnet created this one.
    expect(port.owned).toEqual({ created: true });
    const restored = await tapDriver.open(spec, { ...ctx(1400, true), owned: port.owned! });
    expect(restored.status().state).toBe('up');
    await restored.close({ remove: true });
    expect(await ns.link(name)).toBeUndefined();
  });

  it('tap driver with vnetHdr: frames carry the virtio_net_hdr both ways and offloads are on', async () => {
    const ns = await makeNs('tapv');
    const name = uniqueName('mvnat');
    const port = await tapDriver.open({ kind: 'tap', ifname: name, netns: ns.name, mac: TAP_MAC, vnetHdr: true }, ctx(1500));
    try {
      expect(port.vnetHdrLen).toBe(10);
      const got: Buffer[] = [];
      port.onFrames((frames) => {
        for (const f of frames) got.push(Buffer.from(f));
      });
      await ns.exec(['ip', 'addr', 'add', '10.77.2.1/24', 'dev', name]);
      const features = await ns.exec(['ethtool', '-k', name]);
      expect(features.stdout).toMatch(/tcp-segmentation-offload: on/);
      expect(features.stdout).toMatch(/tx-checksumming: on/);

      const req = arpRequest({ srcMac: VM_MAC, srcIp: '10.77.2.2', targetIp: '10.77.2.1' });
      port.send([Buffer.concat([Buffer.alloc(10), req])]);
      await waitFor(() => got.some((f) => f.length > 10 && arpReplyFor(f.subarray(10), '10.77.2.1') === TAP_MAC), {
        what: 'ARP reply behind a vnet header',
      });
      const reply = got.find((f) => arpReplyFor(f.subarray(10), '10.77.2.1'))!;
      expect(reply[1]).toBe(0); // gso_type NONE
      // A plain frame without its header is a runt on a vnet port... or an oversize one.
      port.send([Buffer.alloc(20)]);
      expect(port.stats().drops.runt).toBe(1);
      expect(port.stats().txBytes).toBe(req.length);
    } finally {
      await port.close({ remove: true });
    }
    expect(await ns.link(name)).toBeUndefined();
  });
});

describe('native tun', () => {
  it('tun driver: IP packets both ways, MTU and UP set, not-IP and runts dropped', async () => {
    const ns = await makeNs('tun');
    const name = uniqueName('mvnau');
    const spec = { kind: 'tun' as const, ifname: name, netns: ns.name };
    const port = await tunDriver.open(spec, ctx(1400));
    expect(port).toMatchObject({ kind: 'tun', layer: 3, vnetHdrLen: 0, maxFrame: 1400 });
    const link = await ns.link(name);
    expect(link?.mtu).toBe(1400);
    expect(link?.flags).toContain('UP');

    const got: Buffer[] = [];
    port.onFrames((frames) => {
      for (const f of frames) got.push(Buffer.from(f));
    });
    await ns.exec(['ip', 'addr', 'add', '10.78.0.1/24', 'dev', name]);

    // The namespace pings through the tun: we get the bare IPv4 packet.
    await ns.exec(['ping', '-n', '-c', '1', '-W', '1', '10.78.0.2'], { check: false });
    await waitFor(() => got.some((p) => p[0] === 0x45 && p[9] === 1 && p.subarray(16, 20).equals(Buffer.from([10, 78, 0, 2]))), {
      what: 'ICMP echo request packet',
    });

    // We ping the namespace: the reply comes back as an IP packet.
    const echo = ipv4Packet({ src: '10.78.0.2', dst: '10.78.0.1', protocol: 1, payload: icmpEcho({ type: 8, id: 0x7475, seq: 3 }) });
    port.send([echo, Buffer.alloc(12), Buffer.alloc(40)]);
    await waitFor(
      () =>
        got.some(
          (p) =>
            p[0] === 0x45 && p[9] === 1 && p[20] === 0 && p.readUInt16BE(24) === 0x7475 && p.subarray(12, 16).equals(Buffer.from([10, 78, 0, 1])),
        ),
      { what: 'ICMP echo reply packet' },
    );
    const s = port.stats();
    expect(s.txFrames).toBe(1);
    expect(s.drops).toMatchObject({ runt: 1, 'not-ip': 1 });

    await port.close();
    expect(await ns.link(name)).toBeDefined();
    expect(port.owned).toEqual({ created: true });
    const restored = await tunDriver.open(spec, { ...ctx(1400, true), owned: port.owned! });
    await restored.close({ remove: true });
    expect(await ns.link(name)).toBeUndefined();
  });
});

describe('devices mvnet did not create', () => {
  it('tap driver: a foreign persistent TAP is configured for the network and given back as it was at detach', async () => {
    const ns = await makeNs('tapf');
    const name = uniqueName('mvnaf');
    await ns.exec(['ip', 'tuntap', 'add', 'dev', name, 'mode', 'tap']);
    await ns.exec(['ip', 'link', 'set', 'dev', name, 'mtu', '1300', 'address', VM_MAC]);
    const port = await tapDriver.open({ kind: 'tap', ifname: name, netns: ns.name, mac: TAP_MAC }, ctx(1400));
    expect(port.owned).toEqual({ created: false, was: { mtu: 1300, mac: VM_MAC, up: false } });
    const link = await ns.link(name);
    expect(link).toMatchObject({ mtu: 1400, address: TAP_MAC });
    expect(link?.flags).toContain('UP');
    await port.close({ remove: true });
    const after = await ns.link(name);
    expect(after).toMatchObject({ mtu: 1300, address: VM_MAC });
    expect(after?.flags).not.toContain('UP');
  });

  it('tun driver: a foreign TUN keeps existing with its MTU; one that was up stays up', async () => {
    const ns = await makeNs('tunf');
    const name = uniqueName('mvnaf');
    await ns.exec(['ip', 'tuntap', 'add', 'dev', name, 'mode', 'tun']);
    await ns.exec(['ip', 'link', 'set', 'dev', name, 'mtu', '1280', 'up']);
    const port = await tunDriver.open({ kind: 'tun', ifname: name, netns: ns.name }, ctx(1400));
    expect(port.owned).toEqual({ created: false, was: { mtu: 1280 } });
    expect((await ns.link(name))?.mtu).toBe(1400);
    await port.close({ remove: true });
    const after = await ns.link(name);
    expect(after?.mtu).toBe(1280);
    expect(after?.flags).toContain('UP');
  });

  it('linkInfo reads MTU, MAC, up and loopback', async () => {
    const ns = await makeNs('li');
    const lo = native.linkInfo('lo', ns.path);
    expect(lo).toMatchObject({ loopback: true, up: true });
    const name = uniqueName('mvnaf');
    await ns.exec(['ip', 'tuntap', 'add', 'dev', name, 'mode', 'tap']);
    await ns.exec(['ip', 'link', 'set', 'dev', name, 'mtu', '1234', 'address', VM_MAC]);
    const info = native.linkInfo(name, ns.path);
    expect(info).toMatchObject({ mtu: 1234, up: false, loopback: false });
    expect(macBytes(VM_MAC).equals(info.mac)).toBe(true);
    expect(() => native.linkInfo('nosuchlink0', ns.path)).toThrow(/SIOCGIFMTU/);
  });
});
