// The UDP carrier's batched native socket (plugins/native/src/udp.cc): many datagrams each way,
// many sources through the socket's source table, and what it refuses. Loopback only.
import { setImmediate as tick } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { openUdp } from '../../daemon/carriers/udp.js';
import type { Carrier } from '../../daemon/carriers/types.js';
import { loadNative } from '../../plugins/native/index.js';
import { Inbox, log, numbered } from './carriers-util.js';

const open: Carrier[] = [];
async function udp(host: string, id = `b${open.length}`): Promise<Carrier & { localPort: number }> {
  const c = await openUdp({ id, host, port: 0, log });
  open.push(c);
  return c;
}
afterEach(async () => {
  await Promise.all(open.splice(0).map((c) => c.close()));
});

/** Message i of a stream: its number, then bytes that depend on it; 8..1407 bytes. */
function msgOf(i: number): Buffer {
  const b = numbered(i, 8 + ((i * 37) % 1400));
  for (let k = 4; k < b.length; k++) b[k] = (i + k) & 0xff;
  return b;
}

/** Sends messages 0..n-1 in sends of `per`, yielding to the loop between sends (paced). */
async function stream(c: Carrier, to: string, n: number, per: number): Promise<void> {
  for (let i = 0; i < n; i += per) {
    const batch: Buffer[] = [];
    for (let k = i; k < Math.min(n, i + per); k++) batch.push(msgOf(k));
    expect(c.send(to, batch)).toBe(true);
    await tick();
  }
}

