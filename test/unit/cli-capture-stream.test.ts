/** The CLI's pcapng stream reader: blocks cut anywhere, decoded back to what PcapngWriter wrote. */
import { describe, expect, it } from 'vitest';
import { LINKTYPE_ETHERNET, LINKTYPE_RAW, PcapngWriter } from '../../daemon/capture/pcapng.js';
import { BLOCK_EPB, BLOCK_IDB, BLOCK_ISB, BLOCK_SHB, BlockSplitter, parseEpb, parseIdb, parseIsb, PcapngStreamError, timestampNs, type Block } from '../../cli/capture/pcapng-reader.js';
import { CaptureTally, summaryLine } from '../../cli/capture/tally.js';

function stream(): { bytes: Buffer; packets: Buffer[] } {
  const w = new PcapngWriter({ userappl: 'mvnet test' });
  const a = w.addInterface({ linkType: LINKTYPE_ETHERNET, snaplen: 0, name: 'vm1', description: 'port vm1' });
  const b = w.addInterface({ linkType: LINKTYPE_RAW, snaplen: 8, name: 'exit:direct' });
  const packets = Array.from({ length: 50 }, (_, i) => Buffer.alloc(1 + ((i * 37) % 200), i));
  const parts = [w.header(), a.block, b.block];
  packets.forEach((p, i) => parts.push(w.packet(i % 2, 1_700_000_000_000_000_000n + BigInt(i), p, { direction: i % 3 === 0 ? 'in' : 'out', ...(i === 7 ? { comment: 'tor circuit-identity vm1/3' } : {}) })));
  parts.push(w.stats(0, 5n, { ifRecv: 40, filterAccept: 25, osDrop: 3 }), w.stats(1, 5n, { ifRecv: 30, filterAccept: 30, osDrop: 0 }));
  return { bytes: Buffer.concat(parts), packets };
}

function splitAll(bytes: Buffer, chunk: number): Block[] {
  const s = new BlockSplitter();
  const out: Block[] = [];
  for (let off = 0; off < bytes.length; off += chunk) out.push(...s.push(bytes.subarray(off, off + chunk)));
  expect(s.pending).toBe(0);
  return out;
}

describe('BlockSplitter', () => {
  it('gives the same blocks, byte for byte, whatever the chunk sizes', () => {
    const { bytes } = stream();
    const whole = splitAll(bytes, bytes.length);
    expect(whole.map((b) => b.type)).toEqual([BLOCK_SHB, BLOCK_IDB, BLOCK_IDB, ...Array<number>(50).fill(BLOCK_EPB), BLOCK_ISB, BLOCK_ISB]);
    expect(Buffer.concat(whole.map((b) => b.bytes))).toEqual(bytes);
    for (const chunk of [1, 3, 7, 64, 1000]) {
      const blocks = splitAll(bytes, chunk);
      expect(blocks.map((b) => b.type)).toEqual(whole.map((b) => b.type));
      expect(Buffer.concat(blocks.map((b) => b.bytes))).toEqual(bytes);
    }
  });

  it('holds a partial block until it is complete', () => {
    const { bytes } = stream();
    const s = new BlockSplitter();
    expect(s.push(bytes.subarray(0, 10))).toEqual([]);
    expect(s.pending).toBe(10);
    expect(s.push(bytes.subarray(10, 11)).length).toBe(0);
    expect(s.push(bytes.subarray(11)).length).toBe(55);
  });

  it('refuses garbage: no section header first, a bad length, lengths that differ', () => {
    const { bytes } = stream();
    expect(() => new BlockSplitter().push(bytes.subarray(bytes.readUInt32LE(4)))).toThrow(PcapngStreamError);
    const badLen = Buffer.from(bytes);
    badLen.writeUInt32LE(13, 4);
    expect(() => new BlockSplitter().push(badLen)).toThrow(/bad length 13/);
    const differ = Buffer.from(bytes);
    const shbLen = differ.readUInt32LE(4);
    differ.writeUInt32LE(shbLen + 4, shbLen - 4);
    expect(() => new BlockSplitter().push(differ)).toThrow(/differ/);
    const magic = Buffer.from(bytes);
    magic.writeUInt32LE(0x12345678, 8);
    expect(() => new BlockSplitter().push(magic)).toThrow(/byte-order magic/);
  });

  it('reads a big-endian section too', () => {
    // SHB, IDB and one EPB by hand, big-endian.
    const shb = Buffer.from('0a0d0d0a0000001c1a2b3c4d00010000ffffffffffffffff0000001c', 'hex');
    const idb = Buffer.from('00000001000000140001000000000000' + '00000014', 'hex');
    const epb = Buffer.from('00000006000000240000000000000001000000020000000400000004aabbccdd00000024', 'hex');
    const blocks = new BlockSplitter().push(Buffer.concat([shb, idb, epb]));
    expect(blocks.map((b) => b.type)).toEqual([BLOCK_SHB, BLOCK_IDB, BLOCK_EPB]);
    expect(parseIdb(blocks[1]!).linkType).toBe(1);
    const p = parseEpb(blocks[2]!);
    expect(p.timestamp).toBe((1n << 32n) | 2n);
    expect(p.data).toEqual(Buffer.from('aabbccdd', 'hex'));
  });
});

