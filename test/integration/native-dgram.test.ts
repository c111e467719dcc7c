/**
 * Unix datagram sockets through the native Device and the dgram driver: frames both ways, the
 * peer learnt from the sender, a full receiver filling the bounded queue (drops are counted,
 * nothing blocks, the queue drains in order), and Device lifecycle: close is idempotent and
 * safe inside onRead, callback exceptions are contained, forgotten devices release their fds,
 * and a process whose devices are closed exits by itself.
 */
import { spawnSync } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { findAddon, native } from '../../plugins/native/index.js';
import type { NativeDevice } from '../../plugins/native/types.js';
import type { PortContext } from '../../plugins/types.js';
import { dgramDriver } from '../../plugins/unix-dgram/index.js';
import { cleanupAll, makeTempDir, waitFor } from '../support/netns.js';

const log = pino({ level: 'silent' });
const ctx: PortContext = { log, mtu: 1500, restoring: false };
const SLOT = 1518;

interface Sock {
  path: string;
  dev: NativeDevice;
  frames: Buffer[];
  errors: string[];
}

const open: Sock[] = [];

function sock(path: string, opts: { queueFrames?: number; start?: boolean } = {}): Sock {
  const { fd } = native.openUnixDgram({ path });
  const frames: Buffer[] = [];
  const errors: string[] = [];
  const dev: NativeDevice = new native.Device({
    fd,
    mode: 'dgram',
    maxFrame: SLOT,
    batch: 16,
    queueFrames: opts.queueFrames ?? 256,
    queueBytes: 1 << 20,
    onRead: (count) => {
      for (let i = 0; i < count; i++) frames.push(Buffer.from(dev.buffer.subarray(i * SLOT, i * SLOT + dev.lengths[i]!)));
    },
    onError: (m) => errors.push(m),
  });
  if (opts.start ?? true) dev.start();
  const s = { path, dev, frames, errors };
  open.push(s);
  return s;
}

function frame(seq: number, len = 64): Buffer {
  const f = Buffer.alloc(len, 0x5a);
  f.writeUInt32BE(seq, 14);
  return f;
}

afterAll(async () => {
  for (const s of open) s.dev.close();
  await cleanupAll();
});

