/**
 * The native tee (device.cc setTee, DevicePort.tee): real TAPs in namespaces made here, bound to
 * one switch (daemon/switch/network.ts, in this process) with cut-through active, so most frames
 * never reach JS. Every frame the devices read and accept for writing must land in the ring, in
 * order — checked against the devices' own counters and the TCP sequence numbers of a stream —
 * and a ring nobody drains must cost forwarding nothing but the copies it refuses and counts.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, constants, openSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { compileFilterProgram } from '../../daemon/capture/filter.js';
import { Network } from '../../daemon/switch/network.js';
import { TEE_IN, TEE_OUT, TeeRing, type TeeRecord } from '../../plugins/common/tee-ring.js';
import { native } from '../../plugins/native/index.js';
import type { NativeDevice } from '../../plugins/native/types.js';
import { tapDriver } from '../../plugins/tap/index.js';
import type { FrameHandler, Port } from '../../plugins/types.js';
import { dgramDriver } from '../../plugins/unix-dgram/index.js';
import { cleanupAll, createNetns, makeTempDir, uniqueName, waitFor, type Netns } from '../support/netns.js';
import { tcpSend, tcpSink } from '../support/vms.js';

const log = pino({ level: 'silent' });
const GW_MAC = 0x02_6d_76_00_ff_01;

afterAll(cleanupAll);

interface Rec {
  frame: Buffer;
  origLen: number;
  dir: number;
  gsoType: number;
  gsoSize: number;
  ts: number; // ns since the epoch, as a number (precise enough to order)
}

function copy(r: TeeRecord): Rec {
  return { frame: Buffer.from(r.frame), origLen: r.origLen, dir: r.dir, gsoType: r.gsoType, gsoSize: r.gsoSize, ts: r.tsSec * 1e9 + r.tsNsec };
}

/** A ring drained into an array on a timer (as the capture hub would). */
class Collector {
  readonly recs: Rec[] = [];
  private timer: NodeJS.Timeout | undefined;
  constructor(readonly ring: TeeRing) {}
  start(ms = 5): this {
    this.timer = setInterval(() => this.drain(), ms);
    return this;
  }
  drain(): void {
    this.ring.drain((r) => this.recs.push(copy(r)));
  }
  stop(): void {
    clearInterval(this.timer);
    this.drain();
  }
}

interface Vm {
  ns: Netns;
  ifname: string;
  ip: string;
  mac: string;
  port: Port;
  /** Frames the port handed to JS (the rest of what it read was cut through). */
  toJs: number;
}

interface Lab {
  net: Network;
  a: Vm;
  b: Vm;
}

const labs: Lab[] = [];
afterEach(async () => {
  for (const l of labs.splice(0)) {
    for (const v of [l.a, l.b]) {
      v.port.tee?.(null, 0);
      await v.port.close({ remove: true });
      await v.ns.delete();
    }
  }
});

/** Two namespaces, each with a TAP opened by the tap driver, attached to one switch (cut-through on). */
async function lab(subnet: number, opts: { vnetHdr?: boolean; mtu?: number } = {}): Promise<Lab> {
  const mtu = opts.mtu ?? 1500;
  const net = new Network({ name: 'tee', mtu, gatewayMac: GW_MAC, clock: () => performance.now() });
  const vm = async (tag: string, host: number): Promise<Vm> => {
    const ns = await createNetns(`tee-${tag}`);
    const ifname = uniqueName('mvt');
    const port = await tapDriver.open({ kind: 'tap', ifname, netns: ns.name, vnetHdr: opts.vnetHdr ?? false }, { log, mtu, restoring: false });
    const v: Vm = { ns, ifname, ip: `10.77.${subnet}.${host}`, mac: '', port, toJs: 0 };
    // Count what reaches JS: the switch's handler, wrapped (the port stays a DevicePort).
    const onFrames = port.onFrames.bind(port);
    port.onFrames = (h: FrameHandler) =>
      onFrames((frames) => {
        v.toJs += frames.length;
        h(frames);
      });
    net.attach(tag, port, null);
    await ns.waitForLink(ifname);
    await ns.addAddr(ifname, `${v.ip}/24`);
    v.mac = await ns.mac(ifname);
    return v;
  };
  const l: Lab = { net, a: await vm('a', 11), b: await vm('b', 12) };
  labs.push(l);
  expect(await l.a.ns.ping(l.b.ip, { count: 2 })).toBe(true); // ARP done, MACs learned: cut-through from here
  return l;
}

