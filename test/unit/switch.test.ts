import { describe, it, expect, beforeEach } from 'vitest';
import { Network } from '../../daemon/switch/network.js';
import type { FrameHandler, Port, PortStats, PortStatus } from '../../plugins/types.js';
import { writeMac } from '../../daemon/wire/mac.js';

/** An in-memory port: what the switch sends is recorded; `inject` plays the VM. */
class MemPort implements Port {
  readonly kind = 'unix' as const;
  readonly layer = 2 as const;
  readonly vnetHdrLen = 0;
  readonly maxFrame = 1518;
  sent: Buffer[] = [];
  private handler: FrameHandler = () => {};
  constructor(readonly name: string) {}
  onFrames(h: FrameHandler): void {
    this.handler = h;
  }
  inject(...frames: Buffer[]): void {
    this.handler(frames);
  }
  send(frames: readonly Buffer[]): void {
    for (const f of frames) this.sent.push(Buffer.from(f));
  }
  stats(): PortStats {
    return { rxFrames: 0, rxBytes: 0, txFrames: 0, txBytes: 0, drops: {} };
  }
  status(): PortStatus {
    return { state: 'up', detail: '' };
  }
  async close(): Promise<void> {}
}

const M = (n: number): number => 0x020000000000 + n;
const BCAST = 0xffffffffffff;
const GW = 0x02aaaaaaaaaa;

function frame(dst: number, src: number, tag = 0): Buffer {
  const f = Buffer.alloc(60);
  writeMac(f, 0, dst);
  writeMac(f, 6, src);
  f.writeUInt16BE(0x0800, 12);
  f[14] = tag;
  return f;
}

