import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  encodeEpb,
  encodeEpbInto,
  encodeIdb,
  encodeIsb,
  encodeShb,
  epbLength,
  LINKTYPE_ETHERNET,
  LINKTYPE_RAW,
  PcapngWriter,
  type PacketOptions,
} from '../../daemon/capture/pcapng.js';
import { encodeArp, ARP_REQUEST } from '../../daemon/wire/arp.js';
import { encodeEthernet, ETHERTYPE_ARP, ETHERTYPE_IPV4 } from '../../daemon/wire/ethernet.js';
import { encodeIcmpv4 } from '../../daemon/wire/icmpv4.js';
import { ipv4TextToNumber } from '../../daemon/wire/ip-text.js';
import { encodeIpv4, IPPROTO_ICMP, IPPROTO_TCP } from '../../daemon/wire/ipv4.js';
import { MAC_BROADCAST, type Mac } from '../../daemon/wire/mac.js';
import { encodeTcp, TCP_ACK, TCP_SYN } from '../../daemon/wire/tcp.js';

/** "0a 0d …" with spaces and newlines → bytes, so the expected blocks read like a hex dump. */
function hex(s: string): Buffer {
  return Buffer.from(s.replace(/\s+/g, ''), 'hex');
}
const ascii = (s: string): string => Buffer.from(s, 'latin1').toString('hex');

