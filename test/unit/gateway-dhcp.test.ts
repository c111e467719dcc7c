import { describe, expect, it } from 'vitest';
import { DhcpServer, type DhcpLeaseEvent } from '../../daemon/gateway/dhcp.js';
import { dissect } from '../../daemon/gateway/dissect.js';
import { makeGatewayNet, type GatewayNet } from '../../daemon/gateway/types.js';
import {
  BOOTREQUEST,
  DHCPACK,
  DHCPDECLINE,
  DHCPDISCOVER,
  DHCPINFORM,
  DHCPNAK,
  DHCPOFFER,
  DHCPRELEASE,
  DHCPREQUEST,
  encodeDhcpv4,
  parseDhcpv4,
  type Dhcpv4Message,
  type Dhcpv4Options,
} from '../../daemon/wire/dhcpv4.js';
import { encodeEthernet, ETHERTYPE_IPV4 } from '../../daemon/wire/ethernet.js';
import { encodeIpv4 } from '../../daemon/wire/ipv4.js';
import { formatIpv4, parseIpv4Text } from '../../daemon/wire/ip-text.js';
import { MAC_BROADCAST } from '../../daemon/wire/mac.js';
import { encodeUdp } from '../../daemon/wire/udp.js';

const GW_MAC = 0x0200_0000_00fe;
const ip = (s: string): number => {
  const r = parseIpv4Text(s);
  if (!r.ok) throw new Error(s);
  return r.value;
};

/** Wireshark's sample capture dhcp.pcap: the client's DISCOVER (same bytes as in wire-dhcpv4.test.ts). */
const WIRESHARK_DISCOVER = Buffer.concat([
  Buffer.from('0101060000003d1d0000000000000000000000000000000000000000000b8201fc42', 'hex'),
  Buffer.alloc(236 - 34),
  Buffer.from('63825363' + '350101' + '3d0701000b8201fc42' + '3204' + '00000000' + '370401030' + '62a' + 'ff' + '00000000000000', 'hex'),
]);
/**
 * ...and the REQUEST that follows it in that capture, rebuilt byte by byte from its decoded fields
 * (xid 0x3d1e; 53=REQUEST, 61 client id, 50=192.168.0.10, 54=192.168.0.1, 55=[1,3,6,42], END).
 */
const WIRESHARK_REQUEST = Buffer.concat([
  Buffer.from('0101060000003d1e0000000000000000000000000000000000000000000b8201fc42', 'hex'),
  Buffer.alloc(236 - 34),
  Buffer.from('63825363' + '350103' + '3d0701000b8201fc42' + '3204c0a8000a' + '3604c0a80001' + '370401030' + '62a' + 'ff' + '00', 'hex'),
]);
/** ISC dhclient's DISCOVER (Debian): requested 10.0.2.15, hostname, its usual parameter request list. */
const DHCLIENT_DISCOVER = (() => {
  const b = Buffer.alloc(300);
  Buffer.from('010106005c9a7b21000000000000000000000000000000000000000052540012345600000000000000000000', 'hex').copy(b, 0);
  Buffer.from('63825363' + '350101' + '32040a00020f' + '0c06' + Buffer.from('debian').toString('hex') + '370d011c02030f06770c2c2f1a792a' + 'ff', 'hex').copy(b, 236);
  return b;
})();

interface Sent {
  readonly ethDst: number;
  readonly ethSrc: number;
  readonly ipSrc: number;
  readonly ipDst: number;
  readonly srcPort: number;
  readonly dstPort: number;
  readonly msg: Dhcpv4Message;
}

function decode(frame: Buffer | null): Sent {
  expect(frame).not.toBeNull();
  const d = dissect(frame!);
  if (d.kind !== 'ipv4' || !d.udp) throw new Error(`not UDP/IPv4: ${d.kind}`);
  const m = parseDhcpv4(d.udp.payload);
  if (!m.ok) throw new Error('not DHCP');
  return { ethDst: d.eth.dst, ethSrc: d.eth.src, ipSrc: d.ip.src, ipDst: d.ip.dst, srcPort: d.udp.srcPort, dstPort: d.udp.dstPort, msg: m.value };
}

