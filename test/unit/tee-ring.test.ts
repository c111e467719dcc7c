import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { CTL_HEAD, CTL_TAIL, REC_HDR, TEE_IN, TEE_OUT, TeeRing, type TeeRecord } from '../../plugins/common/tee-ring.js';

interface Got {
  frame: Buffer;
  origLen: number;
  dir: number;
  gsoType: number;
  gsoSize: number;
  tsSec: number;
  tsNsec: number;
}

function copy(r: TeeRecord): Got {
  return { ...r, frame: Buffer.from(r.frame) };
}

function drainAll(ring: TeeRing, max = Infinity): Got[] {
  const out: Got[] = [];
  ring.drain((r) => out.push(copy(r)), max);
  return out;
}

function frameOf(len: number, seed: number): Buffer {
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i++) b[i] = (seed * 31 + i * 7) & 0xff;
  return b;
}

/** Bytes a record of `cap` captured bytes takes in the ring. */
function recBytes(cap: number): number {
  return REC_HDR + Math.ceil(cap / 8) * 8;
}

/** The largest record the ring can take now, stated independently of TeeRing.reserve: one piece, never full. */
function room(ring: TeeRing): number {
  const head = ring.ctl[CTL_HEAD]!;
  const tail = ring.ctl[CTL_TAIL]!;
  if (head >= tail) return Math.max(ring.size - head - (tail === 0 ? 8 : 0), tail - 8);
  return tail - head - 8;
}