interface Tcp {
  sport: number;
  dport: number;
  seq: number;
  flags: number;
  payload: number;
}

/** IPv4 TCP in an Ethernet frame (payload length from the IP header: right for a super-frame too). */
function tcpOf(f: Buffer): Tcp | undefined {
  if (f.length < 14 + 20 + 20 || f.readUInt16BE(12) !== 0x0800 || f[23] !== 6) return undefined;
  const ihl = (f[14]! & 15) * 4;
  const total = f.readUInt16BE(16);
  const t = 14 + ihl;
  const doff = (f[t + 12]! >> 4) * 4;
  return { sport: f.readUInt16BE(t), dport: f.readUInt16BE(t + 2), seq: f.readUInt32BE(t + 4), flags: f[t + 13]!, payload: total - ihl - doff };
}

/**
 * The byte stream to `dport` as seen in `recs`: every data segment must start at or before the
 * next expected sequence number (no gap: nothing missing, in order); returns the bytes covered
 * from the SYN to the FIN and how many segments were retransmissions.
 */
function streamOf(recs: Rec[], dport: number): { bytes: number; segments: number; retransmits: number; fin: boolean } {
  let next: number | undefined;
  let start = 0;
  let segments = 0;
  let retransmits = 0;
  let fin = false;
  for (const r of recs) {
    const t = tcpOf(r.frame);
    if (!t || t.dport !== dport) continue;
    if (t.flags & 0x02) {
      next = (t.seq + 1) >>> 0;
      start = next;
      continue;
    }
    if (next === undefined) throw new Error('segment before the SYN');
    if (t.payload === 0 && !(t.flags & 0x01)) continue; // a bare ACK
    const rel = (t.seq - next) | 0; // signed 32-bit distance
    if (rel > 0) throw new Error(`gap: segment at ${t.seq - start} but ${next - start} expected (${rel} bytes missing)`);
    segments++;
    const end = (t.seq + t.payload + (t.flags & 0x01)) >>> 0; // a FIN takes a sequence number
    if (((end - next) | 0) > 0) next = end;
    else if (t.payload > 0) retransmits++;
    if (t.flags & 0x01) fin = true;
  }
  return { bytes: next === undefined ? 0 : (next - start) >>> 0, segments, retransmits, fin };
}

function stats(p: Port): { rx: number; tx: number } {
  const s = p.stats();
  return { rx: s.rxFrames, tx: s.txFrames };
}

async function transfer(l: Lab, port: number, size: number): Promise<void> {
  const sink = await tcpSink(l.b.ns, l.b.ip, port);
  const sent = await tcpSend(l.a.ns, l.b.ip, port, size, 60_000);
  expect(sent.ok, sent.error).toBe(true);
  const got = await sink.result();
  expect(got.bytes).toBe(size);
  expect(got.sha256).toBe(sent.sha256);
}

