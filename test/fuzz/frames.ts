/**
 * Valid frames a VM could send, built with the wire encoders, for the fuzzers to send as they
 * are or mutated. Addresses come from a `FrameContext` so that many frames get past the
 * switch's and the router's source checks and reach the code behind them.
 */
import { ARP_REPLY, ARP_REQUEST, encodeArp } from '../../daemon/wire/arp.js';
import { BOOTREQUEST, DHCPDISCOVER, DHCPREQUEST, encodeDhcpv4 } from '../../daemon/wire/dhcpv4.js';
import { DNS_CLASS_IN, DNS_TYPE_A, DNS_TYPE_OPT, encodeDns, type DnsRecord } from '../../daemon/wire/dns.js';
import { encodeEthernet, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6 } from '../../daemon/wire/ethernet.js';
import { encodeIcmpv4 } from '../../daemon/wire/icmpv4.js';
import { encodeIcmpv6, type Icmpv6Init } from '../../daemon/wire/icmpv6.js';
import { encodeIpv4, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP } from '../../daemon/wire/ipv4.js';
import { encodeIpv6, ipv6FragmentBody, IPV6_NH_DEST_OPTS, IPV6_NH_FRAGMENT, IPV6_NH_HOP_BY_HOP, IPV6_NH_ICMPV6, type Ipv6ExtensionInit } from '../../daemon/wire/ipv6.js';
import { MAC_BROADCAST } from '../../daemon/wire/mac.js';
import { encodeTcp, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN } from '../../daemon/wire/tcp.js';
import { encodeUdp } from '../../daemon/wire/udp.js';
import { prependVnetHdr, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_GSO_UDP } from '../../daemon/wire/vnet.js';
import { internetChecksum, pseudoHeaderSumV4At, pseudoHeaderSumV6At } from '../../daemon/wire/checksum.js';
import type { Rng } from './rng.js';

export interface FrameContext {
  vmMac: number;
  /** The VM's IPv4 address (0 before it has one). */
  vmIp: number;
  gwMac: number;
  gwIp: number;
  /** Another VM's address on the subnet, and one outside. */
  peerIp: number;
  outIp: number;
  vmIp6: Buffer;
  gwIp6: Buffer;
  outIp6: Buffer;
}

const IPPROTO_ICMPV6 = IPV6_NH_ICMPV6;
const TCP_FLAGS = [TCP_SYN, TCP_SYN | TCP_ACK, TCP_ACK, TCP_ACK | TCP_PSH, TCP_FIN | TCP_ACK, TCP_RST, TCP_RST | TCP_ACK, 0, 0xff];
const PORTS = [53, 67, 68, 80, 443, 546, 547, 853, 1, 65535, 33434];

function ipv4(rng: Rng, src: number, dst: number, protocol: number, payload: Uint8Array, frag?: { offset: number; more: boolean; id: number }): Buffer {
  return encodeIpv4({
    dscp: rng.int(64),
    ecn: rng.int(4),
    id: frag?.id ?? rng.int(0x10000),
    dontFragment: frag === undefined && rng.bool(0.3),
    moreFragments: frag?.more ?? false,
    fragmentOffset: frag?.offset ?? 0,
    ttl: rng.pick([0, 1, 64, 255]),
    protocol,
    src,
    dst,
    payload,
  });
}

function dnsQuery(rng: Rng): Buffer {
  const labels = Array.from({ length: 1 + rng.int(4) }, () => rng.pick(['a', 'www', 'example', 'lan', 'onion', 'x'.repeat(1 + rng.int(63)), 'in-addr', 'arpa', '10']));
  const opt: DnsRecord<Uint8Array>[] = rng.bool(0.3) ? [{ name: '', type: DNS_TYPE_OPT, class: 512 + rng.int(4096), ttl: 0, data: { kind: 'raw', data: rng.bytes(rng.int(12)) } }] : [];
  return encodeDns({
    id: rng.int(0x10000),
    qr: false,
    opcode: rng.bool(0.9) ? 0 : rng.int(16),
    aa: false,
    tc: false,
    rd: true,
    ra: false,
    ad: false,
    cd: false,
    rcode: 0,
    questions: [{ name: labels.join('.'), type: rng.bool(0.7) ? DNS_TYPE_A : rng.int(0x10000), class: rng.bool(0.9) ? DNS_CLASS_IN : rng.int(0x10000) }],
    answers: [],
    authorities: [],
    additionals: opt,
  });
}

