/**
 * DHCP ranges (`mvnet net create --dhcp-range FIRST-LAST`): what the network spec accepts
 * (state/validate.ts checkNetworkSpec) and what the DHCP server then hands out (gateway/dhcp.ts):
 * dynamic addresses only inside the range, whatever the client asks for; reservations (static
 * addresses) wherever the administrator put them.
 */
import { describe, expect, it } from 'vitest';
import { DhcpServer, parseDhcpRange, dhcpRangeText, type DhcpRange } from '../../daemon/gateway/dhcp.js';
import { dissect } from '../../daemon/gateway/dissect.js';
import { makeGatewayNet } from '../../daemon/gateway/types.js';
import { checkNetworkSpec } from '../../daemon/state/validate.js';
import { BOOTREQUEST, DHCPACK, DHCPDISCOVER, DHCPNAK, DHCPOFFER, DHCPREQUEST, encodeDhcpv4, parseDhcpv4, type Dhcpv4Message, type Dhcpv4Options } from '../../daemon/wire/dhcpv4.js';
import { encodeEthernet, ETHERTYPE_IPV4 } from '../../daemon/wire/ethernet.js';
import { encodeIpv4 } from '../../daemon/wire/ipv4.js';
import { formatIpv4, parseIpv4Text } from '../../daemon/wire/ip-text.js';
import { MAC_BROADCAST } from '../../daemon/wire/mac.js';
import { encodeUdp } from '../../daemon/wire/udp.js';

const ip = (s: string): number => {
  const r = parseIpv4Text(s);
  if (!r.ok) throw new Error(s);
  return r.value;
};

describe('network spec: dhcpRange', () => {
  const base = { name: 'lan', subnet: '10.1.0.0/24' };

  it('accepts a range of host addresses without the gateway, in canonical form', () => {
    expect(checkNetworkSpec({ ...base, dhcpRange: '10.1.0.100-10.1.0.149' })).toEqual({ ...base, gateway: '10.1.0.1', mtu: 1500, dhcpRange: '10.1.0.100-10.1.0.149' });
    expect(checkNetworkSpec({ ...base, dhcpRange: '10.1.0.2-10.1.0.254' }).dhcpRange).toBe('10.1.0.2-10.1.0.254');
    expect(checkNetworkSpec({ ...base, dhcpRange: '10.1.0.7-10.1.0.7' }).dhcpRange).toBe('10.1.0.7-10.1.0.7');
    // Below a gateway at the top of the subnet.
    expect(checkNetworkSpec({ ...base, gateway: '10.1.0.254', dhcpRange: '10.1.0.1-10.1.0.253' }).dhcpRange).toBe('10.1.0.1-10.1.0.253');
    // Saved networks are read with the same rule.
    expect(checkNetworkSpec({ ...base, gateway: '10.1.0.1', mtu: 1500, dhcpRange: '10.1.0.100-10.1.0.149' }, true).dhcpRange).toBe('10.1.0.100-10.1.0.149');
    expect(checkNetworkSpec(base)).not.toHaveProperty('dhcpRange');
  });

  for (const [what, over, msg] of [
    ['no dash', { dhcpRange: '10.1.0.100' }, /invalid DHCP range "10\.1\.0\.100": expected FIRST-LAST/],
    ['three parts', { dhcpRange: '10.1.0.100-10.1.0.110-10.1.0.120' }, /expected FIRST-LAST/],
    ['text', { dhcpRange: 'abc-def' }, /invalid DHCP range start "abc"/],
    ['a bad end', { dhcpRange: '10.1.0.100-10.1.0.300' }, /invalid DHCP range end "10\.1\.0\.300"/],
    ['first after last', { dhcpRange: '10.1.0.150-10.1.0.100' }, /first address comes after its last/],
    ['the network address', { dhcpRange: '10.1.0.0-10.1.0.10' }, /not inside the host addresses of 10\.1\.0\.0\/24 \(10\.1\.0\.1 to 10\.1\.0\.254\)/],
    ['the broadcast address', { dhcpRange: '10.1.0.200-10.1.0.255' }, /not inside the host addresses/],
    ['another subnet', { dhcpRange: '10.1.1.10-10.1.1.20' }, /not inside the host addresses/],
    ['spanning past the subnet', { dhcpRange: '10.1.0.200-10.1.1.20' }, /not inside the host addresses/],
    ['the default gateway at its start', { dhcpRange: '10.1.0.1-10.1.0.20' }, /contains the gateway 10\.1\.0\.1/],
    ['a given gateway inside it', { gateway: '10.1.0.120', dhcpRange: '10.1.0.100-10.1.0.149' }, /contains the gateway 10\.1\.0\.120/],
    ['the gateway as its only address', { gateway: '10.1.0.9', dhcpRange: '10.1.0.9-10.1.0.9' }, /contains the gateway/],
    ['not a string', { dhcpRange: 100 }, /dhcpRange must be a non-empty string/],
    ['an empty string', { dhcpRange: '' }, /dhcpRange must be a non-empty string/],
  ] as const) {
    it(`refuses ${what}`, () => {
      expect(() => checkNetworkSpec({ ...base, ...over })).toThrow(msg);
      expect(() => checkNetworkSpec({ ...base, ...over }, true)).toThrow(msg);
    });
  }
});

