/**
 * Cut-through with vhost-user devices (vhost.cc as a SwitchMember of device.cc's Fib), bound to
 * a Fib directly (no switch): guest → guest (one copy, from one guest's TX buffers into the
 * other's RX buffers) and guest ↔ TAP (straight from guest memory with writev; one copy into
 * the guest), with nothing handed to JS; what the switch must see (not plain, an offload the
 * guest did not negotiate, an unknown MAC) still goes to JS; capture sees cut frames both ways.
 */
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { loadNative } from '../../plugins/native/index.js';
import type { NativeDevice, NativeFib } from '../../plugins/native/types.js';
import { foldSum, internetChecksum, pseudoHeaderSumV4At, pseudoHeaderSumV6At } from '../../daemon/wire/checksum.js';
import { normalizeOffload } from '../../daemon/wire/gso.js';
import { TeeRing } from '../../plugins/common/tee-ring.js';
import { cleanupAll, createNetns, uniqueName, waitFor, type Netns } from '../support/netns.js';
import { F, startBackend, VhostFrontend, type Backend } from '../support/vhost-frontend.js';
import { macToBuffer, macToString, writeMac } from '../../daemon/wire/mac.js';

const native = loadNative();
const GW_MAC = 0x02_6d_76_00_ff_01;
const MAC_A = 0x52_54_00_00_00_0a;
const MAC_B = 0x52_54_00_00_00_0b;

const Fib = native.Device.Fib;
// The switch holds its Fib for as long as the network lives; here this list does. (A Fib the
// garbage collector takes while members are bound ends their cut-through: frames go to JS.)
const fibs: NativeFib[] = [];
const newFib = (gatewayMac: number, maxFrame: number): NativeFib => {
  const f = new Fib(gatewayMac, maxFrame);
  fibs.push(f);
  return f;
};

afterAll(cleanupAll);

const opened: { close(): void }[] = [];
afterEach(() => {
  for (const o of opened.splice(0)) o.close();
});

/** An Ethernet + IPv4 + TCP SYN with valid checksums. */
function tcpSyn(dst: number, src: number, ipSrc: string, ipDst: string, payload = 0): Buffer {
  const f = Buffer.alloc(14 + 20 + 20 + payload);
  writeMac(f, 0, dst);
  writeMac(f, 6, src);
  f.writeUInt16BE(0x0800, 12);
  const ip = 14;
  f[ip] = 0x45;
  f.writeUInt16BE(40 + payload, ip + 2);
  f[ip + 8] = 64;
  f[ip + 9] = 6;
  Buffer.from(ipSrc.split('.').map(Number)).copy(f, ip + 12);
  Buffer.from(ipDst.split('.').map(Number)).copy(f, ip + 16);
  f.writeUInt16BE(internetChecksum(f, ip, ip + 20), ip + 10);
  const tcp = ip + 20;
  f.writeUInt16BE(40000, tcp);
  f.writeUInt16BE(9, tcp + 2);
  f.writeUInt32BE(1, tcp + 4);
  f[tcp + 12] = 0x50;
  f[tcp + 13] = 0x02;  // SYN
  f.writeUInt16BE(65535, tcp + 14);
  f.fill(0x5a, tcp + 20);
  f.writeUInt16BE(internetChecksum(f, tcp, f.length, pseudoHeaderSumV4At(f, ip, 6, 20 + payload)), tcp + 16);
  return f;
}

async function guest(b: Backend, want?: bigint): Promise<VhostFrontend> {
  const fe = VhostFrontend.connect(b.path, want !== undefined ? { want } : {});
  opened.push(fe);
  await fe.start();
  await b.waitState('running');
  fe.postRx(32);
  return fe;
}

function backend(offloads = false): Backend {
  const b = startBackend({ offloads });
  opened.push(b);
  return b;
}