function tcpSegment(rng: Rng, src: number | Buffer, dst: number | Buffer): Buffer {
  const pseudo = typeof src === 'number' ? { version: 4 as const, src, dst: dst as number } : { version: 6 as const, src, dst: dst as Buffer };
  const flags = rng.pick(TCP_FLAGS);
  return encodeTcp(
    {
      srcPort: 1024 + rng.int(8),
      dstPort: rng.pick(PORTS),
      seq: rng.bool(0.5) ? 0x1000_0000 + rng.int(3) : rng.u32(),
      ack: rng.u32(),
      flags,
      window: rng.pick([0, 1, 65535, rng.int(0x10000)]),
      options: rng.bool(0.5) ? { mss: rng.pick([0, 536, 1460, 65535]), windowScale: rng.bool(0.5) ? rng.int(16) : undefined, sackPermitted: rng.bool(), timestamp: rng.bool() ? { value: rng.u32(), echo: rng.u32() } : undefined } : undefined,
      payload: rng.bytes(rng.pick([0, 0, 1, 100, 1000])),
    },
    pseudo,
  );
}

function udpDatagram(rng: Rng, src: number | Buffer, dst: number | Buffer, dstPort: number, payload: Uint8Array, srcPort = 1024 + rng.int(8)): Buffer {
  const pseudo = typeof src === 'number' ? { version: 4 as const, src, dst: dst as number } : { version: 6 as const, src, dst: dst as Buffer };
  return encodeUdp({ srcPort, dstPort, payload }, pseudo);
}

function icmpv6(rng: Rng, c: FrameContext, src: Buffer, dst: Buffer): Buffer {
  const sll = { kind: 'source-ll' as const, mac: c.vmMac };
  const choices: Icmpv6Init[] = [
    { kind: 'router-solicitation', options: rng.bool() ? [sll] : [] },
    { kind: 'neighbor-solicitation', target: rng.bool(0.7) ? c.gwIp6 : c.outIp6, options: rng.bool() ? [sll] : [] },
    { kind: 'neighbor-advertisement', router: rng.bool(), solicited: rng.bool(), override: rng.bool(), target: c.vmIp6, options: [{ kind: 'target-ll', mac: c.vmMac }] },
    { kind: 'router-advertisement', curHopLimit: 64, managed: rng.bool(), otherConfig: rng.bool(), flags: 0, routerLifetime: 1800, reachableTime: 0, retransTimer: 0, options: [sll] },
    { kind: 'echo-request', id: rng.int(0x10000), seq: rng.int(0x10000), data: rng.bytes(rng.int(64)) },
    { kind: 'dest-unreachable', code: rng.int(8), original: rng.bytes(48) },
    { kind: 'packet-too-big', code: 0, mtu: rng.pick([0, 1280, 1500, 0xffffffff]), original: rng.bytes(48) },
    { kind: 'other', type: rng.int(256), code: rng.int(256), body: rng.bytes(rng.int(32)) },
  ];
  return encodeIcmpv6(rng.pick(choices), { version: 6, src, dst });
}

function extensions(rng: Rng, frag: boolean): Ipv6ExtensionInit[] {
  const out: Ipv6ExtensionInit[] = [];
  if (rng.bool(0.3)) out.push({ type: IPV6_NH_HOP_BY_HOP, body: Buffer.alloc(rng.pick([4, 6, 12])) });
  if (rng.bool(0.3)) out.push({ type: IPV6_NH_DEST_OPTS, body: Buffer.alloc(rng.pick([4, 6, 12])) });
  if (frag) out.push({ type: IPV6_NH_FRAGMENT, body: ipv6FragmentBody(rng.pick([0, 8, 1232]), rng.bool(), rng.u32()) });
  return out;
}

