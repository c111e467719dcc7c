import { describe, expect, it } from 'vitest';
import { dissect } from '../../daemon/gateway/dissect.js';
import { LocalZone, NoneResolver } from '../../daemon/gateway/dns-local.js';
import { LocalFirstResolver, RoutedResolver } from '../../daemon/gateway/dns-route.js';
import { DnsServer, DnsTcpFramer, DnsTcpSession, frameDnsTcp, type DnsAnswer, type Resolver } from '../../daemon/gateway/dns.js';
import { makeGatewayNet } from '../../daemon/gateway/types.js';
import {
  DNS_TYPE_A,
  DNS_TYPE_AAAA,
  DNS_TYPE_MX,
  DNS_TYPE_OPT,
  DNS_TYPE_PTR,
  DNS_TYPE_SOA,
  encodeDns,
  parseDns,
  type DnsMessage,
  type DnsQuestion,
  type DnsRecord,
} from '../../daemon/wire/dns.js';
import { encodeEthernet, ETHERTYPE_IPV4, ETHERTYPE_IPV6 } from '../../daemon/wire/ethernet.js';
import { encodeIpv4 } from '../../daemon/wire/ipv4.js';
import { encodeIpv6 } from '../../daemon/wire/ipv6.js';
import { parseIpv6Text } from '../../daemon/wire/ip-text.js';
import { encodeUdp } from '../../daemon/wire/udp.js';

const GW_MAC = 0x5254_0000_00fe;
const MAC1 = 0x5254_0000_0001;
const GW = 0x0a01_0001;
const VM1 = 0x0a01_0002;
const v6 = (s: string): Buffer => {
  const r = parseIpv6Text(s);
  if (!r.ok) throw new Error(s);
  return r.value;
};
const net = makeGatewayNet({ name: 'lan', subnet: '10.1.0.0/24', gatewayIp: GW, gatewayMac: GW_MAC, ipv6: 'fd00:1::/64' });

function query(name: string, type: number, over: Partial<DnsMessage<Uint8Array>> = {}): Buffer {
  return encodeDns({
    id: 0xbeef,
    qr: false,
    opcode: 0,
    aa: false,
    tc: false,
    rd: true,
    ra: false,
    ad: false,
    cd: false,
    rcode: 0,
    questions: [{ name, type, class: 1 }],
    answers: [],
    authorities: [],
    additionals: [],
    ...over,
  });
}

function decode(b: Buffer | null): DnsMessage {
  expect(b).not.toBeNull();
  const r = parseDns(b!);
  if (!r.ok) throw new Error(r.error.detail);
  return r.value;
}

function zone(): LocalZone {
  const z = new LocalZone(net);
  z.setHost('web', { ipv4: 0x0a01_0005, ipv6: [v6('fd00:1::5')] });
  z.setHost('db', { ipv4: 0x0a01_0006 });
  return z;
}

/** A resolver answering every question with `n` A records (and counting calls). */
class ManyA implements Resolver {
  calls: DnsQuestion[] = [];
  constructor(private readonly n: number) {}
  resolve(_vm: string, q: DnsQuestion): Promise<DnsAnswer> {
    this.calls.push(q);
    const answers: DnsRecord<Uint8Array>[] = Array.from({ length: this.n }, (_, i) => ({ name: q.name, type: DNS_TYPE_A, class: 1, ttl: 300, data: { kind: 'a', address: 0x0808_0000 + i } }));
    return Promise.resolve({ kind: 'records', answers });
  }
}