describe('native tee: the record layout', () => {
  /** A FIFO's ends, non-blocking: a Device on each reads and writes whole frames (one write each). */
  function fifo(): { r: number; w: number } {
    const path = join(makeTempDir('tee-fifo'), 'f');
    execFileSync('mkfifo', [path]);
    const r = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
    const w = openSync(path, constants.O_WRONLY | constants.O_NONBLOCK);
    return { r, w };
  }

  function device(fd: number, onRead: (n: number) => void): NativeDevice {
    return new native.Device({ fd, mode: 'packet', maxFrame: 70000, batch: 4, queueFrames: 8, queueBytes: 1 << 20, onRead, onError: () => {} });
  }

  it('a record written natively drains exactly like one written by TeeRing.write()', async () => {
    const hdr = Buffer.from([1, 0x04, 74, 0, 0x78, 0x05, 54, 0, 16, 0]); // tcpv6, mss 1400
    const frames = [Buffer.concat([hdr, Buffer.alloc(3000, 7)]), Buffer.concat([hdr, Buffer.alloc(61, 9)]), Buffer.concat([Buffer.alloc(10), Buffer.alloc(14, 1)])];
    for (const snaplen of [0, 100]) {
      const p = fifo(); // each Device owns (and closes) its end
      const nat = new TeeRing(1 << 16, snaplen);
      const js = new TeeRing(1 << 16, snaplen);
      // TEE_OUT: written by a Device (the FIFO's write end), header of 10 bytes left out.
      const out = device(p.w, () => {});
      out.setTee(nat.buffer, nat.ctl, TEE_OUT, snaplen, 0, 10);
      let reads = 0;
      let wake: () => void = () => {};
      const inp = device(p.r, () => {
        reads++;
        wake();
      });
      inp.setTee(nat.buffer, nat.ctl, TEE_IN, snaplen, 10, 0);
      inp.start();
      for (const f of frames) {
        expect(out.write([f], 1)).toBe(1);
        js.write(f, 10, TEE_OUT);
        // One frame in the FIFO at a time, so each read is one frame.
        const n = reads;
        await new Promise<void>((resolve) => {
          wake = resolve;
          if (reads > n) resolve();
        });
        js.write(f, 10, TEE_IN);
      }
      out.setTee(null);
      inp.setTee(null);
      out.close();
      inp.close();
      const a: Rec[] = [];
      const b: Rec[] = [];
      nat.drain((r) => a.push(copy(r)));
      js.drain((r) => b.push(copy(r)));
      expect(a).toHaveLength(6);
      const strip = (r: Rec): Omit<Rec, 'ts'> => ({ frame: r.frame, origLen: r.origLen, dir: r.dir, gsoType: r.gsoType, gsoSize: r.gsoSize });
      expect(a.map(strip)).toEqual(b.map(strip));
      expect(a.map((r) => [r.dir, r.origLen, r.gsoType, r.gsoSize])).toEqual([
        [TEE_OUT, 3000, 4, 1400],
        [TEE_IN, 3000, 4, 1400],
        [TEE_OUT, 61, 4, 1400],
        [TEE_IN, 61, 4, 1400],
        [TEE_OUT, 14, 0, 0],
        [TEE_IN, 14, 0, 0],
      ]);
      for (let i = 0; i < a.length; i++) {
        expect(Math.abs(a[i]!.ts - b[i]!.ts), 'native and JS clocks agree').toBeLessThan(50e6);
        if (i > 0) expect(a[i]!.ts).toBeGreaterThanOrEqual(a[i - 1]!.ts);
      }
      expect(nat.written).toBe(6);
      expect(nat.dropped).toBe(0);
      out.setTee(null); // after close: fine
    }
  });

  it('refuses a malformed ring', () => {
    const p = fifo();
    const d = device(p.w, () => {});
    const ring = new TeeRing(4096, 0);
    expect(() => d.setTee(ring.buffer, new Uint32Array(2), TEE_IN, 0, 0, 0)).toThrow(TypeError);
    expect(() => d.setTee(ring.buffer, ring.ctl, TEE_IN, 0, 65, 0)).toThrow(TypeError);
    // Offsets spoiled from JS make the ring look full, never send the device outside it.
    d.setTee(ring.buffer, ring.ctl, TEE_OUT, 0, 0, 0);
    ring.ctl[0] = 1 << 30;
    expect(d.write([Buffer.alloc(60)], 1)).toBe(1);
    expect(ring.dropped).toBe(1);
    d.close();
    closeSync(p.r);
  });

  it('a filter program runs before the copy: what it rejects is counted in filtered, never copied', async () => {
    const p = fifo();
    const ring = new TeeRing(1 << 16, 0);
    const hdr = Buffer.alloc(10);
    const eth = (etherType: number, n: number): Buffer => {
      const f = Buffer.alloc(n);
      f.writeUInt16BE(etherType, 12);
      return f;
    };
    // After the 10-byte header: an ARP frame, an IPv4 one, and one too short to hold the ethertype.
    const frames = [eth(0x0806, 60), eth(0x0800, 60), Buffer.alloc(8)].map((f) => Buffer.concat([hdr, f]));
    const out = device(p.w, () => {});
    out.setTee(ring.buffer, ring.ctl, TEE_OUT, 0, 0, 10, compileFilterProgram('arp', 'ether'));
    let reads = 0;
    let wake: () => void = () => {};
    const inp = device(p.r, () => {
      reads++;
      wake();
    });
    inp.setTee(ring.buffer, ring.ctl, TEE_IN, 0, 10, 0, compileFilterProgram('not arp', 'ether'));
    inp.start();
    for (const f of frames) {
      expect(out.write([f], 1)).toBe(1);
      const n = reads;
      await new Promise<void>((resolve) => {
        wake = resolve;
        if (reads > n) resolve();
      });
    }
    // TEE_OUT kept the ARP frame; TEE_IN ('not arp') the IPv4 one. The short frame: a read past
    // the end rejects the packet for both, as BPF does (even under 'not').
    const got: [number, number][] = [];
    ring.drain((r) => got.push([r.dir, r.frame.length > 13 ? r.frame.readUInt16BE(12) : -1]));
    expect(got).toEqual([
      [TEE_OUT, 0x0806],
      [TEE_IN, 0x0800],
    ]);
    expect(ring.written).toBe(2);
    expect(ring.filtered).toBe(4);
    expect(ring.dropped).toBe(0);
    // A malformed program is refused; setTee(null) and a later tee without one copy everything.
    expect(() => out.setTee(ring.buffer, ring.ctl, TEE_OUT, 0, 0, 10, new Uint32Array([0xffff]))).toThrow(TypeError);
    out.setTee(ring.buffer, ring.ctl, TEE_OUT, 0, 0, 10);
    expect(out.write([frames[2]!], 1)).toBe(1);
    expect(ring.written).toBe(3);
    out.close();
    inp.close();
  });
});