/** One valid Ethernet frame from the VM (no virtio-net header). */
export function validFrame(rng: Rng, c: FrameContext): Buffer {
  const src = rng.bool(0.9) ? c.vmIp : rng.pick([0, c.peerIp, c.outIp, 0xffffffff]);
  const dst = rng.pick([c.gwIp, c.gwIp, c.outIp, c.peerIp, 0xffffffff, 0x7f000001, 0xe0000001]);
  const eth = (dstMac: number, etherType: number, payload: Uint8Array): Buffer => encodeEthernet({ dst: dstMac, src: rng.bool(0.97) ? c.vmMac : rng.u32() * 0x10000 + rng.int(0x10000), etherType, payload });
  const v4 = (protocol: number, payload: Uint8Array): Buffer => eth(rng.bool(0.9) ? c.gwMac : MAC_BROADCAST, ETHERTYPE_IPV4, ipv4(rng, src, dst, protocol, payload));
  const v6src = rng.bool(0.8) ? c.vmIp6 : Buffer.alloc(16);
  const v6dst = rng.pick([c.gwIp6, c.outIp6, Buffer.from('ff020000000000000000000000000002', 'hex'), Buffer.from('ff020000000000000000000000010002', 'hex')]);
  const v6 = (protocol: number, payload: Uint8Array, frag = false): Buffer =>
    eth(v6dst[0] === 0xff ? 0x3333_0000_0002 : c.gwMac, ETHERTYPE_IPV6, encodeIpv6({ trafficClass: 0, flowLabel: rng.int(0x100000), hopLimit: rng.pick([1, 64, 255]), src: v6src, dst: v6dst, protocol, extensions: extensions(rng, frag), payload }));
  switch (rng.int(15)) {
    case 0:
      return eth(rng.bool() ? MAC_BROADCAST : c.gwMac, ETHERTYPE_ARP, encodeArp({ op: rng.bool(0.8) ? ARP_REQUEST : ARP_REPLY, senderMac: c.vmMac, senderIp: rng.bool(0.8) ? c.vmIp : rng.u32(), targetMac: 0, targetIp: rng.pick([c.gwIp, c.peerIp, c.outIp]) }));
    case 1: {
      const payload = encodeDhcpv4({ op: BOOTREQUEST, xid: rng.u32(), clientMac: c.vmMac, options: { messageType: rng.pick([DHCPDISCOVER, DHCPREQUEST, 3, 4, 7, 8, 0, 255]), requestedIp: rng.bool() ? rng.pick([c.vmIp, c.peerIp, c.gwIp]) : undefined, serverId: rng.bool() ? c.gwIp : undefined, hostname: rng.bool(0.3) ? 'vm' : undefined } });
      return eth(MAC_BROADCAST, ETHERTYPE_IPV4, ipv4(rng, 0, 0xffffffff, IPPROTO_UDP, udpDatagram(rng, 0, 0xffffffff, 67, payload, 68)));
    }
    case 2:
    case 3:
      return v4(IPPROTO_UDP, udpDatagram(rng, src, dst, 53, dnsQuery(rng)));
    case 4:
      return v4(IPPROTO_UDP, udpDatagram(rng, src, dst, rng.pick(PORTS), rng.bytes(rng.int(200))));
    case 5:
    case 6:
      return v4(IPPROTO_TCP, tcpSegment(rng, src, dst));
    case 7:
      return v4(IPPROTO_ICMP, encodeIcmpv4(rng.bool(0.7) ? { kind: 'echo-request', id: rng.int(0x10000), seq: rng.int(0x10000), data: rng.bytes(rng.int(100)) } : { kind: 'dest-unreachable', code: rng.int(16), mtu: rng.pick([0, 576, 1500]), original: ipv4(rng, dst, src, IPPROTO_UDP, rng.bytes(8)) }));
    case 8: {
      // One fragment of a datagram (first, middle or last).
      const more = rng.bool();
      const offset = rng.pick([0, 8, 1480, 2960, 65528]);
      return eth(c.gwMac, ETHERTYPE_IPV4, ipv4(rng, src, dst, rng.pick([IPPROTO_UDP, IPPROTO_TCP, IPPROTO_ICMP]), rng.bytes(8 * (1 + rng.int(50))), { offset, more, id: rng.int(4) }));
    }
    case 9:
    case 10:
      return v6(IPPROTO_ICMPV6, icmpv6(rng, c, v6src, v6dst), rng.bool(0.1));
    case 11:
      return v6(IPPROTO_UDP, udpDatagram(rng, v6src, v6dst, rng.pick([53, 547, 546, 123]), rng.bool() ? dnsQuery(rng) : rng.bytes(rng.int(100)), rng.pick([546, 547, 5353, 40000])), rng.bool(0.1));
    case 12:
      return v6(IPPROTO_TCP, tcpSegment(rng, v6src, v6dst), rng.bool(0.1));
    case 13: {
      // VLAN-tagged, or an unknown EtherType.
      const inner = v4(IPPROTO_UDP, udpDatagram(rng, src, dst, 53, dnsQuery(rng)));
      return rng.bool() ? Buffer.concat([inner.subarray(0, 12), Buffer.from([0x81, 0x00, 0, rng.int(256)]), inner.subarray(12)]) : eth(c.gwMac, rng.int(0x10000), rng.bytes(46));
    }
    default:
      return eth(rng.bool() ? c.gwMac : MAC_BROADCAST, rng.pick([ETHERTYPE_IPV4, ETHERTYPE_IPV6]), rng.bytes(rng.int(120)));
  }
}

