/**
 * The direct-route egress filter (daemon/egress/forbidden.ts): every class, IPv4 and IPv6, just
 * inside and just outside each prefix, and the IPv4 carried inside NAT64, 6to4 and Teredo
 * addresses; the host's addresses and the directed broadcasts of its networks, from the kernel's
 * list and from os.networkInterfaces().
 */
import { describe, expect, it } from 'vitest';
import { Address6 } from 'ip-address';
import {
  forbiddenClass,
  hostAddresses,
  hostAddressesFrom,
  hostAddressesFromInterfaces,
  hostAddressesFromKernel,
  hostAddressWatch,
  isForbiddenDestination,
  type ForbiddenClass,
  type HostAddresses,
} from '../../daemon/egress/forbidden.js';
import type { IpAddr } from '../../daemon/endpoint/addr.js';

function a4(text: string): IpAddr {
  const o = text.split('.').map(Number);
  return { v: 4, n: ((o[0]! << 24) | (o[1]! << 16) | (o[2]! << 8) | o[3]!) >>> 0 };
}
function a6(text: string): IpAddr {
  return { v: 6, b: Buffer.from(new Address6(text).canonicalForm().replace(/:/g, ''), 'hex') };
}
function n4(text: string): number {
  return (a4(text) as { n: number }).n;
}
function b6(text: string): Buffer {
  return (a6(text) as { b: Buffer }).b;
}

/** A host with 192.0.2.10/24, 198.51.100.7/30 (broadcast .7 is its own: not really, see below), 203.0.113.5/31, 2001:db8::5. */
const HOST: HostAddresses = hostAddressesFrom(
  [
    { addr: n4('192.0.2.10'), prefixLen: 24 },
    { addr: n4('198.51.100.5'), prefixLen: 30 },
    { addr: n4('203.0.113.5'), prefixLen: 31 },
    { addr: n4('100.64.9.9'), prefixLen: 16, broadcast: n4('100.64.200.200') },
  ],
  [{ addr: b6('2001:db8::5'), prefixLen: 64 }, { addr: b6('2001:db8:1::1'), prefixLen: 127 }],
);

const cls = (a: IpAddr): ForbiddenClass | null => forbiddenClass(a, HOST);

/** Teredo address with server IPv4 `server` and client IPv4 `client` (stored inverted). */
function teredo(server: string, client: string, port = 0x1234): IpAddr {
  const b = Buffer.alloc(16);
  b.writeUInt32BE(0x20010000, 0);
  b.writeUInt32BE(n4(server), 4);
  b.writeUInt16BE(0x8000, 8); // flags
  b.writeUInt16BE(~port & 0xffff, 10);
  b.writeUInt32BE(~n4(client) >>> 0, 12);
  return { v: 6, b };
}

describe('IPv4 classes', () => {
  it.each<[string, ForbiddenClass | null]>([
    ['0.0.0.0', 'this-network'],
    ['0.255.255.255', 'this-network'],
    ['1.0.0.0', null],
    ['126.255.255.255', null],
    ['127.0.0.0', 'loopback'],
    ['127.0.0.1', 'loopback'],
    ['127.255.255.255', 'loopback'],
    ['128.0.0.0', null],
    ['169.253.255.255', null],
    ['169.254.0.0', 'link-local'],
    ['169.254.169.254', 'link-local'],
    ['169.254.255.255', 'link-local'],
    ['169.255.0.0', null],
    ['223.255.255.255', null],
    ['224.0.0.0', 'multicast'],
    ['224.0.0.1', 'multicast'],
    ['239.255.255.255', 'multicast'],
    ['240.0.0.0', 'reserved'],
    ['255.255.255.254', 'reserved'],
    ['255.255.255.255', 'limited-broadcast'],
    ['8.8.8.8', null],
  ])('%s → %s', (addr, want) => {
    expect(cls(a4(addr))).toBe(want);
  });

  it("the host's own addresses", () => {
    expect(cls(a4('192.0.2.10'))).toBe('host-address');
    expect(cls(a4('192.0.2.11'))).toBe(null);
    expect(cls(a4('198.51.100.5'))).toBe('host-address');
    expect(cls(a4('203.0.113.5'))).toBe('host-address');
  });

  it('directed broadcasts and network addresses of the host networks (computed from the prefix; /31 has none)', () => {
    expect(cls(a4('192.0.2.255'))).toBe('directed-broadcast');
    expect(cls(a4('192.0.2.0'))).toBe('directed-broadcast');
    expect(cls(a4('192.0.2.254'))).toBe(null);
    expect(cls(a4('192.0.2.1'))).toBe(null);
    expect(cls(a4('192.0.3.255'))).toBe(null);
    expect(cls(a4('198.51.100.7'))).toBe('directed-broadcast');
    expect(cls(a4('198.51.100.4'))).toBe('directed-broadcast');
    expect(cls(a4('198.51.100.6'))).toBe(null);
    expect(cls(a4('198.51.100.8'))).toBe(null);
    // /31: both addresses are hosts (RFC 3021), the peer is reachable.
    expect(cls(a4('203.0.113.4'))).toBe(null);
    // A broadcast address the interface names (IFA_BROADCAST) counts even when it is not the computed one.
    expect(cls(a4('100.64.200.200'))).toBe('directed-broadcast');
    expect(cls(a4('100.64.255.255'))).toBe('directed-broadcast');
  });
});

