/** The one-line decode `mvnet capture` prints without -w, and its argument checks. */
import { describe, expect, it } from 'vitest';
import { describeFrame, ipv6, packetLine } from '../../cli/capture/decode.js';
import { capturePlan, looksLikeFilter } from '../../cli/capture/args.js';
import { arpReply, arpRequest, ethernet, icmpEcho, ipv4Packet } from '../support/frames.js';

const A = '02:00:00:00:00:01';
const B = '02:00:00:00:00:02';

function tcpSeg(sport: number, dport: number, flags: number, seq: number, ack: number, payload = 0): Buffer {
  const t = Buffer.alloc(20 + payload);
  t.writeUInt16BE(sport, 0);
  t.writeUInt16BE(dport, 2);
  t.writeUInt32BE(seq, 4);
  t.writeUInt32BE(ack, 8);
  t[12] = 5 << 4;
  t[13] = flags;
  t.writeUInt16BE(64240, 14);
  return t;
}

function udpDgram(sport: number, dport: number, payload: number): Buffer {
  const u = Buffer.alloc(8 + payload);
  u.writeUInt16BE(sport, 0);
  u.writeUInt16BE(dport, 2);
  u.writeUInt16BE(8 + payload, 4);
  return u;
}

function ipv6Packet(src: string, dst: string, next: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(40 + payload.length);
  h[0] = 0x60;
  h.writeUInt16BE(payload.length, 4);
  h[6] = next;
  h[7] = 64;
  v6bytes(src).copy(h, 8);
  v6bytes(dst).copy(h, 24);
  payload.copy(h, 40);
  return h;
}