describe('native tee on a datagram socket port (recvmmsg/sendmmsg)', () => {
  it('captures every datagram read (runts and oversize ones too) and every frame accepted, queued ones included', async () => {
    const dir = makeTempDir('tee-dg');
    // The port sends to vm.sock, which only reads (an unconnected receiver: the kernel bounds
    // its queue, so the port's queue fills); src.sock sends to the port.
    const port = await dgramDriver.open({ kind: 'dgram', path: join(dir, 'port.sock'), peer: join(dir, 'vm.sock') }, { log, mtu: 1500, restoring: false });
    let vmReads = 0;
    const dev = (name: string, onRead: (n: number) => void): NativeDevice =>
      new native.Device({ fd: native.openUnixDgram({ path: join(dir, name) }).fd, mode: 'dgram', maxFrame: 1518, batch: 16, queueFrames: 16, queueBytes: 1 << 20, onRead, onError: () => {} });
    const vmDev = dev('vm.sock', (n) => (vmReads += n));
    const srcDev = dev('src.sock', () => {});
    const got: number[] = [];
    port.onFrames((fs) => fs.forEach((f) => got.push(f.readUInt32BE(14))));
    const ring = new TeeRing(8 << 20, 0);
    port.tee!(ring, TEE_IN | TEE_OUT);
    const frame = (n: number, len = 64): Buffer => {
      const f = Buffer.alloc(len, 0x5a);
      f.writeUInt32BE(n, 14);
      return f;
    };
    try {
      srcDev.setPeer(join(dir, 'port.sock'));
      srcDev.write([frame(1), Buffer.alloc(5, 1), frame(2, 1600), frame(3)], 4);
      await waitFor(() => got.length === 2 && (port.stats().drops.oversize ?? 0) === 1, { what: 'frames from the vm' });
      const recs: Rec[] = [];
      ring.drain((r) => recs.push(copy(r)));
      expect(recs.map((r) => [r.dir, r.origLen, r.frame.length])).toEqual([
        [TEE_IN, 64, 64],
        [TEE_IN, 5, 5], // a runt the port drops: captured as it was read
        [TEE_IN, 1600, 1518], // too big for the slot: what was read, with its true length
        [TEE_IN, 64, 64],
      ]);
      // The VM does not read: its socket fills, then the port's queue, then frames are dropped.
      const N = 3000;
      for (let i = 0; i < N; i += 100) port.send(Array.from({ length: 100 }, (_, k) => frame(100 + i + k)));
      const st = port.stats();
      const refused = st.drops['queue-full'] ?? 0;
      expect(refused).toBeGreaterThan(0);
      const out: number[] = [];
      ring.drain((r) => {
        expect(r.dir).toBe(TEE_OUT);
        out.push(r.frame.readUInt32BE(14));
      });
      expect(out).toHaveLength(N - refused); // written now or queued: accepted, in order
      expect(out).toEqual([...out].sort((x, y) => x - y));
      expect(out.length).toBeGreaterThan(st.txFrames); // some only queued so far
      // The queue drains once the VM reads; nothing more is teed for it (teed when queued).
      vmDev.start();
      await waitFor(() => port.stats().txFrames === N - refused, { what: 'queue to drain' });
      expect(ring.drain(() => {})).toBe(0);
      expect(vmReads).toBe(N - refused);
    } finally {
      vmDev.close();
      srcDev.close();
      await port.close({ remove: true });
    }
  });
});

