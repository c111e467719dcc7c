/**
 * Hand-built raw Ethernet frames for tests: ARP request/reply and ICMP echo over IPv4.
 *
 * Deliberately independent of the project's own codecs (daemon/wire): a bug there must not be
 * able to hide itself by being on both sides of a test. Everything here is plain byte layout
 * straight from RFC 826 / 791 / 792, with its own Internet checksum.
 */

export const ETH_HEADER = 14;
export const ETHERTYPE_IPV4 = 0x0800;
export const ETHERTYPE_ARP = 0x0806;
export const ETHERTYPE_IPV6 = 0x86dd;
export const BROADCAST_MAC = 'ff:ff:ff:ff:ff:ff';

// ---------------------------------------------------------------------------------------------
// Addresses

/** "aa:bb:cc:dd:ee:ff" → 6 bytes. Throws on anything else. */
export function macBytes(mac: string): Buffer {
  const parts = mac.split(':');
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-fA-F]{2}$/.test(p))) {
    throw new Error(`bad MAC address: ${mac}`);
  }
  return Buffer.from(parts.map((p) => parseInt(p, 16)));
}

/** 6 bytes → "aa:bb:cc:dd:ee:ff" (lower case). */
export function macString(bytes: Uint8Array): string {
  if (bytes.length !== 6) throw new Error(`MAC must be 6 bytes, got ${bytes.length}`);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join(':');
}

/** A random unicast, locally administered MAC (02:xx:...), so it never collides with real NICs. */
export function randomMac(): string {
  const b = Buffer.alloc(6);
  for (let i = 0; i < 6; i++) b[i] = Math.floor(Math.random() * 256);
  b[0] = (b[0]! & 0xfc) | 0x02;
  return macString(b);
}

/** "10.0.0.1" → 4 bytes. Throws on anything else. */
export function ipBytes(ip: string): Buffer {
  const parts = ip.split('.');
  if (parts.length !== 4) throw new Error(`bad IPv4 address: ${ip}`);
  const out = Buffer.alloc(4);
  parts.forEach((p, i) => {
    const n = Number(p);
    if (!/^\d{1,3}$/.test(p) || n > 255) throw new Error(`bad IPv4 address: ${ip}`);
    out[i] = n;
  });
  return out;
}

export function ipString(bytes: Uint8Array): string {
  if (bytes.length !== 4) throw new Error(`IPv4 address must be 4 bytes, got ${bytes.length}`);
  return Array.from(bytes).join('.');
}

// ---------------------------------------------------------------------------------------------
// Checksum

