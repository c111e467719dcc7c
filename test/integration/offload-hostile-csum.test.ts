// Review 14b A: a partial checksum (NEEDS_CSUM) is completed only at the TCP/UDP checksum field
// the frame's own IP header points to. Elsewhere the completion would rewrite bytes the
// switch's checks had judged (next header / hop limit → a rogue RA, the source MAC), so the
// frame is refused: natively it is not cut through (it goes to the switch), and the switch's
// normalizeOffload refuses it (bad-offload).
import { afterAll, expect, it } from 'vitest';
import { loadNative } from '../../plugins/native/index.js';
import type { NativeDevice } from '../../plugins/native/types.js';
import { internetChecksum, onesSum, pseudoHeaderSumV6At } from '../../daemon/wire/checksum.js';
import { normalizeOffload } from '../../daemon/wire/gso.js';
import { TeeRing } from '../../plugins/common/tee-ring.js';
import { Network } from '../../daemon/switch/network.js';
import { VPort } from '../support/vnet-port.js';
import { cleanupAll, createNetns, uniqueName, waitFor } from '../support/netns.js';
import { F, startBackend, VhostFrontend } from '../support/vhost-frontend.js';
import { macToBuffer, writeMac } from '../../daemon/wire/mac.js';

const native = loadNative();
const GW_MAC = 0x02_6d_76_00_ff_01;
const MAC_A = 0x52_54_00_00_00_0a;
const Fib = native.Device.Fib;
afterAll(cleanupAll);

/** The rogue RA of the review: IPv6 next header TCP as sent, 0x3a 0xff after completion at 20. */
function rogueRa(dst: number): { frame: Buffer; hdr: Buffer } {
  const f = Buffer.alloc(14 + 40 + 16 + 2);
  writeMac(f, 0, dst);
  writeMac(f, 6, MAC_A);
  f.writeUInt16BE(0x86dd, 12);
  f[14] = 0x60;
  f.writeUInt16BE(16, 18);
  f[20] = 58;
  f[21] = 255;
  Buffer.from('fe800000000000000000000000000bad', 'hex').copy(f, 22);
  Buffer.from('ff020000000000000000000000000001', 'hex').copy(f, 38);
  const icmp = 54;
  f[icmp] = 134;
  f[icmp + 4] = 64;
  f.writeUInt16BE(1800, icmp + 6);
  f.writeUInt16BE(internetChecksum(f, icmp, icmp + 16, pseudoHeaderSumV6At(f, 14, 58, 16)), icmp + 2);
  f[20] = 6;
  f[21] = 0;
  const s0 = onesSum(f, 20, f.length);
  let tword = 0xffff - 0x3aff - s0;
  if (tword < 0) tword += 0xffff;
  f.writeUInt16BE(tword, f.length - 2);
  const hdr = Buffer.alloc(12);
  hdr[0] = 1;
  hdr.writeUInt16LE(20, 6);
  hdr.writeUInt16LE(0, 8);
  return { frame: f, hdr };
}

/** A plain IPv4 TCP frame with the partial checksum pointed at the source MAC (bytes 10-11). */
function macSpoof(dst: number): { frame: Buffer; hdr: Buffer } {
  const g = Buffer.alloc(14 + 20 + 20 + 2);
  writeMac(g, 0, dst);
  writeMac(g, 6, MAC_A);
  g.writeUInt16BE(0x0800, 12);
  g[14] = 0x45;
  g.writeUInt16BE(40, 16);
  g[22] = 64;
  g[23] = 6;
  g[46] = 0x50;
  const hdr = Buffer.alloc(12);
  hdr[0] = 1;
  hdr.writeUInt16LE(10, 6);
  return { frame: g, hdr };
}

it('normalizeOffload refuses a partial checksum anywhere but the TCP/UDP checksum field', () => {
  const out: Buffer[] = [];
  for (const { frame, hdr } of [rogueRa(0x02_00_00_00_00_01), macSpoof(0x02_00_00_00_00_01)]) {
    expect(normalizeOffload(Buffer.concat([hdr.subarray(0, 10), frame]), out)).toBe(-1);
  }
  // csum_start right but the offset of the other protocol, or one byte off: refused too.
  const { frame } = macSpoof(0x02_00_00_00_00_01);
  for (const [cs, co] of [[34, 6], [35, 16], [34, 0], [14, 10]] as const) {
    const h = Buffer.alloc(10);
    h[0] = 1;
    h.writeUInt16LE(cs, 6);
    h.writeUInt16LE(co, 8);
    expect(normalizeOffload(Buffer.concat([h, frame]), out)).toBe(-1);
  }
  expect(out).toHaveLength(0);
  // Where Linux puts it: accepted, and only the checksum field changes.
  const h = Buffer.alloc(10);
  h[0] = 1;
  h.writeUInt16LE(34, 6);
  h.writeUInt16LE(16, 8);
  expect(normalizeOffload(Buffer.concat([h, frame]), out)).toBe(1);
  const diff = [...out[0]!.keys()].filter((i) => out[0]![i] !== frame[i]);
  expect(diff.every((i) => i === 50 || i === 51)).toBe(true);
});

