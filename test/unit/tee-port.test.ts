import { describe, it, expect } from 'vitest';
import { withTee } from '../../plugins/common/tee-port.js';
import { TEE_IN, TEE_OUT, TeeRing } from '../../plugins/common/tee-ring.js';
import type { Port } from '../../plugins/types.js';
import { MemPort } from '../support/mem-port.js';

function frame(n: number, len = 60): Buffer {
  return Buffer.alloc(len, n);
}

function drain(ring: TeeRing): { dir: number; first: number; len: number }[] {
  const out: { dir: number; first: number; len: number }[] = [];
  ring.drain((r) => out.push({ dir: r.dir, first: r.frame[0]!, len: r.origLen }));
  return out;
}

describe('withTee', () => {
  it('returns a port that has its own tee unchanged', () => {
    const mem = new MemPort('m');
    const own: Port = Object.assign(Object.create(mem) as MemPort, { tee: () => {} });
    expect(withTee(own)).toBe(own);
    expect(withTee(mem)).not.toBe(mem);
  });

  it('forwards everything while no tee runs, and tees both directions in order while one does', async () => {
    const mem = new MemPort('m', { mtu: 1500 });
    const port = withTee(mem);
    expect([port.kind, port.name, port.layer, port.vnetHdrLen, port.maxFrame]).toEqual(['fd', 'm', 2, 0, 1518]);
    const got: number[] = [];
    port.onFrames((fs) => fs.forEach((f) => got.push(f[0]!)));
    mem.inject(frame(1));
    port.send([frame(2)]);
    const ring = new TeeRing(1 << 16, 0);
    port.tee!(ring, TEE_IN | TEE_OUT);
    mem.inject(frame(3), frame(4));
    port.send([frame(5), frame(6, 100)]);
    mem.inject(frame(7));
    port.tee!(null, 0);
    mem.inject(frame(8));
    port.send([frame(9)]);
    expect(got).toEqual([1, 3, 4, 7, 8]);
    expect(mem.sent.map((f) => f[0])).toEqual([2, 5, 6, 9]);
    expect(drain(ring)).toEqual([
      { dir: TEE_IN, first: 3, len: 60 },
      { dir: TEE_IN, first: 4, len: 60 },
      { dir: TEE_OUT, first: 5, len: 60 },
      { dir: TEE_OUT, first: 6, len: 100 },
      { dir: TEE_IN, first: 7, len: 60 },
    ]);
    expect(port.stats()).toEqual(mem.stats());
    expect(port.status()).toEqual(mem.status());
    await port.close();
    expect(port.status().state).toBe('down');
  });

  it('tees only the directions asked for; a handler set later still sees every frame', () => {
    const mem = new MemPort('m');
    const port = withTee(mem);
    const ring = new TeeRing(1 << 16, 0);
    port.tee!(ring, TEE_OUT);
    const got: number[] = [];
    port.onFrames((fs) => fs.forEach((f) => got.push(f[0]!)));
    mem.inject(frame(1));
    port.send([frame(2)]);
    port.tee!(ring, TEE_IN);
    mem.inject(frame(3));
    port.send([frame(4)]);
    expect(got).toEqual([1, 3]);
    expect(drain(ring).map((r) => [r.dir, r.first])).toEqual([
      [TEE_OUT, 2],
      [TEE_IN, 3],
    ]);
  });

  it('never blocks the port: a full ring drops the copies and counts them', () => {
    const mem = new MemPort('m');
    const port = withTee(mem);
    const got: number[] = [];
    port.onFrames((fs) => fs.forEach((f) => got.push(f[0]!)));
    const ring = new TeeRing(256, 0);
    port.tee!(ring, TEE_IN | TEE_OUT);
    for (let i = 0; i < 10; i++) mem.inject(frame(i));
    expect(got).toHaveLength(10);
    expect(ring.written).toBe(2); // 88 bytes a record in 256
    expect(ring.dropped).toBe(8);
  });
});
