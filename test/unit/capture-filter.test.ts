import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { compileFilter, type LinkType } from '../../daemon/capture/filter.js';
import { parseIpv6Text } from '../../daemon/wire/ip-text.js';
import { arpReply, arpRequest, ethernet, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ipv4Packet } from '../support/frames.js';

// ---- frames --------------------------------------------------------------------------------

const MAC_A = '52:54:00:00:00:0a';
const MAC_B = '52:54:00:00:00:0b';

function tcp(sport: number, dport: number): Buffer {
  const b = Buffer.alloc(20);
  b.writeUInt16BE(sport, 0);
  b.writeUInt16BE(dport, 2);
  b[12] = 0x50;
  b[13] = 0x02; // SYN
  return b;
}
function udp(sport: number, dport: number, data = 4): Buffer {
  const b = Buffer.alloc(8 + data);
  b.writeUInt16BE(sport, 0);
  b.writeUInt16BE(dport, 2);
  b.writeUInt16BE(b.length, 4);
  return b;
}
function icmpEcho(type: number): Buffer {
  const b = Buffer.alloc(8);
  b[0] = type;
  return b;
}
function ip6(src: string, dst: string, nh: number, payload: Buffer): Buffer {
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
function ip4frag(src: string, dst: string, protocol: number, payload: Buffer, fragField: number): Buffer {
  const p = ipv4Packet({ src, dst, protocol, payload });
  p.writeUInt16BE(fragField, 6);
  return p;
}
function vlanFrame(vid: number, etherType: number, payload: Buffer): Buffer {
  const inner = Buffer.alloc(4 + payload.length);
  inner.writeUInt16BE(vid, 0);
  inner.writeUInt16BE(etherType, 2);
  payload.copy(inner, 4);
  return ethernet(MAC_B, MAC_A, 0x8100, inner);
}
const eth4 = (p: Buffer, src = MAC_A, dst = MAC_B): Buffer => ethernet(dst, src, ETHERTYPE_IPV4, p);
const eth6 = (p: Buffer, src = MAC_A, dst = MAC_B): Buffer => ethernet(dst, src, ETHERTYPE_IPV6, p);

/** IPv4 with 4 bytes of options (IHL 6): ports sit after the options. */
function ip4opts(src: string, dst: string, protocol: number, payload: Buffer): Buffer {
  const p = ipv4Packet({ src, dst, protocol, payload });
  const q = Buffer.concat([p.subarray(0, 20), Buffer.from([1, 1, 1, 0]), p.subarray(20)]);
  q[0] = 0x46;
  q.writeUInt16BE(q.length, 2);
  return q;
}
/** 802.1ad outer tag then 802.1Q inner tag (QinQ). */
function qinqFrame(outer: number, inner: number, etherType: number, payload: Buffer): Buffer {
  const b = Buffer.alloc(8 + payload.length);
  b.writeUInt16BE(outer, 0);
  b.writeUInt16BE(0x8100, 2);
  b.writeUInt16BE(inner, 4);
  b.writeUInt16BE(etherType, 6);
  payload.copy(b, 8);
  return ethernet(MAC_B, MAC_A, 0x88a8, b);
}

/** The IP packets: also written bare to the raw-IP file. */
const IP_PACKETS: Buffer[] = [
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

const ETHER_FRAMES: Buffer[] = [
  arpRequest({ srcMac: MAC_A, srcIp: '10.0.0.1', targetIp: '10.0.0.2' }),
  arpReply({ srcMac: MAC_B, srcIp: '10.0.0.2', dstMac: MAC_A, dstIp: '10.0.0.1' }),
  ...IP_PACKETS.map((p, i) => ((p[0] as number) >> 4 === 4 ? eth4(p, i % 2 ? MAC_B : MAC_A) : eth6(p, i % 2 ? MAC_A : MAC_B, '33:33:00:00:00:01'))),
  vlanFrame(100, ETHERTYPE_IPV4, ipv4Packet({ src: '10.0.0.1', dst: '10.0.0.9', protocol: 6, payload: tcp(1234, 80) })),
  vlanFrame(200, ETHERTYPE_IPV6, ip6('fd00::9', 'fd00::1', 17, udp(53, 53))),
  qinqFrame(300, 400, ETHERTYPE_IPV4, ipv4Packet({ src: '10.0.0.7', dst: '10.0.0.8', protocol: 17, payload: udp(53, 123) })),
  vlanFrame(100, 0x0806, arpRequest({ srcMac: MAC_A, srcIp: '10.0.0.9', targetIp: '10.0.0.1' }).subarray(14)),
];

/** Classic libpcap file: 24-byte global header, 16-byte record headers; packet i at time i s. */
function pcapFile(frames: Buffer[], linkType: number): Buffer {
  const g = Buffer.alloc(24);
  g.writeUInt32LE(0xa1b2c3d4, 0);
  g.writeUInt16LE(2, 4);
  g.writeUInt16LE(4, 6);
  g.writeUInt32LE(65535, 16);
  g.writeUInt32LE(linkType, 20);
  const parts: Buffer[] = [g];
  frames.forEach((f, i) => {
    const r = Buffer.alloc(16);
    r.writeUInt32LE(i, 0);
    r.writeUInt32LE(f.length, 8);
    r.writeUInt32LE(f.length, 12);
    parts.push(r, f);
  });
  return Buffer.concat(parts);
}

// ---- parser ---------------------------------------------------------------------------------

function err(text: string): { error: string; at: number } {
  const c = compileFilter(text);
  if (c.ok) throw new Error(`expected '${text}' to be refused`);
  return { error: c.error, at: c.at };
}
function sel(text: string, frames: Buffer[], lt: LinkType = 'ether'): number[] {
  const c = compileFilter(text);
  if (!c.ok) throw new Error(`'${text}' refused: ${c.error}`);
  return frames.flatMap((f, i) => (c.match(f, lt) ? [i] : []));
}

describe('capture filter: parser', () => {
  it('and/or have one precedence and associate left; not binds tighter', () => {
    // `arp or ip and tcp` is (arp or ip) and tcp in pcap-filter: no ARP frame passes.
    expect(sel('arp or ip and tcp', ETHER_FRAMES)).toEqual(sel('(arp or ip) and tcp', ETHER_FRAMES));
    expect(sel('arp or ip and tcp', ETHER_FRAMES)).not.toContain(0);
    expect(sel('tcp and ip or arp', ETHER_FRAMES)).toContain(0);
    expect(sel('not arp and not ip6', ETHER_FRAMES)).toEqual(sel('(not arp) and (not ip6)', ETHER_FRAMES));
    expect(sel('! arp && ! ip6', ETHER_FRAMES)).toEqual(sel('not arp and not ip6', ETHER_FRAMES));
    expect(sel('', ETHER_FRAMES)).toHaveLength(ETHER_FRAMES.length);
  });

  it('a bare value repeats the previous qualifiers', () => {
    expect(sel('host 10.0.0.3 or 8.8.8.8', ETHER_FRAMES)).toEqual(sel('host 10.0.0.3 or host 8.8.8.8', ETHER_FRAMES));
    expect(sel('tcp dst port 80 or 443', ETHER_FRAMES)).toEqual(sel('tcp dst port 80 or tcp dst port 443', ETHER_FRAMES));
    expect(err('tcp or 10.0.0.1').error).toMatch(/bare value needs a qualifier/);
    expect(err('(host 10.0.0.1) or 10.0.0.2').at).toBe(19);
  });

  it('errors name the bad token and its column', () => {
    expect(err('port foo')).toEqual({ error: "expected a port number at 'foo' (column 6)", at: 5 });
    expect(err('host 10.0.0.1 and')).toEqual({ error: 'expected a primitive (host, net, port, tcp, …) at the end (column 18)', at: 17 });
    expect(err('(tcp or udp').error).toBe("expected ')' at the end (column 12)");
    expect(err('tcp)').error).toBe("unbalanced ')' at ')' (column 4)");
    expect(err('tcp udp').error).toBe("expected 'and' or 'or' at 'udp' (column 5)");
    expect(err('host example.com').error).toMatch(/expected an IPv4 or IPv6 address at 'example.com' \(column 6\)/);
    expect(err('net 10.0.0.1/8').error).toMatch(/non-network bits/);
    expect(err('portrange 10-').error).toMatch(/port range/);
    expect(err('port 70000').error).toMatch(/port number/);
    expect(err('ether host 10.0.0.1').error).toMatch(/MAC address/);
    expect(err('vlan 5000').error).toMatch(/VLAN id/);
    expect(err('foo').error).toMatch(/host names are not looked up/);
  });

  it('refuses everything outside the subset, saying so', () => {
    for (const [text, at] of [
      ['greater 100', 0],
      ['less 100', 0],
      ['ip proto 6', 3],
      ['ip[0] = 0x45', 2],
      ['broadcast', 0],
      ['ether multicast', 6],
      ['gateway 10.0.0.1', 0],
      ['sctp', 0],
      ['tcp and len > 5', 8],
      ['tcp[13] & 2 != 0', 3],
    ] as const) {
      const e = err(text);
      expect(e.error, text).toMatch(/not supported/);
      expect(e.at, text).toBe(at);
    }
  });

  it('match() never throws and never matches past the end on arbitrary bytes', () => {
    const filters = ['host 10.0.0.1 or port 80', 'vlan and tcp port 80', 'net fd00::/16 or portrange 1-100', 'not ether src 52:54:00:00:00:0a', 'icmp6 or udp'].map(
      (t) => compileFilter(t),
    );
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 80 }), fc.boolean(), (bytes, raw) => {
        for (const f of filters) if (f.ok) f.match(Buffer.from(bytes), raw ? 'raw' : 'ether');
      }),
    );
    // A frame cut inside the IPv4 header is rejected (as BPF does) even under `not`.
    const cut = (ETHER_FRAMES[2] as Buffer).subarray(0, 30);
    expect(sel('not host 10.0.0.7', [cut])).toEqual([]);
  });
});

