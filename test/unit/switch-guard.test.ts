/**
 * The switch's rogue-router/DHCP guard (daemon/switch/guard.ts), tried the way a hostile VM
 * would evade it (RFC 7113: extension headers before the RA; RFC 6980: fragmented ND; DHCP
 * server traffic by either port; DHCPv6), with legitimate frames that must still pass; and the
 * native cut-through classification (isPlainFrame in plugins/native) checked against it on the
 * same random and mutated frames: whatever native code would forward, the guard lets pass.
 */
import { describe, expect, it } from 'vitest';
import { rogueService, type GatewayAddrs, type GuardReason } from '../../daemon/switch/guard.js';
import { Network } from '../../daemon/switch/network.js';
import { writeMac } from '../../daemon/wire/mac.js';
import { loadNative } from '../../plugins/native/index.js';
import type { FrameHandler, Port, PortStats, PortStatus } from '../../plugins/types.js';

// ---------------------------------------------------------------------------------------------
// Hand-built frames (independent of daemon/wire: the guard reads bytes, so do these)

const VM_MAC = Buffer.from('020000000001', 'hex');
const ALL_NODES_MAC = Buffer.from('333300000001', 'hex');
const LL_SRC = Buffer.from('fe800000000000000000000000000001', 'hex');
const ALL_NODES = Buffer.from('ff020000000000000000000000000001', 'hex');

function eth(type: number, payload: Buffer, tags: number[] = [], dst = ALL_NODES_MAC): Buffer {
  const head = Buffer.alloc(12 + tags.length * 4 + 2);
  dst.copy(head, 0);
  VM_MAC.copy(head, 6);
  tags.forEach((tpid, i) => {
    head.writeUInt16BE(tpid, 12 + i * 4);
    head.writeUInt16BE(100 + i, 14 + i * 4);
  });
  head.writeUInt16BE(type, 12 + tags.length * 4);
  return Buffer.concat([head, payload]);
}

function v6(nh: number, payload: Buffer, plen = payload.length): Buffer {
  const h = Buffer.alloc(40);
  h[0] = 0x60;
  h.writeUInt16BE(plen, 4);
  h[6] = nh;
  h[7] = 255;
  LL_SRC.copy(h, 8);
  ALL_NODES.copy(h, 24);
  return Buffer.concat([h, payload]);
}

/** Hop-by-hop, destination options or routing header of `units` × 8 bytes (PadN filled). */
function ext(nh: number, units = 1): Buffer {
  const b = Buffer.alloc(units * 8);
  b[0] = nh;
  b[1] = units - 1;
  b[2] = 1; // PadN
  b[3] = units * 8 - 4;
  return b;
}

function fragHdr(nh: number, offset8 = 0, more = false): Buffer {
  const b = Buffer.alloc(8);
  b[0] = nh;
  b.writeUInt16BE((offset8 << 3) | (more ? 1 : 0), 2);
  b.writeUInt32BE(0x1234, 4);
  return b;
}

function ah(nh: number): Buffer {
  const b = Buffer.alloc(12); // payload len 1: (1 + 2) × 4 bytes
  b[0] = nh;
  b[1] = 1;
  return b;
}

function icmp6(type: number, body = 12): Buffer {
  const b = Buffer.alloc(4 + body);
  b[0] = type;
  return b;
}

function udp(sport: number, dport: number, body = 8): Buffer {
  const b = Buffer.alloc(8 + body);
  b.writeUInt16BE(sport, 0);
  b.writeUInt16BE(dport, 2);
  b.writeUInt16BE(8 + body, 4);
  return b;
}

function v4(proto: number, payload: Buffer, o: { offset8?: number; more?: boolean; total?: number } = {}): Buffer {
  const h = Buffer.alloc(20);
  h[0] = 0x45;
  h.writeUInt16BE(o.total ?? 20 + payload.length, 2);
  h.writeUInt16BE(((o.offset8 ?? 0) & 0x1fff) | (o.more ? 0x2000 : 0), 6);
  h[8] = 64;
  h[9] = proto;
  h.writeUInt32BE(0x0a000002, 12);
  h.writeUInt32BE(0xffffffff, 16);
  return Buffer.concat([h, payload]);
}

