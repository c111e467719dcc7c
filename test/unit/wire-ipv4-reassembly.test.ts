import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Ipv4Reassembler } from '../../daemon/wire/ipv4-reassembly.js';
import { encodeIpv4, parseIpv4, type Ipv4Fields, type Ipv4Packet } from '../../daemon/wire/ipv4.js';

const base: Ipv4Fields = {
  dscp: 0,
  ecn: 0,
  id: 0x1234,
  dontFragment: false,
  moreFragments: false,
  fragmentOffset: 0,
  ttl: 64,
  protocol: 17,
  src: 0x0a000002,
  dst: 0x0a000001,
};

function frag(offset: number, data: Buffer, more: boolean, over: Partial<Ipv4Fields> = {}): Ipv4Packet {
  const r = parseIpv4(encodeIpv4({ ...base, ...over, fragmentOffset: offset, moreFragments: more, payload: data }));
  if (!r.ok) throw new Error('test fragment did not parse');
  return r.value;
}

/** Cuts `payload` into fragments at the given (8-aligned) cut points. */
function fragment(payload: Buffer, cuts: number[], over: Partial<Ipv4Fields> = {}): Ipv4Packet[] {
  const points = [...new Set(cuts.map((c) => c & ~7).filter((c) => c > 0 && c < payload.length))].sort((a, b) => a - b);
  const bounds = [0, ...points, payload.length];
  const out: Ipv4Packet[] = [];
  for (let i = 0; i + 1 < bounds.length; i++) {
    out.push(frag(bounds[i]!, payload.subarray(bounds[i], bounds[i + 1]), i + 2 < bounds.length, over));
  }
  return out;
}

