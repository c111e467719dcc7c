/** The capture filter's test corpus: frames and expressions (test/unit/capture-filter*.test.ts). */
import { parseIpv6Text } from '../../daemon/wire/ip-text.js';
import { arpReply, arpRequest, ethernet, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ipv4Packet } from './frames.js';

// ---- frames --------------------------------------------------------------------------------

export const MAC_A = '52:54:00:00:00:0a';
export const MAC_B = '52:54:00:00:00:0b';

export function tcp(sport: number, dport: number): Buffer {
  const b = Buffer.alloc(20);
  b.writeUInt16BE(sport, 0);
  b.writeUInt16BE(dport, 2);
  b[12] = 0x50;
  b[13] = 0x02; // SYN
  return b;
}
export function udp(sport: number, dport: number, data = 4): Buffer {
  const b = Buffer.alloc(8 + data);
  b.writeUInt16BE(sport, 0);
  b.writeUInt16BE(dport, 2);
  b.writeUInt16BE(b.length, 4);
  return b;
}
export function icmpEcho(type: number): Buffer {
  const b = Buffer.alloc(8);
  b[0] = type;
  return b;
}
export function ip6(src: string, dst: string, nh: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(40 + payload.length);
  h[0] = 0x60;
  h.writeUInt16BE(payload.length, 4);
  h[6] = nh;
  h[7] = 64;
  const s = parseIpv6Text(src);
  const d = parseIpv6Text(dst);
  if (!s.ok || !d.ok) throw new Error('bad test address');
  s.value.copy(h, 8);
  d.value.copy(h, 24);
  payload.copy(h, 40);
  return h;
}
/** IPv4 packet with the given fragment field (flags + offset) instead of DF. */
export function ip4frag(src: string, dst: string, protocol: number, payload: Buffer, fragField: number): Buffer {
  const p = ipv4Packet({ src, dst, protocol, payload });
  p.writeUInt16BE(fragField, 6);
  return p;
}
export function vlanFrame(vid: number, etherType: number, payload: Buffer): Buffer {
  const inner = Buffer.alloc(4 + payload.length);
  inner.writeUInt16BE(vid, 0);
  inner.writeUInt16BE(etherType, 2);
  payload.copy(inner, 4);
  return ethernet(MAC_B, MAC_A, 0x8100, inner);
}
export const eth4 = (p: Buffer, src = MAC_A, dst = MAC_B): Buffer => ethernet(dst, src, ETHERTYPE_IPV4, p);
export const eth6 = (p: Buffer, src = MAC_A, dst = MAC_B): Buffer => ethernet(dst, src, ETHERTYPE_IPV6, p);

/** IPv4 with 4 bytes of options (IHL 6): ports sit after the options. */
export function ip4opts(src: string, dst: string, protocol: number, payload: Buffer): Buffer {
  const p = ipv4Packet({ src, dst, protocol, payload });
  const q = Buffer.concat([p.subarray(0, 20), Buffer.from([1, 1, 1, 0]), p.subarray(20)]);
  q[0] = 0x46;
  q.writeUInt16BE(q.length, 2);
  return q;
}
/** 802.1ad outer tag then 802.1Q inner tag (QinQ). */
export function qinqFrame(outer: number, inner: number, etherType: number, payload: Buffer): Buffer {
  const b = Buffer.alloc(8 + payload.length);
  b.writeUInt16BE(outer, 0);
  b.writeUInt16BE(0x8100, 2);
  b.writeUInt16BE(inner, 4);
  b.writeUInt16BE(etherType, 6);
  payload.copy(b, 8);
  return ethernet(MAC_B, MAC_A, 0x88a8, b);
}

/** The IP packets: also written bare to the raw-IP file. */
export const IP_PACKETS: Buffer[] = [
  ipv4Packet({ src: '10.0.0.1', dst: '10.0.0.2', protocol: 6, payload: tcp(1234, 80) }),
  ipv4Packet({ src: '10.0.0.2', dst: '10.0.0.1', protocol: 6, payload: tcp(80, 1234) }),
  ipv4Packet({ src: '10.0.0.1', dst: '192.168.1.9', protocol: 17, payload: udp(5353, 53) }),
  ipv4Packet({ src: '10.0.0.3', dst: '8.8.8.8', protocol: 1, payload: icmpEcho(8) }),
  ip6('fd00::1', 'fd00::2', 6, tcp(40000, 443)),
  ip6('fd00::2', '2001:db8::5', 17, udp(53, 5353)),
  ip6('fd00::1', 'ff02::1', 58, icmpEcho(128)),
  // Non-first fragment: the bytes where ports would be say 53, but pcap's port must not look.
  ip4frag('10.0.0.1', '10.0.0.2', 17, udp(53, 53), 185),
  // First fragment (MF, offset 0): ports are matched.
  ip4frag('10.0.0.1', '10.0.0.2', 17, udp(7000, 53, 40), 0x2000),
  // Hop-by-Hop (8 bytes, next header TCP) before TCP: pcap's tcp/port do not see through it.
  ip6('fd00::1', 'fd00::2', 0, Buffer.concat([Buffer.from([6, 0, 1, 4, 0, 0, 0, 0]), tcp(40001, 80)])),
  // Fragment header (next header UDP) before UDP: pcap's `udp` sees it, `port` does not.
  ip6('fd00::2', 'fd00::1', 44, Buffer.concat([Buffer.from([17, 0, 0, 1, 0, 0, 0, 7]), udp(53, 9999)])),
  ipv4Packet({ src: '172.16.5.5', dst: '10.1.2.3', protocol: 6, payload: tcp(8080, 8081) }),
  ipv4Packet({ src: '10.1.2.3', dst: '172.16.5.5', protocol: 17, payload: udp(8081, 1023) }),
  ip4opts('10.0.0.4', '10.0.0.1', 6, tcp(22, 80)),
  ipv4Packet({ src: '10.0.0.5', dst: '10.0.0.6', protocol: 17, payload: udp(53, 53) }),
];