const IP6 = 0x86dd;
const IP4 = 0x0800;
const RA = 134;
const REDIRECT = 137;
const NS = 135;
const NA = 136;
const RS = 133;
const ECHO6 = 128;
const HBH = 0;
const ROUTING = 43;
const FRAG = 44;
const DSTOPT = 60;

/** Frames a hostile VM might send, and what the guard must call them. */
const HOSTILE: [string, Buffer, GuardReason][] = [
  ['RA', eth(IP6, v6(58, icmp6(RA))), 'ra'],
  ['redirect', eth(IP6, v6(58, icmp6(REDIRECT, 36))), 'redirect'],
  ['hop-by-hop + RA', eth(IP6, v6(HBH, Buffer.concat([ext(58), icmp6(RA)]))), 'ra'],
  ['destination options + RA', eth(IP6, v6(DSTOPT, Buffer.concat([ext(58), icmp6(RA)]))), 'ra'],
  ['large destination options (2 KiB) + RA', eth(IP6, v6(DSTOPT, Buffer.concat([ext(58, 256), icmp6(RA)]))), 'ra'],
  ['chained HBH, DstOpt, Routing, DstOpt + RA', eth(IP6, v6(HBH, Buffer.concat([ext(DSTOPT), ext(ROUTING, 2), ext(DSTOPT, 3), ext(58), icmp6(RA)]))), 'ra'],
  ['AH + redirect', eth(IP6, v6(51, Buffer.concat([ah(58), icmp6(REDIRECT, 36)]))), 'redirect'],
  ['atomic fragment + RA', eth(IP6, v6(FRAG, Buffer.concat([fragHdr(58), icmp6(RA)]))), 'ra'],
  ['first fragment + DstOpt + RA', eth(IP6, v6(FRAG, Buffer.concat([fragHdr(DSTOPT, 0, true), ext(58), icmp6(RA)]))), 'ra'],
  ['fragmented neighbour advertisement', eth(IP6, v6(FRAG, Buffer.concat([fragHdr(58, 0, true), icmp6(NA, 20)]))), 'nd-fragment'],
  ['fragmented router solicitation', eth(IP6, v6(FRAG, Buffer.concat([fragHdr(58, 0, true), icmp6(RS)]))), 'nd-fragment'],
  // The ICMPv6 header is in the second fragment: the first one's chain ends in the DstOpt header.
  ['first fragment cut inside the header chain', eth(IP6, v6(FRAG, Buffer.concat([fragHdr(DSTOPT, 0, true), ext(58, 4).subarray(0, 16)]))), 'unreadable'],
  ['first fragment cut before the ICMPv6 type', eth(IP6, v6(FRAG, Buffer.concat([fragHdr(DSTOPT, 0, true), ext(58)]))), 'unreadable'],
  ['header chain longer than the guard walks', eth(IP6, v6(DSTOPT, Buffer.concat([...Array.from({ length: 20 }, () => ext(DSTOPT)), ext(58), icmp6(ECHO6)]))), 'unreadable'],
  ['DHCPv4 from server port 67', eth(IP4, v4(17, udp(67, 68, 240))), 'dhcp4-server'],
  ['DHCPv4 from port 67 to another port', eth(IP4, v4(17, udp(67, 9999, 240))), 'dhcp4-server'],
  ['DHCPv4 to client port 68 from another port', eth(IP4, v4(17, udp(4000, 68, 240))), 'dhcp4-server'],
  ['DHCPv4 offer with a zero total length', eth(IP4, v4(17, udp(67, 68, 240), { total: 0 })), 'dhcp4-server'],
  ['IPv4 first fragment too short for the UDP ports', eth(IP4, v4(17, Buffer.from([0x00]), { more: true })), 'unreadable'],
  ['DHCPv6 advertise 547 → 546', eth(IP6, v6(17, Buffer.concat([udp(547, 546)]))), 'dhcp6-server'],
  ['DHCPv6 reply behind a destination options header', eth(IP6, v6(DSTOPT, Buffer.concat([ext(17), udp(547, 546)]))), 'dhcp6-server'],
  ['DHCPv6 to client port 546 from another port', eth(IP6, v6(17, udp(5000, 546))), 'dhcp6-server'],
  ['ICMPv4 redirect', eth(IP4, v4(1, Buffer.from([5, 0, 0, 0, 10, 0, 0, 66, 0, 0, 0, 0]))), 'icmp4-router'],
  ['ICMPv4 router advertisement', eth(IP4, v4(1, Buffer.from([9, 0, 0, 0, 1, 2, 0, 30, 10, 0, 0, 66, 0, 0, 0, 0]))), 'icmp4-router'],
  ['RA in an 802.1Q tag', eth(IP6, v6(58, icmp6(RA)), [0x8100]), 'ra'],
  ['DHCPv4 offer in QinQ', eth(IP4, v4(17, udp(67, 68, 240)), [0x88a8, 0x8100]), 'dhcp4-server'],
  ['three VLAN tags', eth(IP6, v6(6, Buffer.alloc(20)), [0x88a8, 0x8100, 0x8100]), 'vlan-depth'],
];

