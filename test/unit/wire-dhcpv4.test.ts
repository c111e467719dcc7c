import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  BOOTREPLY,
  BOOTREQUEST,
  DHCPACK,
  DHCPDISCOVER,
  encodeDhcpv4,
  parseDhcpv4,
  type Dhcpv4Init,
  type Dhcpv4Options,
} from '../../daemon/wire/dhcpv4.js';
import { MAC_BROADCAST } from '../../daemon/wire/mac.js';

/**
 * The DHCPDISCOVER of Wireshark's sample capture dhcp.pcap (client 00:0b:82:01:fc:42, xid 0x3d1d),
 * as used by several network stacks' test suites: 236-byte BOOTP header, cookie, options
 * 53=DISCOVER, 61=client id, 50=0.0.0.0, 55=[1,3,6,42], END, then zero padding.
 */
const WIRESHARK_DISCOVER = Buffer.concat([
  Buffer.from('0101060000003d1d0000000000000000000000000000000000000000000b8201fc42', 'hex'),
  Buffer.alloc(236 - 34),
  Buffer.from('63825363' + '350101' + '3d0701000b8201fc42' + '3204' + '00000000' + '370401030' + '62a' + 'ff' + '00000000000000', 'hex'),
]);

/**
 * A DHCPDISCOVER as ISC dhclient on Debian sends it: requested address, hostname, its usual
 * parameter request list (incl. 26 interface MTU, 119 domain search, 121 classless routes),
 * END, zero padding to 300 bytes.
 */
const DHCLIENT_DISCOVER = (() => {
  const b = Buffer.alloc(300);
  Buffer.from('010106005c9a7b21000000000000000000000000000000000000000052540012345600000000000000000000', 'hex').copy(b, 0);
  Buffer.from('63825363' + '350101' + '32040a00020f' + '0c06' + Buffer.from('debian').toString('hex') + '370d011c02030f06770c2c2f1a792a' + 'ff', 'hex').copy(b, 236);
  return b;
})();

const u32 = fc.nat(0xffffffff);
const ascii = fc.stringMatching(/^[a-zA-Z0-9.-]{1,40}$/);
const options: fc.Arbitrary<Dhcpv4Options> = fc.record(
  {
    messageType: fc.integer({ min: 1, max: 8 }),
    subnetMask: u32,
    routers: fc.array(u32, { minLength: 1, maxLength: 3 }),
    dnsServers: fc.array(u32, { minLength: 1, maxLength: 70 }), // > 255 bytes exercises RFC 3396 splitting
    hostname: ascii,
    domainName: ascii,
    interfaceMtu: fc.nat(0xffff),
    requestedIp: u32,
    leaseTime: u32,
    serverId: u32,
    parameterRequestList: fc.array(fc.nat(255), { minLength: 1, maxLength: 20 }),
    maxMessageSize: fc.nat(0xffff),
    renewalTime: u32,
    rebindingTime: u32,
    clientId: fc.uint8Array({ minLength: 1, maxLength: 20 }).map((b) => Buffer.from(b)),
    other: fc.array(
      fc.record({
        code: fc.constantFrom(2, 42, 81, 82, 119, 121, 249, 252),
        data: fc.uint8Array({ maxLength: 30 }).map((b) => Buffer.from(b)),
      }),
      { minLength: 1, maxLength: 3 },
    ).map((list) => [...new Map(list.map((o) => [o.code, o])).values()]),
  },
  { requiredKeys: [] },
);
const message: fc.Arbitrary<Dhcpv4Init> = fc.record({
  op: fc.constantFrom(BOOTREQUEST, BOOTREPLY),
  xid: u32,
  clientMac: fc.integer({ min: 0, max: MAC_BROADCAST }),
  hops: fc.nat(255),
  secs: fc.nat(0xffff),
  broadcast: fc.boolean(),
  ciaddr: u32,
  yiaddr: u32,
  siaddr: u32,
  giaddr: u32,
  options,
});