interface Client {
  readonly mac: number;
  readonly srcIp?: number;
  readonly dstIp?: number;
  readonly dstMac?: number;
  /** Ethernet source when different from chaddr (spoofing). */
  readonly ethSrc?: number;
}

function frameOf(payload: Buffer, c: Client): Buffer {
  const src = c.srcIp ?? 0;
  const dst = c.dstIp ?? 0xffffffff;
  const udp = encodeUdp({ srcPort: 68, dstPort: 67, payload }, { version: 4, src, dst });
  const ipPkt = encodeIpv4({ dscp: 0, ecn: 0, id: 7, dontFragment: false, moreFragments: false, fragmentOffset: 0, ttl: 64, protocol: 17, src, dst, payload: udp });
  return encodeEthernet({ dst: c.dstMac ?? MAC_BROADCAST, src: c.ethSrc ?? c.mac, etherType: ETHERTYPE_IPV4, payload: ipPkt });
}

function send(s: DhcpServer, frame: Buffer, now: number): Buffer | null {
  const d = dissect(frame);
  if (d.kind !== 'ipv4' || !d.udp) throw new Error('bad test frame');
  return s.handle(d.eth, d.ip, d.udp, now);
}

function msg(c: Client, type: number, options: Dhcpv4Options = {}, fields: { xid?: number; ciaddr?: number; broadcast?: boolean } = {}): Buffer {
  return frameOf(encodeDhcpv4({ op: BOOTREQUEST, xid: fields.xid ?? 0x1234, clientMac: c.mac, ciaddr: fields.ciaddr, broadcast: fields.broadcast, options: { messageType: type, ...options } }), c);
}

const lan = (over: Partial<Parameters<typeof makeGatewayNet>[0]> = {}): GatewayNet =>
  makeGatewayNet({ name: 'lan', subnet: '10.1.0.0/24', gatewayIp: '10.1.0.1', gatewayMac: GW_MAC, mtu: 1400, leaseTime: 3600, ...over });

const A: Client = { mac: 0x5254_0000_000a };
const B: Client = { mac: 0x5254_0000_000b };

/** DISCOVER + REQUEST; returns the ACKed address. */
function dora(s: DhcpServer, c: Client, now: number): number {
  const offer = decode(send(s, msg(c, DHCPDISCOVER), now));
  expect(offer.msg.options.messageType).toBe(DHCPOFFER);
  const ack = decode(send(s, msg(c, DHCPREQUEST, { serverId: ip('10.1.0.1'), requestedIp: offer.msg.yiaddr }), now));
  expect(ack.msg.options.messageType).toBe(DHCPACK);
  return ack.msg.yiaddr;
}