function v6bytes(s: string): Buffer {
  const [head, tail] = s.split('::') as [string, string | undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  const b = Buffer.alloc(16);
  groups.forEach((g, i) => b.writeUInt16BE(parseInt(g, 16), 2 * i));
  return b;
}

describe('describeFrame', () => {
  it('ARP request and reply', () => {
    expect(describeFrame(arpRequest({ srcMac: A, srcIp: '10.0.0.2', targetIp: '10.0.0.1' }), 'ether')).toBe(`${A} > ff:ff:ff:ff:ff:ff, ARP who-has 10.0.0.1 tell 10.0.0.2`);
    expect(describeFrame(arpReply({ srcMac: B, srcIp: '10.0.0.1', dstMac: A, dstIp: '10.0.0.2' }), 'ether')).toBe(`${B} > ${A}, ARP reply 10.0.0.1 is-at ${B}`);
  });

  it('ICMP echo, TCP flags, UDP and DHCP', () => {
    const ping = ethernet(B, A, 0x0800, ipv4Packet({ src: '10.0.0.2', dst: '10.0.0.1', protocol: 1, payload: icmpEcho({ type: 8, id: 7, seq: 3 }) }));
    expect(describeFrame(ping, 'ether')).toBe(`${A} > ${B}, IPv4 10.0.0.2 > 10.0.0.1: ICMP echo request, id 7, seq 3`);
    const syn = ipv4Packet({ src: '10.0.0.2', dst: '10.0.0.3', protocol: 6, payload: tcpSeg(40000, 80, 0x02, 1000, 0) });
    expect(describeFrame(syn, 'raw')).toBe('IPv4 10.0.0.2.40000 > 10.0.0.3.80: TCP [S] seq 1000 win 64240 length 0');
    const synAck = ipv4Packet({ src: '10.0.0.3', dst: '10.0.0.2', protocol: 6, payload: tcpSeg(80, 40000, 0x12, 5, 1001, 10) });
    expect(describeFrame(synAck, 'raw')).toBe('IPv4 10.0.0.3.80 > 10.0.0.2.40000: TCP [S.] seq 5 ack 1001 win 64240 length 10');
    const dhcp = ipv4Packet({ src: '0.0.0.0', dst: '255.255.255.255', protocol: 17, payload: udpDgram(68, 67, 300) });
    expect(describeFrame(dhcp, 'raw')).toBe('IPv4 0.0.0.0.68 > 255.255.255.255.67: DHCP length 300');
    expect(describeFrame(ipv4Packet({ src: '1.2.3.4', dst: '5.6.7.8', protocol: 17, payload: udpDgram(1, 2, 5) }), 'raw')).toBe('IPv4 1.2.3.4.1 > 5.6.7.8.2: UDP length 5');
  });

  it('IPv6: ICMPv6 names, addresses in RFC 5952 form, a VLAN tag', () => {
    const icmp6 = Buffer.from([135, 0, 0, 0, 0, 0, 0, 0]);
    const ns = ipv6Packet('fe80::1', 'ff02::1:ff00:2', 58, icmp6);
    const tagged = Buffer.concat([ethernet(B, A, 0x8100, Buffer.alloc(0)).subarray(0, 14), Buffer.from([0x00, 0x0a, 0x86, 0xdd]), ns]);
    expect(describeFrame(tagged, 'ether')).toBe(`${A} > ${B}, vlan 10, IPv6 fe80::1 > ff02::1:ff00:2: ICMP6 neighbor solicitation`);
    expect(ipv6(v6bytes('2001:db8:0:0:1:0:0:1'), 0)).toBe('2001:db8::1:0:0:1');
    expect(ipv6(v6bytes('1:2:3:4:5:6:7:8'), 0)).toBe('1:2:3:4:5:6:7:8');
    expect(ipv6(Buffer.alloc(16), 0)).toBe('::');
  });

  it('cut or malformed packets say so, and never throw', () => {
    const ping = ipv4Packet({ src: '10.0.0.2', dst: '10.0.0.1', protocol: 6, payload: tcpSeg(1, 2, 2, 0, 0) });
    expect(describeFrame(ping.subarray(0, 30), 'raw')).toBe('IPv4 10.0.0.2 > 10.0.0.1: TCP [truncated]');
    expect(describeFrame(Buffer.alloc(10), 'ether')).toBe('Ethernet [truncated]');
    for (let n = 0; n < 80; n++) {
      const junk = Buffer.alloc(n, 0x45);
      expect(() => describeFrame(junk, 'raw')).not.toThrow();
      expect(() => describeFrame(Buffer.concat([ethernet(B, A, 0x86dd, Buffer.alloc(0)), junk]), 'ether')).not.toThrow();
    }
    expect(describeFrame(Buffer.from([0x90]), 'raw')).toBe('IP [bad version 9]');
  });

  it('packetLine: time, point, direction, length, captured part, comment', () => {
    const frame = ipv4Packet({ src: '10.0.0.2', dst: '10.0.0.1', protocol: 1, payload: icmpEcho({ type: 0, id: 1, seq: 1 }) });
    const line = packetLine({ timeNs: 1_700_000_000_123_456_789n, point: 'exit:direct', direction: 'out', length: 100, data: frame, link: 'raw', comment: 'direct' });
    expect(line).toMatch(/^\d\d:\d\d:\d\d\.123456 exit:direct out 100 \(46 captured\) IPv4 10\.0\.0\.2 > 10\.0\.0\.1: ICMP echo reply, id 1, seq 1 \[direct\]$/);
  });
});

describe('capture arguments', () => {
  it('the first word is the VM unless it starts a filter', () => {
    expect(capturePlan(['vm1', 'tcp', 'port', '80'], {}).params).toEqual({ from: { vm: 'vm1' }, filter: 'tcp port 80' });
    expect(capturePlan(['tcp', 'port', '80'], { net: 'n1' }).params).toEqual({ from: { net: 'n1' }, filter: 'tcp port 80' });
    expect(capturePlan(['(icmp', 'or', 'arp)'], { point: ['exit:direct', 'drops'] }).params).toEqual({ from: { point: ['exit:direct', 'drops'] }, filter: '(icmp or arp)' });
    expect(looksLikeFilter('not')).toBe(true);
    expect(looksLikeFilter('!arp')).toBe(true);
    expect(looksLikeFilter('vm-1')).toBe(false);
  });

  it('refuses what cannot be, in one line', () => {
    expect(() => capturePlan([], {})).toThrow('give what to capture: a VM, --net NAME or --point NAME');
    expect(() => capturePlan(['vm1'], { net: 'n1' })).toThrow('give a VM (vm1) or --net, not both');
    expect(() => capturePlan([], { net: 'n1', point: ['x'] })).toThrow(/not several/);
    expect(() => capturePlan(['vm1'], { ring: 3, write: 'f' })).toThrow('--ring needs --size MB');
    expect(() => capturePlan(['vm1'], { size: 3, write: 'f' })).toThrow('--size needs --ring N');
    expect(() => capturePlan(['vm1'], { ring: 3, size: 1 })).toThrow('--ring writes files: give -w FILE');
    expect(() => capturePlan(['vm1'], { ring: 3, size: 1, write: '-' })).toThrow('--ring writes files: give -w FILE');
    expect(capturePlan(['vm1'], { ring: 3, size: 0.5, write: 'f', count: 5, duration: 2, snaplen: 96, drops: true })).toEqual({
      params: { from: { vm: 'vm1' }, count: 5, durationSec: 2, snaplen: 96, drops: true },
      write: 'f',
      ring: { files: 3, sizeBytes: 524_288 },
    });
  });
});