describe('native tee on TAPs bound to a switch (cut-through)', () => {
  it('captures every frame both ways, in order, cut-through ones included; counts match the devices', async () => {
    const l = await lab(31);
    const ringA = new TeeRing(64 << 20, 0);
    const ringB = new TeeRing(64 << 20, 0);
    const ca = new Collector(ringA).start();
    const cb = new Collector(ringB).start();
    const a0 = stats(l.a.port);
    const b0 = stats(l.b.port);
    const js0 = l.a.toJs + l.b.toJs;
    l.a.port.tee!(ringA, TEE_IN | TEE_OUT);
    l.b.port.tee!(ringB, TEE_IN | TEE_OUT);

    expect(await l.a.ns.ping(l.b.ip, { count: 3, intervalS: 0.05 })).toBe(true);
    const SIZE = 4 << 20;
    await transfer(l, 5301, SIZE);
    // Quiet: the last ACKs and FINs have crossed once the counters stop moving.
    await waitFor(
      async () => {
        const s = JSON.stringify([stats(l.a.port), stats(l.b.port)]);
        await new Promise((r) => setTimeout(r, 200));
        return s === JSON.stringify([stats(l.a.port), stats(l.b.port)]) ? true : undefined;
      },
      { what: 'counters to settle' },
    );
    l.a.port.tee!(null, 0);
    l.b.port.tee!(null, 0);
    const a1 = stats(l.a.port);
    const b1 = stats(l.b.port);
    ca.stop();
    cb.stop();

    expect(ringA.dropped + ringB.dropped).toBe(0);
    const count = (recs: Rec[], dir: number): number => recs.filter((r) => r.dir === dir).length;
    // Every frame each device read and wrote, by its own counters.
    expect(count(ca.recs, TEE_IN)).toBe(a1.rx - a0.rx);
    expect(count(ca.recs, TEE_OUT)).toBe(a1.tx - a0.tx);
    expect(count(cb.recs, TEE_IN)).toBe(b1.rx - b0.rx);
    expect(count(cb.recs, TEE_OUT)).toBe(b1.tx - b0.tx);
    // Most of it never reached JS: cut through.
    const js = l.a.toJs + l.b.toJs - js0;
    expect(js).toBeLessThan((a1.rx - a0.rx + b1.rx - b0.rx) / 10);

    // In order: times never go back, and each direction of the stream is whole, without gaps,
    // at both ends (what A sent, what B was given; what B sent back, what A was given).
    for (const recs of [ca.recs, cb.recs]) for (let i = 1; i < recs.length; i++) expect(recs[i]!.ts).toBeGreaterThanOrEqual(recs[i - 1]!.ts);
    const sentByA = streamOf(ca.recs.filter((r) => r.dir === TEE_IN), 5301);
    const givenToB = streamOf(cb.recs.filter((r) => r.dir === TEE_OUT), 5301);
    for (const s of [sentByA, givenToB]) {
      expect(s.bytes).toBe(SIZE + 1); // the data and the FIN
      expect(s.fin).toBe(true);
    }
    expect(givenToB.segments).toBe(sentByA.segments);
    // The ping: requests from A given to B, replies from B given to A.
    const echo = (recs: Rec[], dir: number, type: number): number =>
      recs.filter((r) => r.dir === dir && r.frame.readUInt16BE(12) === 0x0800 && r.frame[23] === 1 && r.frame[34] === type).length;
    expect(echo(ca.recs, TEE_IN, 8)).toBe(3);
    expect(echo(cb.recs, TEE_OUT, 8)).toBe(3);
    expect(echo(cb.recs, TEE_IN, 0)).toBe(3);
    expect(echo(ca.recs, TEE_OUT, 0)).toBe(3);
    // Frames are Ethernet from the right MACs, whole (snaplen 0).
    const first = ca.recs.find((r) => r.dir === TEE_IN)!;
    expect(first.frame.subarray(6, 12).toString('hex')).toBe(l.a.mac.replaceAll(':', ''));
    for (const r of [...ca.recs, ...cb.recs]) expect(r.frame.length).toBe(r.origLen);
  });

  it('a ring nobody drains: forwarding goes on, the refused copies are counted, nothing else', async () => {
    const l = await lab(32);
    const ring = new TeeRing(256 << 10, 96);
    const a0 = stats(l.a.port);
    const b0 = stats(l.b.port);
    l.a.port.tee!(ring, TEE_IN | TEE_OUT);
    l.b.port.tee!(ring, TEE_IN | TEE_OUT); // one ring for both ports: the same thread writes both
    await transfer(l, 5302, 8 << 20);
    l.a.port.tee!(null, 0);
    l.b.port.tee!(null, 0);
    const a1 = stats(l.a.port);
    const b1 = stats(l.b.port);
    const frames = a1.rx - a0.rx + a1.tx - a0.tx + b1.rx - b0.rx + b1.tx - b0.tx;
    expect(ring.dropped).toBeGreaterThan(0);
    expect(ring.written + ring.dropped).toBe(frames);
    // What is in the ring is the first frames, cut to the snaplen, with their true lengths.
    const recs: Rec[] = [];
    ring.drain((r) => recs.push(copy(r)));
    expect(recs).toHaveLength(ring.written);
    expect(recs.every((r) => r.frame.length === Math.min(96, r.origLen))).toBe(true);
    expect(recs.some((r) => r.origLen > 1000)).toBe(true);
  });

  it('a vnet-hdr TAP: TSO super-frames are captured whole, without the header, with their gso type and size', async () => {
    const l = await lab(33, { vnetHdr: true });
    const ring = new TeeRing(64 << 20, 128);
    const c = new Collector(ring).start();
    l.a.port.tee!(ring, TEE_IN);
    l.b.port.tee!(ring, TEE_OUT);
    await transfer(l, 5303, 4 << 20);
    l.a.port.tee!(null, 0);
    l.b.port.tee!(null, 0);
    c.stop();
    expect(ring.dropped).toBe(0);
    const supers = c.recs.filter((r) => r.gsoType !== 0);
    expect(supers.length).toBeGreaterThan(0);
    for (const r of supers) {
      expect(r.gsoType & 0x7f).toBe(1); // tcpv4
      expect(r.gsoSize).toBeGreaterThan(500);
      expect(r.gsoSize).toBeLessThanOrEqual(1460);
    }
    expect(supers.some((r) => r.origLen > 1514)).toBe(true);
    // No vnet header in front: an Ethernet header with IPv4 (cut at the snaplen of 128).
    for (const r of c.recs.filter((x) => x.origLen > 1514)) {
      expect(r.frame.length).toBe(128);
      expect(r.frame.readUInt16BE(12)).toBe(0x0800);
      expect(14 + r.frame.readUInt16BE(16)).toBe(r.origLen); // the IP total length: the whole super-frame
    }
    // Both ends saw the super-frames: as read from A and as given to B.
    expect(supers.some((r) => r.dir === TEE_IN)).toBe(true);
    expect(supers.some((r) => r.dir === TEE_OUT)).toBe(true);
    const s = streamOf(c.recs.filter((r) => r.dir === TEE_OUT), 5303);
    expect(s.bytes).toBe((4 << 20) + 1);
  });

  it('tee off: nothing more is written, and forwarding is untouched', async () => {
    const l = await lab(34);
    const ring = new TeeRing(1 << 20, 0);
    l.a.port.tee!(ring, TEE_IN | TEE_OUT);
    expect(await l.a.ns.ping(l.b.ip, { count: 2, intervalS: 0.05 })).toBe(true);
    const w = ring.written;
    expect(w).toBeGreaterThanOrEqual(4);
    l.a.port.tee!(null, 0);
    const rx0 = stats(l.a.port).rx;
    expect(await l.a.ns.ping(l.b.ip, { count: 3, intervalS: 0.05 })).toBe(true);
    expect(stats(l.a.port).rx - rx0).toBeGreaterThanOrEqual(3);
    expect(ring.written).toBe(w);
    expect(ring.dropped).toBe(0);
    // And a closed port lets go of its ring: tee() after close does nothing.
    await l.a.port.close();
    l.a.port.tee!(ring, TEE_IN);
    expect(ring.written).toBe(w);
  });
});