describe('gateway DHCP server', () => {
  it('answers the Wireshark sample DISCOVER/REQUEST (static lease) per RFC 2131', () => {
    const net = makeGatewayNet({ name: 'pcap', subnet: '192.168.0.0/24', gatewayIp: '192.168.0.1', gatewayMac: GW_MAC });
    const mac = 0x000b_8201_fc42;
    const s = new DhcpServer(net, { reservations: new Map([[mac, ip('192.168.0.10')]]) });
    const offer = decode(send(s, frameOf(WIRESHARK_DISCOVER, { mac }), 1000));
    expect(offer.msg.options.messageType).toBe(DHCPOFFER);
    expect(formatIpv4(offer.msg.yiaddr)).toBe('192.168.0.10');
    expect(offer.msg.xid).toBe(0x3d1d);
    expect(offer.msg.clientMac).toBe(mac);
    // No broadcast bit, no ciaddr: unicast to yiaddr at chaddr, from the server port to the client port.
    expect(offer).toMatchObject({ ethDst: mac, ethSrc: GW_MAC, ipSrc: ip('192.168.0.1'), ipDst: ip('192.168.0.10'), srcPort: 67, dstPort: 68 });
    expect(offer.msg.options).toMatchObject({
      serverId: ip('192.168.0.1'),
      subnetMask: 0xffffff00,
      routers: [ip('192.168.0.1')],
      dnsServers: [ip('192.168.0.1')],
      leaseTime: 3600,
      renewalTime: 1800,
      rebindingTime: 3150,
    });
    // RFC 6842: the client identifier is echoed.
    expect(offer.msg.options.clientId).toEqual(Buffer.from('01000b8201fc42', 'hex'));
    // The parameter request list (1, 3, 6, 42) did not ask for domain name or MTU.
    expect(offer.msg.options.domainName).toBeUndefined();
    expect(offer.msg.options.interfaceMtu).toBeUndefined();
    expect(s.leaseFor(mac)).toBeUndefined();

    const ack = decode(send(s, frameOf(WIRESHARK_REQUEST, { mac }), 2000));
    expect(ack.msg.options.messageType).toBe(DHCPACK);
    expect(ack.msg.xid).toBe(0x3d1e);
    expect(formatIpv4(ack.msg.yiaddr)).toBe('192.168.0.10');
    expect(s.leaseFor(mac)).toMatchObject({ ip: ip('192.168.0.10'), state: 'bound', expiresAt: 2000 + 3600_000 });
  });

  it('offers what dhclient requests, with the domain and MTU it asks for, and records its hostname', () => {
    const net = makeGatewayNet({ name: 'qemu', subnet: '10.0.2.0/24', gatewayIp: '10.0.2.2', gatewayMac: GW_MAC, mtu: 1400 });
    const s = new DhcpServer(net);
    const mac = 0x5254_0012_3456;
    const offer = decode(send(s, frameOf(DHCLIENT_DISCOVER, { mac }), 0));
    expect(formatIpv4(offer.msg.yiaddr)).toBe('10.0.2.15');
    expect(offer.msg.xid).toBe(0x5c9a7b21);
    expect(offer.msg.options.domainName).toBe('qemu.mvnet');
    expect(offer.msg.options.interfaceMtu).toBe(1400);
    expect(s.leases()).toEqual([{ mac, ip: ip('10.0.2.15'), state: 'offered', expiresAt: 60_000, hostname: 'debian' }]);
  });

  it('full DORA with the broadcast flag: replies are broadcast', () => {
    const s = new DhcpServer(lan());
    const offer = decode(send(s, msg(A, DHCPDISCOVER, {}, { broadcast: true }), 0));
    expect(offer).toMatchObject({ ethDst: MAC_BROADCAST, ipDst: 0xffffffff });
    expect(offer.msg.broadcast).toBe(true);
    expect(formatIpv4(offer.msg.yiaddr)).toBe('10.1.0.2');
    const ack = decode(send(s, msg(A, DHCPREQUEST, { serverId: ip('10.1.0.1'), requestedIp: offer.msg.yiaddr }, { broadcast: true }), 10));
    expect(ack).toMatchObject({ ethDst: MAC_BROADCAST, ipDst: 0xffffffff });
    expect(ack.msg.yiaddr).toBe(offer.msg.yiaddr);
    expect(s.stats).toMatchObject({ discovers: 1, offers: 1, requests: 1, acks: 1, naks: 0 });
  });

  it('RENEWING (unicast, ciaddr) and REBINDING (broadcast, ciaddr) extend the lease; replies go to ciaddr', () => {
    const events: DhcpLeaseEvent[] = [];
    const s = new DhcpServer(lan(), { onLease: (e) => events.push(e) });
    const addr = dora(s, A, 0);
    expect(events.map((e) => e.type)).toEqual(['bound']);

    const renew = decode(send(s, msg({ ...A, srcIp: addr, dstIp: ip('10.1.0.1'), dstMac: GW_MAC }, DHCPREQUEST, {}, { ciaddr: addr }), 1800_000));
    expect(renew.msg.options.messageType).toBe(DHCPACK);
    expect(renew).toMatchObject({ ethDst: A.mac, ipDst: addr });
    expect(renew.msg.ciaddr).toBe(addr);
    expect(renew.msg.yiaddr).toBe(addr);
    expect(s.leaseFor(A.mac)?.expiresAt).toBe(1800_000 + 3600_000);

    const rebind = decode(send(s, msg({ ...A, srcIp: addr }, DHCPREQUEST, {}, { ciaddr: addr }), 4000_000));
    expect(rebind.msg.options.messageType).toBe(DHCPACK);
    expect(rebind).toMatchObject({ ethDst: A.mac, ipDst: addr });
    expect(s.leaseFor(A.mac)?.expiresAt).toBe(4000_000 + 3600_000);
    expect(events.map((e) => e.type)).toEqual(['bound', 'renewed', 'renewed']);
  });

  it('NAKs a wrong requested address (broadcast), and the client can start over', () => {
    const s = new DhcpServer(lan());
    // INIT-REBOOT from another network.
    const nak = decode(send(s, msg(A, DHCPREQUEST, { requestedIp: ip('192.168.1.50') }), 0));
    expect(nak.msg.options.messageType).toBe(DHCPNAK);
    expect(nak).toMatchObject({ ethDst: MAC_BROADCAST, ipDst: 0xffffffff });
    expect(nak.msg.yiaddr).toBe(0);
    expect(nak.msg.options.leaseTime).toBeUndefined();
    expect(nak.msg.options.serverId).toBe(ip('10.1.0.1'));
    // SELECTING with an address other than the one offered.
    const offer = decode(send(s, msg(A, DHCPDISCOVER), 0));
    const nak2 = decode(send(s, msg(A, DHCPREQUEST, { serverId: ip('10.1.0.1'), requestedIp: offer.msg.yiaddr + 5 }), 0));
    expect(nak2.msg.options.messageType).toBe(DHCPNAK);
    // The gateway's own address is never given.
    expect(decode(send(s, msg(B, DHCPREQUEST, { requestedIp: ip('10.1.0.1') }), 0)).msg.options.messageType).toBe(DHCPNAK);
    // RENEWING for an address another client holds.
    const a = dora(s, A, 0);
    const steal = decode(send(s, msg({ ...B, srcIp: a, dstIp: ip('10.1.0.1'), dstMac: GW_MAC }, DHCPREQUEST, {}, { ciaddr: a }), 1));
    expect(steal.msg.options.messageType).toBe(DHCPNAK);
    expect(s.stats.naks).toBe(4);
    expect(s.leaseFor(A.mac)?.ip).toBe(a);
  });

  it('INIT-REBOOT for a free address is ACKed (authoritative server)', () => {
    const s = new DhcpServer(lan());
    const ack = decode(send(s, msg(A, DHCPREQUEST, { requestedIp: ip('10.1.0.77') }), 0));
    expect(ack.msg.options.messageType).toBe(DHCPACK);
    expect(ack.msg.yiaddr).toBe(ip('10.1.0.77'));
    expect(ack.ipDst).toBe(ip('10.1.0.77'));
  });

  it('ignores a REQUEST that selects another server and frees the held offer', () => {
    const s = new DhcpServer(lan());
    const offer = decode(send(s, msg(A, DHCPDISCOVER), 0));
    expect(send(s, msg(A, DHCPREQUEST, { serverId: ip('10.1.0.254'), requestedIp: ip('10.1.0.200') }), 1)).toBeNull();
    expect(s.leases()[0]).toMatchObject({ ip: offer.msg.yiaddr, state: 'expired' });
  });

  it('pool exhaustion gives no offer; RELEASE frees the address for others', () => {
    // /30: .0 network, .1 gateway, .2 the only pool address, .3 broadcast.
    const s = new DhcpServer(lan({ subnet: '10.1.0.0/30' }));
    const a = dora(s, A, 0);
    expect(formatIpv4(a)).toBe('10.1.0.2');
    expect(send(s, msg(B, DHCPDISCOVER), 1)).toBeNull();
    expect(s.stats.poolExhausted).toBe(1);

    expect(send(s, msg({ ...A, srcIp: a, dstIp: ip('10.1.0.1'), dstMac: GW_MAC }, DHCPRELEASE, { serverId: ip('10.1.0.1') }, { ciaddr: a }), 2)).toBeNull();
    expect(s.leaseFor(A.mac)).toBeUndefined();
    expect(s.stats.releases).toBe(1);
    const offer = decode(send(s, msg(B, DHCPDISCOVER), 3));
    expect(offer.msg.yiaddr).toBe(a);
  });

  it('a RELEASE for somebody else\'s address does nothing', () => {
    const s = new DhcpServer(lan());
    const a = dora(s, A, 0);
    send(s, msg({ ...B, srcIp: a }, DHCPRELEASE, { serverId: ip('10.1.0.1') }, { ciaddr: a }), 1);
    expect(s.leaseFor(A.mac)?.ip).toBe(a);
  });

  it('DECLINE quarantines the address for declineHoldMs', () => {
    const events: DhcpLeaseEvent[] = [];
    const s = new DhcpServer(lan({ subnet: '10.1.0.0/30' }), { declineHoldMs: 60_000, onLease: (e) => events.push(e) });
    const a = dora(s, A, 0);
    expect(send(s, msg(A, DHCPDECLINE, { serverId: ip('10.1.0.1'), requestedIp: a }), 100)).toBeNull();
    expect(s.leaseFor(A.mac)).toBeUndefined();
    expect(events.map((e) => e.type)).toEqual(['bound', 'declined']);
    expect(s.quarantined()).toEqual([{ ip: a, until: 60_100 }]);
    expect(s.nextDeadline()).toBe(60_100);
    expect(send(s, msg(B, DHCPDISCOVER), 30_000)).toBeNull();
    expect(send(s, msg(A, DHCPDISCOVER), 30_000)).toBeNull();
    const offer = decode(send(s, msg(B, DHCPDISCOVER), 60_100));
    expect(offer.msg.yiaddr).toBe(a);
    expect(s.quarantined()).toEqual([]);
  });

  it('a DECLINE cannot quarantine another client\'s address', () => {
    const s = new DhcpServer(lan());
    const a = dora(s, A, 0);
    send(s, msg(B, DHCPDECLINE, { serverId: ip('10.1.0.1'), requestedIp: a }), 1);
    expect(s.quarantined()).toEqual([]);
    expect(s.leaseFor(A.mac)?.ip).toBe(a);
  });

  it('static reservations: owner always gets its address, nobody else ever does', () => {
    const r = new Map([
      [A.mac, ip('10.1.0.2')],
      [0x5254_0000_00cc, ip('172.16.0.9')], // outside the subnet: rejected
      [0x5254_0000_00dd, ip('10.1.0.1')], // the gateway: rejected
    ]);
    const s = new DhcpServer(lan(), { reservations: r });
    expect(s.rejectedReservations).toEqual([0x5254_0000_00cc, 0x5254_0000_00dd]);
    // B asks for A's reserved address; it gets the next free one instead.
    const offerB = decode(send(s, msg(B, DHCPDISCOVER, { requestedIp: ip('10.1.0.2') }), 0));
    expect(formatIpv4(offerB.msg.yiaddr)).toBe('10.1.0.3');
    expect(decode(send(s, msg(B, DHCPREQUEST, { requestedIp: ip('10.1.0.2') }), 0)).msg.options.messageType).toBe(DHCPNAK);
    // A asks for something else; it is offered its reservation, and NAKed for anything else.
    const offerA = decode(send(s, msg(A, DHCPDISCOVER, { requestedIp: ip('10.1.0.50') }), 0));
    expect(formatIpv4(offerA.msg.yiaddr)).toBe('10.1.0.2');
    expect(decode(send(s, msg(A, DHCPREQUEST, { requestedIp: ip('10.1.0.50') }), 0)).msg.options.messageType).toBe(DHCPNAK);
    expect(dora(s, A, 1)).toBe(ip('10.1.0.2'));
  });

  it('reservations changed at runtime: a holder of a newly reserved address is NAKed at renewal', () => {
    const s = new DhcpServer(lan());
    const a = dora(s, A, 0);
    s.setReservations(new Map([[B.mac, a]]));
    const renew = decode(send(s, msg({ ...A, srcIp: a, dstIp: ip('10.1.0.1'), dstMac: GW_MAC }, DHCPREQUEST, {}, { ciaddr: a }), 1000));
    expect(renew.msg.options.messageType).toBe(DHCPNAK);
  });

  it('the router option comes from routerFor (route via another VM), or is left out', () => {
    const s = new DhcpServer(lan(), { routerFor: (mac) => (mac === A.mac ? ip('10.1.0.9') : mac === B.mac ? null : undefined) });
    expect(decode(send(s, msg(A, DHCPDISCOVER), 0)).msg.options.routers).toEqual([ip('10.1.0.9')]);
    expect(decode(send(s, msg(B, DHCPDISCOVER), 0)).msg.options.routers).toBeUndefined();
    expect(decode(send(s, msg({ mac: 0x5254_0000_0077 }, DHCPDISCOVER), 0)).msg.options.routers).toEqual([ip('10.1.0.1')]);
  });

  it('leases expire with the clock; an expired client gets its old address back', () => {
    const events: DhcpLeaseEvent[] = [];
    const s = new DhcpServer(lan(), { onLease: (e) => events.push(e) });
    const a = dora(s, A, 1000);
    dora(s, B, 1000);
    expect(s.nextDeadline()).toBe(1000 + 3600_000);
    expect(s.expire(1000 + 3600_000 - 1)).toEqual([]);
    expect(s.leaseFor(A.mac, 1000 + 3600_000)).toBeUndefined(); // judged by `now` even before expire()
    const gone = s.expire(1000 + 3600_000);
    expect(gone.map((l) => l.mac).sort()).toEqual([A.mac, B.mac].sort());
    expect(events.filter((e) => e.type === 'expired')).toHaveLength(2);
    expect(s.leaseFor(A.mac)).toBeUndefined();
    expect(s.nextDeadline()).toBeUndefined();
    // A new client takes a never-used address, not A's remembered one.
    const c = dora(s, { mac: 0x5254_0000_00c0 }, 5000_000);
    expect(c).not.toBe(a);
    expect(dora(s, A, 5000_000)).toBe(a);
  });

  it('a lapsed offer is released after offerHoldMs', () => {
    const s = new DhcpServer(lan({ subnet: '10.1.0.0/30' }), { offerHoldMs: 5000 });
    decode(send(s, msg(A, DHCPDISCOVER), 0));
    expect(send(s, msg(B, DHCPDISCOVER), 4999)).toBeNull();
    expect(decode(send(s, msg(B, DHCPDISCOVER), 5000)).msg.yiaddr).toBe(ip('10.1.0.2'));
  });

  it('snapshot/restore round-trips through JSON', () => {
    const s = new DhcpServer(lan(), { declineHoldMs: 600_000 });
    const a = dora(s, A, 1000);
    const b = dora(s, B, 1000);
    send(s, msg(B, DHCPDECLINE, { serverId: ip('10.1.0.1'), requestedIp: b }), 2000);
    const json = JSON.parse(JSON.stringify(s.snapshot())) as unknown;
    expect(json).toEqual({
      version: 1,
      leases: [{ mac: '52:54:00:00:00:0a', ip: '10.1.0.2', state: 'bound', expiresAt: 1000 + 3600_000 }],
      declined: [{ ip: '10.1.0.3', until: 602_000 }],
    });
    const t = new DhcpServer(lan());
    expect(t.restore(json, 3000)).toBe(1);
    expect(t.leaseFor(A.mac)).toMatchObject({ ip: a, state: 'bound', expiresAt: 1000 + 3600_000 });
    expect(t.quarantined()).toEqual([{ ip: b, until: 602_000 }]);
    expect(t.nextDeadline()).toBe(602_000);
    // The restored lease renews; a new client does not get A's address.
    const renew = decode(send(t, msg({ ...A, srcIp: a, dstIp: ip('10.1.0.1'), dstMac: GW_MAC }, DHCPREQUEST, {}, { ciaddr: a }), 4000));
    expect(renew.msg.options.messageType).toBe(DHCPACK);
    expect(dora(t, { mac: 0x5254_0000_00c0 }, 4000)).toBe(ip('10.1.0.4'));
  });

  it('restore skips garbage and expired bindings come back as remembered', () => {
    const t = new DhcpServer(lan());
    const n = t.restore(
      {
        version: 1,
        leases: [
          { mac: 'zz', ip: '10.1.0.5', state: 'bound', expiresAt: 9e12 },
          { mac: '52:54:00:00:00:0a', ip: '10.9.0.5', state: 'bound', expiresAt: 9e12 },
          { mac: '52:54:00:00:00:0a', ip: '10.1.0.5', state: 'bound', expiresAt: 100 },
          { mac: '52:54:00:00:00:0b', ip: '10.1.0.5', state: 'bound', expiresAt: 9e12 },
          'nonsense',
        ],
        declined: [{ ip: 'x', until: 1 }],
      },
      1000,
    );
    expect(n).toBe(1);
    expect(t.leaseFor(A.mac)).toBeUndefined();
    expect(t.leases()).toEqual([{ mac: A.mac, ip: ip('10.1.0.5'), state: 'expired', expiresAt: 100 }]);
    expect(t.restore({ version: 2 }, 0)).toBe(0);
    expect(t.restore(null, 0)).toBe(0);
  });

  it('refuses messages whose chaddr is not the Ethernet source (anti-spoofing)', () => {
    const s = new DhcpServer(lan());
    const a = dora(s, A, 0);
    // B pretends to be A: to renew, release or decline A's lease, or to get an offer.
    const spoofed = { ...A, ethSrc: B.mac };
    expect(send(s, msg(spoofed, DHCPDISCOVER), 1)).toBeNull();
    expect(send(s, msg({ ...spoofed, srcIp: a }, DHCPRELEASE, { serverId: ip('10.1.0.1') }, { ciaddr: a }), 1)).toBeNull();
    expect(send(s, msg(spoofed, DHCPDECLINE, { serverId: ip('10.1.0.1'), requestedIp: a }), 1)).toBeNull();
    expect(s.stats.refusedChaddr).toBe(3);
    expect(s.leaseFor(A.mac)?.ip).toBe(a);
    expect(s.quarantined()).toEqual([]);
  });

  it('INFORM gets an ACK with configuration but no lease, unicast to ciaddr', () => {
    const s = new DhcpServer(lan());
    const ack = decode(send(s, msg({ ...A, srcIp: ip('10.1.0.40'), dstIp: ip('10.1.0.1'), dstMac: GW_MAC }, DHCPINFORM, {}, { ciaddr: ip('10.1.0.40') }), 0));
    expect(ack.msg.options.messageType).toBe(DHCPACK);
    expect(ack).toMatchObject({ ipDst: ip('10.1.0.40'), ethDst: A.mac });
    expect(ack.msg.yiaddr).toBe(0);
    expect(ack.msg.options.leaseTime).toBeUndefined();
    expect(ack.msg.options.renewalTime).toBeUndefined();
    expect(ack.msg.options.dnsServers).toEqual([ip('10.1.0.1')]);
    expect(s.leases()).toEqual([]);
  });

  it('ignores relayed, non-Ethernet, BOOTP and unparseable messages', () => {
    const s = new DhcpServer(lan());
    const relayed = encodeDhcpv4({ op: BOOTREQUEST, xid: 1, clientMac: A.mac, giaddr: ip('10.1.0.9'), options: { messageType: DHCPDISCOVER } });
    expect(send(s, frameOf(relayed, A), 0)).toBeNull();
    const bootp = encodeDhcpv4({ op: BOOTREQUEST, xid: 1, clientMac: A.mac, options: {} });
    expect(send(s, frameOf(bootp, A), 0)).toBeNull();
    expect(send(s, frameOf(Buffer.alloc(100), A), 0)).toBeNull();
    expect(s.stats).toMatchObject({ ignored: 2, malformed: 1, offers: 0 });
  });

  it('excludes the network, gateway and broadcast addresses from a full pool', () => {
    const s = new DhcpServer(lan({ subnet: '10.1.0.0/29', gatewayIp: '10.1.0.6' }));
    const got: string[] = [];
    for (let i = 0; i < 8; i++) {
      const f = send(s, msg({ mac: 0x5254_0000_0100 + i }, DHCPDISCOVER), 0);
      if (f) got.push(formatIpv4(decode(f).msg.yiaddr));
    }
    expect(got).toEqual(['10.1.0.1', '10.1.0.2', '10.1.0.3', '10.1.0.4', '10.1.0.5']);
  });
});
