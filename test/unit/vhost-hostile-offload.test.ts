/**
 * Security review of issue 14, finding 7: the virtio-net header of a frame from the guest was
 * not checked against the negotiated HOST_* features. A guest without CSUM/HOST_TSO4/6 (or any
 * guest of a port with offloads off, where they are not even offered) could send NEEDS_CSUM
 * or GSO super-frames on to JS, to TAPs and, cut through, to other guests. Such frames are now
 * dropped (dropBadOffload) before anything looks at them.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { loadNative } from '../../plugins/native/index.js';
import { type Backend, F, startBackend, VhostFrontend } from '../support/vhost-frontend.js';

const native = loadNative();
const Fib = native.Device.Fib;

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0).reverse()) c();
});

async function guest(offloads: boolean, want?: bigint): Promise<{ b: Backend; fe: VhostFrontend }> {
  const b = startBackend({ offloads });
  cleanups.push(() => b.close());
  const fe = VhostFrontend.connect(b.path, want !== undefined ? { want } : {});
  cleanups.push(() => fe.close());
  await fe.start();
  expect(b.dev.stats().state).toBe('running');
  return { b, fe };
}

/** The guest's 12-byte header: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, num_buffers. */
function hdr(flags: number, gso: number): Buffer {
  const h = Buffer.alloc(12);
  h[0] = flags;
  h[1] = gso;
  h.writeUInt16LE(54, 2);
  h.writeUInt16LE(gso !== 0 ? 1448 : 0, 4);
  h.writeUInt16LE(34, 6);
  h.writeUInt16LE(16, 8);
  return h;
}

function frame(seed: number, len = 3000, dst = 0x02_00_00_00_00_01, src = 0x52_54_00_00_00_0a): Buffer {
  const f = Buffer.alloc(len, seed);
  f.writeUIntBE(dst, 0, 6);
  f.writeUIntBE(src, 6, 6);
  f.writeUInt16BE(0x0800, 12);
  // IPv4 + TCP headers (not a fragment): a frame the switch would cut through.
  f.fill(0, 14, 54);
  f[14] = 0x45;
  f.writeUInt16BE(len - 14, 14 + 2);
  f[14 + 8] = 64;
  f[14 + 9] = 6;
  f[34 + 12] = 0x50;
  return f;
}

const NEEDS_CSUM = 1;
const TCPV4 = 1;
const UDP = 3;
const TCPV6 = 4;
const ECN = 0x80;

describe('vhost review: offloads in the guest\'s TX headers', () => {
  it('offloads off: NEEDS_CSUM and GSO frames from the guest are dropped, plain ones pass', async () => {
    const { b, fe } = await guest(false);
    const sent: [number, number][] = [[NEEDS_CSUM, 0], [NEEDS_CSUM, TCPV4], [0, TCPV6], [NEEDS_CSUM, UDP], [0, 0]];
    sent.forEach(([fl, gso], k) => fe.sendFrames([k === 4 ? frame(k, 1000) : frame(k)], { hdr: hdr(fl, gso), kick: false }));
    expect(b.dev.processQueues()).toBe(5);
    expect(b.frames.map((x) => x.subarray(10))).toEqual([frame(4, 1000)]);
    expect(b.dev.stats()).toMatchObject({ state: 'running', violations: 0, dropBadOffload: 4, rxFrames: 1 });
  });

  it('offloads on: what the guest negotiated passes (CSUM, HOST_TSO4), the rest does not (TSO6, UDP, ECN)', async () => {
    const { b, fe } = await guest(true, F.VERSION_1 | F.MRG_RXBUF | F.PROTOCOL_FEATURES | F.CSUM | F.HOST_TSO4);
    const sent: [number, number][] = [[NEEDS_CSUM, 0], [NEEDS_CSUM, TCPV4], [NEEDS_CSUM, TCPV6], [NEEDS_CSUM, UDP], [NEEDS_CSUM, TCPV4 | ECN]];
    sent.forEach(([fl, gso], k) => fe.sendFrames([frame(k)], { hdr: hdr(fl, gso), kick: false }));
    expect(b.dev.processQueues()).toBe(5);
    expect(b.frames.map((x) => x.subarray(10))).toEqual([frame(0), frame(1)]);
    expect(b.frames.map((x) => [x[0], x[1]])).toEqual([[NEEDS_CSUM, 0], [NEEDS_CSUM, TCPV4]]);
    expect(b.dev.stats()).toMatchObject({ violations: 0, dropBadOffload: 3 });
  });

  it('cut-through: a TSO frame from a guest without HOST_TSO4 does not reach a guest that takes TSO', async () => {
    const MAC_A = 0x52_54_00_00_00_0a;
    const MAC_B = 0x52_54_00_00_00_0b;
    const a = await guest(true);  // offered, not negotiated
    const bb = await guest(true, F.VERSION_1 | F.MRG_RXBUF | F.PROTOCOL_FEATURES | F.GUEST_CSUM | F.GUEST_TSO4);
    bb.fe.postRx(32);
    const fib = new Fib(0x02_6d_76_00_ff_01, 1514);
    a.b.dev.bindSwitch(fib, 1, 14, 1514, MAC_A, () => {});
    bb.b.dev.bindSwitch(fib, 1, 14, 1514, MAC_B, () => {});
    expect(fib.set(MAC_B, bb.b.dev, 60_000)).toBe(true);
    a.fe.sendFrames([frame(1, 3000, MAC_B, MAC_A)], { hdr: hdr(NEEDS_CSUM, TCPV4), kick: false });
    a.fe.sendFrames([frame(2, 1000, MAC_B, MAC_A)], { kick: false });
    expect(a.b.dev.processQueues()).toBe(2);
    const got = bb.fe.receiveFrames();
    expect(got.map((x) => x.frame)).toEqual([frame(2, 1000, MAC_B, MAC_A)]);
    expect(a.b.frames).toEqual([]);
    expect(a.b.dev.stats()).toMatchObject({ dropBadOffload: 1, violations: 0 });
  });
});
