// Review 14b B: a tiny gso_size (under MIN_GSO_SIZE, Linux's TCP_MIN_MSS 88) is refused, and
// the frames native segmentation writes count against the guest's TX turn.
import { afterAll, expect, it } from 'vitest';
import { loadNative } from '../../plugins/native/index.js';
import type { NativeDevice } from '../../plugins/native/types.js';
import { internetChecksum } from '../../daemon/wire/checksum.js';
import { MIN_GSO_SIZE, normalizeOffload } from '../../daemon/wire/gso.js';
import { cleanupAll, createNetns, uniqueName } from '../support/netns.js';
import { F, startBackend, VhostFrontend } from '../support/vhost-frontend.js';
import { writeMac } from '../../daemon/wire/mac.js';

const native = loadNative();
const GW_MAC = 0x02_6d_76_00_ff_01;
const MAC_A = 0x52_54_00_00_00_0a;
const Fib = native.Device.Fib;
afterAll(cleanupAll);

function superFrame(dst: number, pay: number, gsoSize: number): { frame: Buffer; hdr: Buffer } {
  const f = Buffer.alloc(14 + 20 + 20 + pay);
  writeMac(f, 0, dst);
  writeMac(f, 6, MAC_A);
  f.writeUInt16BE(0x0800, 12);
  f[14] = 0x45;
  f.writeUInt16BE(40 + pay, 16);
  f[22] = 64;
  f[23] = 6;
  Buffer.from([10, 93, 0, 1]).copy(f, 26);
  Buffer.from([10, 93, 0, 2]).copy(f, 30);
  f.writeUInt16BE(internetChecksum(f, 14, 34), 24);
  f.writeUInt16BE(40000, 34);
  f.writeUInt16BE(9, 36);
  f[46] = 0x50;
  f[47] = 0x10;
  const hdr = Buffer.alloc(12);
  hdr[0] = 1;
  hdr[1] = 1;
  hdr.writeUInt16LE(gsoSize, 4);
  hdr.writeUInt16LE(34, 6);
  hdr.writeUInt16LE(16, 8);
  return { frame: f, hdr };
}

it('normalizeOffload refuses gso_size under MIN_GSO_SIZE', () => {
  const out: Buffer[] = [];
  for (const size of [1, 8, MIN_GSO_SIZE - 1]) {
    const { frame, hdr } = superFrame(0x02_00_00_00_00_01, 2048, size);
    expect(normalizeOffload(Buffer.concat([hdr.subarray(0, 10), frame]), out)).toBe(-1);
  }
  expect(out).toHaveLength(0);
  const { frame, hdr } = superFrame(0x02_00_00_00_00_01, 2048, MIN_GSO_SIZE);
  expect(normalizeOffload(Buffer.concat([hdr.subarray(0, 10), frame]), out)).toBe(Math.ceil(2048 / MIN_GSO_SIZE));
});

async function withCut(tag: string, body: (ctx: { tap: NativeDevice; dev: { processQueues(): number }; fe: VhostFrontend; frames: Buffer[]; tapMac: number }) => Promise<void>): Promise<void> {
  const ns = await createNetns(tag);
  let tapDev: NativeDevice | undefined;
  const fib = new Fib(GW_MAC, 1514);
  try {
    const name = uniqueName(tag);
    const t = native.openTun({ name, tap: true, vnetHdr: false, netns: ns.path });
    native.configureLink({ name, netns: ns.path, up: true });
    const TAP_MAC = Number.parseInt((await ns.mac(name)).replaceAll(':', ''), 16);
    tapDev = new native.Device({ fd: t.fd, mode: 'packet', maxFrame: 1514, batch: 64, queueFrames: 4096, queueBytes: 16 << 20, onRead: () => {}, onError: () => {} });
    const a = startBackend({ offloads: true, maxFrame: 1514, batch: 16 });
    const fe = VhostFrontend.connect(a.path, { bufSize: 16384, want: F.VERSION_1 | F.MRG_RXBUF | F.PROTOCOL_FEATURES | F.CSUM | F.HOST_TSO4 });
    try {
      await fe.start();
      a.dev.bindSwitch(fib, 1, 14, 1514, MAC_A, () => {});
      tapDev.bindSwitch(fib, 0, 14, 1514, TAP_MAC, () => {});
      tapDev.start();
      expect(fib.set(TAP_MAC, tapDev, 60_000)).toBe(true);
      await body({ tap: tapDev, dev: a.dev as unknown as { processQueues(): number }, fe, frames: a.frames, tapMac: TAP_MAC });
    } finally {
      fe.close();
      a.close();
    }
  } finally {
    tapDev?.close();
    await ns.delete();
  }
}

it('cut-through refuses gso_size 1: the frame goes to the switch, which refuses it', async () => {
  await withCut('ohg', async ({ tap, dev, fe, frames, tapMac }) => {
    const tiny = superFrame(tapMac, 2048, 1);
    fe.sendFrames([tiny.frame], { hdr: tiny.hdr, kick: false });
    dev.processQueues();
    expect(tap.stats().txFrames).toBe(0);
    expect(frames).toHaveLength(1);
    expect(normalizeOffload(frames[0]!, [])).toBe(-1);
  });
});

it('cut-through ends a guest TX turn once the frames its segmentation wrote reach batch x 4', async () => {
  await withCut('ohb', async ({ tap, dev, fe, frames, tapMac }) => {
    // 16 chains (the batch) of 16 segments each: 256 frames, over the 16 x 4 a turn may write.
    // The turn ends after 4 chains (64 frames); the rest follow in later turns.
    const big = superFrame(tapMac, 16 * 88, 88);
    fe.sendFrames(Array<Buffer>(16).fill(big.frame), { hdr: big.hdr, kick: false });
    dev.processQueues();
    expect(tap.stats().txFrames).toBe(64);
    for (let i = 0; i < 10 && tap.stats().txFrames < 256; i++) dev.processQueues();
    expect(tap.stats().txFrames).toBe(256);
    expect(frames).toHaveLength(0);
  });
});