it('the switch drops the rogue RA and the MAC spoof to a port without offloads as bad-offload', () => {
  const VICTIM = 0x52_54_00_00_00_0b;
  const net = new Network({ name: 'n', mtu: 1500, gatewayMac: GW_MAC, clock: () => 0 });
  const guest = new VPort('guest', 10);
  const victim = new VPort('victim', 0);
  const gm = net.attach('guest', guest, MAC_A);
  net.attach('victim', victim, VICTIM);
  // The victim speaks first, so the switch knows where its MAC is.
  const hello = Buffer.alloc(60);
  writeMac(hello, 0, MAC_A);
  writeMac(hello, 6, VICTIM);
  hello.writeUInt16BE(0x0800, 12);
  victim.handler([hello]);
  guest.sent.length = 0;
  for (const { frame, hdr } of [rogueRa(VICTIM), macSpoof(VICTIM)]) guest.handler([Buffer.concat([hdr.subarray(0, 10), frame])]);
  expect(victim.sent).toHaveLength(0);
  expect(gm.drops['bad-offload']).toBe(2);
  net.close();
});

it('cut-through does not complete a partial checksum outside the L4 checksum field (rogue RA, MAC spoof)', async () => {
  const ns = await createNetns('ohc');
  let tapDev: NativeDevice | undefined;
  const fib = new Fib(GW_MAC, 1514);
  try {
    const name = uniqueName('ohc');
    const t = native.openTun({ name, tap: true, vnetHdr: false, netns: ns.path });
    native.configureLink({ name, netns: ns.path, up: true });
    const TAP_MAC = Number.parseInt((await ns.mac(name)).replaceAll(':', ''), 16);
    tapDev = new native.Device({ fd: t.fd, mode: 'packet', maxFrame: 1514, batch: 32, queueFrames: 64, queueBytes: 1 << 20, onRead: () => {}, onError: () => {} });
    const out = new TeeRing(1 << 20, 0);
    tapDev.setTee(out.buffer, out.ctl, 2, 0, 0, 0);
    const a = startBackend({ offloads: true, maxFrame: 1514 });
    const fe = VhostFrontend.connect(a.path, { want: F.VERSION_1 | F.MRG_RXBUF | F.PROTOCOL_FEATURES | F.CSUM });
    try {
      await fe.start();
      a.dev.bindSwitch(fib, 1, 14, 1514, MAC_A, () => {});
      tapDev.bindSwitch(fib, 0, 14, 1514, TAP_MAC, () => {});
      tapDev.start();
      expect(fib.set(TAP_MAC, tapDev, 60_000)).toBe(true);
      const ra = rogueRa(TAP_MAC);
      const spoof = macSpoof(TAP_MAC);
      fe.sendFrames([ra.frame], { hdr: ra.hdr });
      await waitFor(() => a.frames.length >= 1, { what: 'the RA frame handed to the switch' });
      fe.reclaimTx();
      fe.sendFrames([spoof.frame], { hdr: spoof.hdr });
      await waitFor(() => a.frames.length >= 2, { what: 'the spoof frame handed to the switch' });
      // Both went to the switch (whose normalizeOffload refuses them, above), none to the TAP.
      const got: Buffer[] = [];
      out.drain((r) => got.push(Buffer.from(r.frame)));
      expect(got).toHaveLength(0);
      expect(tapDev.stats().txFrames).toBe(0);
      for (const f of a.frames) expect(normalizeOffload(f, [])).toBe(-1);
      // A correct partial checksum still goes through natively.
      const ok = macSpoof(TAP_MAC);
      ok.hdr.writeUInt16LE(34, 6);
      ok.hdr.writeUInt16LE(16, 8);
      fe.reclaimTx();
      fe.sendFrames([ok.frame], { hdr: ok.hdr });
      await waitFor(() => {
        out.drain((r) => got.push(Buffer.from(r.frame)));
        return got.length >= 1;
      }, { what: 'the good frame cut through' });
      expect(got[0]!.subarray(6, 12)).toEqual(macToBuffer(MAC_A));
      expect(a.frames).toHaveLength(2);
    } finally {
      fe.close();
      a.close();
    }
  } finally {
    tapDev?.close();
    await ns.delete();
  }
});
