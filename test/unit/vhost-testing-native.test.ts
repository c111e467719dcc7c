/**
 * The vhost-user test aids (vhost-testing.cc): a memfd mapped shared and sealed as QEMU's
 * memory-backend-memfd makes it, eventfds as kick/call, and SCM_RIGHTS passing over a unix
 * stream socket, each checked against what the kernel says.
 */
import { closeSync, fstatSync, mkdtempSync, readlinkSync, readSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadNative } from '../../plugins/native/index.js';

const t = loadNative().vhostTesting;
const dir = mkdtempSync(join(tmpdir(), 'mvnet-vhost-testing-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function errCode(f: () => unknown): string | undefined {
  try {
    f();
  } catch (e) {
    return (e as { code?: string }).code;
  }
  return undefined;
}

describe('vhostTesting (vhost-testing.cc)', () => {
  it('memfdMap: the Buffer views the memfd, sealed against shrinking only when asked', () => {
    const sealed = t.memfdMap(8192, true);
    expect(sealed.mem.length).toBe(8192);
    expect(fstatSync(sealed.fd).size).toBe(8192);
    expect(readlinkSync(`/proc/self/fd/${sealed.fd}`)).toMatch(/^\/memfd:/);
    // MAP_SHARED: what the view writes is in the file (as the back-end's own mapping will see it).
    sealed.mem.write('hello', 100);
    const viaFd = Buffer.alloc(5);
    readSync(sealed.fd, viaFd, 0, 5, 100);
    expect(viaFd.toString()).toBe('hello');
    expect(errCode(() => t.ftruncate(sealed.fd, 4096))).toBe('EPERM');
    expect(errCode(() => t.ftruncate(sealed.fd, 16384))).toBe('EPERM');
    const open = t.memfdMap(4096, false);
    t.ftruncate(open.fd, 8192);
    expect(fstatSync(open.fd).size).toBe(8192);
    // Unmapped: the memfd may now shrink without this process touching missing pages, and the
    // stale view reads zeroes instead of faulting.
    t.memfdUnmap(open.id);
    t.ftruncate(open.fd, 0);
    expect(open.mem[0]).toBe(0);
    open.mem[0] = 1;
    t.memfdUnmap(open.id);
    expect(() => t.memfdUnmap(987654)).toThrow(TypeError);
    expect(() => t.memfdMap(0, true)).toThrow(TypeError);
    closeSync(open.fd);
    t.memfdUnmap(sealed.id);
    closeSync(sealed.fd);
  });

  it('eventfd: writes add up, a read takes the count and never blocks', () => {
    const fd = t.eventfd();
    expect(t.eventfdRead(fd)).toBe(0);
    t.eventfdWrite(fd, 1);
    t.eventfdWrite(fd, 2);
    expect(t.eventfdRead(fd)).toBe(3);
    expect(t.eventfdRead(fd)).toBe(0);
    expect(() => t.eventfdWrite(fd, 0)).toThrow(TypeError);
    closeSync(fd);
  });

  it('unixConnect + sendWithFds: the bytes arrive, descriptors attached or not; recvExact reads or times out', async () => {
    const path = join(dir, 'sock');
    const accepted: Socket[] = [];
    const server: Server = createServer((s) => accepted.push(s));
    await new Promise<void>((resolve) => server.listen(path, resolve));
    const fd = t.unixConnect(path);
    const efd = t.eventfd();
    const data = new Promise<Buffer>((resolve) => {
      const chunks: Buffer[] = [];
      server.once('connection', (s) => s.on('data', (c: Buffer) => {
        chunks.push(c);
        if (Buffer.concat(chunks).length >= 6) resolve(Buffer.concat(chunks));
      }));
    });
    expect(t.sendWithFds(fd, Buffer.from('abc'), [efd, efd])).toBe(3);
    expect(t.sendWithFds(fd, Buffer.from('def'), [])).toBe(3);
    expect((await data).toString()).toBe('abcdef');
    // Nothing to read yet: a timeout, not a hang.
    expect(errCode(() => t.recvExact(fd, 4, 20))).toBe('ETIMEDOUT');
    await new Promise<void>((resolve) => accepted[0]!.write('wxyz', () => resolve()));
    expect(t.recvExact(fd, 4, 1000).toString()).toBe('wxyz');
    await new Promise((resolve) => accepted[0]!.once('close', resolve).destroy());
    expect(errCode(() => t.recvExact(fd, 1, 1000))).toBe('EPIPE');
    expect(errCode(() => t.unixConnect(join(dir, 'none')))).toBe('ENOENT');
    expect(() => t.sendWithFds(fd, Buffer.alloc(1), new Array<number>(300).fill(efd))).toThrow(TypeError);
    closeSync(fd);
    closeSync(efd);
    await new Promise((resolve) => server.close(resolve));
  });
});