describe('native unix datagram device', () => {
  it('exchanges frames and learns the peer from the sender', async () => {
    const dir = makeTempDir('mvna-dg');
    const a = sock(join(dir, 'a.sock'));
    const b = sock(join(dir, 'b.sock'));
    expect(a.dev.stats().peer).toBeUndefined();
    // No peer yet: dropped and counted, never thrown.
    expect(a.dev.write([frame(0)], 1)).toBe(0);
    expect(a.dev.stats().dropNoPeer).toBe(1);

    b.dev.setPeer(a.path);
    expect(b.dev.write([frame(1), frame(2, 1000)], 2)).toBe(2);
    await waitFor(() => a.frames.length === 2, { what: 'a to receive 2 frames' });
    expect(a.frames[0]!.equals(frame(1))).toBe(true);
    expect(a.frames[1]!.equals(frame(2, 1000))).toBe(true);
    expect(a.dev.stats().peer).toBe(b.path);

    expect(a.dev.write([frame(3)], 1)).toBe(1);
    await waitFor(() => b.frames.length === 1, { what: 'b to receive the answer' });
    expect(b.frames[0]!.equals(frame(3))).toBe(true);
    expect(a.dev.stats()).toMatchObject({ rxFrames: 2, rxBytes: 64 + 1000, txFrames: 1, txBytes: 64 });
    expect(b.dev.stats()).toMatchObject({ rxFrames: 1, txFrames: 2, txBytes: 1064 });

    // `count` limits how many of the array's frames are written.
    expect(b.dev.write([frame(4), frame(5)], 1)).toBe(1);
    await waitFor(() => a.frames.length === 3, { what: 'a third frame' });
    expect(a.frames[2]!.readUInt32BE(14)).toBe(4);
  });

  it('queues what would block, drops and counts when the queue is full, drains in order', async () => {
    const dir = makeTempDir('mvna-dq');
    const qlen = Number(readFileSync('/proc/sys/net/unix/max_dgram_qlen', 'utf8').trim());
    const QUEUE = 16;
    const rx = sock(join(dir, 'rx.sock'), { start: false }); // not reading: its receive queue fills
    const tx = sock(join(dir, 'tx.sock'), { queueFrames: QUEUE });
    tx.dev.setPeer(rx.path);
    const total = qlen + QUEUE + 50;
    const frames = Array.from({ length: total }, (_, i) => frame(i));
    const t0 = Date.now();
    const accepted = tx.dev.write(frames, total);
    expect(Date.now() - t0).toBeLessThan(1000); // never blocks
    const s = tx.dev.stats();
    expect(s.queued).toBe(QUEUE);
    expect(s.txFrames + s.queued).toBe(accepted);
    expect(s.dropQueueFull).toBe(total - accepted);
    expect(s.dropQueueFull).toBeGreaterThan(0);
    expect(s.dropIoError).toBe(0);

    // More writes while the queue is full are dropped too, in order behind the queue.
    expect(tx.dev.write([frame(100000)], 1)).toBe(0);
    expect(tx.dev.stats().dropQueueFull).toBe(total - accepted + 1);

    rx.dev.start();
    await waitFor(() => rx.frames.length === accepted, { what: `${accepted} frames at the receiver` });
    expect(rx.frames.map((f) => f.readUInt32BE(14))).toEqual(Array.from({ length: accepted }, (_, i) => i));
    await waitFor(() => tx.dev.stats().queued === 0, { what: 'queue to drain' });
    expect(tx.dev.stats().txFrames).toBe(accepted);
  });

  it('follows a peer that restarts at the same path', async () => {
    const dir = makeTempDir('mvna-dr');
    const port = sock(join(dir, 'port.sock'));
    const vm = sock(join(dir, 'vm.sock'));
    vm.dev.setPeer(port.path);
    vm.dev.write([frame(1)], 1);
    await waitFor(() => port.frames.length === 1, { what: 'first frame' });
    expect(port.dev.stats().peer).toBe(vm.path);

    vm.dev.close(); // the VM dies; its socket file stays behind
    const vm2 = sock(vm.path); // and comes back at the same path
    vm2.dev.setPeer(port.path);
    // Its datagrams reach the port once the port lets go of the dead socket (about a second).
    await waitFor(
      () => {
        vm2.dev.write([frame(2)], 1);
        return port.frames.some((f) => f.readUInt32BE(14) === 2);
      },
      { timeoutMs: 5000, intervalMs: 100, what: 'frames from the restarted peer' },
    );
    expect(port.dev.write([frame(3)], 1)).toBe(1);
    await waitFor(() => vm2.frames.some((f) => f.readUInt32BE(14) === 3), { what: 'frames to the restarted peer' });

    // The port sends to a peer that died: the failure is counted, the peer forgotten, and
    // the port waits for a new sender.
    vm2.dev.close();
    port.dev.write([frame(4)], 1);
    expect(port.dev.stats().dropIoError).toBe(1);
    expect(port.dev.stats().peer).toBeUndefined();
    expect(port.dev.write([frame(5)], 1)).toBe(0);
    expect(port.dev.stats().dropNoPeer).toBe(1);
  });

  it('contains exceptions thrown by onRead and keeps reading', async () => {
    const dir = makeTempDir('mvna-dx');
    const { fd } = native.openUnixDgram({ path: join(dir, 'x.sock') });
    let calls = 0;
    const dev = new native.Device({
      fd,
      mode: 'dgram',
      maxFrame: SLOT,
      batch: 4,
      queueFrames: 4,
      queueBytes: 65536,
      onRead: () => {
        calls++;
        throw new Error('handler bug');
      },
      onError: () => {},
    });
    dev.start();
    const peer = sock(join(dir, 'p.sock'));
    peer.dev.setPeer(join(dir, 'x.sock'));
    peer.dev.write([frame(1)], 1);
    await waitFor(() => calls === 1, { what: 'first callback' });
    peer.dev.write([frame(2)], 1);
    await waitFor(() => calls === 2, { what: 'second callback' });
    expect(dev.stats().callbackErrors).toBe(2);
    dev.close();
  });

  it('replaces a stale socket file but refuses a live one or a non-socket', () => {
    const dir = makeTempDir('mvna-ds');
    const path = join(dir, 's.sock');
    const first = native.openUnixDgram({ path });
    expect(() => native.openUnixDgram({ path })).toThrow(expect.objectContaining({ code: 'EADDRINUSE' }) as Error);
    closeSync(first.fd);
    expect(existsSync(path)).toBe(true); // stale now
    const again = native.openUnixDgram({ path });
    closeSync(again.fd);
    // A live socket connected to its peer refuses our probe with EPERM: still live, kept.
    const live = sock(join(dir, 'live.sock'));
    const other = sock(join(dir, 'other.sock'));
    live.dev.setPeer(other.path); // connects
    expect(() => native.openUnixDgram({ path: live.path })).toThrow(expect.objectContaining({ code: 'EADDRINUSE' }) as Error);
    const file = join(dir, 'plain');
    writeFileSync(file, 'x');
    expect(() => native.openUnixDgram({ path: file })).toThrow(/not a socket/);
    expect(existsSync(file)).toBe(true);
  });

  it('validates Device options', () => {
    const fd = openSync('/dev/null', 'r');
    try {
      const base = { fd, mode: 'packet' as const, maxFrame: 1518, batch: 8, queueFrames: 8, queueBytes: 8192, onRead: () => {}, onError: () => {} };
      expect(() => new native.Device({ ...base, batch: 0 })).toThrow(/batch/);
      expect(() => new native.Device({ ...base, maxFrame: 0 })).toThrow(/maxFrame/);
      expect(() => new native.Device({ ...base, txHeaderLen: 65 })).toThrow(/txHeaderLen/);
      expect(() => new native.Device({ ...base, fd: -1 })).toThrow(/EBADF/);
      expect(() => new native.Device({ ...base, mode: 'dgram' })).toThrow(/socket/);
      expect(() => new native.Device({ ...base, onRead: undefined as never })).toThrow(/onRead/);
      // A regular file cannot be polled: refused up front, and the fd stays the caller's.
      expect(() => new native.Device(base)).toThrow(/uv_poll_init/);
    } finally {
      closeSync(fd);
    }
  });
});