describe('switch', () => {
  let now = 0;
  let net: Network;
  let a: MemPort, b: MemPort, c: MemPort;
  beforeEach(() => {
    now = 0;
    net = new Network({ name: 'n', mtu: 1500, gatewayMac: GW, clock: () => now, macAgeMs: 1000 });
    a = new MemPort('a');
    b = new MemPort('b');
    c = new MemPort('c');
    net.attach('a', a, M(1));
    net.attach('b', b, M(2));
    net.attach('c', c, null);
  });

  it('floods broadcast to every other member only', () => {
    a.inject(frame(BCAST, M(1)));
    expect(a.sent).toHaveLength(0);
    expect(b.sent).toHaveLength(1);
    expect(c.sent).toHaveLength(1);
    expect(net.stats.flooded).toBe(1);
  });

  it('floods unknown unicast, then forwards once the MAC is learned', () => {
    a.inject(frame(M(2), M(1), 1));
    expect(c.sent).toHaveLength(1); // unknown: flooded
    b.inject(frame(M(1), M(2), 2));
    expect(a.sent.map((f) => f[14])).toEqual([2]);
    expect(c.sent).toHaveLength(1); // a is known now: not flooded
    a.inject(frame(M(2), M(1), 3));
    expect(b.sent.map((f) => f[14])).toEqual([1, 3]);
    expect(c.sent).toHaveLength(1);
    expect(net.stats.forwarded).toBe(2);
  });

  it('ages MAC entries out and floods again', () => {
    b.inject(frame(M(1), M(2)));
    now = 5000;
    a.inject(frame(M(2), M(1), 9));
    expect(c.sent.some((f) => f[14] === 9)).toBe(true);
  });

  it('drops spoofed source MACs and counts them', () => {
    a.inject(frame(BCAST, M(7)));
    a.inject(frame(BCAST, 0x010000000001)); // group source
    expect(b.sent).toHaveLength(0);
    const member = net['members'].find((m) => m.vm === 'a')!;
    expect(member.drops.spoofed).toBe(2);
    expect(net.stats.drops.spoofed).toBe(2);
  });

  it('learns a MAC from the first frame and fixes it', () => {
    let learned = 0;
    const n2 = new Network({ name: 'n2', mtu: 1500, gatewayMac: GW, clock: () => now, onMacLearned: () => learned++ });
    const p = new MemPort('p');
    const q = new MemPort('q');
    const mp = n2.attach('p', p, null);
    n2.attach('q', q, M(2));
    p.inject(frame(BCAST, M(5)));
    expect(mp.mac).toBe(M(5));
    expect(learned).toBe(1);
    p.inject(frame(BCAST, M(6)));
    expect(q.sent).toHaveLength(1);
    expect(mp.drops.spoofed).toBe(1);
  });

  it("refuses to learn another member's or the gateway's MAC", () => {
    c.inject(frame(BCAST, M(1)));
    c.inject(frame(BCAST, GW));
    expect(b.sent).toHaveLength(0);
  });

  it('drops runts and oversize frames', () => {
    a.inject(Buffer.alloc(10), Buffer.concat([frame(BCAST, M(1)), Buffer.alloc(2000)]));
    expect(b.sent).toHaveLength(0);
    const member = net['members'].find((m) => m.vm === 'a')!;
    expect(member.drops).toMatchObject({ runt: 1, oversize: 1 });
  });

  it('hands gateway-addressed frames and broadcasts to the gateway handler', () => {
    const got: number[] = [];
    net.setGateway({ input: (frames, from) => frames.forEach(() => got.push(from.mac!)) });
    a.inject(frame(GW, M(1)), frame(BCAST, M(1)));
    expect(got).toEqual([M(1), M(1)]);
    expect(b.sent).toHaveLength(1); // the broadcast only
  });

  it('counts unicast to a missing gateway as no-route', () => {
    a.inject(frame(GW, M(1)));
    const member = net['members'].find((m) => m.vm === 'a')!;
    expect(member.drops['no-route']).toBe(1);
    expect(b.sent).toHaveLength(0);
  });

  it('keeps networks apart', () => {
    const other = new Network({ name: 'o', mtu: 1500, gatewayMac: GW, clock: () => now });
    const x = new MemPort('x');
    other.attach('x', x, M(9));
    x.inject(frame(BCAST, M(9)), frame(M(1), M(9)));
    expect(a.sent).toHaveLength(0);
    expect(b.sent).toHaveLength(0);
    expect(c.sent).toHaveLength(0);
  });

  it('stops delivering to a detached member', () => {
    const mb = net['members'].find((m) => m.vm === 'b')!;
    net.detach(mb);
    a.inject(frame(BCAST, M(1)));
    expect(b.sent).toHaveLength(0);
    expect(c.sent).toHaveLength(1);
  });
});

describe('switch guards', () => {
  it('drops router advertisements and DHCP server replies from VMs', () => {
    const n = new Network({ name: 'g', mtu: 1500, gatewayMac: GW, clock: () => 0 });
    const a = new MemPort('a');
    const b = new MemPort('b');
    const ma = n.attach('a', a, M(1));
    n.attach('b', b, M(2));
    const ra = Buffer.alloc(14 + 40 + 16);
    writeMac(ra, 0, BCAST);
    writeMac(ra, 6, M(1));
    ra.writeUInt16BE(0x86dd, 12);
    ra[14] = 0x60;
    ra[14 + 6] = 58;
    ra[14 + 40] = 134;
    const offer = Buffer.alloc(14 + 20 + 8 + 20);
    writeMac(offer, 0, BCAST);
    writeMac(offer, 6, M(1));
    offer.writeUInt16BE(0x0800, 12);
    offer[14] = 0x45;
    offer[14 + 9] = 17;
    offer.writeUInt16BE(67, 14 + 20);
    offer.writeUInt16BE(68, 14 + 22);
    const ns = Buffer.from(ra);
    ns[14 + 40] = 135; // a neighbour solicitation passes
    a.inject(ra, offer, ns);
    expect(b.sent).toHaveLength(1);
    expect(b.sent[0]![14 + 40]).toBe(135);
    expect(ma.drops.filtered).toBe(2);
  });
});
