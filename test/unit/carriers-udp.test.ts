import { afterEach, describe, expect, it, onTestFinished } from 'vitest';
import { faults, setFaultReporter } from '../../daemon/errors.js';
import { openUdp } from '../../daemon/carriers/udp.js';
import { MAX_MESSAGE, type Carrier } from '../../daemon/carriers/types.js';
import { Inbox, log, numbered } from './carriers-util.js';

const open: Carrier[] = [];
async function udp(host: string, id = `u${open.length}`): Promise<Carrier & { localPort: number }> {
  const c = await openUdp({ id, host, port: 0, log });
  open.push(c);
  return c;
}
afterEach(async () => {
  await Promise.all(open.splice(0).map((c) => c.close()));
});

describe('udp carrier', () => {
  it('carries each message as one datagram both ways on 127.0.0.1, with the source as "IP:PORT"', async () => {
    const a = await udp('127.0.0.1');
    const b = await udp('127.0.0.1');
    const inB = new Inbox(b);
    const inA = new Inbox(a);
    const to = await a.resolve({ kind: 'udp', host: '127.0.0.1', port: b.localPort });
    expect(to).toBe(`127.0.0.1:${b.localPort}`);
    const msgs = [numbered(1, 148), numbered(2, 1500), numbered(3, 32)];
    expect(a.send(to, msgs)).toBe(true);
    const got = await inB.count(3);
    expect(got.map((r) => r.msg)).toEqual(msgs);
    expect(new Set(got.map((r) => r.from))).toEqual(new Set([`127.0.0.1:${a.localPort}`]));
    // A reply goes to the source as received.
    expect(b.send(got[0]!.from, [numbered(9, 92)])).toBe(true);
    const back = await inA.count(1);
    expect(back[0]!.msg).toEqual(numbered(9, 92));
    expect(back[0]!.from).toBe(`127.0.0.1:${b.localPort}`);
    expect(a.stats()).toEqual({ rxMessages: 1, rxBytes: 92, txMessages: 3, txBytes: 148 + 1500 + 32, drops: {} });
    expect(b.stats()).toMatchObject({ rxMessages: 3, rxBytes: 148 + 1500 + 32, txMessages: 1, txBytes: 92 });
    expect(a.status()).toBe(`udp 127.0.0.1:${a.localPort}`);
    expect(a.reachable(to)).toBe(true);
  });

  it('uses IPv6 on ::1 and writes sources in brackets', async () => {
    const a = await udp('::1');
    const b = await udp('::1');
    const inB = new Inbox(b);
    const to = await a.resolve({ kind: 'udp', host: '::1', port: b.localPort });
    expect(to).toBe(`[::1]:${b.localPort}`);
    a.send(to, [numbered(1)]);
    const got = await inB.count(1);
    expect(got[0]!.from).toBe(`[::1]:${a.localPort}`);
    expect(a.status()).toBe(`udp [::1]:${a.localPort}`);
  });

  it('listens dual-stack on any address and names an IPv4 source as plain IPv4', async () => {
    const any = await udp('');
    expect(any.status()).toBe(`udp [::]:${any.localPort}`);
    const v4 = await udp('127.0.0.1');
    const v6 = await udp('::1');
    const inAny = new Inbox(any);
    const inV4 = new Inbox(v4);
    v4.send(`127.0.0.1:${any.localPort}`, [numbered(4)]);
    v6.send(`[::1]:${any.localPort}`, [numbered(6)]);
    const got = await inAny.count(2);
    expect(new Set(got.map((r) => r.from))).toEqual(new Set([`127.0.0.1:${v4.localPort}`, `[::1]:${v6.localPort}`]));
    // The dual-stack socket answers an IPv4 remote by its plain address (sent v4-mapped).
    const from4 = got.find((r) => r.msg.equals(numbered(4)))!.from;
    expect(any.send(from4, [numbered(5)])).toBe(true);
    expect((await inV4.count(1))[0]!.from).toBe(`127.0.0.1:${any.localPort}`);
  });

  // Only "localhost" (the hosts file): a lookup of any other name could leave the machine.
  it('resolves a DNS name before sending, and refuses what it cannot reach', async () => {
    const a = await udp('127.0.0.1');
    expect(await a.resolve({ kind: 'udp', host: 'localhost', port: 7 })).toBe('127.0.0.1:7');
    await expect(a.resolve({ kind: 'udp', host: '::1', port: 7 })).rejects.toThrow(/IPv4/);
    await expect(a.resolve({ kind: 'tcp', host: '127.0.0.1', port: 7 })).rejects.toThrow(/cannot reach a tcp endpoint/);
  });

  it('counts what it cannot send and never throws', async () => {
    const a = await udp('127.0.0.1');
    const b = await udp('127.0.0.1');
    const inB = new Inbox(b);
    const to = `127.0.0.1:${b.localPort}`;
    expect(a.send('not an address', [numbered(1), numbered(2)])).toBe(false);
    expect(a.send(`[::1]:${b.localPort}`, [numbered(1)])).toBe(false); // IPv6 on an IPv4 socket
    expect(a.send('127.0.0.1:0', [numbered(1)])).toBe(false);
    // An oversize message is dropped; the others of the batch still go.
    expect(a.send(to, [numbered(1), Buffer.alloc(MAX_MESSAGE + 1), numbered(3)])).toBe(false);
    const got = await inB.count(2);
    expect(got.map((r) => r.msg)).toEqual([numbered(1), numbered(3)]);
    expect(a.stats().drops).toEqual({ 'io-error': 4, oversize: 1 });
    expect(a.stats().txMessages).toBe(2);
    await a.close();
    expect(a.send(to, [numbered(1)])).toBe(false);
    expect(a.reachable(to)).toBe(false);
    expect(a.stats().drops['io-error']).toBe(5);
  });

  it('refuses a port in use with a one-line error', async () => {
    const a = await udp('127.0.0.1');
    await expect(openUdp({ id: 'dup', host: '127.0.0.1', port: a.localPort, log })).rejects.toThrow(`cannot listen on udp 127.0.0.1:${a.localPort}: EADDRINUSE`);
  });

  it('keeps receiving when the handler throws, and reports the fault', async () => {
    const faultsBefore = faults.dataPath;
    const reported: string[] = [];
    const old = setFaultReporter((where) => reported.push(where));
    onTestFinished(() => void setFaultReporter(old));
    const a = await udp('127.0.0.1');
    const b = await udp('127.0.0.1');
    const seen: number[] = [];
    let done!: () => void;
    const both = new Promise<void>((r) => (done = r));
    b.onMessage((msg) => {
      seen.push(msg.readUInt32BE(0));
      if (seen.length === 2) done();
      if (seen.length === 1) throw new Error('handler bug');
    });
    a.send(`127.0.0.1:${b.localPort}`, [numbered(1), numbered(2)]);
    await both;
    expect(seen).toEqual([1, 2]);
    expect(reported).toEqual(['udp carrier message']);
    expect(faults.dataPath).toBe(faultsBefore + 1);
  });
});