describe('IPv6 classes', () => {
  it.each<[string, ForbiddenClass | null]>([
    ['::', 'unspecified'],
    ['::1', 'loopback'],
    ['::2', 'ipv4-compatible'],
    ['::127.0.0.1', 'ipv4-compatible'],
    ['::8.8.8.8', 'ipv4-compatible'],
    ['::ffff:ffff', 'ipv4-compatible'],
    ['::1:0:0', null], // just above ::/96
    ['::fffe:0:0', null], // just below ::ffff:0:0/96
    ['::ffff:0:0', 'ipv4-mapped'],
    ['::ffff:127.0.0.1', 'ipv4-mapped'],
    ['::ffff:8.8.8.8', 'ipv4-mapped'],
    ['::1:ffff:0:0', null],
    ['100::', 'discard'],
    ['100::1', 'discard'],
    ['100::ffff:ffff:ffff:ffff', 'discard'],
    ['100:0:0:1::', null], // just above 100::/64
    ['ff::', null],
    ['fe7f:ffff::', null],
    ['fe80::', 'link-local'],
    ['fe80::1', 'link-local'],
    ['febf:ffff::1', 'link-local'],
    ['fec0::1', null], // just above fe80::/10
    ['ff00::', 'multicast'],
    ['ff02::1', 'multicast'],
    ['ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 'multicast'],
    ['2001:db8::5', 'host-address'],
    ['2001:db8::6', null],
    ['2001:db8::', 'subnet-anycast'], // its network's subnet-router anycast
    ['2001:db8:0:1::', null],
    ['2001:db8:1::', null], // a /127 has no anycast address (RFC 6164)
    ['2606:4700::1111', null],
  ])('%s → %s', (addr, want) => {
    expect(cls(a6(addr))).toBe(want);
  });

  it('NAT64 64:ff9b::/96: refused only when the IPv4 in the last 32 bits is', () => {
    expect(cls(a6('64:ff9b::7f00:1'))).toBe('nat64'); // 127.0.0.1
    expect(cls(a6('64:ff9b::127.1.2.3'))).toBe('nat64');
    expect(cls(a6('64:ff9b::0.0.0.0'))).toBe('nat64');
    expect(cls(a6('64:ff9b::169.254.169.254'))).toBe('nat64');
    expect(cls(a6('64:ff9b::255.255.255.255'))).toBe('nat64');
    expect(cls(a6('64:ff9b::224.0.0.1'))).toBe('nat64');
    expect(cls(a6('64:ff9b::192.0.2.10'))).toBe('nat64'); // the host's own
    expect(cls(a6('64:ff9b::192.0.2.255'))).toBe('nat64'); // its directed broadcast
    expect(cls(a6('64:ff9b::8.8.8.8'))).toBe(null);
    expect(cls(a6('64:ff9b::192.0.2.11'))).toBe(null);
    // Outside the /96 (bits 64..95 not zero) and not the local-use /48: an ordinary address.
    expect(cls(a6('64:ff9b:0:0:0:1:7f00:1'))).toBe(null);
    expect(cls(a6('64:ff9a:ffff:ffff:ffff:ffff:7f00:1'))).toBe(null);
    expect(cls(a6('64:ff9c::7f00:1'))).toBe(null);
  });

  it('NAT64 local-use 64:ff9b:1::/48: the whole class (where the IPv4 sits is a local choice)', () => {
    expect(cls(a6('64:ff9b:1::'))).toBe('nat64-local');
    expect(cls(a6('64:ff9b:1::808:808'))).toBe('nat64-local');
    expect(cls(a6('64:ff9b:1:ffff:ffff:ffff:ffff:ffff'))).toBe('nat64-local');
    expect(cls(a6('64:ff9b:2::7f00:1'))).toBe(null); // just above the /48
  });

  it('6to4 2002::/16: refused when the IPv4 in bits 16..47 is', () => {
    expect(cls(a6('2002:7f00:1::1'))).toBe('6to4');
    expect(cls(a6('2002:0:0::1'))).toBe('6to4');
    expect(cls(a6('2002:c000:20a::1'))).toBe('6to4'); // 192.0.2.10, the host's own
    expect(cls(a6('2002:c000:2ff::1'))).toBe('6to4'); // 192.0.2.255, its broadcast
    expect(cls(a6('2002:ffff:ffff::1'))).toBe('6to4');
    expect(cls(a6('2002:a9fe:a9fe::1'))).toBe('6to4');
    expect(cls(a6('2002:808:808::1'))).toBe(null);
    // The embedded address is only bits 16..47: a loopback-looking tail is not inside it.
    expect(cls(a6('2002:808:808::7f00:1'))).toBe(null);
    expect(cls(a6('2001:ffff:7f00:1::1'))).toBe(null); // just below 2002::/16
    expect(cls(a6('2003:7f00:1::1'))).toBe(null); // just above
  });

  it('Teredo 2001::/32: refused when the server IPv4 or the (inverted) client IPv4 is', () => {
    expect(cls(teredo('127.0.0.1', '8.8.8.8'))).toBe('teredo');
    expect(cls(teredo('8.8.8.8', '127.0.0.1'))).toBe('teredo');
    expect(cls(teredo('8.8.8.8', '192.0.2.10'))).toBe('teredo');
    expect(cls(teredo('8.8.8.8', '0.0.0.0'))).toBe('teredo');
    expect(cls(teredo('8.8.8.8', '255.255.255.255'))).toBe('teredo');
    expect(cls(teredo('8.8.8.8', '9.9.9.9'))).toBe(null);
    // The client address is stored inverted: 127.0.0.1 written plainly is 128.255.255.254 inside.
    expect(cls(a6('2001:0:808:808:8000:edcb:7f00:1'))).toBe(null);
    expect(cls(a6('2001:0:808:808:8000:edcb:80ff:fffe'))).toBe('teredo');
    // 2001:1::/32 (just above) and 2001:db8::/32 are not Teredo.
    expect(cls(a6('2001:1:7f00:1::1'))).toBe(null);
    expect(cls(a6('2001:db8:7f00:1::1'))).toBe(null);
  });
});

describe("the host's addresses", () => {
  it('from the kernel list: addresses, interface broadcasts and computed ones', () => {
    const h = hostAddressesFromKernel([
      { family: 4, address: Buffer.from([10, 1, 2, 3]), prefixLen: 16, broadcast: Buffer.from([10, 1, 255, 255]) },
      { family: 4, address: Buffer.from([10, 9, 0, 1]), prefixLen: 32 },
      { family: 6, address: b6('fd00::7'), prefixLen: 64 },
      { family: 6, address: b6('fd00:0:0:5:abcd::9'), prefixLen: 80 },
    ]);
    expect(forbiddenClass(a4('10.1.2.3'), h)).toBe('host-address');
    expect(forbiddenClass(a4('10.1.255.255'), h)).toBe('directed-broadcast');
    expect(forbiddenClass(a4('10.1.0.0'), h)).toBe('directed-broadcast');
    expect(forbiddenClass(a4('10.9.0.1'), h)).toBe('host-address');
    expect(forbiddenClass(a4('10.9.0.0'), h)).toBe(null); // a /32 has no network or broadcast address
    expect(forbiddenClass(a6('fd00::7'), h)).toBe('host-address');
    expect(forbiddenClass(a6('fd00::8'), h)).toBe(null);
    expect(forbiddenClass(a6('fd00::'), h)).toBe('subnet-anycast');
    expect(forbiddenClass(a6('fd00:0:0:5:abcd::'), h)).toBe('subnet-anycast');
    expect(forbiddenClass(a6('fd00:0:0:5::'), h)).toBe(null);
  });

  it('from os.networkInterfaces(): netmasks give the directed broadcasts', () => {
    const h = hostAddressesFromInterfaces({
      eth0: [
        { address: '172.20.3.4', netmask: '255.255.252.0', family: 'IPv4', mac: '00:00:00:00:00:00', internal: false, cidr: '172.20.3.4/22' },
        { address: 'fe80::1%eth0', netmask: 'ffff:ffff:ffff:ffff::', family: 'IPv6', mac: '00:00:00:00:00:00', internal: false, cidr: 'fe80::1/64', scopeid: 2 },
        { address: 'fd00:1::4', netmask: 'ffff:ffff:ffff:ffff::', family: 'IPv6', mac: '00:00:00:00:00:00', internal: false, cidr: 'fd00:1::4/64', scopeid: 0 },
      ],
    });
    expect(forbiddenClass(a4('172.20.3.4'), h)).toBe('host-address');
    expect(forbiddenClass(a4('172.20.3.255'), h)).toBe('directed-broadcast');
    expect(forbiddenClass(a4('172.20.0.0'), h)).toBe('directed-broadcast');
    expect(forbiddenClass(a4('172.20.2.255'), h)).toBe(null);
    expect(forbiddenClass(a6('fd00:1::4'), h)).toBe('host-address');
    expect(forbiddenClass(a6('fd00:1::'), h)).toBe('subnet-anycast');
  });

  it('the live set comes from netlink (the addon is built) and holds this namespace\'s loopback', () => {
    expect(hostAddressWatch().netlink).toBe(true);
    const h = hostAddresses();
    expect(h.v4.has(n4('127.0.0.1'))).toBe(true);
    expect(isForbiddenDestination(a4('127.0.0.1'))).toBe(true);
    expect(isForbiddenDestination(a6('64:ff9b::7f00:1'))).toBe(true);
    // Asking again without a change reads nothing again.
    const reads = hostAddressWatch().reads;
    for (let i = 0; i < 100; i++) isForbiddenDestination(a4('8.8.8.8'));
    expect(hostAddressWatch().reads).toBe(reads);
  });
});