describe('pcapng blocks, byte for byte', () => {
  it('Section Header Block: magic, version 1.0, length -1, shb_userappl padded, endofopt, length twice', () => {
    expect(encodeShb({ userappl: 'mvnet 1' })).toEqual(
      hex(`0a0d0d0a 2c000000  4d3c2b1a 0100 0000  ffffffff ffffffff
           0400 0700 ${ascii('mvnet 1')}00  0000 0000  2c000000`),
    );
  });

  it('Section Header Block with shb_os before shb_userappl', () => {
    expect(encodeShb({ userappl: 'mvnet 1', os: 'Linux' })).toEqual(
      hex(`0a0d0d0a 38000000  4d3c2b1a 0100 0000  ffffffff ffffffff
           0300 0500 ${ascii('Linux')}000000
           0400 0700 ${ascii('mvnet 1')}00  0000 0000  38000000`),
    );
  });

  it('Interface Description Block: link type, snaplen, if_name, if_tsresol 9', () => {
    expect(encodeIdb({ linkType: LINKTYPE_ETHERNET, snaplen: 65535, name: 'vm1' })).toEqual(
      hex(`01000000 28000000  0100 0000 ffff0000
           0200 0300 ${ascii('vm1')}00  0900 0100 09000000  0000 0000  28000000`),
    );
    expect(encodeIdb({ linkType: LINKTYPE_RAW, snaplen: 0, name: 'tun1', description: 'ab' })).toEqual(
      hex(`01000000 30000000  6500 0000 00000000
           0200 0400 ${ascii('tun1')}  0300 0200 ${ascii('ab')}0000  0900 0100 09000000  0000 0000  30000000`),
    );
  });

  it('Enhanced Packet Block: id, 64-bit ns timestamp high word first, lengths, padding, flags, comment', () => {
    const data = hex('aabbccddee');
    expect(encodeEpb(0, 0x0102030405060708n, data, 0, { direction: 'out', comment: 'hi' })).toEqual(
      hex(`06000000 3c000000  00000000  04030201 08070605  05000000 05000000
           aabbccdd ee000000
           0200 0400 02000000  0100 0200 ${ascii('hi')}0000  0000 0000  3c000000`),
    );
    expect(encodeEpb(3, 0x0102030405060708n, data, 0, { direction: 'in' })).toEqual(
      hex(`06000000 34000000  03000000  04030201 08070605  05000000 05000000
           aabbccdd ee000000  0200 0400 01000000  0000 0000  34000000`),
    );
  });

  it('EPB without options has no opt_endofopt; snaplen cuts the data, the original length stays', () => {
    expect(encodeEpb(1, 0, hex('aabbccddee'), 4)).toEqual(
      hex(`06000000 24000000  01000000  00000000 00000000  04000000 05000000  aabbccdd  24000000`),
    );
    // A TSO super-frame: only 5 bytes at hand, 9000 on the wire.
    expect(encodeEpb(1, 0, hex('aabbccddee'), 4, { originalLength: 9000 }).readUInt32LE(24)).toBe(9000);
    expect(() => encodeEpb(1, 0, hex('aabbccddee'), 0, { originalLength: 4 })).toThrow(/original length/);
  });

  it('a timestamp as a number equals the same value as a bigint, also above 2^53', () => {
    for (const n of [0, 1, 2 ** 32 - 1, 2 ** 32, 2 ** 53 + 2, 1_700_000_000_123_456_768]) {
      expect(encodeEpb(0, n, hex('00'), 0)).toEqual(encodeEpb(0, BigInt(n), hex('00'), 0));
    }
    expect(() => encodeEpb(0, -1, hex('00'), 0)).toThrow(RangeError);
    expect(() => encodeEpb(0, 1.5, hex('00'), 0)).toThrow(RangeError);
    expect(() => encodeEpb(0, 1n << 64n, hex('00'), 0)).toThrow(RangeError);
  });

  it('UTF-8 comments: the option length counts bytes, not characters', () => {
    const b = encodeEpb(0, 0, hex('00'), 0, { comment: 'é' });
    expect(b.subarray(32, 40)).toEqual(hex(`0100 0200 c3a9 0000`));
  });

  it('encodeEpbInto writes exactly epbLength bytes at the offset, zeroing padding in a dirty buffer', () => {
    const o: PacketOptions = { direction: 'in', comment: 'abcde' };
    const data = hex('0102030405060708090a');
    const want = encodeEpb(2, 123456789n, data, 7, o);
    expect(want.length).toBe(epbLength(7, o));
    const buf = Buffer.alloc(want.length + 20, 0xee);
    expect(encodeEpbInto(buf, 10, 2, 123456789n, data, 7, o)).toBe(want.length);
    expect(buf.subarray(10, 10 + want.length)).toEqual(want);
    expect(buf.subarray(0, 10)).toEqual(Buffer.alloc(10, 0xee));
    expect(buf.subarray(10 + want.length)).toEqual(Buffer.alloc(10, 0xee));
    expect(() => encodeEpbInto(buf, 11 + 10 + want.length - 10, 2, 0, data, 7, o)).toThrow(/does not fit/);
  });

  it('Interface Statistics Block: isb_ifrecv and isb_ifdrop as 64-bit counters', () => {
    expect(encodeIsb(0, 0x0000000100000002n, { ifRecv: 10, ifDrop: 2n })).toEqual(
      hex(`05000000 34000000  00000000  01000000 02000000
           0400 0800 0a000000 00000000  0500 0800 02000000 00000000  0000 0000  34000000`),
    );
    expect(encodeIsb(1, 0, {})).toEqual(hex(`05000000 18000000 01000000 00000000 00000000 18000000`));
  });

  it('PcapngWriter numbers interfaces, applies their snaplen, and repeats the preamble', () => {
    const w = new PcapngWriter({ userappl: 'mvnet 1' });
    const a = w.addInterface({ linkType: LINKTYPE_ETHERNET, snaplen: 4, name: 'vm1' });
    const b = w.addInterface({ linkType: LINKTYPE_RAW, snaplen: 0, name: 'tun1' });
    expect([a.id, b.id]).toEqual([0, 1]);
    expect(w.preamble()).toEqual(Buffer.concat([encodeShb({ userappl: 'mvnet 1' }), a.block, b.block]));
    const data = hex('aabbccddee');
    expect(w.packet(0, 5n, data)).toEqual(encodeEpb(0, 5n, data, 4));
    expect(w.packet(1, 5n, data)).toEqual(encodeEpb(1, 5n, data, 0));
    expect(w.packetLength(0, 5)).toBe(36);
    expect(() => w.packet(2, 0, data)).toThrow(/no pcapng interface 2/);
    expect(() => w.stats(2, 0, {})).toThrow(/no pcapng interface 2/);
  });
});