describe('udp carrier, batched', () => {
  for (const host of ['127.0.0.1', '::1']) {
    it(`carries 1000 datagrams each way on ${host}, intact and in order`, async () => {
      const a = await udp(host);
      const b = await udp(host);
      const inA = new Inbox(a);
      const inB = new Inbox(b);
      const toB = await a.resolve({ kind: 'udp', host, port: b.localPort });
      const toA = await b.resolve({ kind: 'udp', host, port: a.localPort });
      await Promise.all([stream(a, toB, 1000, 50), stream(b, toA, 1000, 7)]);
      const [gotB, gotA] = await Promise.all([inB.count(1000), inA.count(1000)]);
      for (const [got, from] of [
        [gotB, toA],
        [gotA, toB],
      ] as const) {
        expect(got.length).toBe(1000);
        for (let i = 0; i < 1000; i++) {
          expect(got[i]!.from).toBe(from);
          expect(got[i]!.msg.equals(msgOf(i))).toBe(true);
        }
      }
      const bytes = Array.from({ length: 1000 }, (_, i) => msgOf(i).length).reduce((x, y) => x + y, 0);
      expect(a.stats()).toEqual({ rxMessages: 1000, rxBytes: bytes, txMessages: 1000, txBytes: bytes, drops: {} });
      expect(b.stats()).toEqual({ rxMessages: 1000, rxBytes: bytes, txMessages: 1000, txBytes: bytes, drops: {} });
    });
  }

  for (const host of ['127.0.0.1', '::1']) {
    it(`sends runs of equal-sized datagrams as UDP GSO on ${host}; they arrive as datagrams, in order`, async () => {
      const { UdpSocket } = loadNative();
      const rx = await udp(host);
      const inRx = new Inbox(rx);
      const tx = new UdpSocket({ host, port: 0, onRead: () => {}, onError: () => {} });
      try {
        const sa = tx.target(host, rx.localPort)!;
        // Runs of 1200-byte datagrams, each run ending with a shorter one, and odd sizes between.
        const sizes: number[] = [];
        for (let k = 0; k < 20; k++) sizes.push(...Array<number>(45).fill(1200), 700, 1300, 8);
        const msgs = sizes.map((n, i) => numbered(i, Math.max(n, 8)));
        for (let k = 0; k < msgs.length; k += 96) {
          const part = msgs.slice(k, k + 96);
          tx.send(sa, part);
          expect(Array.from(tx.txInfo)).toEqual([part.length, part.reduce((x, m) => x + m.length, 0), 0, 0]);
          await tick();
        }
        const got = await inRx.count(msgs.length);
        expect(got.map((g) => g.msg.readUInt32BE(0))).toEqual(msgs.map((_, i) => i));
        got.forEach((g, i) => expect(g.msg.equals(msgs[i]!)).toBe(true));
        expect(tx.stats()).toMatchObject({ gso: true });
        expect(tx.stats().txGso).toBeGreaterThan(0);
      } finally {
        tx.close();
      }
    });
  }

  it('names every source right through the source table (more senders than it holds)', async () => {
    const rx = await udp('');
    const inRx = new Inbox(rx);
    const senders: (Carrier & { localPort: number })[] = [];
    // 70 IPv4 senders and 6 IPv6 ones: more than the 64 entries, interleaved so batches mix them.
    for (let k = 0; k < 70; k++) senders.push(await udp('127.0.0.1'));
    for (let k = 0; k < 6; k++) senders.push(await udp('::1'));
    const names = senders.map((s, k) => (k < 70 ? `127.0.0.1:${s.localPort}` : `[::1]:${s.localPort}`));
    const rounds = 5;
    for (let r = 0; r < rounds; r++) {
      senders.forEach((s, k) => {
        const to = k < 70 ? `127.0.0.1:${rx.localPort}` : `[::1]:${rx.localPort}`;
        const m = numbered(r * 1000 + k, 40);
        expect(s.send(to, [m])).toBe(true);
      });
      await tick();
    }
    const got = await inRx.count(rounds * senders.length);
    for (const g of got) {
      const k = g.msg.readUInt32BE(0) % 1000;
      expect(g.from).toBe(names[k]);
    }
    // A reply to each source as named reaches that sender.
    const inboxes = senders.map((s) => new Inbox(s));
    names.forEach((n, k) => expect(rx.send(n, [numbered(k)])).toBe(true));
    for (let k = 0; k < senders.length; k++) {
      const back = await inboxes[k]!.count(1);
      expect(back[0]!.msg.readUInt32BE(0)).toBe(k);
    }
  });

  it('counts sends to what is not an address of its family, never throwing', async () => {
    const v4 = await udp('127.0.0.1');
    const v6 = await udp('::1');
    const two = [numbered(1), numbered(2)];
    const bad = ['', 'x', '127.0.0.1', '127.0.0.1:', '127.0.0.1:65536', '127.0.0.1:-1', '300.0.0.1:5', '[::1]', '[::1]5', '[zz::1]:5', '[::1]:0', ':5', '\0:5'];
    for (const to of bad) {
      expect(v4.send(to, two)).toBe(false);
      expect(v6.send(to, two)).toBe(false);
    }
    expect(v4.send(`[::1]:${v6.localPort}`, two)).toBe(false); // IPv6 on an IPv4 socket
    expect(v4.stats().drops).toEqual({ 'io-error': 2 * bad.length + 2 });
    expect(v6.stats().drops).toEqual({ 'io-error': 2 * bad.length });
    // An IPv4 destination from the IPv6-only-bound ::1 socket is parsed (v4-mapped) but unroutable.
    v6.send(`127.0.0.1:${v4.localPort}`, [numbered(3)]);
    expect(v6.stats().txMessages + (v6.stats().drops['io-error'] ?? 0) - 2 * bad.length).toBe(1);
  });

  it('checks what the native socket is given', async () => {
    const { UdpSocket } = loadNative();
    const s = new UdpSocket({ host: '127.0.0.1', port: 0, onRead: () => {}, onError: () => {} });
    const s6 = new UdpSocket({ host: '::1', port: 0, onRead: () => {}, onError: () => {} });
    try {
      expect(s.port).toBeGreaterThan(0);
      expect(s.address).toBe(`127.0.0.1:${s.port}`);
      expect(s6.address).toBe(`[::1]:${s6.port}`);
      expect(s.target('::1', 5)).toBeNull();
      expect(s.target('127.0.0.1', 0)).toBeNull();
      expect(s.target('127.0.0.1', 70000)).toBeNull();
      expect(s.target('nonsense', 5)).toBeNull();
      expect(s6.target('127.0.0.1', 5)).toBeNull();
      expect(s6.target('::ffff:127.0.0.1', 5)).not.toBeNull();
      const sa = s.target('127.0.0.1', s6.port)!;
      expect(sa.length).toBe(16);
      expect(() => s.send(Buffer.alloc(3), [])).toThrow(TypeError);
      expect(() => s.send(s6.target('::1', 5)!, [])).toThrow(TypeError); // another family's sockaddr
      expect(() => s.send(sa, 'x' as unknown as Buffer[])).toThrow(TypeError);
      // Elements that are no bytes, or too large for a datagram, are counted, the rest sent.
      s.send(sa, [1, Buffer.alloc(65536), 'x', numbered(1), {}] as unknown as Buffer[]);
      expect(Array.from(s.txInfo)).toEqual([1, 100, 0, 4]);
      s.close();
      s.close();
      s.send(sa, [numbered(1), numbered(2)]);
      expect(Array.from(s.txInfo)).toEqual([0, 0, 0, 2]);
      s.start();
      expect(s.stats()).toMatchObject({ rxErrors: 0, callbackErrors: 0 });
    } finally {
      s.close();
      s6.close();
    }
    expect(() => new UdpSocket({ host: 'localhost', port: 0, onRead: () => {}, onError: () => {} })).toThrow(/EINVAL|not an IP/);
    expect(() => new UdpSocket({ host: '127.0.0.1', port: 65536, onRead: () => {}, onError: () => {} })).toThrow(TypeError);
  });

  it('keeps the loop turning while a peer floods it (at most 4 batches of 64 per readable event)', async () => {
    const rx = await udp('127.0.0.1');
    const tx = await udp('127.0.0.1');
    let got = 0;
    rx.onMessage(() => got++);
    const to = `127.0.0.1:${rx.localPort}`;
    const burst = Array.from({ length: 64 }, (_, i) => numbered(i, 64));
    // 12800 datagrams queued at once (as many as the receive buffer takes).
    for (let k = 0; k < 200; k++) tx.send(to, burst);
    const perTurn: number[] = [];
    let last = 0;
    for (let turn = 0; turn < 10_000 && (perTurn.length < 3 || perTurn.at(-1)! > 0 || got === 0); turn++) {
      await tick();
      perTurn.push(got - last);
      last = got;
    }
    expect(got).toBeGreaterThan(4 * 64);
    expect(Math.max(...perTurn)).toBeLessThanOrEqual(4 * 64);
  });
});
