/**
 * One human line per captured packet, as `mvnet capture` prints without -w: time, point,
 * direction, length, a short decode (Ethernet/VLAN, ARP, IPv4, IPv6, TCP, UDP, ICMP, ICMPv6) and
 * the packet's comment. Reads only inside the captured bytes: a packet cut by the snaplen or
 * malformed says so instead of guessing.
 */

const ETH_IPV4 = 0x0800;
const ETH_ARP = 0x0806;
const ETH_IPV6 = 0x86dd;
const ETH_VLAN = [0x8100, 0x88a8, 0x9100];

function mac(b: Buffer, off: number): string {
  return Array.from(b.subarray(off, off + 6), (x) => x.toString(16).padStart(2, '0')).join(':');
}

function ipv4(b: Buffer, off: number): string {
  return `${b[off]}.${b[off + 1]}.${b[off + 2]}.${b[off + 3]}`;
}

/** RFC 5952 text: lower case, the longest run of two or more zero groups as `::`. */
export function ipv6(b: Buffer, off: number): string {
  const g: number[] = [];
  for (let i = 0; i < 8; i++) g.push(b.readUInt16BE(off + 2 * i));
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (from: number, to: number): string => g.slice(from, to).map((x) => x.toString(16)).join(':');
  if (best < 0) return hex(0, 8);
  return `${hex(0, best)}::${hex(best + bestLen, 8)}`;
}

const TRUNC = '[truncated]';

function tcp(b: Buffer, off: number, end: number, src: string, dst: string): string {
  if (end - off < 20) return `${src} > ${dst}: TCP ${TRUNC}`;
  const sport = b.readUInt16BE(off);
  const dport = b.readUInt16BE(off + 2);
  const seq = b.readUInt32BE(off + 4);
  const ack = b.readUInt32BE(off + 8);
  const hlen = (b[off + 12]! >> 4) * 4;
  const fl = b[off + 13]!;
  const flags =
    (fl & 0x02 ? 'S' : '') + (fl & 0x01 ? 'F' : '') + (fl & 0x04 ? 'R' : '') + (fl & 0x08 ? 'P' : '') + (fl & 0x10 ? '.' : '') + (fl & 0x20 ? 'U' : '');
  const win = b.readUInt16BE(off + 14);
  const parts = [`${src}.${sport} > ${dst}.${dport}: TCP [${flags || 'none'}] seq ${seq}`];
  if (fl & 0x10) parts.push(`ack ${ack}`);
  parts.push(`win ${win}`);
  if (hlen < 20) parts.push('[bad header length]');
  else parts.push(`length ${Math.max(0, end - off - hlen)}`);
  return parts.join(' ');
}

function udp(b: Buffer, off: number, end: number, src: string, dst: string): string {
  if (end - off < 8) return `${src} > ${dst}: UDP ${TRUNC}`;
  const sport = b.readUInt16BE(off);
  const dport = b.readUInt16BE(off + 2);
  const len = b.readUInt16BE(off + 4);
  const what = sport === 67 || sport === 68 || dport === 67 || dport === 68 ? 'DHCP' : sport === 53 || dport === 53 ? 'DNS' : 'UDP';
  return `${src}.${sport} > ${dst}.${dport}: ${what} length ${Math.max(0, len - 8)}`;
}

const ICMP4: Record<number, string> = { 0: 'echo reply', 3: 'destination unreachable', 5: 'redirect', 8: 'echo request', 9: 'router advertisement', 10: 'router solicitation', 11: 'time exceeded', 12: 'parameter problem' };
const ICMP6: Record<number, string> = {
  1: 'destination unreachable',
  2: 'packet too big',
  3: 'time exceeded',
  4: 'parameter problem',
  128: 'echo request',
  129: 'echo reply',
  133: 'router solicitation',
  134: 'router advertisement',
  135: 'neighbor solicitation',
  136: 'neighbor advertisement',
  137: 'redirect',
};

function icmp(b: Buffer, off: number, end: number, src: string, dst: string, v6: boolean): string {
  const name = v6 ? 'ICMP6' : 'ICMP';
  if (end - off < 4) return `${src} > ${dst}: ${name} ${TRUNC}`;
  const type = b[off]!;
  const code = b[off + 1]!;
  const t = (v6 ? ICMP6 : ICMP4)[type] ?? `type ${type} code ${code}`;
  const echo = (v6 ? type === 128 || type === 129 : type === 0 || type === 8) && end - off >= 8;
  return `${src} > ${dst}: ${name} ${t}${echo ? `, id ${b.readUInt16BE(off + 4)}, seq ${b.readUInt16BE(off + 6)}` : ''}`;
}

function transport(proto: number, b: Buffer, off: number, end: number, src: string, dst: string, v6: boolean): string {
  if (proto === 6) return tcp(b, off, end, src, dst);
  if (proto === 17) return udp(b, off, end, src, dst);
  if (proto === 1 && !v6) return icmp(b, off, end, src, dst, false);
  if (proto === 58 && v6) return icmp(b, off, end, src, dst, true);
  return `${src} > ${dst}: ip-proto-${proto}`;
}