/** A frame with a virtio-net header that asks for checksum offload or segmentation. */
export function offloadFrame(rng: Rng, c: FrameContext): Buffer {
  const v6 = rng.bool(0.3);
  const payload = rng.bytes(rng.pick([0, 100, 1448, 3000, 9000, 20000]));
  const tcp = rng.bool(0.8);
  let frame: Buffer;
  if (v6) {
    const l4 = tcp ? encodeTcp({ srcPort: 1025, dstPort: 80, seq: rng.u32(), ack: rng.u32(), flags: TCP_ACK | TCP_PSH, window: 65535, payload }, { version: 6, src: c.vmIp6, dst: c.outIp6 }) : udpDatagram(rng, c.vmIp6, c.outIp6, 9, payload);
    frame = encodeEthernet({ dst: c.gwMac, src: c.vmMac, etherType: ETHERTYPE_IPV6, payload: encodeIpv6({ trafficClass: 0, flowLabel: 0, hopLimit: 64, src: c.vmIp6, dst: c.outIp6, protocol: tcp ? IPPROTO_TCP : IPPROTO_UDP, payload: l4 }) });
  } else {
    const l4 = tcp ? encodeTcp({ srcPort: 1025, dstPort: 80, seq: rng.u32(), ack: rng.u32(), flags: TCP_ACK | TCP_PSH, window: 65535, payload }, { version: 4, src: c.vmIp, dst: c.outIp }) : udpDatagram(rng, c.vmIp, c.outIp, 9, payload);
    const ip = l4.length + 20 <= 0xffff ? ipv4(rng, c.vmIp, c.outIp, tcp ? IPPROTO_TCP : IPPROTO_UDP, l4) : Buffer.alloc(20);
    frame = encodeEthernet({ dst: c.gwMac, src: c.vmMac, etherType: ETHERTYPE_IPV4, payload: ip });
  }
  const l3 = 14;
  const l4off = l3 + (v6 ? 40 : 20);
  const gsoType = !tcp ? VIRTIO_NET_HDR_GSO_UDP : v6 ? VIRTIO_NET_HDR_GSO_TCPV6 : VIRTIO_NET_HDR_GSO_TCPV4;
  return prependVnetHdr(frame, {
    flags: rng.bool(0.8) ? VIRTIO_NET_HDR_F_NEEDS_CSUM : rng.int(256),
    gsoType: rng.bool(0.7) ? gsoType : rng.int(256),
    hdrLen: rng.bool(0.8) ? l4off + (tcp ? 20 : 8) : rng.int(0x10000),
    gsoSize: rng.pick([0, 1, 536, 1448, 1460, 0xffff]),
    csumStart: rng.bool(0.8) ? l4off : rng.int(0x10000),
    csumOffset: rng.bool(0.8) ? (tcp ? 16 : 6) : rng.int(0x10000),
  });
}

/** Offset of the checksum field in each upper layer. */
const CSUM_AT: Record<number, number> = { 6: 16, 17: 6, 1: 2, 58: 2 };

/**
 * Makes the checksums of a (mutated) untagged IPv4 or IPv6 frame right again, where its headers
 * still say where they are, so that a mutation gets past the checksum checks to the parsers and
 * state machines behind them. Frames it cannot read are returned as they are.
 */
export function fixChecksums(f: Buffer): Buffer {
  if (f.length < 14) return f;
  const et = f.readUInt16BE(12);
  if (et === ETHERTYPE_IPV4 && f.length >= 34) {
    const ihl = (f[14]! & 0x0f) * 4;
    const total = Math.min(f.readUInt16BE(16), f.length - 14);
    if (ihl < 20 || 14 + ihl > f.length) return f;
    f.writeUInt16BE(0, 24);
    f.writeUInt16BE(internetChecksum(f, 14, 14 + ihl), 24);
    const proto = f[23]!;
    const at = CSUM_AT[proto];
    const l4 = 14 + ihl;
    const end = 14 + total;
    if (at === undefined || (f.readUInt16BE(20) & 0x3fff) !== 0 || end < l4 + at + 2) return f;
    f.writeUInt16BE(0, l4 + at);
    const pseudo = proto === IPPROTO_ICMP ? 0 : pseudoHeaderSumV4At(f, 14, proto, end - l4);
    f.writeUInt16BE(internetChecksum(f, l4, end, pseudo), l4 + at);
    return f;
  }
  if (et === ETHERTYPE_IPV6 && f.length >= 54) {
    const proto = f[20]!;
    const at = CSUM_AT[proto];
    const end = Math.min(54 + f.readUInt16BE(18), f.length);
    if (at === undefined || proto === IPPROTO_ICMP || end < 54 + at + 2) return f;
    f.writeUInt16BE(0, 54 + at);
    f.writeUInt16BE(internetChecksum(f, 54, end, pseudoHeaderSumV6At(f, 14, proto, end - 54)), 54 + at);
  }
  return f;
}