describe('dgram driver', () => {
  it('waits for the first datagram, then sends to the learnt peer; remove unlinks the socket', async () => {
    const dir = makeTempDir('mvna-dd');
    const path = join(dir, 'port.sock');
    const port = await dgramDriver.open({ kind: 'dgram', path }, ctx);
    expect(port).toMatchObject({ kind: 'dgram', layer: 2, vnetHdrLen: 0, maxFrame: 1518, name: path });
    expect(port.status()).toEqual({ state: 'waiting', detail: "waiting for the VM's first datagram" });
    const got: Buffer[] = [];
    port.onFrames((frames) => {
      for (const f of frames) got.push(Buffer.from(f));
    });
    port.send([frame(1)]);
    expect(port.stats().drops['no-peer']).toBe(1);

    const vm = sock(join(dir, 'vm.sock'));
    vm.dev.setPeer(path);
    vm.dev.write([frame(10), Buffer.alloc(5), Buffer.alloc(1600)], 3);
    await waitFor(() => got.length === 1, { what: 'frame from the vm' });
    await waitFor(() => (port.stats().drops.runt ?? 0) === 1 && (port.stats().drops.oversize ?? 0) === 1, { what: 'runt and oversize counted' });
    expect(port.status().state).toBe('up');
    expect(port.status().detail).toContain(vm.path);

    port.send([frame(11), frame(12)]);
    await waitFor(() => vm.frames.length === 2, { what: 'frames to the vm' });
    expect(vm.frames.map((f) => f.readUInt32BE(14))).toEqual([11, 12]);
    expect(port.stats()).toMatchObject({ rxFrames: 1, txFrames: 2 });

    await port.close({ remove: true });
    await port.close({ remove: true });
    expect(existsSync(path)).toBe(false);
    expect(port.status().state).toBe('down');
  });

  it('sends to a configured peer from the start', async () => {
    const dir = makeTempDir('mvna-dp');
    const vm = sock(join(dir, 'vm.sock'));
    const port = await dgramDriver.open({ kind: 'dgram', path: join(dir, 'port.sock'), peer: vm.path }, ctx);
    expect(port.status().state).toBe('up');
    port.send([frame(21)]);
    await waitFor(() => vm.frames.length === 1, { what: 'frame to the configured peer' });
    await port.close();
    expect(existsSync(join(dir, 'port.sock'))).toBe(true); // kept without remove
  });
});