// ---------------------------------------------------------------------------------------------
// Real frames, read back by tshark and tcpdump.

/** The test needs these tools; a missing one is a failure (install with scripts/deps.sh), not a skip. */
function requireTool(tool: string): void {
  const r = spawnSync(tool, ['--version'], { stdio: 'ignore' });
  if (r.error) {
    throw new Error(`${tool} is required to check pcapng output but was not found (${r.error.message}); install it with scripts/deps.sh`);
  }
}

const mac = (s: string): Mac => parseInt(s.replace(/:/g, ''), 16);
const ip = ipv4TextToNumber;
const VM_MAC = mac('02:00:00:00:00:01');
const GW_MAC = mac('02:00:00:00:00:fe');
const VM_IP = ip('10.0.0.2');
const GW_IP = ip('10.0.0.1');
const FAR_IP = ip('192.0.2.7');

function ipv4(src: number, dst: number, protocol: number, payload: Buffer): Buffer {
  return encodeIpv4({ dscp: 0, ecn: 0, id: 1, dontFragment: true, moreFragments: false, fragmentOffset: 0, ttl: 64, protocol, src, dst, payload });
}
function eth(src: Mac, dst: Mac, etherType: number, payload: Buffer): Buffer {
  return encodeEthernet({ src, dst, etherType, payload });
}
function echo(kind: 'echo-request' | 'echo-reply', src: number, dst: number, size: number): Buffer {
  return ipv4(src, dst, IPPROTO_ICMP, encodeIcmpv4({ kind, id: 0x1234, seq: 1, data: Buffer.alloc(size, 0x61) }));
}
function tcp(src: number, dst: number, flags: number, payload: Buffer): Buffer {
  const seg = encodeTcp({ srcPort: 40000, dstPort: 443, seq: 1000, ack: 0, flags, window: 64240, options: flags & TCP_SYN ? { mss: 1460 } : undefined, payload }, { version: 4, src, dst });
  return ipv4(src, dst, IPPROTO_TCP, seg);
}
const arpRequest = eth(VM_MAC, MAC_BROADCAST, ETHERTYPE_ARP, encodeArp({ op: ARP_REQUEST, senderMac: VM_MAC, senderIp: VM_IP, targetMac: 0, targetIp: GW_IP }));

interface Sent {
  iface: 'vm1' | 'tun1';
  data: Buffer;
  dir?: 'in' | 'out';
  comment?: string;
  originalLength?: number;
  protocol: string;
}