describe('NoneResolver and the local zone', () => {
  const s = new DnsServer(net, new NoneResolver(zone()));
  const ask = (name: string, type: number): Promise<DnsMessage> => s.answer(query(name, type), 'vm1', 'udp', 0).then(decode);

  it('answers gateway.<domain> with the gateway addresses, authoritatively, without RA', async () => {
    const a = await ask('gateway.lan.mvnet', DNS_TYPE_A);
    expect(a).toMatchObject({ id: 0xbeef, qr: true, aa: true, rd: true, ra: false, rcode: 0 });
    expect(a.questions).toEqual([{ name: 'gateway.lan.mvnet', type: DNS_TYPE_A, class: 1 }]);
    expect(a.answers.map((r) => r.data)).toEqual([{ kind: 'a', address: GW }]);
    const aaaa = await ask('gateway.lan.mvnet', DNS_TYPE_AAAA);
    expect(aaaa.answers.map((r) => r.data)).toEqual([{ kind: 'aaaa', address: v6('fd00:1::1') }]);
  });

  it('answers registered VM names, keeping the question\'s case', async () => {
    const a = await ask('WeB.Lan.MVNet', DNS_TYPE_A);
    expect(a.questions[0]!.name).toBe('WeB.Lan.MVNet');
    expect(a.answers).toEqual([{ name: 'WeB.Lan.MVNet', type: DNS_TYPE_A, class: 1, ttl: 60, data: { kind: 'a', address: 0x0a01_0005 } }]);
    const aaaa = await ask('web.lan.mvnet', DNS_TYPE_AAAA);
    expect(aaaa.answers.map((r) => r.data)).toEqual([{ kind: 'aaaa', address: v6('fd00:1::5') }]);
  });

  it('NODATA for a known name without that type, NXDOMAIN for an unknown local name, both with the SOA', async () => {
    const nodata = await ask('db.lan.mvnet', DNS_TYPE_AAAA);
    expect(nodata.rcode).toBe(0);
    expect(nodata.answers).toEqual([]);
    expect(nodata.authorities[0]).toMatchObject({ name: 'lan.mvnet', type: DNS_TYPE_SOA, data: { kind: 'soa', mname: 'gateway.lan.mvnet', minimum: 60 } });
    const nx = await ask('nope.lan.mvnet', DNS_TYPE_A);
    expect(nx).toMatchObject({ rcode: 3, aa: true });
    expect(nx.authorities[0]?.type).toBe(DNS_TYPE_SOA);
    const mx = await ask('web.lan.mvnet', DNS_TYPE_MX);
    expect(mx).toMatchObject({ rcode: 0, answers: [] });
  });

  it('REFUSES everything outside the network', async () => {
    for (const name of ['example.com', 'mvnet', 'other.mvnet', '8.8.8.8.in-addr.arpa', '']) {
      const r = await ask(name, DNS_TYPE_A);
      expect(r.rcode).toBe(5);
      expect(r.answers).toEqual([]);
    }
  });

  it('answers reverse lookups inside the subnet and prefix', async () => {
    expect((await ask('1.0.1.10.in-addr.arpa', DNS_TYPE_PTR)).answers[0]?.data).toEqual({ kind: 'name', name: 'gateway.lan.mvnet' });
    expect((await ask('6.0.1.10.in-addr.arpa', DNS_TYPE_PTR)).answers[0]?.data).toEqual({ kind: 'name', name: 'db.lan.mvnet' });
    expect((await ask('99.0.1.10.in-addr.arpa', DNS_TYPE_PTR)).rcode).toBe(3);
    const rev6 = [...'fd000001000000000000000000000005'].reverse().join('.') + '.ip6.arpa';
    expect((await ask(rev6, DNS_TYPE_PTR)).answers[0]?.data).toEqual({ kind: 'name', name: 'web.lan.mvnet' });
  });

  it('updates as hosts come and go', async () => {
    const z = new LocalZone(net);
    const srv = new DnsServer(net, new NoneResolver(z));
    expect(decode(await srv.answer(query('vm9.lan.mvnet', DNS_TYPE_A), 'x', 'udp', 0)).rcode).toBe(3);
    z.setHost('vm9', { ipv4: 0x0a01_0009 });
    expect(decode(await srv.answer(query('vm9.lan.mvnet', DNS_TYPE_A), 'x', 'udp', 0)).answers).toHaveLength(1);
    z.deleteHost('vm9');
    expect(decode(await srv.answer(query('vm9.lan.mvnet', DNS_TYPE_A), 'x', 'udp', 0)).rcode).toBe(3);
    expect(() => z.setHost('gateway', { ipv4: 1 })).toThrow(RangeError);
    expect(() => z.setHost('a.b', { ipv4: 1 })).toThrow(RangeError);
  });
});