describe('TeeRing', () => {
  it('hands back what was written, in order, with length, direction and a wall-clock time', () => {
    const ring = new TeeRing(4096, 0);
    const before = Date.now();
    const frames = [frameOf(60, 1), frameOf(61, 2), frameOf(1, 3), frameOf(0, 4), frameOf(300, 5)];
    frames.forEach((f, i) => expect(ring.write(f, 0, i % 2 === 0 ? TEE_IN : TEE_OUT)).toBe(true));
    const got = drainAll(ring);
    const after = Date.now();
    expect(got.map((g) => g.frame)).toEqual(frames);
    expect(got.map((g) => g.origLen)).toEqual(frames.map((f) => f.length));
    expect(got.map((g) => g.dir)).toEqual([TEE_IN, TEE_OUT, TEE_IN, TEE_OUT, TEE_IN]);
    let last = 0;
    for (const g of got) {
      expect(g.tsNsec).toBeLessThan(1e9);
      const ms = g.tsSec * 1000 + g.tsNsec / 1e6;
      expect(ms).toBeGreaterThanOrEqual(before - 1);
      expect(ms).toBeLessThanOrEqual(after + 1);
      expect(ms).toBeGreaterThanOrEqual(last);
      last = ms;
      expect(g.gsoType).toBe(0);
    }
    expect(ring.written).toBe(5);
    expect(ring.dropped).toBe(0);
    expect(drainAll(ring)).toEqual([]);
  });

  it('cuts frames to the snaplen and keeps the true length', () => {
    const ring = new TeeRing(4096, 64);
    const big = frameOf(1514, 9);
    ring.write(big, 0, TEE_IN);
    ring.write(frameOf(40, 1), 0, TEE_OUT);
    const [a, b] = drainAll(ring);
    expect(a!.frame).toEqual(big.subarray(0, 64));
    expect(a!.origLen).toBe(1514);
    expect(b!.frame.length).toBe(40);
    expect(b!.origLen).toBe(40);
  });

  it('strips a virtio-net header and records its gso_type and gso_size', () => {
    const ring = new TeeRing(1 << 20, 0);
    const frame = frameOf(20000, 3);
    const hdr = Buffer.from([1, 0x81, 66, 0, 0xa8, 0x05, 34, 0, 16, 0]); // NEEDS_CSUM, tcpv4|ECN, mss 1448
    ring.write(Buffer.concat([hdr, frame]), 10, TEE_IN);
    const [g] = drainAll(ring);
    expect(g!.frame).toEqual(frame);
    expect(g!.origLen).toBe(20000);
    expect(g!.gsoType).toBe(0x81);
    expect(g!.gsoSize).toBe(1448);
  });

  it('drops (and counts) frames when full, before copying anything, and takes more after a drain', () => {
    const ring = new TeeRing(1024, 0);
    const f = frameOf(100, 1); // 24 + 104 = 128 bytes a record: 7 fit (never completely full)
    let ok = 0;
    for (let i = 0; i < 20; i++) if (ring.write(f, 0, TEE_IN)) ok++;
    expect(ok).toBe(7);
    expect(ring.written).toBe(7);
    expect(ring.dropped).toBe(13);
    const snapshot = Buffer.from(ring.buffer);
    expect(ring.write(f, 0, TEE_OUT)).toBe(false);
    expect(ring.buffer.equals(snapshot)).toBe(true); // a refused frame writes nothing
    expect(ring.dropped).toBe(14);
    expect(drainAll(ring)).toHaveLength(7);
    expect(ring.write(f, 0, TEE_IN)).toBe(true);
    // A frame larger than the ring can never fit: dropped, not looped on.
    expect(ring.write(frameOf(2000, 2), 0, TEE_IN)).toBe(false);
    expect(drainAll(ring)).toHaveLength(1);
  });

  it('wraps around: a record that does not fit at the end goes to the start after a wrap marker', () => {
    const ring = new TeeRing(512, 0);
    const a = frameOf(100, 1); // 128 bytes each
    for (let i = 0; i < 3; i++) expect(ring.write(a, 0, TEE_IN)).toBe(true); // head at 384
    expect(drainAll(ring, 2)).toHaveLength(2); // tail at 256
    const b = frameOf(150, 2); // 176 bytes: not in [384, 512), fits in [0, 256)
    expect(ring.write(b, 0, TEE_OUT)).toBe(true);
    expect(ring.ctl[CTL_HEAD]).toBe(176);
    expect(ring.buffer.readUInt32LE(384)).toBe(0); // the wrap marker
    expect(ring.write(frameOf(56, 3), 0, TEE_IN)).toBe(false); // 80 bytes: head would reach tail (looks empty)
    expect(ring.write(frameOf(48, 3), 0, TEE_IN)).toBe(true); // 72 bytes: 176 + 72 = 248 < 256
    const got = drainAll(ring);
    expect(got.map((g) => g.frame.length)).toEqual([100, 150, 48]);
    expect(got[1]!.frame).toEqual(b);
    expect(got[1]!.dir).toBe(TEE_OUT);
  });

  it('matches a model under any mix of writes and partial drains', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 256, max: 4096 }),
        fc.integer({ min: 0, max: 300 }),
        fc.array(
          fc.oneof(
            fc.record({ op: fc.constant('w' as const), len: fc.integer({ min: 0, max: 700 }), skip: fc.constantFrom(0, 0, 10), dir: fc.constantFrom(TEE_IN, TEE_OUT) }),
            fc.record({ op: fc.constant('d' as const), max: fc.integer({ min: 1, max: 20 }) }),
          ),
          { minLength: 1, maxLength: 300 },
        ),
        (bytes, snaplen, ops) => {
          const ring = new TeeRing(bytes, snaplen);
          const queue: { frame: Buffer; origLen: number; dir: number; gsoType: number; gsoSize: number }[] = [];
          let written = 0;
          let dropped = 0;
          let seed = 0;
          for (const op of ops) {
            if (op.op === 'w') {
              const f = frameOf(op.len + op.skip, seed++);
              if (op.skip === 10) {
                f[1] = 4;
                f.writeUInt16LE(1000 + seed, 4);
              }
              const orig = op.len;
              const cap = snaplen !== 0 && orig > snaplen ? snaplen : orig;
              const fits = recBytes(cap) <= room(ring);
              expect(ring.write(f, op.skip, op.dir)).toBe(fits);
              if (fits) {
                written++;
                queue.push({ frame: f.subarray(op.skip, op.skip + cap), origLen: orig, dir: op.dir, gsoType: op.skip ? 4 : 0, gsoSize: op.skip ? 1000 + seed : 0 });
              } else {
                dropped++;
              }
            } else {
              const got = drainAll(ring, op.max);
              const want = queue.splice(0, op.max);
              expect(got.map(({ frame, origLen, dir, gsoType, gsoSize }) => ({ frame, origLen, dir, gsoType, gsoSize }))).toEqual(want);
            }
            expect(ring.written).toBe(written);
            expect(ring.dropped).toBe(dropped);
          }
          const rest = drainAll(ring);
          expect(rest.map((g) => g.frame)).toEqual(queue.map((q) => q.frame));
          expect(ring.pending).toBe(0);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('counts past 2^32 without losing the high word', () => {
    const ring = new TeeRing(256, 0);
    ring.ctl[2] = 0xffffffff;
    ring.ctl[4] = 0xffffffff;
    ring.write(frameOf(10, 1), 0, TEE_IN);
    ring.write(frameOf(1000, 1), 0, TEE_IN);
    expect(ring.written).toBe(2 ** 32);
    expect(ring.dropped).toBe(2 ** 32);
  });

  it('refuses sizes it cannot honour', () => {
    expect(() => new TeeRing(100, 0)).toThrow(RangeError);
    expect(() => new TeeRing(4096, -1)).toThrow(RangeError);
    expect(new TeeRing(1001, 0).size).toBe(1000);
  });
});