export const ETHER_FRAMES: Buffer[] = [
  arpRequest({ srcMac: MAC_A, srcIp: '10.0.0.1', targetIp: '10.0.0.2' }),
  arpReply({ srcMac: MAC_B, srcIp: '10.0.0.2', dstMac: MAC_A, dstIp: '10.0.0.1' }),
  ...IP_PACKETS.map((p, i) => ((p[0] as number) >> 4 === 4 ? eth4(p, i % 2 ? MAC_B : MAC_A) : eth6(p, i % 2 ? MAC_A : MAC_B, '33:33:00:00:00:01'))),
  vlanFrame(100, ETHERTYPE_IPV4, ipv4Packet({ src: '10.0.0.1', dst: '10.0.0.9', protocol: 6, payload: tcp(1234, 80) })),
  vlanFrame(200, ETHERTYPE_IPV6, ip6('fd00::9', 'fd00::1', 17, udp(53, 53))),
  qinqFrame(300, 400, ETHERTYPE_IPV4, ipv4Packet({ src: '10.0.0.7', dst: '10.0.0.8', protocol: 17, payload: udp(53, 123) })),
  vlanFrame(100, 0x0806, arpRequest({ srcMac: MAC_A, srcIp: '10.0.0.9', targetIp: '10.0.0.1' }).subarray(14)),
];


/** Expressions covering every keyword and combination; each must compile. */
export const EXPRS = [
  'arp',
  'ip',
  'ip6',
  'tcp',
  'udp',
  'icmp',
  'icmp6',
  'vlan',
  'vlan 100',
  'vlan 200 and udp',
  'vlan and arp',
  'vlan 100 and host 10.0.0.9',
  'tcp or vlan',
  'vlan or tcp',
  'not vlan and ip',
  'host 10.0.0.1',
  'src host 10.0.0.2',
  'dst host 10.0.0.2',
  'src 10.0.0.1 and dst 10.0.0.2',
  'src or dst host 10.0.0.9',
  'src and dst host 10.0.0.1',
  'host 10.0.0.3 or 8.8.8.8',
  'ip host 10.0.0.1',
  'arp host 10.0.0.2',
  'host fd00::1',
  'dst host ff02::1',
  'net 10.0.0.0/24',
  'src net 172.16.0.0/12',
  'dst net 10.0.0.0 mask 255.255.255.0',
  'net fd00::/16',
  'dst net 2001:db8::/32',
  'ip6 net fd00::/8 and not icmp6',
  'port 80',
  'port 53',
  'src port 80',
  'dst port 53 or 443',
  'tcp port 80',
  'udp port 53',
  'udp src port 53',
  'portrange 8000-8100',
  'src portrange 1000-2000',
  'dst portrange 100-1023',
  'udp portrange 8081-8090',
  'ether host 52:54:00:00:00:0a',
  'ether src 52:54:00:00:00:0b',
  'ether dst 33:33:00:00:00:01',
  'ether src host 52:54:00:00:00:0a and not arp',
  'tcp and not port 80',
  'not tcp',
  '!(ip or arp)',
  'arp or ip and tcp',
  'tcp and ip or arp',
  'host 10.0.0.1 and (port 80 or port 53)',
  'host 10.0.0.1 and port 80 or port 53',
  'not host 10.0.0.1 and not net fd00::/16',
  'udp && !port 53 || icmp',
  '(tcp or udp) and not (src net 10.0.0.0/8)',
  'src and dst port 53',
  'dst port 80 and src port 22',
  'host 10.0.0.1 or fd00::2',
  'host 10.0.0.1 and not 10.0.0.2',
  'vlan and not vlan 100',
  'port 80 and vlan',
  'vlan 300 and vlan 400 and udp port 53',
  'vlan and vlan and host 10.0.0.8',
  'icmp or icmp6 or arp',
];