describe('block decoding', () => {
  it('IDB, EPB and ISB fields come back as written', () => {
    const { bytes, packets } = stream();
    const blocks = splitAll(bytes, 100);
    const a = parseIdb(blocks[1]!);
    expect(a).toMatchObject({ linkType: 1, link: 'ether', snaplen: 0, name: 'vm1', description: 'port vm1', unitsPerSec: 1_000_000_000n });
    expect(parseIdb(blocks[2]!)).toMatchObject({ link: 'raw', snaplen: 8, name: 'exit:direct' });
    const epbs = blocks.filter((b) => b.type === BLOCK_EPB).map(parseEpb);
    epbs.forEach((p, i) => {
      expect(p.interfaceId).toBe(i % 2);
      expect(timestampNs(a, p.timestamp)).toBe(1_700_000_000_000_000_000n + BigInt(i));
      expect(p.originalLength).toBe(packets[i]!.length);
      // interface 1 cuts at 8 bytes
      expect(p.data).toEqual(i % 2 === 1 ? packets[i]!.subarray(0, 8) : packets[i]);
      expect(p.direction).toBe(i % 3 === 0 ? 'in' : 'out');
      expect(p.comment).toBe(i === 7 ? 'tor circuit-identity vm1/3' : undefined);
    });
    const isb = parseIsb(blocks.at(-2)!);
    expect(isb).toMatchObject({ interfaceId: 0, ifRecv: 40n, filterAccept: 25n, osDrop: 3n });
  });

  it('microsecond interfaces (no if_tsresol) are scaled to nanoseconds', () => {
    expect(timestampNs(undefined, 5n)).toBe(5000n);
  });
});

describe('CaptureTally', () => {
  it('counts packets and sums the daemon statistics into the summary line', () => {
    const { bytes } = stream();
    const t = new CaptureTally();
    for (const b of splitAll(bytes, 333)) t.onBlock(b);
    expect(t.pointName(1)).toBe('exit:direct');
    const s = t.summary();
    expect(s).toMatchObject({ captured: 50, filteredOut: 15, dropped: 3, seen: 70, complete: true });
    expect(s.points).toEqual([
      { name: 'vm1', seen: 40, filteredOut: 15, dropped: 3 },
      { name: 'exit:direct', seen: 30, filteredOut: 0, dropped: 0 },
    ]);
    expect(summaryLine(s)).toBe('50 packets captured, 15 filtered out, 3 dropped');
    // Packets the CLI could not write at the end count as dropped, not captured.
    expect(summaryLine(t.summary(4))).toBe('46 packets captured, 15 filtered out, 7 dropped');
  });

  it('a stream cut before the statistics is not complete', () => {
    const { bytes } = stream();
    const t = new CaptureTally();
    const isbs = splitAll(bytes, bytes.length).slice(-2).reduce((n, b) => n + b.bytes.length, 0);
    // Everything but the last packet's block's tail and the statistics.
    for (const b of new BlockSplitter().push(bytes.subarray(0, bytes.length - isbs - 8))) t.onBlock(b);
    expect(t.packets).toBe(49);
    expect(t.summary().complete).toBe(false);
  });
});