function decodeIpv4(b: Buffer, off: number): string {
  if (b.length - off < 20) return `IPv4 ${TRUNC}`;
  if (b[off]! >> 4 !== 4) return 'IPv4 [bad version]';
  const ihl = (b[off]! & 15) * 4;
  const total = b.readUInt16BE(off + 2);
  const frag = b.readUInt16BE(off + 6);
  const proto = b[off + 9]!;
  const src = ipv4(b, off + 12);
  const dst = ipv4(b, off + 16);
  const end = Math.min(b.length, off + Math.max(total, ihl));
  const fragOff = (frag & 0x1fff) * 8;
  const mf = (frag & 0x2000) !== 0;
  const fragText = fragOff > 0 || mf ? ` [frag offset ${fragOff}${mf ? '+' : ''}]` : '';
  if (fragOff > 0) return `IPv4 ${src} > ${dst}: proto ${proto}${fragText}`;
  return `IPv4 ${transport(proto, b, off + ihl, end, src, dst, false)}${fragText}`;
}

function decodeIpv6(b: Buffer, off: number): string {
  if (b.length - off < 40) return `IPv6 ${TRUNC}`;
  if (b[off]! >> 4 !== 6) return 'IPv6 [bad version]';
  const payload = b.readUInt16BE(off + 4);
  let next = b[off + 6]!;
  const src = ipv6(b, off + 8);
  const dst = ipv6(b, off + 24);
  const end = Math.min(b.length, off + 40 + payload);
  let p = off + 40;
  // Walk the usual extension headers (hop-by-hop, routing, destination options, fragment).
  for (let hops = 0; hops < 8 && (next === 0 || next === 43 || next === 60 || next === 44); hops++) {
    if (end - p < 8) return `IPv6 ${src} > ${dst}: ${TRUNC}`;
    if (next === 44) {
      const fragOff = b.readUInt16BE(p + 2) & 0xfff8;
      if (fragOff > 0) return `IPv6 ${src} > ${dst}: proto ${b[p]} [frag offset ${fragOff}]`;
      next = b[p]!;
      p += 8;
    } else {
      const len = (b[p + 1]! + 1) * 8;
      next = b[p]!;
      p += len;
    }
  }
  return `IPv6 ${transport(next, b, p, end, src, dst, true)}`;
}

function decodeArp(b: Buffer, off: number): string {
  if (b.length - off < 28) return `ARP ${TRUNC}`;
  const op = b.readUInt16BE(off + 6);
  const sha = mac(b, off + 8);
  const spa = ipv4(b, off + 14);
  const tpa = ipv4(b, off + 24);
  if (op === 1) return `ARP who-has ${tpa} tell ${spa}`;
  if (op === 2) return `ARP reply ${spa} is-at ${sha}`;
  return `ARP op ${op}`;
}

/** A short decode of one frame ('ether': Ethernet II; 'raw': a bare IPv4/IPv6 packet). */
export function describeFrame(b: Buffer, link: 'ether' | 'raw'): string {
  if (link === 'raw') {
    if (b.length < 1) return `IP ${TRUNC}`;
    const v = b[0]! >> 4;
    return v === 4 ? decodeIpv4(b, 0) : v === 6 ? decodeIpv6(b, 0) : `IP [bad version ${v}]`;
  }
  if (b.length < 14) return `Ethernet ${TRUNC}`;
  const prefix = `${mac(b, 6)} > ${mac(b, 0)}`;
  let type = b.readUInt16BE(12);
  let off = 14;
  const vlans: number[] = [];
  while (ETH_VLAN.includes(type) && vlans.length < 4) {
    if (b.length - off < 4) return `${prefix} vlan ${TRUNC}`;
    vlans.push(b.readUInt16BE(off) & 0x0fff);
    type = b.readUInt16BE(off + 2);
    off += 4;
  }
  const vlanText = vlans.map((v) => `vlan ${v}, `).join('');
  const rest =
    type === ETH_IPV4 ? decodeIpv4(b, off) : type === ETH_IPV6 ? decodeIpv6(b, off) : type === ETH_ARP ? decodeArp(b, off) : type < 0x600 ? `802.3 length ${type}` : `ethertype 0x${type.toString(16).padStart(4, '0')}`;
  return `${prefix}, ${vlanText}${rest}`;
}

/** HH:MM:SS.uuuuuu in local time, as tcpdump prints. */
export function formatTime(ns: bigint): string {
  const ms = Number(ns / 1_000_000n);
  const d = new Date(ms);
  const us = Number((ns / 1000n) % 1_000_000n);
  const p2 = (n: number): string => String(n).padStart(2, '0');
  return `${p2(d.getHours())}:${p2(d.getMinutes())}:${p2(d.getSeconds())}.${String(us).padStart(6, '0')}`;
}

export interface PacketLine {
  readonly timeNs: bigint;
  readonly point: string;
  readonly direction: 'in' | 'out' | undefined;
  readonly length: number;
  readonly data: Buffer;
  readonly link: 'ether' | 'raw';
  readonly comment: string | undefined;
}

/** `12:00:01.000002 vm1 out 98 aa:.. > bb:.., IPv4 10.0.0.2 > 10.0.0.1: ICMP echo request, id 1, seq 1 [comment]` */
export function packetLine(p: PacketLine): string {
  const cut = p.data.length < p.length ? ` (${p.data.length} captured)` : '';
  const comment = p.comment !== undefined ? ` [${p.comment.replace(/[\r\n]+/g, ' ')}]` : '';
  return `${formatTime(p.timeNs)} ${p.point} ${p.direction ?? '-'} ${p.length}${cut} ${describeFrame(p.data, p.link)}${comment}`;
}