/** The capture: what vm1 asked for on its port, and what left by tun1. */
const SENT: Sent[] = [
  { iface: 'vm1', data: arpRequest, dir: 'in', protocol: 'ARP' },
  { iface: 'vm1', data: eth(VM_MAC, GW_MAC, ETHERTYPE_IPV4, echo('echo-request', VM_IP, FAR_IP, 200)), dir: 'in', comment: 'route: direct', protocol: 'ICMP' },
  { iface: 'tun1', data: echo('echo-request', VM_IP, FAR_IP, 200), dir: 'out', comment: 'left for tun1', protocol: 'ICMP' },
  { iface: 'tun1', data: echo('echo-reply', FAR_IP, VM_IP, 200), dir: 'in', protocol: 'ICMP' },
  { iface: 'vm1', data: eth(GW_MAC, VM_MAC, ETHERTYPE_IPV4, echo('echo-reply', FAR_IP, VM_IP, 200)), dir: 'out', protocol: 'ICMP' },
  { iface: 'vm1', data: eth(VM_MAC, GW_MAC, ETHERTYPE_IPV4, tcp(VM_IP, FAR_IP, TCP_SYN, Buffer.alloc(0))), dir: 'in', comment: 'refusé: not in allow-list', protocol: 'TCP' },
  { iface: 'tun1', data: tcp(VM_IP, FAR_IP, TCP_SYN, Buffer.alloc(0)), protocol: 'TCP' },
  // An offloaded super-frame: 3000 bytes in hand, 65000 on the wire by the vnet header's account.
  { iface: 'vm1', data: eth(VM_MAC, GW_MAC, ETHERTYPE_IPV4, tcp(VM_IP, FAR_IP, TCP_ACK, Buffer.alloc(3000, 0x62))), dir: 'in', originalLength: 65000, comment: 'TSO super-frame', protocol: 'TCP' },
];
const VM1_SNAPLEN = 96;
const BASE_NS = 1_700_000_000_000_000_000n;
/** Odd nanosecond steps so that a reader rounding to microseconds would show up. */
const tsOf = (i: number): bigint => BASE_NS + BigInt(i) * 1_234_567_891n + 1n;

