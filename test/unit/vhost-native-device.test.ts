/**
 * The vhost-user back-end (plugins/native/src/vhost*.cc) against a small front-end written here
 * that does what QEMU does: negotiate (REPLY_ACK on every message, so each step is awaited),
 * hand over a sealed memfd as guest memory, lay out split rings in it, put frames in the TX ring
 * and kick, post RX buffers and read what the device put there.
 */
import { closeSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { loadNative } from '../../plugins/native/index.js';
import type { NativeVhostDevice, VhostState } from '../../plugins/native/types.js';

const native = loadNative();
const t = native.vhostTesting;
const dir = mkdtempSync(join(tmpdir(), 'mvnet-vhost-native-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const F_MRG = 1n << 15n;
const F_PROTO = 1n << 30n;
const F_V1 = 1n << 32n;
const F_MTU = 1n << 3n;
const P_REPLY_ACK = 1n << 3n;
const NEED_REPLY = 1 << 3;
const MEM = 1 << 20;
const UVA = 0x7f0000000000n;  // where "QEMU" has the memory: only a number to the back-end
const NUM = 256;
// Ring layout in guest memory: RX (queue 0) then TX (queue 1); buffers from 64 KiB on.
const RING = [{ desc: 0x0000, avail: 0x1000, used: 0x2000 }, { desc: 0x4000, avail: 0x5000, used: 0x6000 }] as const;
const BUF = 0x10000;

const immediate = (): Promise<void> => new Promise((r) => setImmediate(r));

async function until(cond: () => boolean, what: string, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await immediate();
  }
}

interface Opened {
  dev: NativeVhostDevice;
  path: string;
  frames: Buffer[];
  states: [VhostState, string][];
}

let seq = 0;
const opened: { close(): void }[] = [];
afterEach(() => {
  for (const o of opened.splice(0)) o.close();
});

function openDevice(opts: { batch?: number; maxFrame?: number; offloads?: boolean } = {}): Opened {
  const path = join(dir, `d${seq++}.sock`);
  const { fd } = native.openUnixListener({ path });
  const frames: Buffer[] = [];
  const states: [VhostState, string][] = [];
  const dev: NativeVhostDevice = new native.VhostDevice({
    listenFd: fd,
    maxFrame: opts.maxFrame ?? 1514,
    batch: opts.batch ?? 64,
    offloads: opts.offloads ?? false,
    onRead(count, start) {
      for (let i = start; i < count; i++) {
        const off = i * dev.slotSize;
        frames.push(Buffer.from(dev.buffer.subarray(off, off + dev.lengths[i]!)));
      }
    },
    onState(state, detail) {
      states.push([state, detail]);
    },
  });
  dev.start();
  opened.push(dev);
  return { dev, path, frames, states };
}

/** The front-end: QEMU's side of the socket and of guest memory. */
class Front {
  readonly fd: number;
  readonly memfd: number;
  readonly mem: Buffer;
  private readonly memId: number | undefined;
  readonly kick = [t.eventfd(), t.eventfd()];
  readonly call = [t.eventfd(), t.eventfd()];
  private readonly availIdx = [0, 0];
  private nextBuf = BUF;
  private closed = false;

  /** `share`: the same guest memory as another front-end (QEMU reconnecting keeps its memory). */
  constructor(path: string, share?: Front) {
    this.fd = t.unixConnect(path);
    if (share) {
      this.memfd = share.memfd;
      this.mem = share.mem;
    } else {
      const m = t.memfdMap(MEM, true);
      this.memfd = m.fd;
      this.mem = m.mem;
      this.memId = m.id;
    }
    opened.push(this);
  }

  send(request: number, payload: Buffer = Buffer.alloc(0), fds: number[] = [], flags = 1): void {
    const h = Buffer.alloc(12);
    h.writeUInt32LE(request, 0);
    h.writeUInt32LE(flags, 4);
    h.writeUInt32LE(payload.length, 8);
    t.sendWithFds(this.fd, Buffer.concat([h, payload]), fds);
  }

  /** The next reply's payload (the event loop runs while waiting: the device answers from it). */
  async reply(request: number): Promise<Buffer> {
    const end = Date.now() + 3000;
    for (;;) {
      try {
        const h = t.recvExact(this.fd, 12, 0);
        expect(h.readUInt32LE(0)).toBe(request);
        expect(h.readUInt32LE(4)).toBe(1 | 4);
        return t.recvExact(this.fd, h.readUInt32LE(8), 1000);
      } catch (e) {
        if ((e as { code?: string }).code !== 'ETIMEDOUT' || Date.now() > end) throw e;
        await immediate();
      }
    }
  }

  async getU64(request: number): Promise<bigint> {
    this.send(request);
    return (await this.reply(request)).readBigUInt64LE(0);
  }

  /** A message acknowledged (REPLY_ACK): resolves once the device has handled it. */
  async ack(request: number, payload: Buffer, fds: number[] = []): Promise<void> {
    this.send(request, payload, fds, 1 | NEED_REPLY);
    expect((await this.reply(request)).readBigUInt64LE(0)).toBe(0n);
  }

  u64(v: bigint): Buffer {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(v);
    return b;
  }

  state(index: number, num: number): Buffer {
    const b = Buffer.alloc(8);
    b.writeUInt32LE(index, 0);
    b.writeUInt32LE(num, 4);
    return b;
  }

  /** What QEMU does up to DRIVER_OK, both rings started and enabled. */
  async start(features = F_V1 | F_MRG | F_PROTO, opts: { memfd?: number; base?: number } = {}): Promise<void> {
    expect((await this.getU64(1)) & (F_V1 | F_MRG | F_PROTO | F_MTU)).toBe(F_V1 | F_MRG | F_PROTO | F_MTU);
    this.send(15);
    expect((await this.reply(15)).readBigUInt64LE(0) & P_REPLY_ACK).toBe(P_REPLY_ACK);
    this.send(16, this.u64(P_REPLY_ACK));
    await this.ack(3, Buffer.alloc(0));
    await this.ack(2, this.u64(features));
    await this.memTable(opts.memfd ?? this.memfd);
    for (const q of [0, 1]) {
      await this.ack(8, this.state(q, NUM));
      await this.ack(10, this.state(q, opts.base ?? 0));
      const addr = Buffer.alloc(40);
      addr.writeUInt32LE(q, 0);
      addr.writeBigUInt64LE(UVA + BigInt(RING[q]!.desc), 8);
      addr.writeBigUInt64LE(UVA + BigInt(RING[q]!.used), 16);
      addr.writeBigUInt64LE(UVA + BigInt(RING[q]!.avail), 24);
      await this.ack(9, addr);
      await this.ack(12, this.u64(BigInt(q)), [this.kick[q]!]);
      await this.ack(13, this.u64(BigInt(q)), [this.call[q]!]);
      await this.ack(18, this.state(q, 1));
    }
  }

  /** SET_MEM_TABLE: the whole memfd as one region at guest physical 0. */
  async memTable(memfd: number): Promise<void> {
    const table = Buffer.alloc(8 + 32);
    table.writeUInt32LE(1, 0);
    table.writeBigUInt64LE(0n, 8);
    table.writeBigUInt64LE(BigInt(MEM), 16);
    table.writeBigUInt64LE(UVA, 24);
    table.writeBigUInt64LE(0n, 32);
    await this.ack(5, table, [memfd]);
  }

  setDesc(q: number, i: number, addr: number, len: number, flags: number, next = 0): void {
    const o = RING[q]!.desc + 16 * i;
    this.mem.writeBigUInt64LE(BigInt(addr), o);
    this.mem.writeUInt32LE(len, o + 8);
    this.mem.writeUInt16LE(flags, o + 12);
    this.mem.writeUInt16LE(next, o + 14);
  }

  /** Makes chain `head` available (without a kick). */
  offer(q: number, head: number): void {
    const a = RING[q]!.avail;
    this.mem.writeUInt16LE(head, a + 4 + 2 * (this.availIdx[q]! % NUM));
    this.availIdx[q] = (this.availIdx[q]! + 1) & 0xffff;
    this.mem.writeUInt16LE(this.availIdx[q]!, a + 2);
  }

  setAvailIdx(q: number, idx: number): void {
    this.availIdx[q] = idx & 0xffff;
    this.mem.writeUInt16LE(idx & 0xffff, RING[q]!.avail + 2);
  }

  usedIdx(q: number): number {
    return this.mem.readUInt16LE(RING[q]!.used + 2);
  }

  used(q: number, k: number): { id: number; len: number } {
    const o = RING[q]!.used + 4 + 8 * (k % NUM);
    return { id: this.mem.readUInt32LE(o), len: this.mem.readUInt32LE(o + 4) };
  }

  alloc(len: number): number {
    const a = this.nextBuf;
    this.nextBuf += (len + 63) & ~63;
    return a;
  }

  /** A frame in the TX ring as descriptor `i` (12-byte header + frame), optionally in two pieces. */
  transmit(i: number, frame: Buffer, split = false): void {
    const data = Buffer.concat([Buffer.alloc(12), frame]);
    if (split) {
      const a = this.alloc(12);
      const b = this.alloc(frame.length);
      data.copy(this.mem, a, 0, 12);
      data.copy(this.mem, b, 12);
      this.setDesc(1, i, a, 12, 1, i + 1);
      this.setDesc(1, i + 1, b, frame.length, 0);
    } else {
      const a = this.alloc(data.length);
      data.copy(this.mem, a);
      this.setDesc(1, i, a, data.length, 0);
    }
    this.offer(1, i);
  }

  /** An RX buffer of `len` bytes as descriptor `i`; returns its address. */
  postRx(i: number, len: number): number {
    const a = this.alloc(len);
    this.setDesc(0, i, a, len, 2);
    this.offer(0, i);
    return a;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const fd of [this.fd, ...this.kick, ...this.call]) closeSync(fd);
    if (this.memId !== undefined) {
      closeSync(this.memfd);
      t.memfdUnmap(this.memId);
    }
  }
}

function frame(n: number, len = 60): Buffer {
  const f = Buffer.alloc(len);
  f.writeUInt32BE(0x02000000 + n, 0);
  f.writeUInt16BE(0x0800, 12);
  f.fill(n & 0xff, 14);
  return f;
}

describe('VhostDevice (vhost.cc)', () => {
  it('negotiates as QEMU does, runs, and moves frames both ways', async () => {
    const o = openDevice();
    expect(o.dev.stats().state).toBe('listening');
    const fe = new Front(o.path);
    await fe.start();
    const s = o.dev.stats();
    expect(s).toMatchObject({ state: 'running', connections: 1, regions: 1, memBytes: MEM, violations: 0 });
    expect(s.features).toBe('0x' + (F_V1 | F_MRG | F_PROTO).toString(16));
    expect(o.states.map((x) => x[0])).toEqual(['connected', 'running']);
    // The device asked the guest not to kick its RX ring (it never waits for RX buffers).
    expect(fe.mem.readUInt16LE(RING[0].used)).toBe(1);

    // Guest → us: one frame whole, one split over two descriptors; one kick.
    fe.transmit(0, frame(1));
    fe.transmit(2, frame(2, 1514), true);
    t.eventfdWrite(fe.kick[1]!, 1);
    await until(() => o.frames.length === 2, 'two frames');
    expect(o.frames[0]!.length).toBe(10 + 60);
    expect(o.frames[0]!.subarray(10)).toEqual(frame(1));
    expect(o.frames[1]!.subarray(10)).toEqual(frame(2, 1514));
    expect(fe.usedIdx(1)).toBe(2);
    expect([fe.used(1, 0).id, fe.used(1, 1).id]).toEqual([0, 2]);
    expect(t.eventfdRead(fe.call[1]!)).toBeGreaterThan(0);

    // Us → guest: a 1514-byte frame merged over 3 small buffers (MRG_RXBUF: num_buffers 3).
    const bufs = [fe.postRx(0, 600), fe.postRx(1, 600), fe.postRx(2, 600)];
    const hdr = Buffer.alloc(10);
    hdr[0] = 2;  // DATA_VALID: passed through
    expect(o.dev.write([Buffer.concat([hdr, frame(3, 1514)])], 1)).toBe(1);
    expect(fe.usedIdx(0)).toBe(1 + 2);  // used idx counts buffers: 3 elements
    expect([0, 1, 2].map((k) => fe.used(0, k))).toEqual([{ id: 0, len: 600 }, { id: 1, len: 600 }, { id: 2, len: 12 + 1514 - 1200 }]);
    const got = Buffer.concat([fe.mem.subarray(bufs[0]!, bufs[0]! + 600), fe.mem.subarray(bufs[1]!, bufs[1]! + 600), fe.mem.subarray(bufs[2]!, bufs[2]! + 326)]);
    expect(got[0]).toBe(2);
    expect(got.readUInt16LE(10)).toBe(3);
    expect(got.subarray(12)).toEqual(frame(3, 1514));
    expect(t.eventfdRead(fe.call[0]!)).toBe(1);
    expect(o.dev.stats()).toMatchObject({ rxFrames: 2, txFrames: 1, txBytes: 1514, dropNoBuffers: 0 });
  });

  it('a guest that never refills its RX ring: frames dropped and counted, write never waits', async () => {
    const o = openDevice();
    const fe = new Front(o.path);
    await fe.start();
    fe.postRx(0, 2048);
    const f = Buffer.concat([Buffer.alloc(10), frame(1)]);
    expect(o.dev.write([f, f, f], 3)).toBe(1);
    expect(o.dev.stats()).toMatchObject({ txFrames: 1, dropNoBuffers: 2 });
    // Offloads the guest did not negotiate, and frames too long for the port.
    const gso = Buffer.from(f);
    gso[1] = 1;
    fe.postRx(1, 2048);
    expect(o.dev.write([gso, Buffer.concat([Buffer.alloc(10), frame(2, 1600)])], 2)).toBe(0);
    expect(o.dev.stats()).toMatchObject({ dropBadOffload: 1, dropOversize: 1 });
    // The buffer is still there for the next frame.
    expect(o.dev.write([f], 1)).toBe(1);
    // Not running (no front-end): dropped as such.
    const idle = openDevice();
    expect(idle.dev.write([f], 1)).toBe(0);
    expect(idle.dev.stats().dropNotRunning).toBe(1);
  });

  it('offloads: frames with GSO or a partial checksum reach a guest that negotiated them, never with ECN (not offered)', async () => {
    const o = openDevice({ offloads: true });
    const fe = new Front(o.path);
    const F_GUEST_CSUM = 1n << 1n;
    const F_GUEST_TSO4 = 1n << 7n;
    expect(await fe.getU64(1) & (F_GUEST_CSUM | F_GUEST_TSO4)).toBe(F_GUEST_CSUM | F_GUEST_TSO4);
    await fe.start(F_V1 | F_MRG | F_PROTO | F_GUEST_CSUM | F_GUEST_TSO4);
    expect(o.dev.stats()).toMatchObject({ guestCsum: true, guestTso4: true, guestTso6: false });
    for (let i = 0; i < 4; i++) fe.postRx(i, 4096);
    const hdr = (flags: number, gso: number): Buffer => {
      const h = Buffer.alloc(10);
      h[0] = flags;
      h[1] = gso;
      h.writeUInt16LE(1448, 4);
      h.writeUInt16LE(34, 6);
      h.writeUInt16LE(16, 8);
      return h;
    };
    const big = frame(1, 3000);
    expect(o.dev.write([Buffer.concat([hdr(1, 1), big]), Buffer.concat([hdr(1, 0x81), big]), Buffer.concat([hdr(1, 4), big])], 3)).toBe(1);
    expect(o.dev.stats()).toMatchObject({ txFrames: 1, dropBadOffload: 2 });
    // Delivered whole, its header as sent (num_buffers 1).
    const { id, len } = fe.used(0, 0);
    expect([id, len]).toEqual([0, 12 + 3000]);
  });

  it('takes at most `batch` chains per turn and the rest on later turns, without a kick', async () => {
    const o = openDevice({ batch: 16 });
    const fe = new Front(o.path);
    await fe.start();
    for (let i = 0; i < 100; i++) fe.transmit(i, frame(i));
    expect(o.dev.processQueues()).toBe(16);
    expect(o.frames.length).toBe(16);
    expect(fe.usedIdx(1)).toBe(16);
    // More waits: the guest need not kick meanwhile (VRING_USED_F_NO_NOTIFY on its TX ring).
    expect(fe.mem.readUInt16LE(RING[1].used)).toBe(1);
    // The idle handle takes the rest, a batch per loop turn.
    await until(() => o.frames.length === 100, 'the other 84 frames');
    expect(fe.mem.readUInt16LE(RING[1].used)).toBe(0);  // drained: kicks wanted again
    expect(o.frames.map((f) => f[14 + 10])).toEqual(Array.from({ length: 100 }, (_, i) => i & 0xff));
    expect(o.dev.processQueues()).toBe(0);
  });

  it('a hostile ring breaks only its own device: descriptor loop, avail jump, bad address', async () => {
    const good = openDevice();
    const gfe = new Front(good.path);
    await gfe.start();
    const cases: [string, (fe: Front) => void, RegExp][] = [
      ['loop', (fe) => {
        fe.setDesc(1, 0, BUF, 12, 1, 1);
        fe.setDesc(1, 1, BUF, 12, 1, 0);
        fe.offer(1, 0);
      }, /loop/],
      ['avail jump', (fe) => fe.setAvailIdx(1, NUM + 1), /avail index moved by 257/],
      ['outside memory', (fe) => {
        fe.setDesc(1, 0, MEM - 8, 64, 0);
        fe.offer(1, 0);
      }, /outside guest memory/],
      ['next >= num', (fe) => {
        fe.setDesc(1, 0, BUF, 12, 1, NUM);
        fe.offer(1, 0);
      }, /next 256 >= ring size/],
      ['writable in TX', (fe) => {
        fe.setDesc(1, 0, BUF, 64, 2);
        fe.offer(1, 0);
      }, /device-writable in the TX ring/],
    ];
    for (const [name, spoil, why] of cases) {
      const o = openDevice();
      const fe = new Front(o.path);
      await fe.start();
      spoil(fe);
      expect(o.dev.processQueues(), name).toBe(0);
      const s = o.dev.stats();
      expect(s.state, name).toBe('broken');
      expect(s.detail, name).toMatch(why);
      expect(s.violations, name).toBe(1);
      expect(o.states.at(-1)?.[0], name).toBe('broken');
      // Stopped: neither a kick nor a write touches the rings any more.
      fe.transmit(10, frame(1));
      t.eventfdWrite(fe.kick[1]!, 1);
      expect(o.dev.processQueues()).toBe(0);
      expect(o.dev.write([Buffer.concat([Buffer.alloc(10), frame(1)])], 1)).toBe(0);
    }
    // The good one still moves frames.
    gfe.transmit(0, frame(7));
    t.eventfdWrite(gfe.kick[1]!, 1);
    await until(() => good.frames.length === 1, 'a frame on the good device');
    expect(good.dev.stats().state).toBe('running');
  });

  it('refuses an unsealed memfd, and a memfd smaller than announced (broken, connection closed)', async () => {
    for (const [sealed, size, why] of [[false, MEM, /not sealed against shrinking/], [true, MEM / 2, /smaller than/]] as const) {
      const o = openDevice();
      const fe = new Front(o.path);
      const m = t.memfdMap(size, sealed);
      await expect(fe.start(F_V1 | F_MRG | F_PROTO, { memfd: m.fd })).rejects.toThrow();
      await until(() => o.dev.stats().state === 'broken', 'broken');
      expect(o.dev.stats().detail).toMatch(why);
      expect(o.dev.stats()).toMatchObject({ violations: 1, regions: 0 });
      t.memfdUnmap(m.id);
      closeSync(m.fd);
      // The front-end reconnects (as QEMU with reconnect=1): a fresh start.
      const again = new Front(o.path);
      await again.start();
      expect(o.dev.stats()).toMatchObject({ state: 'running', connections: 2 });
    }
  });

  it('a protocol violation (unknown message) closes the connection with a reason', async () => {
    const o = openDevice();
    const fe = new Front(o.path);
    expect(await fe.getU64(1)).toBe(F_V1 | F_MRG | F_PROTO | F_MTU | (1n << 29n));
    fe.send(999);
    await until(() => o.dev.stats().state === 'broken', 'broken');
    expect(o.dev.stats().detail).toMatch(/message 999: not supported/);
    expect(() => t.recvExact(fe.fd, 1, 1000)).toThrow();
  });

  it('restarted without GET_VRING_BASE: the rings resume from used->idx, not from the base sent', async () => {
    const o = openDevice();
    const fe = new Front(o.path);
    await fe.start();
    for (let i = 0; i < 5; i++) fe.transmit(i, frame(i));
    expect(o.dev.processQueues()).toBe(5);
    // A new connection (the daemon restarted, QEMU reconnected), the base QEMU had: 0.
    const fe2 = new Front(o.path, fe);
    await fe2.start(F_V1 | F_MRG | F_PROTO, { base: 0 });
    expect(o.dev.stats().connections).toBe(2);
    fe.transmit(5, frame(5));
    const before = o.frames.length;
    expect(o.dev.processQueues()).toBe(1);  // only the new one: the 5 were already used
    expect(o.frames.length).toBe(before + 1);
    expect(o.frames.at(-1)!.subarray(10)).toEqual(frame(5));
  });

  it('a new memory table or kick fd while running: re-translated, still running', async () => {
    const o = openDevice();
    const fe = new Front(o.path);
    await fe.start();
    fe.transmit(0, frame(0));
    await fe.memTable(fe.memfd);  // as memory hotplug does
    expect(o.dev.stats()).toMatchObject({ state: 'running', regions: 1 });
    // Restarted rings take what waits without a kick.
    await until(() => o.frames.length === 1, 'the frame offered before the new table');
    const kick = t.eventfd();
    await fe.ack(12, fe.u64(1n), [kick]);
    expect(o.dev.stats().state).toBe('running');
    fe.transmit(1, frame(1));
    t.eventfdWrite(kick, 1);
    await until(() => o.frames.length === 2, 'the frame kicked through the new fd');
    expect(o.frames[1]!.subarray(10)).toEqual(frame(1));
    closeSync(kick);
  });

  it('GET_VRING_BASE stops the ring and answers where the guest is', async () => {
    const o = openDevice();
    const fe = new Front(o.path);
    await fe.start();
    for (let i = 0; i < 3; i++) fe.transmit(i, frame(i));
    expect(o.dev.processQueues()).toBe(3);
    fe.send(11, fe.state(1, 0));
    const r = await fe.reply(11);
    expect([r.readUInt32LE(0), r.readUInt32LE(4)]).toEqual([1, 3]);
    expect(o.dev.stats().state).toBe('connected');
    fe.transmit(3, frame(3));
    expect(o.dev.processQueues()).toBe(0);
  });
});