describe('DNS front end', () => {
  it('FORMERR for a malformed query with a readable header; drops garbage and responses', async () => {
    const s = new DnsServer(net, new ManyA(1));
    const bad = Buffer.concat([query('x.example', DNS_TYPE_A).subarray(0, 14)]); // question cut short
    const r = decode(await s.answer(bad, 'vm', 'udp', 0));
    expect(r).toMatchObject({ id: 0xbeef, qr: true, rcode: 1, rd: true, questions: [] });
    expect(await s.answer(Buffer.alloc(5), 'vm', 'udp', 0)).toBeNull();
    const resp = query('x.example', DNS_TYPE_A, { qr: true });
    expect(await s.answer(resp, 'vm', 'udp', 0)).toBeNull();
    const two = encodeDns({ ...decode(query('a.example', 1)), qr: false, questions: [{ name: 'a', type: 1, class: 1 }, { name: 'b', type: 1, class: 1 }] });
    expect(decode(await s.answer(two, 'vm', 'udp', 0)).rcode).toBe(1);
    expect(s.stats).toMatchObject({ formerr: 2, dropped: 2 });
  });

  it('NOTIMP for other opcodes, REFUSED for zone transfers, SERVFAIL when the resolver fails', async () => {
    const failing: Resolver = { resolve: () => Promise.reject(new Error('boom')) };
    const s = new DnsServer(net, failing);
    expect(decode(await s.answer(query('x.example', DNS_TYPE_A, { opcode: 4 }), 'vm', 'udp', 0)).rcode).toBe(4);
    expect(decode(await s.answer(query('lan.mvnet', 252), 'vm', 'tcp', 0)).rcode).toBe(5);
    const sf = decode(await s.answer(query('x.example', DNS_TYPE_A), 'vm', 'udp', 0));
    expect(sf).toMatchObject({ rcode: 2, ra: true, questions: [{ name: 'x.example', type: 1, class: 1 }] });
  });

  it('echoes an EDNS OPT, answers BADVERS to EDNS version 1, copies RD', async () => {
    const s = new DnsServer(net, new ManyA(1));
    const opt = (ttl: number): DnsRecord<Uint8Array> => ({ name: '', type: DNS_TYPE_OPT, class: 4096, ttl, data: { kind: 'raw', data: Buffer.alloc(0) } });
    const r = decode(await s.answer(query('x.example', DNS_TYPE_A, { additionals: [opt(0)], rd: false }), 'vm', 'udp', 0));
    expect(r.rd).toBe(false);
    expect(r.additionals).toEqual([{ name: '', type: DNS_TYPE_OPT, class: 1232, ttl: 0, data: { kind: 'raw', data: Buffer.alloc(0) } }]);
    const bv = decode(await s.answer(query('x.example', DNS_TYPE_A, { additionals: [opt(0x0001_0000)] }), 'vm', 'udp', 0));
    expect(bv.rcode).toBe(0);
    expect(bv.additionals[0]!.ttl >>> 24).toBe(1); // extended rcode 16 = BADVERS
    expect(bv.answers).toEqual([]);
  });

  it('sets TC and drops the records when a UDP response exceeds 512 bytes (or the EDNS size); TCP is not truncated', async () => {
    const s = new DnsServer(net, new ManyA(40)); // 40 x 16 bytes of A records, > 512
    const udp = await s.answer(query('big.example', DNS_TYPE_A), 'vm', 'udp', 0);
    expect(udp!.length).toBeLessThanOrEqual(512);
    const m = decode(udp);
    expect(m).toMatchObject({ tc: true, rcode: 0, answers: [], questions: [{ name: 'big.example', type: 1, class: 1 }] });
    expect(s.stats.truncated).toBe(1);

    const opt: DnsRecord<Uint8Array> = { name: '', type: DNS_TYPE_OPT, class: 1232, ttl: 0, data: { kind: 'raw', data: Buffer.alloc(0) } };
    const edns = decode(await s.answer(query('big.example', DNS_TYPE_A, { additionals: [opt] }), 'vm', 'udp', 0));
    expect(edns.tc).toBe(false);
    expect(edns.answers).toHaveLength(40);

    const huge = new DnsServer(net, new ManyA(200)); // > 1232 even with EDNS
    const t = decode(await huge.answer(query('big.example', DNS_TYPE_A, { additionals: [opt] }), 'vm', 'udp', 0));
    expect(t.tc).toBe(true);
    expect(t.additionals.map((r) => r.type)).toEqual([DNS_TYPE_OPT]);
    const tcp = decode(await huge.answer(query('big.example', DNS_TYPE_A), 'vm', 'tcp', 0));
    expect(tcp.tc).toBe(false);
    expect(tcp.answers).toHaveLength(200);
  });

  it('handles a UDP/IPv4 datagram to the gateway and replies from port 53 to the client port', async () => {
    const s = new DnsServer(net, new NoneResolver(zone()));
    const payload = query('gateway.lan.mvnet', DNS_TYPE_A);
    const udp = encodeUdp({ srcPort: 33333, dstPort: 53, payload }, { version: 4, src: VM1, dst: GW });
    const ip = encodeIpv4({ dscp: 0, ecn: 0, id: 1, dontFragment: true, moreFragments: false, fragmentOffset: 0, ttl: 64, protocol: 17, src: VM1, dst: GW, payload: udp });
    const f = encodeEthernet({ dst: GW_MAC, src: MAC1, etherType: ETHERTYPE_IPV4, payload: ip });
    const d = dissect(f);
    if (d.kind !== 'ipv4' || !d.udp) throw new Error();
    const pending = s.handleUdp4(d.eth, d.ip, d.udp, 'vm1', 0);
    f.fill(0); // the caller's frame is gone after the call
    const out = dissect((await pending)!);
    if (out.kind !== 'ipv4' || !out.udp) throw new Error(out.kind);
    expect(out.eth).toMatchObject({ dst: MAC1, src: GW_MAC });
    expect(out.ip).toMatchObject({ src: GW, dst: VM1 });
    expect(out.udp).toMatchObject({ srcPort: 53, dstPort: 33333 });
    expect(decode(out.udp.payload).answers[0]?.data).toEqual({ kind: 'a', address: GW });
    // Not to the gateway: dropped.
    const other = dissect(encodeEthernet({ dst: GW_MAC, src: MAC1, etherType: ETHERTYPE_IPV4, payload: encodeIpv4({ dscp: 0, ecn: 0, id: 1, dontFragment: true, moreFragments: false, fragmentOffset: 0, ttl: 64, protocol: 17, src: VM1, dst: 0x0808_0808, payload: encodeUdp({ srcPort: 3, dstPort: 53, payload }, { version: 4, src: VM1, dst: 0x0808_0808 }) }) }));
    if (other.kind !== 'ipv4' || !other.udp) throw new Error();
    expect(await s.handleUdp4(other.eth, other.ip, other.udp, 'vm1', 0)).toBeNull();
  });

  it('handles a UDP/IPv6 datagram to the gateway\'s global address', async () => {
    const s = new DnsServer(net, new NoneResolver(zone()));
    const src = v6('fd00:1::99');
    const dst = v6('fd00:1::1');
    const payload = query('web.lan.mvnet', DNS_TYPE_AAAA);
    const ip = encodeIpv6({ trafficClass: 0, flowLabel: 0, hopLimit: 64, src, dst, protocol: 17, payload: encodeUdp({ srcPort: 5353, dstPort: 53, payload }, { version: 6, src, dst }) });
    const f = encodeEthernet({ dst: GW_MAC, src: MAC1, etherType: ETHERTYPE_IPV6, payload: ip });
    const d = dissect(f);
    if (d.kind !== 'ipv6' || !d.udp) throw new Error();
    const pending = s.handleUdp6(d.eth, d.ip, d.udp, 'vm1', 0);
    f.fill(0);
    const out = dissect((await pending)!);
    if (out.kind !== 'ipv6' || !out.udp) throw new Error(out.kind);
    expect(out.ip.src).toEqual(dst);
    expect(out.ip.dst).toEqual(src);
    expect(decode(out.udp.payload).answers[0]?.data).toEqual({ kind: 'aaaa', address: v6('fd00:1::5') });
  });
});