/** RFC 1071 Internet checksum (one's complement of the one's complement sum of 16-bit words). */
export function inetChecksum(data: Uint8Array): number {
  let sum = 0;
  const n = data.length;
  for (let i = 0; i + 1 < n; i += 2) sum += (data[i]! << 8) | data[i + 1]!;
  if (n % 2 === 1) sum += data[n - 1]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

// ---------------------------------------------------------------------------------------------
// Builders

/** Ethernet II frame. Not padded to 60 bytes unless `pad` is true (the kernel accepts short frames). */
export function ethernet(dst: string, src: string, etherType: number, payload: Uint8Array, pad = false): Buffer {
  const len = Math.max(ETH_HEADER + payload.length, pad ? 60 : 0);
  const f = Buffer.alloc(len);
  macBytes(dst).copy(f, 0);
  macBytes(src).copy(f, 6);
  f.writeUInt16BE(etherType, 12);
  f.set(payload, ETH_HEADER);
  return f;
}

export interface ArpFields {
  /** 1 request, 2 reply. */
  op: 1 | 2;
  senderMac: string;
  senderIp: string;
  targetMac: string;
  targetIp: string;
}

/** The 28-byte ARP payload for Ethernet/IPv4. */
export function arpPayload(a: ArpFields): Buffer {
  const p = Buffer.alloc(28);
  p.writeUInt16BE(1, 0); // htype Ethernet
  p.writeUInt16BE(ETHERTYPE_IPV4, 2); // ptype
  p[4] = 6;
  p[5] = 4;
  p.writeUInt16BE(a.op, 6);
  macBytes(a.senderMac).copy(p, 8);
  ipBytes(a.senderIp).copy(p, 14);
  macBytes(a.targetMac).copy(p, 18);
  ipBytes(a.targetIp).copy(p, 24);
  return p;
}

/** Broadcast "who has targetIp? tell senderIp". */
export function arpRequest(o: { srcMac: string; srcIp: string; targetIp: string }): Buffer {
  const payload = arpPayload({
    op: 1,
    senderMac: o.srcMac,
    senderIp: o.srcIp,
    targetMac: '00:00:00:00:00:00',
    targetIp: o.targetIp,
  });
  return ethernet(BROADCAST_MAC, o.srcMac, ETHERTYPE_ARP, payload, true);
}

/** Unicast "srcIp is at srcMac" to dstMac/dstIp. */
export function arpReply(o: { srcMac: string; srcIp: string; dstMac: string; dstIp: string }): Buffer {
  const payload = arpPayload({ op: 2, senderMac: o.srcMac, senderIp: o.srcIp, targetMac: o.dstMac, targetIp: o.dstIp });
  return ethernet(o.dstMac, o.srcMac, ETHERTYPE_ARP, payload, true);
}

/** IPv4 header (20 bytes, no options, DF set) + payload, header checksum filled in. */
export function ipv4Packet(o: {
  src: string;
  dst: string;
  protocol: number;
  payload: Uint8Array;
  ttl?: number;
  id?: number;
}): Buffer {
  const h = Buffer.alloc(20 + o.payload.length);
  h[0] = 0x45;
  h[1] = 0;
  h.writeUInt16BE(h.length, 2);
  h.writeUInt16BE(o.id ?? 0, 4);
  h.writeUInt16BE(0x4000, 6); // DF
  h[8] = o.ttl ?? 64;
  h[9] = o.protocol;
  ipBytes(o.src).copy(h, 12);
  ipBytes(o.dst).copy(h, 16);
  h.writeUInt16BE(inetChecksum(h.subarray(0, 20)), 10);
  h.set(o.payload, 20);
  return h;
}

/** ICMP echo request (type 8) or reply (type 0) message with its checksum. */
export function icmpEcho(o: { type: 0 | 8; id: number; seq: number; data?: Uint8Array }): Buffer {
  const data = o.data ?? Buffer.from('mvnet-test-payload');
  const m = Buffer.alloc(8 + data.length);
  m[0] = o.type;
  m[1] = 0;
  m.writeUInt16BE(o.id, 4);
  m.writeUInt16BE(o.seq, 6);
  m.set(data, 8);
  m.writeUInt16BE(inetChecksum(m), 2);
  return m;
}

/** A whole Ethernet frame carrying an ICMP echo request. */
export function icmpEchoRequestFrame(o: {
  srcMac: string;
  dstMac: string;
  srcIp: string;
  dstIp: string;
  id: number;
  seq: number;
  data?: Uint8Array;
}): Buffer {
  const icmp = icmpEcho({ type: 8, id: o.id, seq: o.seq, ...(o.data ? { data: o.data } : {}) });
  const ip = ipv4Packet({ src: o.srcIp, dst: o.dstIp, protocol: 1, payload: icmp, id: o.seq });
  return ethernet(o.dstMac, o.srcMac, ETHERTYPE_IPV4, ip);
}

/** A whole Ethernet frame carrying an ICMP echo reply. */
export function icmpEchoReplyFrame(o: {
  srcMac: string;
  dstMac: string;
  srcIp: string;
  dstIp: string;
  id: number;
  seq: number;
  data?: Uint8Array;
}): Buffer {
  const icmp = icmpEcho({ type: 0, id: o.id, seq: o.seq, ...(o.data ? { data: o.data } : {}) });
  const ip = ipv4Packet({ src: o.srcIp, dst: o.dstIp, protocol: 1, payload: icmp, id: o.seq });
  return ethernet(o.dstMac, o.srcMac, ETHERTYPE_IPV4, ip);
}

// ---------------------------------------------------------------------------------------------
// Parsers (return undefined for anything that is not what was asked for)

export interface EthernetView {
  dst: string;
  src: string;
  etherType: number;
  payload: Buffer;
}

export function parseEthernet(frame: Buffer): EthernetView | undefined {
  if (frame.length < ETH_HEADER) return undefined;
  return {
    dst: macString(frame.subarray(0, 6)),
    src: macString(frame.subarray(6, 12)),
    etherType: frame.readUInt16BE(12),
    payload: frame.subarray(ETH_HEADER),
  };
}

export function parseArp(frame: Buffer): (ArpFields & { eth: EthernetView }) | undefined {
  const eth = parseEthernet(frame);
  if (!eth || eth.etherType !== ETHERTYPE_ARP || eth.payload.length < 28) return undefined;
  const p = eth.payload;
  if (p.readUInt16BE(0) !== 1 || p.readUInt16BE(2) !== ETHERTYPE_IPV4 || p[4] !== 6 || p[5] !== 4) return undefined;
  const op = p.readUInt16BE(6);
  if (op !== 1 && op !== 2) return undefined;
  return {
    eth,
    op,
    senderMac: macString(p.subarray(8, 14)),
    senderIp: ipString(p.subarray(14, 18)),
    targetMac: macString(p.subarray(18, 24)),
    targetIp: ipString(p.subarray(24, 28)),
  };
}

export interface Ipv4View {
  eth: EthernetView;
  src: string;
  dst: string;
  protocol: number;
  ttl: number;
  /** true when the header checksum verifies. */
  checksumOk: boolean;
  payload: Buffer;
}

export function parseIpv4(frame: Buffer): Ipv4View | undefined {
  const eth = parseEthernet(frame);
  if (!eth || eth.etherType !== ETHERTYPE_IPV4 || eth.payload.length < 20) return undefined;
  const p = eth.payload;
  if (p[0]! >> 4 !== 4) return undefined;
  const ihl = (p[0]! & 0x0f) * 4;
  const total = p.readUInt16BE(2);
  if (ihl < 20 || total < ihl || total > p.length) return undefined;
  return {
    eth,
    src: ipString(p.subarray(12, 16)),
    dst: ipString(p.subarray(16, 20)),
    protocol: p[9]!,
    ttl: p[8]!,
    checksumOk: inetChecksum(p.subarray(0, ihl)) === 0,
    payload: p.subarray(ihl, total),
  };
}

export interface IcmpEchoView {
  ip: Ipv4View;
  type: 0 | 8;
  id: number;
  seq: number;
  data: Buffer;
  checksumOk: boolean;
}

export function parseIcmpEcho(frame: Buffer): IcmpEchoView | undefined {
  const ip = parseIpv4(frame);
  if (!ip || ip.protocol !== 1 || ip.payload.length < 8) return undefined;
  const m = ip.payload;
  const type = m[0];
  if (type !== 0 && type !== 8) return undefined;
  return {
    ip,
    type,
    id: m.readUInt16BE(4),
    seq: m.readUInt16BE(6),
    data: m.subarray(8),
    checksumOk: inetChecksum(m) === 0,
  };
}

/** Predicate: an ARP reply that says `ip` is at some MAC (returns that MAC). */
export function arpReplyFor(frame: Buffer, ip: string): string | undefined {
  const a = parseArp(frame);
  return a && a.op === 2 && a.senderIp === ip ? a.senderMac : undefined;
}

/** Predicate: an ARP request asking for `ip`. */
export function isArpRequestFor(frame: Buffer, ip: string): boolean {
  const a = parseArp(frame);
  return !!a && a.op === 1 && a.targetIp === ip;
}

/** Predicate: an ICMP echo reply with this id/seq. */
export function isEchoReply(frame: Buffer, o: { id: number; seq: number; from?: string }): boolean {
  const e = parseIcmpEcho(frame);
  return !!e && e.type === 0 && e.id === o.id && e.seq === o.seq && (o.from === undefined || e.ip.src === o.from);
}

/** Predicate: an ICMP echo request (e.g. from `ping` in a namespace) to `dst`. */
export function isEchoRequest(frame: Buffer, o: { to?: string; from?: string } = {}): boolean {
  const e = parseIcmpEcho(frame);
  return !!e && e.type === 8 && (o.to === undefined || e.ip.dst === o.to) && (o.from === undefined || e.ip.src === o.from);
}

// ---------------------------------------------------------------------------------------------
// TCP/UDP over IPv4: enough to check checksums (e.g. after offload normalisation)

/** Internet checksum of the IPv4 pseudo-header + `segment` (0 when the segment's checksum is right). */
export function ipv4L4Checksum(src: string, dst: string, protocol: number, segment: Uint8Array): number {
  const pseudo = Buffer.alloc(12 + segment.length);
  ipBytes(src).copy(pseudo, 0);
  ipBytes(dst).copy(pseudo, 4);
  pseudo[8] = 0;
  pseudo[9] = protocol;
  pseudo.writeUInt16BE(segment.length, 10);
  pseudo.set(segment, 12);
  return inetChecksum(pseudo);
}

export interface L4View {
  ip: Ipv4View;
  protocol: 'tcp' | 'udp';
  srcPort: number;
  dstPort: number;
  /** TCP flags byte (0 for UDP). */
  flags: number;
  payload: Buffer;
  /** The transport checksum verifies (a UDP checksum of 0, "none", counts as ok). */
  checksumOk: boolean;
}

export const TCP_SYN = 0x02;

/** Parses a TCP or UDP segment in an IPv4 frame (undefined for anything else or truncated). */
export function parseL4(frame: Buffer): L4View | undefined {
  const ip = parseIpv4(frame);
  if (!ip) return undefined;
  const seg = ip.payload;
  if (ip.protocol === 17 && seg.length >= 8) {
    const stored = seg.readUInt16BE(6);
    return {
      ip,
      protocol: 'udp',
      srcPort: seg.readUInt16BE(0),
      dstPort: seg.readUInt16BE(2),
      flags: 0,
      payload: seg.subarray(8, seg.readUInt16BE(4)),
      checksumOk: stored === 0 || ipv4L4Checksum(ip.src, ip.dst, 17, seg) === 0,
    };
  }
  if (ip.protocol === 6 && seg.length >= 20) {
    const off = (seg[12]! >> 4) * 4;
    if (off < 20 || off > seg.length) return undefined;
    return {
      ip,
      protocol: 'tcp',
      srcPort: seg.readUInt16BE(0),
      dstPort: seg.readUInt16BE(2),
      flags: seg[13]!,
      payload: seg.subarray(off),
      checksumOk: ipv4L4Checksum(ip.src, ip.dst, 6, seg) === 0,
    };
  }
  return undefined;
}
