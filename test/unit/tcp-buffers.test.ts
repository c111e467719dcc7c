/** TCP buffers grow on demand: what a connection holds follows what it has buffered. */
import { describe, expect, it } from 'vitest';
import { ChunkPool, SendBuffer, SMALL_CHUNK_SIZE } from '../../daemon/endpoint/tcp/send-buffer.js';
import { TcpConnection, type Segment } from '../../daemon/endpoint/tcp/index.js';
import { Net, Rng, makeSyn } from './tcp-link.js';

describe('SendBuffer grows on demand', () => {
  it('a small write into an empty buffer takes the small chunk; more data goes to large chunks', () => {
    const big = new ChunkPool(16);
    const small = new ChunkPool(4);
    const b = new SendBuffer(100, big, small);
    expect(b.allocated).toBe(0);
    b.write(Buffer.from('abc'));
    expect(b.allocated).toBe(4);
    b.write(Buffer.from('defghijklmnopqrstu')); // 21 bytes: 4 + 16 + 16
    expect(b.allocated).toBe(36);
    // Views never cross a chunk: the small one ends at 4.
    expect(b.view(0, 100).toString()).toBe('abcd');
    expect(b.view(2, 100).toString()).toBe('cd');
    expect(b.view(4, 100).toString()).toBe('efghijklmnopqrst');
    expect(b.view(20, 100).toString()).toBe('u');
    b.consume(5); // the small chunk goes back to its pool
    expect(small.idle).toBe(1);
    expect(b.view(0, 100).toString()).toBe('fghijklmnopqrst');
    expect(b.allocated).toBe(32);
    b.consume(16);
    expect(big.idle).toBe(2);
    expect(b.allocated).toBe(0);
    // A large write into an empty buffer starts with a large chunk.
    b.write(Buffer.alloc(10, 1));
    expect(b.allocated).toBe(16);
    b.release();
  });

  it('holds the same bytes as a plain array under random writes, views and acks', () => {
    const rng = new Rng(7);
    const b = new SendBuffer(300, new ChunkPool(64), new ChunkPool(8));
    let ref: number[] = [];
    let serial = 0;
    for (let i = 0; i < 5000; i++) {
      const r = rng.next();
      if (r < 0.45) {
        const n = Math.floor(rng.next() * (rng.next() < 0.5 ? 8 : 120));
        const data = Buffer.alloc(n);
        for (let k = 0; k < n; k++) data[k] = serial++ & 0xff;
        const took = b.write(data);
        expect(took).toBe(Math.min(n, 300 - ref.length));
        ref = ref.concat([...data.subarray(0, took)]);
      } else if (r < 0.8) {
        const n = Math.floor(rng.next() * (ref.length + 1));
        b.consume(n);
        ref = ref.slice(n);
      } else if (ref.length > 0) {
        const off = Math.floor(rng.next() * ref.length);
        const v = b.view(off, 50);
        expect(v.length).toBeGreaterThan(0);
        expect([...v]).toEqual(ref.slice(off, off + v.length));
      }
      expect(b.length).toBe(ref.length);
      expect(b.allocated).toBeLessThanOrEqual(ref.length === 0 ? 0 : 8 + Math.ceil(ref.length / 64 + 1) * 64);
    }
  });
});

describe('a connection holds memory only for what it buffers', () => {
  it('a short answer not yet acknowledged holds the small chunk, none once acknowledged', () => {
    const out: Segment[] = [];
    const c = TcpConnection.fromSyn(makeSyn(1000), { emit: (s) => out.push(s), sndBuf: 1 << 20, rcvBuf: 1 << 20 }, 0);
    c.accept();
    const synAck = out[0]!;
    const iss = synAck.seq;
    c.input({ seq: 1001, ack: (iss + 1) >>> 0, flags: 0x10, window: 1000, options: { ts: [1001, synAck.options.ts![0]] }, payload: Buffer.alloc(0) }, 1);
    expect(c.state).toBe('ESTABLISHED');
    expect(c.snapshot().sndAllocated).toBe(0);
    expect(c.write(Buffer.from('HTTP/1.1 200 OK\r\n\r\nhello'))).toBe(24);
    expect(c.snapshot().sndAllocated).toBe(SMALL_CHUNK_SIZE);
    const last = out.at(-1)!;
    c.input({ seq: 1001, ack: (iss + 1 + 24) >>> 0, flags: 0x10, window: 1000, options: { ts: [1002, last.options.ts![0]] }, payload: Buffer.alloc(0) }, 2);
    expect(c.snapshot().sndAllocated).toBe(0);
  });

  it('bulk transfers still run on the large chunks (and arrive intact)', () => {
    const net = new Net({ link: { delay: 1 } });
    net.establish();
    const data = new Rng(3).bytes(3_000_000);
    net.a.send(data);
    let peak = 0;
    net.runUntil(() => {
      peak = Math.max(peak, net.a.conn!.snapshot().sndAllocated);
      return net.b.receivedBytes === data.length;
    }, 100_000);
    expect(net.b.data().equals(data)).toBe(true);
    expect(peak).toBeGreaterThan(64 * 1024);
    net.runTo(net.now + 100); // the last ACKs
    expect(net.a.conn!.snapshot().sndAllocated).toBe(0);
  });
});