// ---- differential test against tcpdump ----------------------------------------------------------

/** Expressions covering every keyword and combination; each must compile. */
const EXPRS = [
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

const tcpdump = spawnSync('tcpdump', ['--version'], { encoding: 'utf8' });
const dir = mkdtempSync(join(tmpdir(), 'mvnet-filter-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Packet indices tcpdump selects, or undefined when tcpdump refuses the expression for this link type. */
function tcpdumpSelect(file: string, expr: string): number[] | undefined {
  const r = spawnSync('tcpdump', ['-nn', '-q', '-tt', '-r', file, expr], { encoding: 'utf8' });
  // pcap's optimizer refuses an expression it proves matches nothing (`ip and vlan`): that selects [].
  if (r.status !== 0) return /rejects all packets/.test(r.stderr) ? [] : undefined;
  return r.stdout
    .split('\n')
    .map((l) => /^(\d+)\.\d{6} /.exec(l))
    .flatMap((m) => (m ? [Number(m[1])] : []));
}

describe('capture filter: same packets as tcpdump', () => {
  it('tcpdump is installed (Debian package tcpdump)', () => {
    expect(tcpdump.error, 'tcpdump is missing: apt-get install tcpdump').toBeUndefined();
    expect(tcpdump.status).toBe(0);
  });

  for (const [name, frames, linkType, lt] of [
    ['ethernet', ETHER_FRAMES, 1, 'ether'],
    ['raw IP', IP_PACKETS, 101, 'raw'],
  ] as const) {
    it(`selects the same ${name} packets as tcpdump for each expression`, () => {
      expect(tcpdump.error, 'tcpdump is missing: apt-get install tcpdump').toBeUndefined();
      const file = join(dir, `${lt}.pcap`);
      writeFileSync(file, pcapFile([...frames], linkType));
      let compared = 0;
      for (const expr of EXPRS) {
        const want = tcpdumpSelect(file, expr);
        if (want === undefined) {
          // tcpdump refuses ether and vlan on raw IP; on Ethernet every expression must run.
          expect(lt, `tcpdump refused '${expr}' on ${name}`).toBe('raw');
          continue;
        }
        expect(sel(expr, [...frames], lt), `${expr} on ${name}`).toEqual(want);
        compared++;
      }
      expect(compared).toBeGreaterThan(lt === 'raw' ? 30 : EXPRS.length - 1);
    });
  }
});