/** What VMs legitimately send, which must pass. */
const LEGIT: [string, Buffer][] = [
  ['DHCPv4 discover 68 → 67', eth(IP4, v4(17, udp(68, 67, 240)))],
  ['DHCPv6 solicit 546 → 547', eth(IP6, v6(17, udp(546, 547)))],
  ['router solicitation', eth(IP6, v6(58, icmp6(RS)))],
  ['neighbour solicitation', eth(IP6, v6(58, icmp6(NS, 20)))],
  ['neighbour advertisement', eth(IP6, v6(58, icmp6(NA, 20)))],
  ['ICMPv6 echo', eth(IP6, v6(58, icmp6(ECHO6, 56)))],
  ['MLD report behind hop-by-hop (router alert)', eth(IP6, v6(HBH, Buffer.concat([ext(58), icmp6(143, 20)])))],
  ['first fragment of a large ICMPv6 echo', eth(IP6, v6(FRAG, Buffer.concat([fragHdr(58, 0, true), icmp6(ECHO6, 1000)])))],
  ['later fragment of a large ICMPv6 echo', eth(IP6, v6(FRAG, Buffer.concat([fragHdr(58, 126, false), Buffer.alloc(200)])))],
  ['ICMPv4 echo', eth(IP4, v4(1, Buffer.from([8, 0, 0, 0, 0, 1, 0, 1])))],
  ['later IPv4 fragment of a UDP datagram', eth(IP4, v4(17, Buffer.alloc(100), { offset8: 185 }))],
  ['IPv4 TCP', eth(IP4, v4(6, Buffer.alloc(20)))],
  ['IPv6 TCP', eth(IP6, v6(6, Buffer.alloc(20)))],
  ['IPv4 DNS query', eth(IP4, v4(17, udp(40000, 53, 30)))],
  ['IPv6 UDP', eth(IP6, v6(17, udp(40000, 5201, 100)))],
  ['ARP', eth(0x0806, Buffer.alloc(28))],
  ['IPv6 TCP in a VLAN tag', eth(IP6, v6(6, Buffer.alloc(20)), [0x8100])],
];

// The gateway's addresses, which no VM may claim.
const GW4 = 0x0a000001;
const GW_LL = Buffer.from('fe8000000000000002aaaafffeaaaaaa', 'hex');
const GW_GLOBAL = Buffer.from('fd000001000000000000000000000001', 'hex');
const GW: GatewayAddrs = { ip4: GW4, ip6: [GW_LL, GW_GLOBAL] };
const VM_IP4 = 0x0a00000a;

