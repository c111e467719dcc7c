/** `mvnet capture -w FILE [--ring N --size MB]`: what lands on disk, read back by tshark. */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { LINKTYPE_ETHERNET, PcapngWriter } from '../../daemon/capture/pcapng.js';
import { BLOCK_EPB, BLOCK_IDB, BLOCK_SHB, BlockSplitter } from '../../cli/capture/pcapng-reader.js';
import { CaptureFiles } from '../../cli/capture/ring-files.js';
import { ethernet, icmpEcho, ipv4Packet } from '../support/frames.js';

const dir = mkdtempSync(join(tmpdir(), 'mvnet-cli-files-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A stream of `n` ICMP echo frames of `pad` payload bytes each, as blocks. */
function blocks(n: number, pad: number): { type: number; bytes: Buffer }[] {
  const w = new PcapngWriter({ userappl: 'mvnet test' });
  const parts = [w.header(), w.addInterface({ linkType: LINKTYPE_ETHERNET, snaplen: 0, name: 'vm1' }).block];
  for (let i = 0; i < n; i++) {
    const frame = ethernet('02:00:00:00:00:02', '02:00:00:00:00:01', 0x0800, ipv4Packet({ src: '10.0.0.1', dst: '10.0.0.2', protocol: 1, payload: icmpEcho({ type: 8, id: 1, seq: i, data: Buffer.alloc(pad) }) }));
    parts.push(w.packet(0, 1_700_000_000_000_000_000n + BigInt(i) * 1000n, frame, { direction: 'out' }));
  }
  return new BlockSplitter().push(Buffer.concat(parts));
}

/** ICMP sequence numbers tshark reads from a file. */
function seqs(file: string): number[] {
  const out = execFileSync('tshark', ['-r', file, '-T', 'fields', '-e', 'icmp.seq'], { encoding: 'utf8' });
  return out.split('\n').filter((l) => l !== '').map(Number);
}

describe('CaptureFiles', () => {
  it('one file: every block, byte for byte', () => {
    const b = blocks(20, 100);
    const f = new CaptureFiles(join(dir, 'one.pcapng'));
    f.write(b.slice(0, 5));
    f.write(b.slice(5));
    f.close();
    expect(f.files).toEqual([join(dir, 'one.pcapng')]);
    expect(readFileSync(join(dir, 'one.pcapng'))).toEqual(Buffer.concat(b.map((x) => x.bytes)));
    expect(seqs(join(dir, 'one.pcapng'))).toEqual([...Array(20).keys()]);
  });

  it('ring: rotates before a file would pass the size, keeps the newest N (FILE, FILE.1, FILE.2), each a complete pcapng', () => {
    const b = blocks(100, 958); // about 1 KB per packet block
    const base = join(dir, 'ring.pcapng');
    const size = 10_000;
    const f = new CaptureFiles(base, { files: 3, sizeBytes: size });
    expect(f.files).toEqual([base]);
    // Blocks arrive in chunks of any size.
    for (let i = 0; i < b.length; i += 7) f.write(b.slice(i, i + 7));
    f.close();
    // Oldest first; nothing else of this name.
    expect(f.files).toEqual([`${base}.2`, `${base}.1`, base]);
    expect(readdirSync(dir).filter((n) => n.startsWith('ring.pcapng')).sort()).toEqual(['ring.pcapng', 'ring.pcapng.1', 'ring.pcapng.2']);
    const all: number[] = [];
    for (const p of f.files) {
      expect(statSync(p).size).toBeLessThanOrEqual(size);
      const inFile = new BlockSplitter().push(readFileSync(p));
      expect(inFile.slice(0, 2).map((x) => x.type)).toEqual([BLOCK_SHB, BLOCK_IDB]);
      expect(inFile.slice(2).every((x) => x.type === BLOCK_EPB)).toBe(true);
      all.push(...seqs(p));
    }
    // The newest packets, in order, none twice or missing across the kept files.
    expect(all).toEqual([...Array(100).keys()].slice(100 - all.length));
    // The two full files were filled to within one packet of the size.
    for (const p of f.files.slice(0, -1)) expect(statSync(p).size).toBeGreaterThan(size - 1100);
  });

  it('ring of one file: it starts over', () => {
    const b = blocks(30, 958);
    const base = join(dir, 'one-ring');
    const f = new CaptureFiles(base, { files: 1, sizeBytes: 5000 });
    f.write(b);
    f.close();
    expect(f.files).toEqual([base]);
    expect(existsSync(`${base}.1`)).toBe(false);
    expect(seqs(base).at(-1)).toBe(29);
    expect(statSync(base).size).toBeLessThanOrEqual(5000);
  });

  it('ring: a packet larger than the size still gets a file of its own', () => {
    const b = blocks(3, 3000);
    const f = new CaptureFiles(join(dir, 'big'), { files: 10, sizeBytes: 1000 });
    f.write(b);
    f.close();
    expect(f.files.length).toBe(3);
    expect(f.files.flatMap(seqs)).toEqual([0, 1, 2]);
  });

  it('a directory or a missing directory: one clear line', () => {
    const d = join(dir, 'adir');
    mkdirSync(d);
    expect(() => new CaptureFiles(d)).toThrow(`cannot write ${d}: is a directory`);
    expect(() => new CaptureFiles(join(dir, 'nope', 'x'))).toThrow(/its directory does not exist/);
  });
});
