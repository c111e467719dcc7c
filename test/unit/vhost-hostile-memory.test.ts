/**
 * Security review of issue 14, findings 2 and 3: the memory table (vhost-mem.cc).
 * 2: a sealed hugetlbfs memfd passed every check, and the first touch of a page the pool could
 *    not supply killed the process with SIGBUS: only shmem (tmpfs) memfds are taken.
 * 3: a region was mapped from file offset 0 and sizes had no cap, so sparse sealed memfds of
 *    tens of TiB used up the address space: only the region's pages are mapped, and the table
 *    may not announce more than the host's memory.
 * Memfds that JS cannot make (hugetlb, 100 TiB sparse, sealed) come from a python3 child; the
 * test opens them through /proc/PID/fd and hands them over as QEMU would.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, openSync, readSync, writeSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { afterEach, describe, expect, it } from 'vitest';
import {
  type Backend,
  type RegionDesc,
  DESC_F_WRITE,
  memTablePayload,
  Req,
  RX,
  startBackend,
  TX,
  VhostFrontend,
} from '../support/vhost-frontend.js';

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0).reverse()) c();
});

const MEMFD = `
import fcntl, os, sys
flags = os.MFD_ALLOW_SEALING | (os.MFD_HUGETLB if sys.argv[1] == 'huge' else 0)
try:
    fd = os.memfd_create('vhost-review', flags)
    os.ftruncate(fd, int(sys.argv[2]))
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
except OSError as e:
    print('error', e, flush=True)
    sys.exit(0)
print(fd, flush=True)
sys.stdin.read()
`;

/** A sealed memfd of `size` bytes made by a child (hugetlbfs when `huge`), opened here; null when this host cannot make one. */
async function childMemfd(kind: 'huge' | 'shm', size: bigint): Promise<number | null> {
  const child: ChildProcess = spawn('python3', ['-c', MEMFD, kind, String(size)], { stdio: ['pipe', 'pipe', 'inherit'] });
  cleanups.push(() => child.kill());
  const line = await new Promise<string>((resolve) => {
    const rl = createInterface({ input: child.stdout! });
    rl.once('line', resolve);
    child.once('error', () => resolve('error: no python3'));
    child.once('exit', () => resolve('error exit'));
  });
  if (line.startsWith('error')) return null;
  const fd = openSync(`/proc/${child.pid}/fd/${line.trim()}`, 'r+');
  cleanups.push(() => closeSync(fd));
  return fd;
}

async function connected(): Promise<{ b: Backend; fe: VhostFrontend }> {
  const b = startBackend();
  cleanups.push(() => b.close());
  const fe = VhostFrontend.connect(b.path, { needReply: true });
  cleanups.push(() => fe.close());
  return { b, fe };
}

const MiB = 1n << 20n;
const TiB = 1n << 40n;

describe('vhost review: memory table', () => {
  it('a sealed hugetlbfs memfd is refused before it is mapped (no SIGBUS)', async (ctx) => {
    const fd = await childMemfd('huge', 2n * MiB);
    if (fd === null) ctx.skip();
    const { b, fe } = await connected();
    await fe.handshake();
    const region: RegionDesc = { gpa: 0n, size: 2n * MiB, uva: 0x7f00_0000_0000n, mmapOffset: 0n };
    await expect(fe.set(Req.SET_MEM_TABLE, memTablePayload([region]), [fd!])).rejects.toThrow();
    expect(await b.waitState('broken')).toMatch(/hugetlb memory backends are not supported/);
    expect(b.dev.stats()).toMatchObject({ regions: 0, violations: 1 });
  });

  it('a table announcing more than the host has is refused (sparse sealed memfds cost the front-end nothing)', async (ctx) => {
    const fd = await childMemfd('shm', 64n * TiB);
    if (fd === null) ctx.skip();
    const { b, fe } = await connected();
    await fe.handshake();
    const region: RegionDesc = { gpa: 0n, size: 64n * TiB, uva: 0x7f00_0000_0000n, mmapOffset: 0n };
    await expect(fe.set(Req.SET_MEM_TABLE, memTablePayload([region]), [fd!])).rejects.toThrow();
    expect(await b.waitState('broken')).toMatch(/more memory than this host has/);
    expect(b.dev.stats()).toMatchObject({ regions: 0, memBytes: 0 });
  });

  it('mmap_offset costs no address space: regions 100 TiB into a memfd are mapped alone and move frames', async (ctx) => {
    const OFF = 100n * TiB;
    const big = await childMemfd('shm', OFF + 8n * MiB);
    if (big === null) ctx.skip();
    const { b, fe } = await connected();
    await fe.start();
    expect(b.dev.stats().state).toBe('running');
    // Region 0 (rings) as before, and three 2 MiB regions at 100 TiB in the big memfd; the last
    // at an offset that is not page-aligned. Each mapped from offset 0 would take 100 TiB.
    const gpa = (k: number): bigint => 0x1_0000_0000n + BigInt(k) * 4n * MiB;
    const extra: RegionDesc[] = [0, 1, 2].map((k) => ({
      gpa: gpa(k),
      size: 2n * MiB - (k === 2 ? 0x10n : 0n),
      uva: 0x7e00_0000_0000n + BigInt(k) * 0x1000_0000n,
      mmapOffset: OFF + BigInt(k) * 2n * MiB + (k === 2 ? 0x10n : 0n),
    }));
    const r0 = fe.regions[0]!;
    await fe.set(Req.SET_MEM_TABLE, memTablePayload([r0.desc(), ...extra]), [r0.fd, big!, big!, big!]);
    await fe.sync();
    expect(b.dev.stats()).toMatchObject({ state: 'running', regions: 4, violations: 0 });
    expect(b.dev.stats().memBytes).toBe(r0.size + 6 * 2 ** 20 - 0x10);

    // Guest TX from region 3 (the unaligned one): file offset OFF + 4 MiB + 0x10 + 0x100.
    const f = Buffer.alloc(60, 0x5a);
    f.writeUInt16BE(0x0800, 12);
    const data = Buffer.concat([Buffer.alloc(12), f]);
    writeSync(big!, data, 0, data.length, Number(OFF + 4n * MiB + 0x10n + 0x100n));
    const tx = fe.rings[TX]!;
    const h = tx.alloc();
    tx.writeDesc(h, { addr: gpa(2) + 0x100n, len: data.length, flags: 0, next: 0 });
    tx.availPush(h);
    expect(b.dev.processQueues()).toBe(1);
    expect(b.frames.map((x) => x.subarray(10))).toEqual([f]);

    // Guest RX into region 2: file offset OFF + 2 MiB + 0x200.
    const rx = fe.rings[RX]!;
    const i = rx.alloc();
    rx.writeDesc(i, { addr: gpa(1) + 0x200n, len: 2048, flags: DESC_F_WRITE, next: 0 });
    rx.availPush(i);
    const g = Buffer.alloc(60, 0xa5);
    g.writeUInt16BE(0x0800, 12);
    expect(b.dev.write([Buffer.concat([Buffer.alloc(10), g])], 1)).toBe(1);
    const back = Buffer.alloc(12 + 60);
    readSync(big!, back, 0, back.length, Number(OFF + 2n * MiB + 0x200n));
    expect(back.subarray(12)).toEqual(g);
    expect(b.dev.stats()).toMatchObject({ state: 'running', violations: 0 });
  });
});
