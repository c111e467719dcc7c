import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { StreamFramer, encodeStreamBatch } from '../../plugins/common/stream-framer.js';

function collect(framer: StreamFramer, chunks: Buffer[]): { frames: Buffer[]; result: string } {
  const frames: Buffer[] = [];
  let result = 'ok';
  for (const c of chunks) {
    result = framer.push(c, (fs) => fs.forEach((f) => frames.push(Buffer.from(f))));
    if (result !== 'ok') break;
  }
  return { frames, result };
}

describe('QEMU stream framing', () => {
  it('encodes a 4-byte big-endian length before each frame', () => {
    const a = Buffer.alloc(60, 1);
    const b = Buffer.alloc(100, 2);
    const enc = encodeStreamBatch([a, b], 2);
    expect(enc.readUInt32BE(0)).toBe(60);
    expect(enc.readUInt32BE(64)).toBe(100);
    expect(enc.length).toBe(168);
  });

  it('parses any split of a stream of frames back to the same frames', () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ minLength: 14, maxLength: 1518 }), { minLength: 1, maxLength: 20 }),
        fc.array(fc.integer({ min: 1, max: 3000 }), { minLength: 1, maxLength: 50 }),
        (frames, cuts) => {
          const bufs = frames.map((f) => Buffer.from(f));
          const stream = encodeStreamBatch(bufs, bufs.length);
          const chunks: Buffer[] = [];
          let pos = 0;
          for (let i = 0; pos < stream.length; i++) {
            const n = cuts[i % cuts.length]!;
            chunks.push(stream.subarray(pos, pos + n));
            pos += n;
          }
          const r = collect(new StreamFramer(14, 1518), chunks);
          expect(r.result).toBe('ok');
          expect(r.frames).toEqual(bufs);
        },
      ),
    );
  });

  it('rejects impossible length prefixes (0, runt, over the MTU)', () => {
    for (const len of [0, 13, 1519, 0xffffffff]) {
      const b = Buffer.alloc(8);
      b.writeUInt32BE(len, 0);
      const f = new StreamFramer(14, 1518);
      expect(collect(f, [b]).result).toBe('bad-length');
      expect(f.badLength).toBe(len);
    }
  });

  it('delivers the good frames before a broken prefix', () => {
    const good = encodeStreamBatch([Buffer.alloc(20, 7)], 1);
    const bad = Buffer.alloc(4);
    bad.writeUInt32BE(5, 0);
    const r = collect(new StreamFramer(14, 1518), [Buffer.concat([good, bad])]);
    expect(r.frames).toHaveLength(1);
    expect(r.result).toBe('bad-length');
  });
});
