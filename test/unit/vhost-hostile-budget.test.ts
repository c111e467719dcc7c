/**
 * Security review of issue 14, findings 1 and 5: descriptor chains that share descriptors.
 * Each chain alone is legal (no loop, NEXT < num, flags right), but every avail entry naming
 * the same long chain of zero-length descriptors made one write() walk ~2^30 descriptors (RX,
 * MRG_RXBUF) and each TX turn `batch` × 32767. All chains taken since the last publish are in
 * flight together, so more than `num` descriptors walked is a ring violation. A ring that
 * cannot hold a frame is walked once, not once per frame, until the guest adds to it.
 */
import { afterEach, describe, expect, it } from 'vitest';
import {
  type Backend,
  type FrontendOptions,
  type GuestRing,
  DESC_F_NEXT,
  DESC_F_WRITE,
  RX,
  startBackend,
  TX,
  VhostFrontend,
} from '../support/vhost-frontend.js';

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0).reverse()) c();
});

async function running(opts: FrontendOptions, batch = 64): Promise<{ b: Backend; fe: VhostFrontend }> {
  const b = startBackend({ batch });
  cleanups.push(() => b.close());
  const fe = VhostFrontend.connect(b.path, opts);
  cleanups.push(() => fe.close());
  await fe.start();
  expect(b.dev.stats().state).toBe('running');
  return { b, fe };
}

/** Descriptors [0, n) chained in order, each `len` bytes at buffer 0 (RX: device-writable). */
function longChain(r: GuestRing, n: number, len: number, writable: boolean): void {
  for (let i = 0; i < n; i++) {
    r.writeDesc(i, { addr: r.bufGpa(0), len, flags: (i + 1 < n ? DESC_F_NEXT : 0) | (writable ? DESC_F_WRITE : 0), next: i + 1 });
  }
}

/** Every avail slot names chain `head`, and avail->idx says all num are there. */
function offerAll(r: GuestRing, head: number): void {
  for (let s = 0; s < r.num; s++) r.setAvailRingEntry(s, head);
  r.setAvailIdx(r.num);
}

function out(len: number, seed: number): Buffer {
  const f = Buffer.alloc(10 + len);
  f.fill(seed & 0xff, 10);
  f.writeUInt16BE(0x0800, 10 + 12);
  return f;
}

const NUM = 32768;