function arp(op: number, spa: number, tpa: number): Buffer {
  const a = Buffer.alloc(28);
  a.writeUInt16BE(1, 0);
  a.writeUInt16BE(0x0800, 2);
  a[4] = 6;
  a[5] = 4;
  a.writeUInt16BE(op, 6);
  VM_MAC.copy(a, 8);
  a.writeUInt32BE(spa, 14);
  a.writeUInt32BE(tpa, 24);
  return eth(0x0806, a, [], Buffer.from('ffffffffffff', 'hex'));
}

/** Neighbour solicitation/advertisement from `src` about `target`. */
function nd(type: number, src: Buffer, target: Buffer): Buffer {
  const body = Buffer.alloc(24);
  body[0] = type;
  target.copy(body, 8);
  const f = eth(IP6, v6(58, body));
  src.copy(f, 14 + 8);
  return f;
}

/** Claims of the gateway's addresses (with the gateway's addresses known to the guard). */
const CLAIMS: [string, Buffer][] = [
  ['ARP reply from the gateway address', arp(2, GW4, VM_IP4)],
  ['gratuitous ARP for the gateway address', arp(1, GW4, GW4)],
  ['neighbour advertisement for the gateway global address', nd(NA, LL_SRC, GW_GLOBAL)],
  ['neighbour advertisement for the gateway link-local address', nd(NA, LL_SRC, GW_LL)],
  ['neighbour solicitation from the gateway link-local address', nd(NS, GW_LL, LL_SRC)],
];
const NOT_CLAIMS: [string, Buffer][] = [
  ['ARP request for the gateway', arp(1, VM_IP4, GW4)],
  ['ARP reply for the VM itself', arp(2, VM_IP4, GW4)],
  ['neighbour solicitation for the gateway', nd(NS, LL_SRC, GW_GLOBAL)],
  ['neighbour advertisement for the VM itself', nd(NA, LL_SRC, LL_SRC)],
];

describe('rogue router/DHCP guard', () => {
  for (const [what, f] of CLAIMS) {
    it(`drops ${what} (gateway-claim)`, () => {
      expect(rogueService(f, 0, GW)).toBe('gateway-claim');
      expect(rogueService(f, 0)).toBeNull(); // only the gateway's own addresses are protected
    });
  }
  for (const [what, f] of NOT_CLAIMS) {
    it(`passes ${what}`, () => {
      expect(rogueService(f, 0, GW)).toBeNull();
    });
  }

  for (const [what, f, reason] of HOSTILE) {
    it(`drops ${what} (${reason})`, () => {
      expect(rogueService(f, 0)).toBe(reason);
      // The same behind a vnet header (a TAP with offloads).
      expect(rogueService(Buffer.concat([Buffer.alloc(10), f]), 10)).toBe(reason);
    });
  }
  for (const [what, f] of LEGIT) {
    it(`passes ${what}`, () => {
      expect(rogueService(f, 0)).toBeNull();
      expect(rogueService(Buffer.concat([Buffer.alloc(10), f]), 10)).toBeNull();
    });
  }

  it('judges only the IPv6 payload length, not Ethernet padding behind it', () => {
    // An ICMPv6 echo of 8 bytes in a padded frame: the padding is nobody's RA.
    const f = Buffer.concat([eth(IP6, v6(DSTOPT, Buffer.concat([ext(58), icmp6(ECHO6, 4)]))), Buffer.from([RA, 0, 0, 0])]);
    expect(rogueService(f, 0)).toBeNull();
    // But a payload length that cuts the chain short leaves the type unreadable.
    const cut = eth(IP6, v6(DSTOPT, Buffer.concat([ext(58), icmp6(RA)]), 8));
    expect(rogueService(cut, 0)).toBe('unreadable');
  });
});

// ---------------------------------------------------------------------------------------------
// In the switch