describe('dhcpv4', () => {
  it('parses the Wireshark sample DISCOVER', () => {
    const r = parseDhcpv4(WIRESHARK_DISCOVER);
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.value).toMatchObject({ op: 1, htype: 1, hlen: 6, hops: 0, xid: 0x3d1d, secs: 0, broadcast: false, ciaddr: 0, yiaddr: 0, siaddr: 0, giaddr: 0, clientMac: 0x000b_8201_fc42 });
    expect(r.value.options).toEqual({
      messageType: DHCPDISCOVER,
      clientId: Buffer.from('01000b8201fc42', 'hex'),
      requestedIp: 0,
      parameterRequestList: [1, 3, 6, 42],
    });
    // Our encoder writes the same options in the same order (53, 61, 50, 55).
    const again = encodeDhcpv4({ op: 1, xid: 0x3d1d, clientMac: 0x000b_8201_fc42, options: r.value.options });
    expect(again.subarray(0, WIRESHARK_DISCOVER.length)).toEqual(WIRESHARK_DISCOVER);
  });

  it('parses a dhclient-style DISCOVER', () => {
    const r = parseDhcpv4(DHCLIENT_DISCOVER);
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.value.clientMac).toBe(0x5254_0012_3456);
    expect(r.value.xid).toBe(0x5c9a7b21);
    expect(r.value.options).toEqual({
      messageType: DHCPDISCOVER,
      requestedIp: 0x0a00020f,
      hostname: 'debian',
      parameterRequestList: [1, 28, 2, 3, 15, 6, 119, 12, 44, 47, 26, 121, 42],
    });
  });

  it('builds an ACK with the options a Linux client asks for', () => {
    const ack = encodeDhcpv4({
      op: BOOTREPLY,
      xid: 0x5c9a7b21,
      clientMac: 0x5254_0012_3456,
      yiaddr: 0x0a00020f,
      siaddr: 0x0a000202,
      options: {
        messageType: DHCPACK,
        serverId: 0x0a000202,
        leaseTime: 86400,
        renewalTime: 43200,
        rebindingTime: 75600,
        subnetMask: 0xffffff00,
        routers: [0x0a000202],
        dnsServers: [0x0a000203],
        domainName: 'vm.internal',
        interfaceMtu: 1400,
      },
    });
    expect(ack.length).toBe(240 + 62 + 1); // options 3+6+6+6+6+6+6+6+13+4, then END
    expect(ack.subarray(236, 243).toString('hex')).toBe('63825363350105');
    expect(ack.includes(Buffer.from('1a020578', 'hex'))).toBe(true); // option 26 = 1400
    const r = parseDhcpv4(ack);
    expect(r.ok && r.value.options.interfaceMtu).toBe(1400);
    expect(r.ok && r.value.options.domainName).toBe('vm.internal');
  });

  it('emit then parse gives the same value', () => {
    fc.assert(
      fc.property(message, (m) => {
        const r = parseDhcpv4(encodeDhcpv4(m));
        expect(r.ok).toBe(true);
        if (!r.ok) return;
        const { chaddr, sname, file, htype, hlen, options: o, ...rest } = r.value;
        const { options: want, ...fixed } = m;
        expect(rest).toEqual(fixed);
        expect([htype, hlen, chaddr.length, sname.length, file.length]).toEqual([1, 6, 16, 64, 128]);
        expect(o).toEqual(want);
      }),
    );
  });

  it('honours option overload and concatenates split options', () => {
    const b = encodeDhcpv4({ op: 1, xid: 1, clientMac: 1, options: { messageType: DHCPDISCOVER, overload: 3 } });
    Buffer.from('0c0568656c6c6f' + 'ff', 'hex').copy(b, 108); // hostname "hello" in file
    Buffer.from('0f026578' + '0f0261' + '6d' + 'ff', 'hex').copy(b, 44); // domain "ex" + "am" in sname
    const r = parseDhcpv4(b);
    expect(r.ok && r.value.options).toEqual({ messageType: DHCPDISCOVER, overload: 3, hostname: 'hello', domainName: 'exam' });
  });

  it('tolerates a missing END and strips NULs from text; ignores impossible lengths', () => {
    const b = Buffer.alloc(240 + 9);
    b.writeUInt32BE(0x63825363, 236);
    Buffer.from('0c0361620003020203', 'hex').copy(b, 240); // hostname "ab\0", then a router option of 2 bytes
    const r = parseDhcpv4(b);
    expect(r.ok && r.value.options).toEqual({ hostname: 'ab' });
  });

  it('rejects bad cookies and overrunning options with typed errors', () => {
    const noCookie = Buffer.from(DHCLIENT_DISCOVER);
    noCookie[236] = 0;
    expect(parseDhcpv4(noCookie)).toMatchObject({ ok: false, error: { protocol: 'dhcpv4', reason: 'bad-version' } });
    const overrun = Buffer.from(DHCLIENT_DISCOVER.subarray(0, 250));
    expect(parseDhcpv4(overrun)).toMatchObject({ ok: false, error: { protocol: 'dhcpv4', reason: 'truncated' } });
  });

  it('random bytes and every truncation give a typed error', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 400 }), fc.nat(3), (bytes, overload) => {
        const b = Buffer.from(bytes);
        if (b.length >= 243) {
          b.writeUInt32BE(0x63825363, 236);
          if (overload) Buffer.from([52, 1, overload]).copy(b, 240);
        }
        const r = parseDhcpv4(b);
        if (!r.ok) expect(r.error.protocol).toBe('dhcpv4');
      }),
    );
    for (const pkt of [WIRESHARK_DISCOVER, DHCLIENT_DISCOVER]) {
      for (let n = 0; n < pkt.length; n++) {
        const r = parseDhcpv4(pkt.subarray(0, n));
        if (!r.ok) expect(r.error.protocol).toBe('dhcpv4');
        else expect(n).toBeGreaterThanOrEqual(240);
      }
    }
  });
});
