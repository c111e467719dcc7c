import { describe, expect, it } from 'vitest';
import { ArpResponder } from '../../daemon/gateway/arp.js';
import { dissect } from '../../daemon/gateway/dissect.js';
import { makeGatewayNet } from '../../daemon/gateway/types.js';
import { ARP_REPLY, ARP_REQUEST, encodeArp, type ArpPacket } from '../../daemon/wire/arp.js';
import { encodeEthernet, ETHERTYPE_ARP } from '../../daemon/wire/ethernet.js';
import { MAC_BROADCAST } from '../../daemon/wire/mac.js';

const GW_MAC = 0x0200_0000_00fe;
const GW = 0x0a01_0001; // 10.1.0.1
const VM1 = 0x0a01_0002;
const VM2 = 0x0a01_0003;
const MAC1 = 0x5254_0000_0001;
const net = makeGatewayNet({ name: 'lan', subnet: '10.1.0.0/24', gatewayIp: GW, gatewayMac: GW_MAC });

function frame(arp: Partial<ArpPacket>, ethSrc = MAC1, ethDst = MAC_BROADCAST): Buffer {
  const p: ArpPacket = { op: ARP_REQUEST, senderMac: ethSrc, senderIp: VM1, targetMac: 0, targetIp: GW, ...arp };
  return encodeEthernet({ dst: ethDst, src: ethSrc, etherType: ETHERTYPE_ARP, payload: encodeArp(p) });
}

function handle(r: ArpResponder, f: Buffer, now = 0): Buffer | null {
  const d = dissect(f);
  if (d.kind !== 'arp') throw new Error('not ARP');
  return r.handle(d.eth, d.arp, now);
}

function parse(f: Buffer | null): { dst: number; src: number; arp: ArpPacket } {
  expect(f).not.toBeNull();
  const d = dissect(f!);
  if (d.kind !== 'arp') throw new Error('not ARP');
  return { dst: d.eth.dst, src: d.eth.src, arp: d.arp };
}

describe('gateway ARP', () => {
  it('answers a request for the gateway address, unicast to the asker, padded to 60 bytes', () => {
    const r = new ArpResponder(net);
    const out = handle(r, frame({}));
    expect(out!.length).toBe(60);
    expect(parse(out)).toEqual({
      dst: MAC1,
      src: GW_MAC,
      arp: { op: ARP_REPLY, senderMac: GW_MAC, senderIp: GW, targetMac: MAC1, targetIp: VM1 },
    });
    // A unicast refresh (Linux re-probes with a unicast request) too.
    expect(parse(handle(r, frame({}, MAC1, GW_MAC))).arp.op).toBe(ARP_REPLY);
    expect(r.stats.replies).toBe(2);
  });

  it('never answers for VMs\' addresses: requests, probes and gratuitous announcements', () => {
    const r = new ArpResponder(net);
    expect(handle(r, frame({ targetIp: VM2 }))).toBeNull();
    expect(handle(r, frame({ senderIp: 0, targetIp: VM2 }))).toBeNull(); // RFC 5227 probe
    expect(handle(r, frame({ senderIp: VM1, targetIp: VM1 }))).toBeNull(); // gratuitous request
    expect(handle(r, frame({ op: ARP_REPLY, senderIp: VM1, targetIp: VM1, targetMac: MAC_BROADCAST }))).toBeNull(); // gratuitous reply
    expect(handle(r, frame({ targetIp: 0x0a01_00ff }))).toBeNull(); // broadcast address
    expect(r.stats).toMatchObject({ replies: 0, notForUs: 4, ignored: 1 });
  });

  it('answers a probe (sender IP 0) for the gateway address: the address is taken', () => {
    const r = new ArpResponder(net);
    const out = parse(handle(r, frame({ senderIp: 0 })));
    expect(out.dst).toBe(MAC1);
    expect(out.arp).toMatchObject({ op: ARP_REPLY, senderIp: GW, senderMac: GW_MAC, targetIp: 0, targetMac: MAC1 });
  });

  it('defends the gateway address against a VM claiming it, at most once per 10 s', () => {
    const r = new ArpResponder(net);
    const out = parse(handle(r, frame({ senderIp: GW, targetIp: GW }), 1000));
    expect(out.dst).toBe(MAC_BROADCAST);
    expect(out.arp).toMatchObject({ op: ARP_REPLY, senderIp: GW, senderMac: GW_MAC, targetIp: GW });
    expect(handle(r, frame({ senderIp: GW, targetIp: GW }), 5000)).toBeNull();
    expect(handle(r, frame({ senderIp: GW, targetIp: GW }), 11_000)).not.toBeNull();
    expect(r.stats.conflicts).toBe(3);
  });

  it('refuses a sender MAC that is not the frame source, and senders off the subnet', () => {
    const r = new ArpResponder(net);
    expect(handle(r, frame({ senderMac: 0x5254_0000_0099 }))).toBeNull();
    expect(handle(r, frame({ senderIp: 0xc0a8_0001 }))).toBeNull();
    expect(r.stats.refused).toBe(2);
  });

  it('ignores VLAN-tagged frames', () => {
    const r = new ArpResponder(net);
    const tagged = encodeEthernet({
      dst: MAC_BROADCAST,
      src: MAC1,
      vlan: { pcp: 0, dei: false, vid: 5 },
      etherType: ETHERTYPE_ARP,
      payload: encodeArp({ op: ARP_REQUEST, senderMac: MAC1, senderIp: VM1, targetMac: 0, targetIp: GW }),
    });
    expect(handle(r, tagged)).toBeNull();
  });
});