class MemPort implements Port {
  readonly kind = 'unix' as const;
  readonly layer = 2 as const;
  readonly maxFrame = 4000;
  sent: Buffer[] = [];
  private handler: FrameHandler = () => {};
  constructor(
    readonly name: string,
    readonly vnetHdrLen = 0,
  ) {}
  onFrames(h: FrameHandler): void {
    this.handler = h;
  }
  inject(frames: Buffer[]): void {
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

describe('the guard in the switch', () => {
  it('drops every hostile frame (counted filtered) and forwards every legitimate one', () => {
    const n = new Network({ name: 'g', mtu: 3000, gatewayMac: 0x02aaaaaaaaaa, clock: () => 0 });
    const a = new MemPort('a');
    const b = new MemPort('b');
    const vmMac = VM_MAC.readUIntBE(0, 6);
    const ma = n.attach('a', a, vmMac);
    n.attach('b', b, 0x020000000002);
    // Unicast to b as well as to all-nodes: both must be judged.
    const toB = (f: Buffer): Buffer => {
      const g = Buffer.from(f);
      writeMac(g, 0, 0x020000000002);
      return g;
    };
    const hostile = HOSTILE.flatMap(([, f]) => [f, toB(f)]);
    a.inject(hostile);
    expect(b.sent).toEqual([]);
    expect(ma.drops.filtered).toBe(hostile.length);
    const legit = LEGIT.flatMap(([, f]) => [f, toB(f)]);
    a.inject(legit);
    expect(b.sent).toHaveLength(legit.length);
    expect(ma.drops.filtered).toBe(hostile.length);
    // Claims of the gateway's addresses, once the router has told the switch what they are.
    b.sent = [];
    a.inject(CLAIMS.map(([, f]) => f));
    expect(b.sent).toHaveLength(CLAIMS.length);
    n.setGatewayAddresses(GW);
    a.inject(CLAIMS.map(([, f]) => f));
    expect(b.sent).toHaveLength(CLAIMS.length);
    expect(ma.drops.filtered).toBe(hostile.length + CLAIMS.length);
    a.inject(NOT_CLAIMS.map(([, f]) => f));
    expect(b.sent).toHaveLength(CLAIMS.length + NOT_CLAIMS.length);
    n.close();
  });
});

// ---------------------------------------------------------------------------------------------
// Native cut-through classification against the guard

/** xorshift32: reproducible from the printed seed. */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 0x100000000;
  };
}

const GUARD_PORTS = [67, 68, 546, 547, 53, 0, 65535];
const INTERESTING_BYTES = [0, 1, 4, 5, 6, 17, 43, 44, 51, 58, 59, 60, 0x45, 0x46, 0x4f, 0x60, 0x86, 0xdd, 0x08, 0x81, 133, 134, 135, 136, 137, 255];

