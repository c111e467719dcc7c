/** A small pcapng reader for tests (little-endian sections, as daemon/capture/pcapng.ts writes). */
export interface ReadPacket {
  iface: number;
  ifName: string;
  tsNs: bigint;
  capLen: number;
  origLen: number;
  data: Buffer;
  /** 'in', 'out', or undefined (no epb_flags). */
  dir: 'in' | 'out' | undefined;
  comment: string | undefined;
}
export interface ReadIsb {
  iface: number;
  ifRecv?: bigint;
  filterAccept?: bigint;
  osDrop?: bigint;
}
export interface ReadCapture {
  sections: number;
  ifaces: { name: string; linkType: number; snaplen: number }[];
  packets: ReadPacket[];
  isbs: ReadIsb[];
}

function options(b: Buffer, off: number, end: number): Map<number, Buffer[]> {
  const m = new Map<number, Buffer[]>();
  while (off + 4 <= end) {
    const code = b.readUInt16LE(off);
    const len = b.readUInt16LE(off + 2);
    if (code === 0) break;
    const v = b.subarray(off + 4, off + 4 + len);
    m.set(code, [...(m.get(code) ?? []), v]);
    off += 4 + ((len + 3) & ~3);
  }
  return m;
}

/** Reads every block; throws on anything malformed. Interface ids are per section, as in pcapng. */
export function readPcapng(b: Buffer): ReadCapture {
  const out: ReadCapture = { sections: 0, ifaces: [], packets: [], isbs: [] };
  let sectionIfaces: number[] = [];
  let off = 0;
  while (off < b.length) {
    if (off + 12 > b.length) throw new Error(`truncated block at ${off}`);
    const type = b.readUInt32LE(off);
    const len = b.readUInt32LE(off + 4);
    if (len < 12 || len % 4 !== 0 || off + len > b.length || b.readUInt32LE(off + len - 4) !== len) throw new Error(`bad block at ${off}`);
    const end = off + len - 4;
    if (type === 0x0a0d0d0a) {
      out.sections++;
      sectionIfaces = [];
    } else if (type === 1) {
      const o = options(b, off + 16, end);
      sectionIfaces.push(out.ifaces.length);
      out.ifaces.push({ name: o.get(2)?.[0]?.toString('utf8') ?? '', linkType: b.readUInt16LE(off + 8), snaplen: b.readUInt32LE(off + 12) });
    } else if (type === 6) {
      const local = b.readUInt32LE(off + 8);
      const iface = sectionIfaces[local];
      if (iface === undefined) throw new Error(`EPB for unknown interface ${local}`);
      const ts = (BigInt(b.readUInt32LE(off + 12)) << 32n) | BigInt(b.readUInt32LE(off + 16));
      const capLen = b.readUInt32LE(off + 20);
      const origLen = b.readUInt32LE(off + 24);
      const data = Buffer.from(b.subarray(off + 28, off + 28 + capLen));
      const o = options(b, off + 28 + ((capLen + 3) & ~3), end);
      const flags = o.get(2)?.[0]?.readUInt32LE(0);
      out.packets.push({ iface, ifName: out.ifaces[iface]!.name, tsNs: ts, capLen, origLen, data, dir: flags === undefined ? undefined : (flags & 3) === 1 ? 'in' : (flags & 3) === 2 ? 'out' : undefined, comment: o.get(1)?.[0]?.toString('utf8') });
    } else if (type === 5) {
      const o = options(b, off + 20, end);
      const u64 = (c: number): bigint | undefined => {
        const v = o.get(c)?.[0];
        return v === undefined ? undefined : v.readBigUInt64LE(0);
      };
      const isb: ReadIsb = { iface: sectionIfaces[b.readUInt32LE(off + 8)]! };
      const r = u64(4);
      if (r !== undefined) isb.ifRecv = r;
      const fa = u64(6);
      if (fa !== undefined) isb.filterAccept = fa;
      const od = u64(7);
      if (od !== undefined) isb.osDrop = od;
      out.isbs.push(isb);
    }
    off += len;
  }
  return out;
}
