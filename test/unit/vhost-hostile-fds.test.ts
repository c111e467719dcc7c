/**
 * Security review of issue 14, finding 4: kick and call fds were trusted to be eventfds. A kick
 * fd that stays readable (a FIFO whose writer hung up, a semaphore-mode eventfd holding a huge
 * count) spun the loop; a call fd that is a regular file could block the loop in write() (FUSE,
 * NFS). Now SET_VRING_KICK/CALL take eventfds only, and kick eventfds in counter mode only.
 */
import { execFileSync, spawn } from 'node:child_process';
import { closeSync, constants, mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, type TestContext } from 'vitest';
import { type Backend, RX, startBackend, TX, VhostFrontend, vt } from '../support/vhost-frontend.js';

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0).reverse()) c();
});

function backend(): Backend {
  const b = startBackend();
  cleanups.push(() => b.close());
  return b;
}

function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'mvnet-vhost-hostile-'));
  cleanups.push(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

/**
 * Runs `py` (a front-end in Python, for os.eventfd and socket.send_fds) with the back-end's
 * socket path as its argument, while this loop serves the back-end; its output, trimmed. The
 * test is skipped when python3 cannot be started.
 */
async function frontendPy(ctx: TestContext, py: string, path: string): Promise<string> {
  const child = spawn('python3', ['-c', py, path], { stdio: ['ignore', 'pipe', 'inherit'] });
  cleanups.push(() => child.kill());
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  const code = await new Promise<number | null>((resolve) => {
    child.once('error', () => resolve(-1));
    child.once('exit', (c) => resolve(c));
  });
  if (code === -1) ctx.skip();
  return out.trim();
}

describe('vhost review: kick and call fds', () => {
  it('a kick fd that is a FIFO whose writer hung up (readable for ever) is refused', async () => {
    const b = backend();
    const fifo = join(tempDir(), 'kick');
    execFileSync('mkfifo', [fifo]);
    const rd = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
    closeSync(openSync(fifo, constants.O_WRONLY));
    const fe = VhostFrontend.connect(b.path);
    cleanups.push(() => fe.close());  // closes rd too (as the ring's kick fd)
    fe.rings[TX]!.kickFd = rd;
    await expect(fe.start()).rejects.toThrow();
    expect(await b.waitState('broken')).toMatch(/SET_VRING_KICK.*not an eventfd/);
    expect(b.dev.stats()).toMatchObject({ violations: 1 });
  });

  it('a call fd that is a regular file (a write that may block) is refused', async () => {
    const b = backend();
    const file = openSync(join(tempDir(), 'call'), 'w+');
    const fe = VhostFrontend.connect(b.path);
    cleanups.push(() => fe.close());
    fe.rings[RX]!.callFd = file;
    await expect(fe.start()).rejects.toThrow();
    expect(await b.waitState('broken')).toMatch(/SET_VRING_CALL.*not an eventfd/);
  });

  it('a semaphore-mode kick eventfd holding 2^64 - 2 is refused', async (ctx) => {
    const b = backend();
    // JS makes no EFD_SEMAPHORE eventfds: a python3 child sends SET_VRING_KICK with one and
    // reports whether the back-end closed the connection.
    const py = `
import os, socket, struct, sys
efd = os.eventfd(0, os.EFD_SEMAPHORE | os.EFD_NONBLOCK)
os.eventfd_write(efd, 2**64 - 2)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
socket.send_fds(s, [struct.pack('<III', 12, 1, 8) + struct.pack('<Q', 1)], [efd])
s.settimeout(3)
try:
    print('closed' if s.recv(1) == b'' else 'data', flush=True)
except socket.timeout:
    print('open', flush=True)
`;
    expect(await frontendPy(ctx, py, b.path)).toBe('closed');
    expect(await b.waitState('broken')).toMatch(/SET_VRING_KICK.*semaphore/);
  });

  it('a semaphore-mode kick eventfd is refused even while the front-end races the probe (review-14b C)', async (ctx) => {
    const b = backend();
    // Two threads of the front-end read the semaphore eventfd all the time, so the probe's own
    // read after its write of 2 may find it empty (EAGAIN): that must count as a semaphore (and
    // where /proc/self/fdinfo shows eventfd-semaphore, the kernel decides, no probe at all).
    // 30 connections, each must be closed by the back-end.
    const py = `
import os, socket, struct, sys, threading
efd = os.eventfd(0, os.EFD_SEMAPHORE | os.EFD_NONBLOCK)
stop = False
def spin():
    while not stop:
        try:
            os.read(efd, 8)
        except BlockingIOError:
            pass
ts = [threading.Thread(target=spin) for _ in range(2)]
for t in ts: t.start()
res = []
for i in range(30):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sys.argv[1])
    socket.send_fds(s, [struct.pack('<III', 12, 1, 8) + struct.pack('<Q', 1)], [efd])
    s.settimeout(3)
    try:
        res.append('closed' if s.recv(1) == b'' else 'data')
    except socket.timeout:
        res.append('open')
    s.close()
stop = True
for t in ts: t.join()
print(' '.join(sorted(set(res))), flush=True)
`;
    expect(await frontendPy(ctx, py, b.path)).toBe('closed');
  }, 120_000);

  it('eventfds as QEMU passes them still work; a frame kicked before SET_VRING_KICK is served', async () => {
    const b = backend();
    const fe = VhostFrontend.connect(b.path);
    cleanups.push(() => fe.close());
    const f = (n: number): Buffer => {
      const x = Buffer.alloc(60, n);
      x.writeUInt16BE(0x0800, 12);
      return x;
    };
    // The guest queued a frame and kicked before the back-end had the kick fd (the check reads it).
    fe.rings[TX]!.kickFd = vt().eventfd();
    fe.sendFrames([f(1)], { hdr: Buffer.alloc(12) });  // features not negotiated yet: VERSION_1's header
    await fe.start();
    expect(b.dev.stats().state).toBe('running');
    expect((await b.waitFrames(1)).map((x) => x.subarray(10))).toEqual([f(1)]);
    fe.sendFrames([f(2)]);
    expect((await b.waitFrames(2)).map((x) => x.subarray(10))).toEqual([f(1), f(2)]);
    expect(b.dev.stats()).toMatchObject({ state: 'running', violations: 0 });
  });
});
