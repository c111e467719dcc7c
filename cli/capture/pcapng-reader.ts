/**
 * Reads the pcapng stream `capture.start` sends: splits it into whole blocks (chunks from the
 * socket end anywhere), and decodes the few blocks the CLI looks into (IDB for point names and
 * link types, EPB for the per-packet line and the count, ISB for the summary). Blocks are handed
 * on byte for byte, so what gets written to a file is exactly what the daemon sent.
 *
 * Either byte order is accepted (the SHB's magic says which); the daemon writes little-endian.
 */
import { BLOCK_EPB, BLOCK_IDB, BLOCK_ISB, BLOCK_SHB, BYTE_ORDER_MAGIC, LINKTYPE_RAW } from '../../daemon/capture/pcapng.js';

export { BLOCK_EPB, BLOCK_IDB, BLOCK_ISB, BLOCK_SHB };

/** A block longer than this is taken for a broken stream (the largest real one: a 64 KiB TSO frame plus options). */
export const MAX_BLOCK = 16 * 1024 * 1024;

export class PcapngStreamError extends Error {}

export interface Block {
  readonly type: number;
  /** The whole block, header and trailing length included. */
  readonly bytes: Buffer;
  /** Byte order of its section. */
  readonly le: boolean;
}

/** Cuts a byte stream into pcapng blocks. */
export class BlockSplitter {
  #pending: Buffer[] = [];
  #pendingLen = 0;
  #le = true;
  #sawShb = false;

  /** Bytes held that do not form a whole block yet. */
  get pending(): number {
    return this.#pendingLen;
  }