describe('ipv4 reassembly', () => {
  it('reassembles fragments in any order into the original datagram', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 9, maxLength: 4000 }),
        fc.array(fc.nat(4000), { maxLength: 20 }),
        fc.nat(),
        (data, cuts, seed) => {
          const payload = Buffer.from(data);
          const frags = fragment(payload, cuts);
          fc.pre(frags.length >= 2);
          // deterministic shuffle
          const order = frags.map((f, i) => ({ f, k: (i * 7919 + seed) % 10007 })).sort((a, b) => a.k - b.k).map((x) => x.f);
          const r = new Ipv4Reassembler();
          let done: Buffer | undefined;
          order.forEach((f, i) => {
            const res = r.push(f, 0);
            if (i < order.length - 1) expect(res.status).toBe('pending');
            else if (res.status === 'complete') done = res.packet;
          });
          expect(done).toBeDefined();
          const p = parseIpv4(done!);
          expect(p.ok).toBe(true);
          if (!p.ok) return;
          expect(p.value).toMatchObject({ id: base.id, moreFragments: false, fragmentOffset: 0, protocol: 17, src: base.src, dst: base.dst });
          expect(Buffer.from(p.value.payload)).toEqual(payload);
          expect(r.datagrams).toBe(0);
          expect(r.bytes).toBe(0);
        },
      ),
    );
  });

  it('keeps the first fragment options', () => {
    const r = new Ipv4Reassembler();
    const opts = Buffer.from([0x94, 0x04, 0, 0]); // router alert
    expect(r.push(frag(8, Buffer.alloc(8, 2), false), 0).status).toBe('pending');
    const res = r.push(frag(0, Buffer.alloc(8, 1), true, { options: opts }), 0);
    expect(res.status).toBe('complete');
    if (res.status !== 'complete') return;
    const p = parseIpv4(res.packet);
    expect(p.ok && Buffer.from(p.value.options)).toEqual(opts);
    expect(p.ok && Buffer.from(p.value.payload)).toEqual(Buffer.concat([Buffer.alloc(8, 1), Buffer.alloc(8, 2)]));
  });

  it('drops the whole datagram on overlap and ignores exact duplicates', () => {
    const r = new Ipv4Reassembler();
    expect(r.push(frag(0, Buffer.alloc(16), true), 0).status).toBe('pending');
    expect(r.push(frag(0, Buffer.alloc(16), true), 0).status).toBe('duplicate');
    expect(r.push(frag(8, Buffer.alloc(16), true), 0)).toEqual({ status: 'dropped', reason: 'overlap' });
    expect(r.datagrams).toBe(0);
    expect(r.bytes).toBe(0);
    // The teardrop pattern: a later fragment reaching back into an earlier one.
    expect(r.push(frag(24, Buffer.alloc(8), false), 0).status).toBe('pending');
    expect(r.push(frag(16, Buffer.alloc(16), true), 0)).toEqual({ status: 'dropped', reason: 'overlap' });
    expect(r.stats.dropped.overlap).toBe(2);
  });

  it('rejects bad and oversized fragments', () => {
    const r = new Ipv4Reassembler();
    expect(r.push(frag(0, Buffer.alloc(10), true), 0)).toEqual({ status: 'dropped', reason: 'bad-fragment' });
    expect(r.push(frag(8, Buffer.alloc(0), false), 0)).toEqual({ status: 'dropped', reason: 'bad-fragment' });
    expect(r.push(frag(65528, Buffer.alloc(16), false), 0)).toEqual({ status: 'dropped', reason: 'too-big' });
    expect(r.push(frag(0, Buffer.alloc(8), true), 0).status).toBe('pending');
    expect(r.push(frag(16, Buffer.alloc(8), false), 0).status).toBe('pending');
    expect(r.push(frag(24, Buffer.alloc(8), true), 0)).toEqual({ status: 'dropped', reason: 'too-big' });
    expect(r.push(frag(0, Buffer.alloc(8), true), 0).status).toBe('pending');
    expect(r.push(frag(16, Buffer.alloc(8), false), 0).status).toBe('pending');
    expect(r.push(frag(32, Buffer.alloc(8), false), 0)).toEqual({ status: 'dropped', reason: 'too-big' });
  });

  it('times out with the time passed in', () => {
    const r = new Ipv4Reassembler({ timeoutMs: 1000 });
    expect(r.push(frag(0, Buffer.alloc(8), true), 100).status).toBe('pending');
    expect(r.expire(1099)).toBe(0);
    expect(r.datagrams).toBe(1);
    expect(r.push(frag(8, Buffer.alloc(8), false), 1100).status).toBe('pending'); // the old half expired first
    expect(r.stats.timedOut).toBe(1);
    expect(r.datagrams).toBe(1);
  });

  it('respects maxDatagrams, maxBytes and maxFragments', () => {
    const r = new Ipv4Reassembler({ maxDatagrams: 3, maxBytes: 100, maxFragments: 4 });
    for (let id = 0; id < 10; id++) r.push(frag(0, Buffer.alloc(8), true, { id }), 0);
    expect(r.datagrams).toBe(3);
    expect(r.stats.evicted).toBe(7);
    r.clear();
    expect(r.push(frag(0, Buffer.alloc(96), true, { id: 1 }), 0).status).toBe('pending');
    expect(r.push(frag(0, Buffer.alloc(8), true, { id: 2 }), 0).status).toBe('pending'); // evicts id 1
    expect(r.bytes).toBe(8);
    expect(r.push(frag(0, Buffer.alloc(104), true, { id: 3 }), 0)).toEqual({ status: 'dropped', reason: 'over-limit' });
    r.clear();
    for (let i = 0; i < 4; i++) expect(r.push(frag(i * 16, Buffer.alloc(8), true), 0).status).toBe('pending');
    expect(r.push(frag(80, Buffer.alloc(8), true), 0)).toEqual({ status: 'dropped', reason: 'too-many-fragments' });
  });

  it('never throws and stays within its limits on hostile fragment streams', () => {
    const fragArb = fc.record({
      id: fc.nat(3),
      offset: fc.nat(0x1fff).map((x) => x * 8),
      len: fc.nat(300),
      more: fc.boolean(),
      now: fc.nat(5000),
    });
    fc.assert(
      fc.property(fc.array(fragArb, { maxLength: 60 }), (stream) => {
        const r = new Ipv4Reassembler({ maxDatagrams: 2, maxBytes: 1000, maxFragments: 8, timeoutMs: 2000 });
        let now = 0;
        for (const s of stream) {
          now += s.now % 100;
          if (s.offset + s.len + 20 > 65535) continue; // not encodable as a real packet
          const res = r.push(frag(s.offset, Buffer.alloc(s.len, s.id), s.more, { id: s.id }), now);
          expect(['complete', 'pending', 'duplicate', 'dropped']).toContain(res.status);
          expect(r.datagrams).toBeLessThanOrEqual(2);
          expect(r.bytes).toBeLessThanOrEqual(1000);
          if (res.status === 'complete') expect(parseIpv4(res.packet).ok).toBe(true);
        }
      }),
    );
  });
});