describe('Device lifecycle in a child process', () => {
  it('close is idempotent and safe inside onRead, forgotten devices release fds, and the process exits by itself', () => {
    const dir = makeTempDir('mvna-dl');
    const addon = findAddon();
    expect(addon).toBeDefined();
    const script = join(dir, 'child.cjs');
    writeFileSync(
      script,
      `
const fs = require('fs');
const n = require(${JSON.stringify(addon)});
const dir = ${JSON.stringify(dir)};
const fds = () => fs.readdirSync('/proc/self/fd').length;
function dev(path, onRead) {
  const { fd } = n.openUnixDgram({ path });
  const d = new n.Device({ fd, mode: 'dgram', maxFrame: 128, batch: 8, queueFrames: 8, queueBytes: 8192,
    onRead: (c) => onRead(d, c), onError: (m) => console.log('error ' + m) });
  return d;
}
(async () => {
  // Forgotten, never-started devices are closed by the garbage collector.
  const base = fds();
  for (let i = 0; i < 50; i++) dev(dir + '/g' + i + '.sock', () => {});
  const peak = fds();
  for (let i = 0; i < 5; i++) { global.gc(); await new Promise((r) => setImmediate(r)); }
  await new Promise((r) => setTimeout(r, 20));
  global.gc();
  await new Promise((r) => setTimeout(r, 20));
  console.log('fds ' + base + ' ' + peak + ' ' + fds());

  // A device that closes itself from inside onRead; a second close is a no-op.
  let reads = 0;
  const a = dev(dir + '/a.sock', (d, c) => { reads += c; d.close(); d.close(); });
  const b = dev(dir + '/b.sock', () => {});
  a.start(); b.start();
  b.setPeer(dir + '/a.sock');
  b.write([Buffer.alloc(60, 1), Buffer.alloc(60, 2)], 2);
  await new Promise((r) => { const t = setInterval(() => { if (reads > 0) { clearInterval(t); r(); } }, 5); });
  b.close(); b.close();
  a.write([Buffer.alloc(60)], 1); // closed: dropped, counted
  console.log('reads ' + reads + ' dropIoError ' + a.stats().dropIoError);
  // A started then stopped device does not keep the process alive either.
  const c = dev(dir + '/c.sock', () => {});
  c.start(); c.stop();
  console.log('done');
})();
`,
    );
    const r = spawnSync(process.execPath, ['--expose-gc', script], { encoding: 'utf8', timeout: 20_000 });
    expect(r.error).toBeUndefined();
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const lines = r.stdout.trim().split('\n');
    const [base, peak, after] = lines[0]!.split(' ').slice(1).map(Number);
    expect(peak! - base!).toBe(50);
    expect(after).toBe(base);
    expect(lines[1]).toMatch(/^reads [12] dropIoError 1$/);
    expect(lines[2]).toBe('done');
  });
});