describe('vhost-user cut-through', () => {
  it('guest to guest: plain frames go straight into the other guest, the rest to JS', async () => {
    const a = backend(true);
    const b = backend(true);
    const fa = await guest(a, F.VERSION_1 | F.MRG_RXBUF | F.PROTOCOL_FEATURES | F.HOST_TSO4);  // sends a TSO frame below
    const fb = await guest(b);  // offered offloads, but wants none: GSO frames for it go to JS
    const fib = newFib(GW_MAC, 1514);
    let reported = 0;
    a.dev.bindSwitch(fib, 1, 14, 1514, MAC_A, (n) => (reported += n));
    b.dev.bindSwitch(fib, 1, 14, 1514, MAC_B, () => {});
    expect(fib.set(MAC_B, b.dev, 60_000)).toBe(true);

    const syn = tcpSyn(MAC_B, MAC_A, '10.80.0.1', '10.80.0.2', 1400);
    fa.sendFrames([syn, syn], { split: true });
    await waitFor(() => b.dev.stats().txFrames >= 2, { what: 'two frames cut through into B' });
    const got = fb.receiveFrames();
    expect(got.map((g) => g.frame)).toEqual([syn, syn]);
    expect(a.frames).toEqual([]);
    a.dev.flushForwarded();
    expect(reported).toBe(2);
    expect(a.dev.stats()).toMatchObject({ rxFrames: 2, violations: 0 });

    // Not plain (ARP), a TSO frame B did not negotiate, and an unknown MAC: to JS, in order.
    const arp = Buffer.alloc(42);
    writeMac(arp, 0, MAC_B);
    writeMac(arp, 6, MAC_A);
    arp.writeUInt16BE(0x0806, 12);
    const gsoHdr = Buffer.alloc(12);
    gsoHdr[1] = 1;  // TCPv4
    gsoHdr.writeUInt16LE(1400, 4);
    fa.sendFrames([arp]);
    await a.waitFrames(1);
    fa.sendFrames([syn], { hdr: gsoHdr });
    await a.waitFrames(2);
    fa.sendFrames([tcpSyn(0x52_54_00_00_00_99, MAC_A, '10.80.0.1', '10.80.0.9')]);
    await a.waitFrames(3);
    expect(a.frames.map((f) => f.subarray(10, 10 + 14).readUInt16BE(12))).toEqual([0x0806, 0x0800, 0x0800]);
    expect(a.frames[1]![1]).toBe(1);
    expect(fb.receiveFrames()).toEqual([]);

    // B's RX ring spoiled: the frame cut through to it breaks B (onState says so, though the
    // write came from A's turn), not A.
    fb.rings[0]!.setAvailIdx(fb.rings[0]!.usedIdx() + 5000);
    fa.sendFrames([syn]);
    expect(await b.waitState('broken')).toMatch(/avail index moved/);
    expect(a.dev.stats()).toMatchObject({ state: 'running', violations: 0 });
  });

  it('Device to Device across header kinds (a plain TAP and a --vnet-hdr TAP): a ping both ways, nothing through JS', async () => {
    const nsA = await createNetns('vcx');
    const nsB = await createNetns('vcx');
    const devs: NativeDevice[] = [];
    try {
      const ends: { ns: Netns; name: string; ip: string; dev: NativeDevice; mac: number; toJs: number }[] = [];
      for (const [ns, vnetHdr, ip] of [[nsA, false, '10.82.0.1'], [nsB, true, '10.82.0.2']] as const) {
        const name = uniqueName('vcx');
        const t = native.openTun({ name, tap: true, vnetHdr, netns: ns.path });
        native.configureLink({ name, netns: ns.path, up: true });
        await ns.addAddr(name, `${ip}/24`);
        const end = { ns, name, ip, mac: Number.parseInt((await ns.mac(name)).replaceAll(':', ''), 16), toJs: 0, dev: undefined as unknown as NativeDevice };
        end.dev = new native.Device({ fd: t.fd, mode: 'packet', maxFrame: 65560, batch: 32, queueFrames: 64, queueBytes: 1 << 20, onRead: (n: number, st?: number) => { end.toJs += n - (st ?? 0); }, onError: () => {} });
        devs.push(end.dev);
        ends.push(end);
      }
      const [a, b] = ends as [typeof ends[0], typeof ends[0]];
      const fib = newFib(GW_MAC, 1514);
      for (const [e, vnet] of [[a, 0], [b, 1]] as const) {
        e.dev.bindSwitch(fib, vnet, 14, 1514, e.mac, () => {});
        e.dev.start();
        expect(fib.set(e.mac, e.dev, 60_000)).toBe(true);
      }
      await a.ns.exec(['ip', 'neigh', 'replace', b.ip, 'lladdr', macToString(b.mac), 'dev', a.name, 'nud', 'permanent']);
      await b.ns.exec(['ip', 'neigh', 'replace', a.ip, 'lladdr', macToString(a.mac), 'dev', b.name, 'nud', 'permanent']);
      expect(await a.ns.ping(b.ip, { count: 3, waitS: 2 })).toBe(true);
      expect([a.toJs, b.toJs]).toEqual([0, 0]);
      expect([a.dev.stats().txFrames, b.dev.stats().txFrames]).toEqual([3, 3]);
    } finally {
      for (const d of devs) d.close();
      await nsA.delete();
      await nsB.delete();
    }
  });

  it('offloads made plain natively are byte for byte what the switch (normalizeOffload) makes: random TSO v4/v6 frames and partial checksums, hostile headers left to the switch', async () => {
    const ns = await createNetns('vcd');
    let tapDev: NativeDevice | undefined;
    try {
      const name = uniqueName('vcd');
      const t = native.openTun({ name, tap: true, vnetHdr: false, netns: ns.path });
      native.configureLink({ name, netns: ns.path, up: true });
      tapDev = new native.Device({ fd: t.fd, mode: 'packet', maxFrame: 1514, batch: 32, queueFrames: 4096, queueBytes: 16 << 20, onRead: () => {}, onError: () => {} });
      const out = new TeeRing(8 << 20, 0);
      tapDev.setTee(out.buffer, out.ctl, 2, 0, 0, 0);
      const a = startBackend({ offloads: true, maxFrame: 1514 });
      opened.push(a);
      const fe = VhostFrontend.connect(a.path, { bufSize: 16384, want: F.VERSION_1 | F.MRG_RXBUF | F.PROTOCOL_FEATURES | F.CSUM | F.HOST_TSO4 | F.HOST_TSO6 });
      opened.push(fe);
      await fe.start();
      const TAP_MAC = 0x02_00_00_00_00_77;
      const fib = newFib(GW_MAC, 1514);
      a.dev.bindSwitch(fib, 1, 14, 1514, MAC_A, () => {});
      tapDev.bindSwitch(fib, 0, 14, 1514, TAP_MAC, () => {});
      expect(fib.set(TAP_MAC, tapDev, 60_000)).toBe(true);
      let seed = 12345;
      const rnd = (n: number): number => {
        // xorshift32: every bit varies (an LCG's low bits, taken modulo small n, cycle).
        seed ^= seed << 13;
        seed ^= seed >>> 17;
        seed ^= seed << 5;
        seed >>>= 0;
        return seed % n;
      };
      let cut = 0;
      for (let k = 0; k < 150; k++) {
        const v6 = rnd(2) === 1;
        const ipOpts = v6 ? 0 : 4 * rnd(3);
        const tcpOpts = 4 * rnd(4);
        const gsoSize = 200 + rnd(1200);
        const tso = rnd(4) !== 0;
        const payload = tso ? rnd(6000) : rnd(1400 - 60 - ipOpts - tcpOpts);
        const ipLen = v6 ? 40 : 20 + ipOpts;
        const l4 = 14 + ipLen;
        const f = Buffer.alloc(l4 + 20 + tcpOpts + payload);
        writeMac(f, 0, TAP_MAC);
        writeMac(f, 6, MAC_A);
        f.writeUInt16BE(v6 ? 0x86dd : 0x0800, 12);
        if (v6) {
          f[14] = 0x60;
          f.writeUInt16BE(f.length - l4, 18);
          f[20] = 6;
          f[21] = 64;
          for (let i = 0; i < 32; i++) f[22 + i] = rnd(256);
        } else {
          f[14] = 0x40 | (ipLen / 4);
          f.writeUInt16BE(f.length - 14, 16);
          f.writeUInt16BE(rnd(65536), 18);
          f[20] = rnd(2) === 1 ? 0x40 : 0;  // DF or not
          f[22] = 64;
          f[23] = 6;
          for (let i = 0; i < 8; i++) f[26 + i] = rnd(256);
          for (let i = 0; i < ipOpts; i++) f[34 + i] = 1;  // NOPs
        }
        f.writeUInt16BE(1024 + rnd(60000), l4);
        f.writeUInt16BE(80, l4 + 2);
        f.writeUInt32BE(rnd(0x7fffffff) * 2, l4 + 4);
        f[l4 + 12] = (5 + tcpOpts / 4) << 4;
        f[l4 + 13] = 0x10 | rnd(256) & 0x89;  // ACK, and FIN/PSH/CWR at random
        for (let i = 0; i < payload; i++) f[l4 + 20 + tcpOpts + i] = rnd(256);
        const pseudo = v6 ? pseudoHeaderSumV6At(f, 14, 6, f.length - l4) : pseudoHeaderSumV4At(f, 14, 6, f.length - l4);
        f.writeUInt16BE(foldSum(pseudo), l4 + 16);
        const hdr = Buffer.alloc(10);
        hdr[0] = 1;
        hdr[1] = tso ? (v6 ? 4 : 1) | (rnd(4) === 0 ? 0x80 : 0) : 0;
        hdr.writeUInt16LE(tso ? gsoSize : 0, 4);
        hdr.writeUInt16LE(l4, 6);
        hdr.writeUInt16LE(16, 8);
        // A third of them with a hostile header: any csum_start/offset, gso type and size.
        const hostile = rnd(3) === 0;
        if (hostile) {
          hdr[0] = rnd(2);
          hdr[1] = [0, 1, 3, 4, 5, 0x81, 0x84][rnd(7)]!;
          // Sizes near and under MIN_GSO_SIZE, and checksum places near the real one (or on
          // header bytes the switch's checks read: the source MAC, IPv6 next header, IPv4 TTL).
          hdr.writeUInt16LE(rnd(3) === 0 ? 0 : rnd(2) === 0 ? rnd(200) : rnd(65536), 4);
          const cs = [rnd(f.length + 4), rnd(65536), l4, l4 - 1, l4 + 2, 10, 20, 22][rnd(8)]!;
          hdr.writeUInt16LE(cs, 6);
          hdr.writeUInt16LE(rnd(2) === 0 ? [16, 6, 0][rnd(3)]! : rnd(40), 8);
        }
        const want: Buffer[] = [];
        const n = normalizeOffload(Buffer.concat([hdr, f]), want);
        if (!hostile) expect(n).toBeGreaterThan(0);
        const toJs0 = a.frames.length;
        const bad0 = a.dev.stats().dropBadOffload;
        const guestHdr = Buffer.concat([hdr, Buffer.alloc(2)]);
        fe.sendFrames([f], { hdr: guestHdr, split: rnd(2) === 1 });
        await waitFor(() => a.dev.stats().rxFrames + a.dev.stats().dropBadOffload >= k + 1, { what: `frame ${k} taken` });
        const got: Buffer[] = [];
        out.drain((r) => got.push(Buffer.from(r.frame)));
        const what = `frame ${k}: v6 ${v6} tso ${tso} hostile ${hostile} hdr ${hdr.toString('hex')} payload ${payload} gso ${gsoSize}`;
        if (a.dev.stats().dropBadOffload > bad0) {
          // An offload the guest did not negotiate (ECN, UDP: HOST_ECN/UFO/USO never offered)
          // is dropped at the port (review 14 finding 7): neither cut through nor to JS.
          expect(got, what).toEqual([]);
          expect(a.frames.length, what).toBe(toJs0);
          expect((hdr[1]! & 0x80) !== 0 || ![0, 1, 4].includes(hdr[1]!), what).toBe(true);
        } else if (a.frames.length > toJs0) {
          // Left to the switch: nothing written natively. Only what the switch would refuse or
          // the port could not take, or what only the switch does (UFO).
          expect(got, what).toEqual([]);
          expect(n < 0 || want.some((w) => w.length > 1514) || (hdr[1]! & 0x7f) === 3 || hostile, what).toBe(true);
        } else {
          // Cut through: exactly the switch's frames.
          expect(n, what).toBeGreaterThan(0);
          expect(got, what).toEqual(want);
          cut++;
        }
        fe.reclaimTx();
      }
      expect(a.dev.stats().violations).toBe(0);
      expect(cut).toBeGreaterThan(30);
    } finally {
      tapDev?.close();
      await ns.delete();
    }
  });

  describe('with a TAP', () => {
    let ns: Netns;
    let tap: NativeDevice;
    afterEach(async () => {
      tap?.close();
      await ns?.delete();
    });

    for (const vnetHdr of [true, false]) {
      it(`guest → TAP${vnetHdr ? ' (--vnet-hdr)' : ' (plain: the header left out and put back)'} from guest memory, the kernel's answer → guest, nothing through JS; capture sees both`, async () => {
        ns = await createNetns('vct');
        const name = uniqueName('vct');
        const t = native.openTun({ name, tap: true, vnetHdr, netns: ns.path });
        native.configureLink({ name, netns: ns.path, up: true });
        await ns.addAddr(name, '10.81.0.1/24');
        await ns.exec(['ip', 'neigh', 'replace', '10.81.0.2', 'lladdr', '52:54:00:00:00:0a', 'dev', name, 'nud', 'permanent']);
        const tapMac = Number.parseInt((await ns.mac(name)).replaceAll(':', ''), 16);
        let tapToJs = 0;
        tap = new native.Device({ fd: t.fd, mode: 'packet', maxFrame: 65560, batch: 32, queueFrames: 64, queueBytes: 1 << 20, onRead: (n) => (tapToJs += n), onError: () => {} });
        tap.start();

        const a = backend(true);
        const fa = await guest(a, F.VERSION_1 | F.MRG_RXBUF | F.PROTOCOL_FEATURES | F.CSUM | F.GUEST_CSUM | F.GUEST_TSO4 | F.GUEST_TSO6 | F.HOST_TSO4 | F.HOST_TSO6);
        const ring = new TeeRing(1 << 16, 0);
        a.dev.setTee(ring.buffer, ring.ctl, 3, 0, 10, 10);
        const fib = newFib(GW_MAC, 1514);
        a.dev.bindSwitch(fib, 1, 14, 1514, MAC_A, () => {});
        tap.bindSwitch(fib, vnetHdr ? 1 : 0, 14, 1514, tapMac, () => {});
        expect(fib.set(tapMac, tap, 60_000)).toBe(true);
        expect(fib.set(MAC_A, a.dev, 60_000)).toBe(true);

        // A SYN to a closed port: the namespace's kernel answers with a RST to the guest's MAC.
        const syn = tcpSyn(tapMac, MAC_A, '10.81.0.2', '10.81.0.1', 100);
        // One turn (processQueues: what a kick runs): the TAP's kernel answers inside the write,
        // and the TAP is read right after (DrainTaps), so the RST is in the guest already.
        fa.sendFrames([syn], { split: true, kick: false });
        expect(a.dev.processQueues()).toBe(1);
        expect(a.dev.stats().txFrames).toBe(1);
        const [rst] = fa.receiveFrames();
        expect(rst!.frame.subarray(0, 6)).toEqual(macToBuffer(MAC_A));
        expect(rst!.frame[14 + 20 + 13]! & 0x04).toBe(4);  // RST
        if (!vnetHdr) expect(rst!.hdr).toEqual(Buffer.alloc(12, 0).fill(1, 10, 11));  // a zero header, num_buffers 1
        expect(tap.stats().txFrames).toBe(1);
        expect([a.frames.length, tapToJs]).toEqual([0, 0]);
        // Capture: the SYN in, the RST out.
        const recs: { dir: number; frame: Buffer }[] = [];
        ring.drain((r) => recs.push({ dir: r.dir, frame: Buffer.from(r.frame) }));
        expect(recs.map((r) => [r.dir, r.frame.length])).toEqual([[1, syn.length], [2, rst!.frame.length]]);
        expect(recs[0]!.frame).toEqual(syn);
        expect(recs[1]!.frame).toEqual(rst!.frame);
        if (!vnetHdr) {
          // Offloads made plain natively, as the switch's normalizeOffload would: a TSO
          // super-frame (3 x 1000 bytes) cut into 3 segments, a partial checksum completed. The
          // kernel checks every checksum and answers each valid SYN with a RST acking its end.
          fa.receiveFrames();
          const tso = Buffer.alloc(12);
          tso[0] = 1;  // NEEDS_CSUM, as Linux sends it along with TSO
          tso[1] = 1;  // TCPv4
          tso.writeUInt16LE(1000, 4);
          tso.writeUInt16LE(34, 6);
          tso.writeUInt16LE(16, 8);
          const big = tcpSyn(tapMac, MAC_A, '10.81.0.2', '10.81.0.1', 3000);
          big.writeUInt16BE(0, 14 + 10);  // IP checksum: whatever the guest left, fixed per segment
          big.writeUInt16BE(0xdead, 14 + 20 + 16);
          fa.sendFrames([big], { hdr: tso });
          await waitFor(() => a.dev.stats().txFrames >= 1 + 3, { what: 'three RSTs, one per segment' });
          const acks = fa.receiveFrames().map((r) => r.frame.readUInt32BE(14 + 20 + 8));
          expect(acks).toEqual([1 + 1000 + 1, 1 + 2000 + 1, 1 + 3000 + 1]);
          expect(tap.stats().txFrames).toBe(1 + 3);
          // A partial checksum: the TCP field holds the pseudo-header sum (as Linux leaves it).
          const part = tcpSyn(tapMac, MAC_A, '10.81.0.2', '10.81.0.1', 10);
          part.writeUInt16BE(foldSum(pseudoHeaderSumV4At(part, 14, 6, 30)), 14 + 20 + 16);
          const pc = Buffer.alloc(12);
          pc[0] = 1;
          pc.writeUInt16LE(34, 6);
          pc.writeUInt16LE(16, 8);
          fa.sendFrames([part], { hdr: pc });
          await waitFor(() => a.dev.stats().txFrames >= 5, { what: 'the RST to the completed SYN' });
          expect(fa.receiveFrames().map((r) => r.frame.readUInt32BE(14 + 20 + 8))).toEqual([1 + 10 + 1]);
          // UDP fragmentation (UFO): HOST_UFO is never offered, so dropped at the port as any
          // offload the guest did not negotiate (review 14 finding 7), neither cut nor to JS.
          const ufo = Buffer.alloc(12);
          ufo[1] = 3;
          ufo.writeUInt16LE(1000, 4);
          const udp = Buffer.from(big);
          udp[14 + 9] = 17;
          fa.sendFrames([udp], { hdr: ufo });
          await waitFor(() => a.dev.stats().dropBadOffload >= 1, { what: 'the UFO frame dropped' });
          expect(a.frames).toEqual([]);
          expect(tap.stats().txFrames).toBe(5);
        }
      });
    }
  });
});