describe('pcapng files read by tshark and tcpdump', () => {
  const dir = mkdtempSync(join(tmpdir(), 'mvnet-pcapng-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  function writeMixed(): string {
    const w = new PcapngWriter({ userappl: 'mvnet 0.0.0-test', os: 'Linux' });
    const vm1 = w.addInterface({ linkType: LINKTYPE_ETHERNET, snaplen: VM1_SNAPLEN, name: 'vm1', description: 'port vm1' });
    const tun1 = w.addInterface({ linkType: LINKTYPE_RAW, snaplen: 65535, name: 'tun1' });
    const out: Buffer[] = [w.header(), vm1.block, tun1.block];
    SENT.forEach((s, i) => {
      out.push(w.packet(s.iface === 'vm1' ? vm1.id : tun1.id, tsOf(i), s.data, { direction: s.dir, comment: s.comment, originalLength: s.originalLength }));
    });
    out.push(w.stats(vm1.id, tsOf(SENT.length), { ifRecv: 5, ifDrop: 1 }));
    const file = join(dir, 'mixed.pcapng');
    writeFileSync(file, Buffer.concat(out));
    return file;
  }

  it('tshark reads exactly the packets written: interfaces, ns timestamps, directions, comments, lengths, protocols', () => {
    requireTool('tshark');
    const file = writeMixed();
    // tshark 4.0 field names: frame.comment carries opt_comment (pkt_comment is only the tree item),
    // frame.packet_flags_direction is epb_flags bits 0-1.
    const fields = ['frame.interface_name', 'frame.time_epoch', 'frame.comment', 'frame.len', 'frame.cap_len', 'frame.packet_flags_direction', '_ws.col.Protocol'];
    const text = execFileSync('tshark', ['-n', '-r', file, '-T', 'fields', '-E', 'separator=|', ...fields.flatMap((f) => ['-e', f])], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const rows = text.trimEnd().split('\n').map((l) => l.split('|'));
    const expected = SENT.map((s, i) => {
      const ts = tsOf(i);
      const len = s.originalLength ?? s.data.length;
      const cap = s.iface === 'vm1' ? Math.min(s.data.length, VM1_SNAPLEN) : s.data.length;
      const flags = s.dir === 'in' ? '0x00000001' : s.dir === 'out' ? '0x00000002' : '';
      return [s.iface, `${ts / 1_000_000_000n}.${(ts % 1_000_000_000n).toString().padStart(9, '0')}`, s.comment ?? '', String(len), String(cap), flags, s.protocol];
    });
    expect(rows).toEqual(expected);
    // The snaplen did cut the 242-byte echo request on vm1, and not the one on tun1.
    expect(rows[1]!.slice(3, 5)).toEqual(['242', '96']);
    expect(rows[2]!.slice(3, 5)).toEqual(['228', '228']);
  });

  it('tshark decodes the raw-IP interface as IP', () => {
    requireTool('tshark');
    const file = writeMixed();
    const text = execFileSync('tshark', ['-n', '-r', file, '-Y', 'frame.interface_name == "tun1"', '-T', 'fields', '-E', 'separator=|', '-e', 'ip.src', '-e', 'ip.dst', '-e', 'icmp.type', '-e', 'tcp.flags.syn'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    expect(text.trimEnd().split('\n')).toEqual(['10.0.0.2|192.0.2.7|8|', '192.0.2.7|10.0.0.2|0|', '10.0.0.2|192.0.2.7||1']);
  });

  it('capinfos (with tshark, in wireshark-common) sees the section options, both interfaces and the statistics', () => {
    requireTool('capinfos');
    const file = writeMixed();
    const text = execFileSync('capinfos', ['-M', file], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    expect(text).toMatch(/Capture application: +mvnet 0\.0\.0-test\n/);
    expect(text).toMatch(/Capture oper-sys: +Linux\n/);
    expect(text).toMatch(/Number of packets: +8\n/);
    expect(text).toMatch(/Strict time order: +True\n/);
    const ifaces = text.split(/Interface #\d+ info:/).slice(1);
    expect(ifaces).toHaveLength(2);
    expect(ifaces[0]).toMatch(/Name = vm1\n\s+Description = port vm1\n\s+Encapsulation = Ethernet \(1 - ether\)\n\s+Capture length = 96\n\s+Time precision = nanoseconds \(9\)/);
    expect(ifaces[0]).toMatch(/Number of stat entries = 1\n/);
    expect(ifaces[1]).toMatch(/Name = tun1\n\s+Encapsulation = Raw IP \(7 - rawip\)\n\s+Capture length = 65535\n\s+Time precision = nanoseconds \(9\)/);
    expect(ifaces[1]).toMatch(/Number of stat entries = 0\n/);
  });

  it('tcpdump reads an Ethernet capture with two interfaces', () => {
    requireTool('tcpdump');
    // libpcap (tcpdump) refuses a file whose interfaces have different link types, so this file has
    // two Ethernet ports; the mixed file above is for tshark/Wireshark.
    const w = new PcapngWriter({ userappl: 'mvnet 0.0.0-test' });
    const vm1 = w.addInterface({ linkType: LINKTYPE_ETHERNET, snaplen: 0, name: 'vm1' });
    const vm2 = w.addInterface({ linkType: LINKTYPE_ETHERNET, snaplen: 0, name: 'vm2' });
    const ethOnly = SENT.filter((s) => s.iface === 'vm1' && s.originalLength === undefined);
    const out = [w.header(), vm1.block, vm2.block];
    ethOnly.forEach((s, i) => out.push(w.packet(i % 2 === 0 ? vm1.id : vm2.id, tsOf(i), s.data, { direction: s.dir, comment: s.comment })));
    const file = join(dir, 'eth.pcapng');
    writeFileSync(file, Buffer.concat(out));
    const lines = execFileSync('tcpdump', ['-r', file, '-nn', '-tt'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trimEnd().split('\n');
    expect(lines).toHaveLength(4);
    expect(lines[0]).toMatch(/^1700000000\.\d{6,9} ARP, Request who-has 10\.0\.0\.1 tell 10\.0\.0\.2/);
    expect(lines[1]).toMatch(/IP 10\.0\.0\.2 > 192\.0\.2\.7: ICMP echo request, id 4660, seq 1, length 208/);
    expect(lines[2]).toMatch(/IP 192\.0\.2\.7 > 10\.0\.0\.2: ICMP echo reply, id 4660, seq 1, length 208/);
    expect(lines[3]).toMatch(/IP 10\.0\.0\.2\.40000 > 192\.0\.2\.7\.443: Flags \[S\], seq 1000, win 64240, options \[mss 1460\], length 0/);
  });
});