  /** Adds a chunk; returns the blocks it completed, in order. Throws PcapngStreamError on garbage. */
  push(chunk: Buffer): Block[] {
    if (chunk.length === 0) return [];
    let buf: Buffer;
    if (this.#pendingLen === 0) buf = chunk;
    else {
      this.#pending.push(chunk);
      buf = Buffer.concat(this.#pending, this.#pendingLen + chunk.length);
    }
    const out: Block[] = [];
    let off = 0;
    while (buf.length - off >= 12) {
      // Block type 0x0a0d0d0a reads the same in both orders; a new section may change the order.
      let type = buf.readUInt32LE(off);
      if (type === BLOCK_SHB) {
        const magic = buf.readUInt32LE(off + 8);
        if (magic === BYTE_ORDER_MAGIC) this.#le = true;
        else if (buf.readUInt32BE(off + 8) === BYTE_ORDER_MAGIC) this.#le = false;
        else throw new PcapngStreamError('pcapng section header with a bad byte-order magic');
        this.#sawShb = true;
      } else if (!this.#sawShb) {
        throw new PcapngStreamError('the stream does not start with a pcapng section header');
      }
      const le = this.#le;
      if (!le) type = buf.readUInt32BE(off);
      const len = le ? buf.readUInt32LE(off + 4) : buf.readUInt32BE(off + 4);
      if (len < 12 || len % 4 !== 0 || len > MAX_BLOCK) throw new PcapngStreamError(`pcapng block of bad length ${len}`);
      if (buf.length - off < len) break;
      const trailer = le ? buf.readUInt32LE(off + len - 4) : buf.readUInt32BE(off + len - 4);
      if (trailer !== len) throw new PcapngStreamError(`pcapng block lengths differ (${len}, ${trailer})`);
      // A copy when the block sits in the reassembly buffer is not needed: that buffer is ours.
      out.push({ type, bytes: buf.subarray(off, off + len), le });
      off += len;
    }
    const rest = buf.length - off;
    this.#pending = rest > 0 ? [buf.subarray(off)] : [];
    this.#pendingLen = rest;
    return out;
  }
}

interface Option {
  code: number;
  value: Buffer;
}

function u32(b: Block, off: number): number {
  return b.le ? b.bytes.readUInt32LE(off) : b.bytes.readUInt32BE(off);
}

function u16(b: Block, off: number): number {
  return b.le ? b.bytes.readUInt16LE(off) : b.bytes.readUInt16BE(off);
}

function u64(b: Block, value: Buffer): bigint {
  return b.le ? value.readBigUInt64LE(0) : value.readBigUInt64BE(0);
}

/** Options from `off` to the trailing length; stops at opt_endofopt or at a malformed option. */
function options(b: Block, off: number): Option[] {
  const out: Option[] = [];
  const end = b.bytes.length - 4;
  while (off + 4 <= end) {
    const code = u16(b, off);
    const len = u16(b, off + 2);
    if (code === 0) break;
    if (off + 4 + len > end) throw new PcapngStreamError('pcapng option runs past its block');
    out.push({ code, value: b.bytes.subarray(off + 4, off + 4 + len) });
    off += 4 + ((len + 3) & ~3);
  }
  return out;
}

export interface Interface {
  readonly linkType: number;
  /** 'raw' for LINKTYPE_RAW, else 'ether' (what the decoder assumes). */
  readonly link: 'ether' | 'raw';
  readonly snaplen: number;
  readonly name: string | undefined;
  readonly description: string | undefined;
  /** Timestamp units per second (if_tsresol; default 10^6). */
  readonly unitsPerSec: bigint;
}

export function parseIdb(b: Block): Interface {
  if (b.bytes.length < 20) throw new PcapngStreamError('pcapng interface block too short');
  const linkType = u16(b, 8);
  let name: string | undefined;
  let description: string | undefined;
  let unitsPerSec = 1_000_000n;
  for (const o of options(b, 16)) {
    if (o.code === 2) name = o.value.toString('utf8');
    else if (o.code === 3) description = o.value.toString('utf8');
    else if (o.code === 9 && o.value.length >= 1) {
      const r = o.value[0]!;
      unitsPerSec = r & 0x80 ? 2n ** BigInt(r & 0x7f) : 10n ** BigInt(r);
    }
  }
  return { linkType, link: linkType === LINKTYPE_RAW ? 'raw' : 'ether', snaplen: u32(b, 12), name, description, unitsPerSec };
}

export interface Packet {
  readonly interfaceId: number;
  /** Raw timestamp in the interface's units. */
  readonly timestamp: bigint;
  readonly data: Buffer;
  readonly originalLength: number;
  /** epb_flags bits 0-1: 'in', 'out', or undefined when not given. */
  readonly direction: 'in' | 'out' | undefined;
  readonly comment: string | undefined;
}

export function parseEpb(b: Block): Packet {
  if (b.bytes.length < 32) throw new PcapngStreamError('pcapng packet block too short');
  const capLen = u32(b, 20);
  const dataEnd = 28 + ((capLen + 3) & ~3);
  if (dataEnd > b.bytes.length - 4) throw new PcapngStreamError('pcapng packet runs past its block');
  let direction: Packet['direction'];
  let comment: string | undefined;
  for (const o of options(b, dataEnd)) {
    if (o.code === 2 && o.value.length === 4) {
      const d = (b.le ? o.value.readUInt32LE(0) : o.value.readUInt32BE(0)) & 3;
      direction = d === 1 ? 'in' : d === 2 ? 'out' : undefined;
    } else if (o.code === 1) comment = o.value.toString('utf8');
  }
  return {
    interfaceId: u32(b, 8),
    timestamp: (BigInt(u32(b, 12)) << 32n) | BigInt(u32(b, 16)),
    data: b.bytes.subarray(28, 28 + capLen),
    originalLength: u32(b, 24),
    direction,
    comment,
  };
}

export interface Stats {
  readonly interfaceId: number;
  readonly ifRecv: bigint | undefined;
  readonly ifDrop: bigint | undefined;
  readonly filterAccept: bigint | undefined;
  readonly osDrop: bigint | undefined;
}

export function parseIsb(b: Block): Stats {
  if (b.bytes.length < 24) throw new PcapngStreamError('pcapng statistics block too short');
  const s: { ifRecv?: bigint; ifDrop?: bigint; filterAccept?: bigint; osDrop?: bigint } = {};
  for (const o of options(b, 20)) {
    if (o.value.length !== 8) continue;
    if (o.code === 4) s.ifRecv = u64(b, o.value);
    else if (o.code === 5) s.ifDrop = u64(b, o.value);
    else if (o.code === 6) s.filterAccept = u64(b, o.value);
    else if (o.code === 7) s.osDrop = u64(b, o.value);
  }
  return { interfaceId: u32(b, 8), ifRecv: s.ifRecv, ifDrop: s.ifDrop, filterAccept: s.filterAccept, osDrop: s.osDrop };
}

/** Nanoseconds since the epoch of a packet's timestamp on interface `i`. */
export function timestampNs(i: Interface | undefined, ts: bigint): bigint {
  const units = i?.unitsPerSec ?? 1_000_000n;
  return units === 1_000_000_000n ? ts : (ts * 1_000_000_000n) / units;
}