describe('vhost review: descriptor budget', () => {
  it('RX: avail entries sharing one zero-length chain are a violation at once, not seconds of work', async () => {
    const { b, fe } = await running({ num: NUM, bufSize: 64 });
    const r = fe.rings[RX]!;
    longChain(r, NUM - 1, 0, true);
    offerAll(r, 0);
    const read0 = b.dev.stats().descriptorsRead;
    expect(b.dev.write([out(60, 1)], 1)).toBe(0);
    const s = b.dev.stats();
    expect(s).toMatchObject({ state: 'broken', violations: 1, txFrames: 0 });
    expect(s.detail).toMatch(/share descriptors/);
    // Without the budget this one write() read ~2^30 descriptors (3-6 s); with it, the first
    // chain's num - 1 and one more, then the violation.
    expect(s.descriptorsRead - read0).toBe(NUM);
    expect(await b.waitState('broken')).toMatch(/share descriptors/);
  });

  it('TX: a turn walking more than num descriptors is a violation (chains sharing a long tail)', async () => {
    const { b, fe } = await running({ num: NUM, bufSize: 64 }, 1024);
    const r = fe.rings[TX]!;
    longChain(r, NUM - 1, 0, false);
    offerAll(r, 0);
    // The first chain (32767 descriptors) is legal; the second walks the same ones again.
    expect(b.dev.processQueues()).toBe(1);
    const s = b.dev.stats();
    expect(s).toMatchObject({ state: 'broken', violations: 1 });
    expect(s.detail).toMatch(/share descriptors/);
    expect(b.frames).toEqual([]);
  });

  it('a legitimate guest may have all num descriptors in flight: one chain of num, num chains of one', async () => {
    const { b, fe } = await running({ num: 8, bufSize: 200 }, 8);
    // RX: one chain of all 8 descriptors (8 × 200 bytes) holds a 1514-byte frame.
    const rx = fe.rings[RX]!;
    for (let i = 0; i < 8; i++) rx.writeDesc(i, { addr: rx.bufGpa(i), len: 200, flags: DESC_F_WRITE | (i < 7 ? DESC_F_NEXT : 0), next: i + 1 });
    rx.availPush(0);
    expect(b.dev.write([out(1514, 2)], 1)).toBe(1);
    const used = rx.takeUsed(true);
    expect(used).toEqual([{ id: 0, len: 12 + 1514 }]);
    const whole = Buffer.concat(Array.from({ length: 8 }, (_, i) => rx.buf(i))).subarray(0, 12 + 1514);
    expect(whole.subarray(12)).toEqual(out(1514, 2).subarray(10));
    // RX: 8 chains of one 200-byte buffer, all merged for one frame (num_buffers 8).
    for (let i = 0; i < 8; i++) {
      rx.writeDesc(i, { addr: rx.bufGpa(i), len: 200, flags: DESC_F_WRITE, next: 0 });
      rx.availPush(i);
    }
    expect(b.dev.write([out(1514, 3)], 1)).toBe(1);
    const got = fe.receiveFrames();
    expect(got.map((x) => x.frame)).toEqual([out(1514, 3).subarray(10)]);
    expect(got[0]!.hdr.readUInt16LE(10)).toBe(8);
    // TX: 8 frames of one descriptor each in one turn, twice (the budget starts again).
    for (let round = 0; round < 2; round++) {
      fe.sendFrames(Array.from({ length: 8 }, (_, k) => out(60, k).subarray(10)), { kick: false });
      expect(b.dev.processQueues()).toBe(8);
      expect(fe.reclaimTx()).toBe(8);
    }
    expect(b.frames.length).toBe(16);
    expect(b.dev.stats()).toMatchObject({ state: 'running', violations: 0 });
  });

  it('RX: chains found too small are not walked again for each frame until the guest adds one', async () => {
    const { b, fe } = await running({ num: NUM, bufSize: 64 });
    const r = fe.rings[RX]!;
    // One legal chain of 32767 zero-length buffers: room for nothing.
    longChain(r, NUM - 1, 0, true);
    r.availPush(0);
    const f = out(60, 4);
    const read0 = b.dev.stats().descriptorsRead;
    expect(b.dev.write([f, f, f], 3)).toBe(0);
    expect(b.dev.stats()).toMatchObject({ state: 'running', dropNoBuffers: 3, violations: 0 });
    // The chain was walked for the first frame only.
    const read1 = b.dev.stats().descriptorsRead;
    expect(read1 - read0).toBe(NUM - 1);
    expect(b.dev.write(Array(1000).fill(f), 1000)).toBe(0);
    expect(b.dev.stats().dropNoBuffers).toBe(1003);
    // The chain's last buffer grows while avail->idx stays (a driver must not touch what it
    // made available): the back-end does not look again, the frame is still dropped.
    r.writeDesc(NUM - 2, { addr: r.bufGpa(0), len: 64, flags: DESC_F_WRITE, next: 0 });
    expect(b.dev.write([out(40, 5)], 1)).toBe(0);
    expect(b.dev.stats().dropNoBuffers).toBe(1004);
    // 1001 drops without a descriptor read: no 1000 × 32767.
    expect(b.dev.stats().descriptorsRead).toBe(read1);
    // The guest adds a chain (avail->idx moves): everything is looked at again, the first
    // chain now holds the frame.
    r.writeDesc(NUM - 1, { addr: r.bufGpa(1), len: 64, flags: DESC_F_WRITE, next: 0 });
    r.availPush(NUM - 1);
    expect(b.dev.write([out(40, 6)], 1)).toBe(1);
    expect(fe.receiveFrames().map((x) => x.frame)).toEqual([out(40, 6).subarray(10)]);
    expect(b.dev.stats()).toMatchObject({ state: 'running', violations: 0, txFrames: 1 });
    // One more walk of the first chain, which now holds the frame.
    expect(b.dev.stats().descriptorsRead - read1).toBe(NUM - 1);
  });
});