describe('DNS over TCP', () => {
  const unframe = (b: Buffer): DnsMessage[] => {
    const f = new DnsTcpFramer();
    return (f.push(b) ?? []).map((m) => decode(m));
  };

  it('answers two queries arriving in one chunk, in order', async () => {
    const session = new DnsTcpSession(new DnsServer(net, new NoneResolver(zone())), 'vm1');
    const q1 = query('web.lan.mvnet', DNS_TYPE_A, { id: 1 });
    const q2 = query('db.lan.mvnet', DNS_TYPE_A, { id: 2 });
    const out = await session.handleTcpBytes(Buffer.concat([frameDnsTcp(q1), frameDnsTcp(q2)]), 0);
    const msgs = unframe(out);
    expect(msgs.map((m) => m.id)).toEqual([1, 2]);
    expect(msgs.map((m) => m.answers[0]?.data)).toEqual([
      { kind: 'a', address: 0x0a01_0005 },
      { kind: 'a', address: 0x0a01_0006 },
    ]);
  });

  it('reassembles a query split across chunks (even inside the length prefix)', async () => {
    const session = new DnsTcpSession(new DnsServer(net, new NoneResolver(zone())), 'vm1');
    const framed = frameDnsTcp(query('gateway.lan.mvnet', DNS_TYPE_A, { id: 7 }));
    expect((await session.handleTcpBytes(framed.subarray(0, 1), 0)).length).toBe(0);
    expect((await session.handleTcpBytes(framed.subarray(1, 10), 0)).length).toBe(0);
    const out = await session.handleTcpBytes(framed.subarray(10), 0);
    const msgs = unframe(out);
    expect(msgs).toHaveLength(1);
    expect(msgs[0]).toMatchObject({ id: 7, rcode: 0 });
    expect(out.readUInt16BE(0)).toBe(out.length - 2);
  });

  it('a chunk holding the end of one query and the start of the next', async () => {
    const session = new DnsTcpSession(new DnsServer(net, new NoneResolver(zone())), 'vm1');
    const stream = Buffer.concat([frameDnsTcp(query('web.lan.mvnet', 1, { id: 1 })), frameDnsTcp(query('db.lan.mvnet', 1, { id: 2 }))]);
    const cut = 20;
    const a = unframe(await session.handleTcpBytes(stream.subarray(0, cut), 0));
    const b = unframe(await session.handleTcpBytes(stream.subarray(cut, stream.length - 3), 0));
    const c = unframe(await session.handleTcpBytes(stream.subarray(stream.length - 3), 0));
    expect([a.length, b.length, c.length]).toEqual([0, 1, 1]);
    expect([b[0]!.id, c[0]!.id]).toEqual([1, 2]);
  });

  it('the framer gives up beyond its buffer limit', () => {
    const f = new DnsTcpFramer(100);
    expect(f.push(Buffer.from([0x01, 0x00]))).toEqual([]);
    expect(f.push(Buffer.alloc(150))).toBeNull();
    expect(f.failed).toBe(true);
    expect(f.push(Buffer.alloc(1))).toBeNull();
  });
});