describe('parseDhcpRange', () => {
  it('reads FIRST-LAST and prints it back', () => {
    const r = parseDhcpRange('10.1.0.100-10.1.0.149');
    expect(r).toEqual({ first: ip('10.1.0.100'), last: ip('10.1.0.149') });
    expect(dhcpRangeText(r!)).toBe('10.1.0.100-10.1.0.149');
  });
  it('refuses anything else', () => {
    for (const t of ['', '10.1.0.1', '10.1.0.9-10.1.0.1', '10.1.0.1-', '-10.1.0.1', 'a-b', '10.1.0.1-10.1.0.2-10.1.0.3', '10.1.0.1 - 10.1.0.2']) {
      expect(parseDhcpRange(t), t).toBeUndefined();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// The server

const GW_MAC = 0x0200_0000_00fe;
const GW = ip('10.1.0.1');
const NOW = 1_000_000;

interface Client {
  readonly mac: number;
  readonly srcIp?: number;
  readonly dstIp?: number;
  readonly dstMac?: number;
}

function frameOf(payload: Buffer, c: Client): Buffer {
  const src = c.srcIp ?? 0;
  const dst = c.dstIp ?? 0xffffffff;
  const udp = encodeUdp({ srcPort: 68, dstPort: 67, payload }, { version: 4, src, dst });
  const ipPkt = encodeIpv4({ dscp: 0, ecn: 0, id: 7, dontFragment: false, moreFragments: false, fragmentOffset: 0, ttl: 64, protocol: 17, src, dst, payload: udp });
  return encodeEthernet({ dst: c.dstMac ?? MAC_BROADCAST, src: c.mac, etherType: ETHERTYPE_IPV4, payload: ipPkt });
}

function msg(c: Client, type: number, options: Dhcpv4Options = {}, ciaddr?: number): Buffer {
  return frameOf(encodeDhcpv4({ op: BOOTREQUEST, xid: 0x1234, clientMac: c.mac, ciaddr, options: { messageType: type, ...options } }), c);
}

/** The server's answer, decoded; null when it sent none. */
function ask(s: DhcpServer, frame: Buffer, now = NOW): Dhcpv4Message | null {
  const d = dissect(frame);
  if (d.kind !== 'ipv4' || !d.udp) throw new Error('bad test frame');
  const r = s.handle(d.eth, d.ip, d.udp, now);
  if (r === null) return null;
  const rd = dissect(r);
  if (rd.kind !== 'ipv4' || !rd.udp) throw new Error('bad reply');
  const m = parseDhcpv4(rd.udp.payload);
  if (!m.ok) throw new Error('reply is not DHCP');
  return m.value;
}

function offer(s: DhcpServer, c: Client, requestedIp?: number, now = NOW): string | null {
  const m = ask(s, msg(c, DHCPDISCOVER, requestedIp !== undefined ? { requestedIp } : {}), now);
  if (m === null) return null;
  expect(m.options.messageType).toBe(DHCPOFFER);
  return formatIpv4(m.yiaddr);
}

/** DISCOVER then REQUEST (SELECTING); the bound address. */
function dora(s: DhcpServer, c: Client, now = NOW): string {
  const o = offer(s, c, undefined, now);
  expect(o).not.toBeNull();
  const m = ask(s, msg(c, DHCPREQUEST, { serverId: GW, requestedIp: ip(o!) }), now);
  expect(m?.options.messageType).toBe(DHCPACK);
  return formatIpv4(m!.yiaddr);
}

const client = (n: number): Client => ({ mac: 0x5254_0000_0000 + n });
const RANGE: DhcpRange = { first: ip('10.1.0.100'), last: ip('10.1.0.101') };

/** `range` null: none (the whole subnet). */
function server(range: DhcpRange | null = RANGE, reservations?: ReadonlyMap<number, number>): DhcpServer {
  const net = makeGatewayNet({ name: 'lan', subnet: '10.1.0.0/24', gatewayIp: GW, gatewayMac: GW_MAC, leaseTime: 600 });
  return new DhcpServer(net, { range: range ?? undefined, reservations });
}

describe('DHCP server with a range', () => {
  it('hands out the range only, then nothing', () => {
    const s = server();
    expect(dora(s, client(1))).toBe('10.1.0.100');
    expect(dora(s, client(2))).toBe('10.1.0.101');
    expect(offer(s, client(3))).toBeNull();
    expect(s.stats.poolExhausted).toBe(1);
    // Without a range the same server starts at the bottom of the subnet.
    expect(dora(server(null), client(1))).toBe('10.1.0.2');
  });

  it('offers inside the range whatever address the client asks for', () => {
    const s = server();
    expect(offer(s, client(1), ip('10.1.0.5'))).toBe('10.1.0.100');
    expect(offer(s, client(2), ip('10.1.0.101'))).toBe('10.1.0.101');
    // Without a range, the requested address would be given.
    expect(offer(server(null), client(1), ip('10.1.0.5'))).toBe('10.1.0.5');
  });

  it('NAKs a REQUEST for an address outside the range (SELECTING, INIT-REBOOT, RENEWING)', () => {
    const s = server();
    const selecting = ask(s, msg(client(1), DHCPREQUEST, { serverId: GW, requestedIp: ip('10.1.0.5') }));
    expect(selecting?.options.messageType).toBe(DHCPNAK);
    const reboot = ask(s, msg(client(2), DHCPREQUEST, { requestedIp: ip('10.1.0.102') }));
    expect(reboot?.options.messageType).toBe(DHCPNAK);
    const renew = ask(s, msg({ ...client(3), srcIp: ip('10.1.0.6'), dstIp: GW, dstMac: GW_MAC }, DHCPREQUEST, {}, ip('10.1.0.6')));
    expect(renew?.options.messageType).toBe(DHCPNAK);
    // Inside it: ACKed.
    const inside = ask(s, msg(client(4), DHCPREQUEST, { requestedIp: ip('10.1.0.101') }));
    expect(inside?.options.messageType).toBe(DHCPACK);
    expect(formatIpv4(inside!.yiaddr)).toBe('10.1.0.101');
    expect(s.leases().map((l) => formatIpv4(l.ip))).toEqual(['10.1.0.101']);
  });

  it('a binding from before the range (restored) is not renewed, and the client moves into it', () => {
    const s = server();
    const mac = client(1).mac;
    s.restore({ version: 1, leases: [{ mac: '52:54:00:00:00:01', ip: '10.1.0.7', state: 'bound', expiresAt: NOW + 600_000 }], declined: [] }, NOW);
    expect(s.leaseFor(mac, NOW)?.ip).toBe(ip('10.1.0.7'));
    const renew = ask(s, msg({ ...client(1), srcIp: ip('10.1.0.7'), dstIp: GW, dstMac: GW_MAC }, DHCPREQUEST, {}, ip('10.1.0.7')));
    expect(renew?.options.messageType).toBe(DHCPNAK);
    expect(dora(s, client(1))).toBe('10.1.0.100');
  });

  it('reuses expired bindings inside the range only', () => {
    const s = server();
    expect(dora(s, client(1))).toBe('10.1.0.100');
    expect(dora(s, client(2))).toBe('10.1.0.101');
    const later = NOW + 700_000;
    expect(s.expire(later)).toHaveLength(2);
    const got = offer(s, client(3), undefined, later);
    expect(['10.1.0.100', '10.1.0.101']).toContain(got);
  });

  it('gives a reservation outside the range to its owner, and keeps one inside from others', () => {
    const owner = client(9);
    const inside = client(8);
    const s = server(RANGE, new Map([
      [owner.mac, ip('10.1.0.50')],
      [inside.mac, ip('10.1.0.100')],
    ]));
    expect(s.rejectedReservations).toEqual([]);
    expect(dora(s, owner)).toBe('10.1.0.50');
    expect(dora(s, client(1))).toBe('10.1.0.101');
    expect(offer(s, client(2))).toBeNull();
    expect(dora(s, inside)).toBe('10.1.0.100');
  });
});