/** A random frame close to what the guard looks at, or a mutation of a known one. */
function makeFrame(r: () => number): Buffer {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
  const kind = r();
  let f: Buffer;
  if (kind < 0.45) {
    f = Buffer.from(pick([...HOSTILE, ...LEGIT, ...CLAIMS, ...NOT_CLAIMS].map((x) => x[1])));
  } else if (kind < 0.8) {
    // Built from parts: a random chain of extension headers, then an upper layer.
    const chain: number[] = [];
    const depth = Math.floor(r() * 4);
    for (let i = 0; i < depth; i++) chain.push(pick([HBH, DSTOPT, ROUTING, FRAG, 51]));
    const upper = pick([58, 17, 6, 59, 50]);
    let body: Buffer = upper === 58 ? icmp6(pick([RA, REDIRECT, NS, NA, RS, ECHO6, 129, 143])) : upper === 17 ? udp(pick(GUARD_PORTS), pick(GUARD_PORTS)) : Buffer.alloc(20);
    let nh = upper;
    for (let i = chain.length - 1; i >= 0; i--) {
      const t = chain[i]!;
      const hdr = t === FRAG ? fragHdr(nh, r() < 0.7 ? 0 : Math.floor(r() * 200), r() < 0.5) : t === 51 ? ah(nh) : ext(nh, 1 + Math.floor(r() * 3));
      body = Buffer.concat([hdr, body]);
      nh = t;
    }
    if (r() < 0.5) f = eth(IP6, v6(nh, body));
    else {
      const proto = pick([17, 1, 6, 47]);
      const pl = proto === 17 ? udp(pick(GUARD_PORTS), pick(GUARD_PORTS)) : proto === 1 ? Buffer.from([pick([0, 3, 5, 8, 9, 11]), 0, 0, 0, 0, 0, 0, 0]) : Buffer.alloc(20);
      f = eth(IP4, v4(proto, pl, { offset8: r() < 0.8 ? 0 : Math.floor(r() * 8), more: r() < 0.2 }));
    }
    if (r() < 0.2) f = eth(f.readUInt16BE(12), f.subarray(14), [pick([0x8100, 0x88a8])]);
  } else {
    // Random bytes behind a guard-relevant EtherType.
    f = Buffer.alloc(14 + Math.floor(r() * 120));
    for (let i = 0; i < f.length; i++) f[i] = Math.floor(r() * 256);
    f.writeUInt16BE(pick([IP4, IP6, 0x8100, 0x0806, 0x88a8]), 12);
    if (f.length > 14 && r() < 0.7) f[14] = pick([0x45, 0x46, 0x60, 0x40]);
  }
  // Mutations: flip bytes to values that matter, set lengths, truncate or extend.
  const muts = Math.floor(r() * 4);
  for (let m = 0; m < muts; m++) {
    const x = r();
    if (x < 0.5 && f.length > 14) f[14 + Math.floor(r() * Math.min(f.length - 14, 90))] = pick(INTERESTING_BYTES);
    else if (x < 0.65 && f.length > 20) f = f.subarray(0, 14 + Math.floor(r() * (f.length - 14)));
    else if (x < 0.8) f = Buffer.concat([f, Buffer.alloc(Math.floor(r() * 40))]);
    else if (x < 0.9 && f.length >= 20) f.writeUInt16BE(Math.floor(r() * 200), 16); // IPv4 total / IPv6 flow bits
    else if (f.length >= 20) f.writeUInt16BE(Math.floor(r() * 120), 18); // IPv6 payload length / IPv4 id
  }
  return f;
}

describe('native cut-through classification vs the guard', () => {
  const native = loadNative();

  it('classifies ordinary TCP, UDP and ARP as plain (so cut-through still forwards them)', () => {
    for (const [what, f] of LEGIT) {
      const plainExpected = /TCP|DNS|IPv6 UDP|^ICMPv[46] echo/.test(what) && !/VLAN/.test(what);
      expect(native.isPlainFrame(f, 0), what).toBe(plainExpected);
    }
    for (const [what, f] of [...HOSTILE, ...CLAIMS]) expect(native.isPlainFrame(f, 0), what).toBe(false);
  });

  it('never calls plain a frame the guard drops (random and mutated frames, with and without a vnet header)', () => {
    const seed = (Date.now() ^ (process.pid << 8)) >>> 0;
    const r = rng(seed);
    const N = 50_000;
    let plain = 0;
    let dropped = 0;
    const bad: string[] = [];
    for (let i = 0; i < N; i++) {
      const f0 = makeFrame(r);
      const h = r() < 0.3 ? 10 : 0;
      const f = h === 0 ? f0 : Buffer.concat([Buffer.alloc(10, 0xff), f0]);
      const isPlain = native.isPlainFrame(f, h);
      const reason = rogueService(f, h, GW);
      if (isPlain) plain++;
      if (reason !== null) dropped++;
      if (isPlain && reason !== null && bad.length < 5) bad.push(`${reason}: ${f.toString('hex')} (h=${h})`);
    }
    expect(bad, `seed ${seed}`).toEqual([]);
    // Both sides of the line were exercised.
    expect(plain).toBeGreaterThan(N / 20);
    expect(dropped).toBeGreaterThan(N / 20);
  });
});