describe('resolver composition', () => {
  it('picks the resolver by the VM\'s route; local names first for direct VMs', async () => {
    const z = zone();
    const upstream = new ManyA(1);
    const none = new NoneResolver(z);
    const direct = new LocalFirstResolver(z, upstream);
    const routes: Record<string, 'none' | 'direct'> = { vm1: 'none', vm2: 'direct' };
    const resolver = RoutedResolver.byRoute({ none, direct }, (vm) => routes[vm], none);
    const s = new DnsServer(net, resolver);
    const r1 = decode(await s.answer(query('example.com', DNS_TYPE_A), 'vm1', 'udp', 0));
    expect(r1).toMatchObject({ rcode: 5, ra: false });
    const r2 = decode(await s.answer(query('example.com', DNS_TYPE_A), 'vm2', 'udp', 0));
    expect(r2).toMatchObject({ rcode: 0, ra: true });
    expect(r2.answers).toHaveLength(1);
    const r3 = decode(await s.answer(query('web.lan.mvnet', DNS_TYPE_A), 'vm2', 'udp', 0));
    expect(r3.answers[0]?.data).toEqual({ kind: 'a', address: 0x0a01_0005 });
    expect(upstream.calls.map((q) => q.name)).toEqual(['example.com']); // local names never forwarded
    const unknown = decode(await s.answer(query('example.com', DNS_TYPE_A), 'stranger', 'udp', 0));
    expect(unknown.rcode).toBe(5);
  });
});
