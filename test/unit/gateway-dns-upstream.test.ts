import dgram from 'node:dgram';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { LocalZone } from '../../daemon/gateway/dns-local.js';
import { LocalFirstResolver } from '../../daemon/gateway/dns-route.js';
import { readResolvConf, UpstreamResolver } from '../../daemon/gateway/dns-upstream.js';
import { DnsServer, DnsTcpFramer, frameDnsTcp } from '../../daemon/gateway/dns.js';
import { makeGatewayNet } from '../../daemon/gateway/types.js';
import { DNS_TYPE_A, DNS_TYPE_MX, DNS_TYPE_OPT, encodeDns, parseDns, type DnsMessage, type DnsRecord } from '../../daemon/wire/dns.js';

type Reply = (q: DnsMessage, send: (m: DnsMessage<Uint8Array>, overrideId?: number) => void) => void;

interface Fake {
  readonly port: number;
  readonly received: { id: number; port: number; msg: DnsMessage }[];
  tcpReceived: number;
  close(): Promise<void>;
}

const open: Fake[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((f) => f.close()));
});

function answerTo(q: DnsMessage, answers: DnsRecord<Uint8Array>[], over: Partial<DnsMessage<Uint8Array>> = {}): DnsMessage<Uint8Array> {
  return { ...q, qr: true, ra: true, answers, authorities: [], additionals: [], ...over };
}

const A = (name: string, address: number): DnsRecord<Uint8Array> => ({ name, type: DNS_TYPE_A, class: 1, ttl: 300, data: { kind: 'a', address } });

/** A fake upstream DNS server on 127.0.0.1 (UDP, plus TCP on the same port when `tcp` is given). */
async function fakeUpstream(udp: Reply, tcp?: Reply): Promise<Fake> {
  const sock = dgram.createSocket('udp4');
  const received: Fake['received'] = [];
  sock.on('message', (buf, rinfo) => {
    const r = parseDns(buf);
    if (!r.ok) return;
    received.push({ id: r.value.id, port: rinfo.port, msg: r.value });
    udp(r.value, (m, overrideId) => sock.send(encodeDns({ ...m, id: overrideId ?? m.id }), rinfo.port, rinfo.address));
  });
  let server: Server | undefined;
  const conns = new Set<Socket>();
  let port: number;
  if (tcp) {
    server = createServer((c) => {
      conns.add(c);
      const framer = new DnsTcpFramer();
      c.on('data', (chunk) => {
        for (const m of framer.push(chunk) ?? []) {
          const r = parseDns(m);
          if (!r.ok) continue;
          fake.tcpReceived++;
          tcp(r.value, (reply, overrideId) => c.write(frameDnsTcp(encodeDns({ ...reply, id: overrideId ?? reply.id }))));
        }
      });
      c.on('close', () => conns.delete(c));
    });
    await new Promise<void>((res) => server!.listen(0, '127.0.0.1', res));
    port = (server.address() as { port: number }).port;
    await new Promise<void>((res) => sock.bind(port, '127.0.0.1', res));
  } else {
    await new Promise<void>((res) => sock.bind(0, '127.0.0.1', res));
    port = sock.address().port;
  }
  const fake: Fake = {
    port,
    received,
    tcpReceived: 0,
    close: async () => {
      sock.close();
      for (const c of conns) c.destroy();
      if (server) await new Promise<void>((res) => server!.close(() => res()));
    },
  };
  open.push(fake);
  return fake;
}

const q = (name: string) => ({ name, type: DNS_TYPE_A, class: 1 });

describe('UpstreamResolver', () => {
  it('relays the upstream answer, asking with RD, a random id and EDNS', async () => {
    const up = await fakeUpstream((m, send) => send(answerTo(m, [A(m.questions[0]!.name, 0x5db8_d822)])));
    const r = new UpstreamResolver({ server: { host: '127.0.0.1', port: up.port }, timeoutMs: 1000 });
    const a = await r.resolve('vm', q('example.com'), 0);
    expect(a).toEqual({ kind: 'records', answers: [{ name: 'example.com', type: 1, class: 1, ttl: 300, data: { kind: 'a', address: 0x5db8_d822 } }], authorities: [], additionals: [] });
    expect(up.received).toHaveLength(1);
    expect(up.received[0]!.msg).toMatchObject({ rd: true, qr: false, questions: [q('example.com')] });
    expect(up.received[0]!.msg.additionals[0]).toMatchObject({ type: DNS_TYPE_OPT, class: 1232 });
    // Ids and source ports vary between questions.
    for (let i = 0; i < 5; i++) await r.resolve('vm', q(`n${i}.example`), 0);
    expect(new Set(up.received.map((x) => x.id)).size).toBeGreaterThan(1);
    expect(new Set(up.received.map((x) => x.port)).size).toBeGreaterThan(1);
    expect(r.stats).toMatchObject({ queries: 6, answers: 6, spoofed: 0, timeouts: 0 });
  });

  it('drops answers with a wrong id or question and keeps waiting for the real one', async () => {
    const up = await fakeUpstream((m, send) => {
      send(answerTo(m, [A(m.questions[0]!.name, 0x0101_0101)]), (m.id + 1) & 0xffff); // spoofed id
      send(answerTo(m, [A('evil.example', 0x0202_0202)], { questions: [q('evil.example')] })); // other question
      setTimeout(() => send(answerTo(m, [A(m.questions[0]!.name, 0x0303_0303)])), 20);
    });
    const r = new UpstreamResolver({ server: { host: '127.0.0.1', port: up.port }, timeoutMs: 1000 });
    const a = await r.resolve('vm', q('example.com'), 0);
    expect(a.kind === 'records' && a.answers.map((x) => x.data)).toEqual([{ kind: 'a', address: 0x0303_0303 }]);
    expect(r.stats.spoofed).toBe(2);
  });

  it('a spoofed answer alone is not accepted: timeout, one retry with a new id, then SERVFAIL', async () => {
    const up = await fakeUpstream((m, send) => send(answerTo(m, [A(m.questions[0]!.name, 0x0101_0101)]), (m.id + 1) & 0xffff));
    const r = new UpstreamResolver({ server: { host: '127.0.0.1', port: up.port }, timeoutMs: 100 });
    const started = Date.now();
    expect(await r.resolve('vm', q('example.com'), 0)).toEqual({ kind: 'servfail' });
    expect(Date.now() - started).toBeGreaterThanOrEqual(190);
    expect(up.received).toHaveLength(2);
    expect(r.stats).toMatchObject({ timeouts: 2, spoofed: 2, answers: 0 });
  });

  it('a silent upstream: retried once, then SERVFAIL; an answer to the retry is used', async () => {
    const silent = await fakeUpstream(() => {});
    const r = new UpstreamResolver({ server: { host: '127.0.0.1', port: silent.port }, timeoutMs: 80 });
    expect(await r.resolve('vm', q('example.com'), 0)).toEqual({ kind: 'servfail' });
    expect(silent.received).toHaveLength(2);

    let n = 0;
    const second = await fakeUpstream((m, send) => {
      if (n++ > 0) send(answerTo(m, [A(m.questions[0]!.name, 0x0404_0404)]));
    });
    const r2 = new UpstreamResolver({ server: { host: '127.0.0.1', port: second.port }, timeoutMs: 80 });
    const a = await r2.resolve('vm', q('example.com'), 0);
    expect(a.kind).toBe('records');
    expect(r2.stats).toMatchObject({ timeouts: 1, answers: 1 });
  });

  it('relays NXDOMAIN and REFUSED; other errors become SERVFAIL', async () => {
    const up = await fakeUpstream((m, send) => {
      const name = m.questions[0]!.name;
      send(answerTo(m, [], { rcode: name.startsWith('nx') ? 3 : name.startsWith('no') ? 5 : 4 }));
    });
    const r = new UpstreamResolver({ server: { host: '127.0.0.1', port: up.port }, timeoutMs: 500 });
    expect((await r.resolve('vm', q('nx.example'), 0)).kind).toBe('nxdomain');
    expect((await r.resolve('vm', q('no.example'), 0)).kind).toBe('refused');
    expect((await r.resolve('vm', q('x.example'), 0)).kind).toBe('servfail');
  });

  it('expands a compressed name in MX RDATA, which would otherwise point into the upstream message', async () => {
    const up = await fakeUpstream((m, send) =>
      // Preference 10, then a pointer to the question name at offset 12: "mail exchanger = the name asked".
      send(answerTo(m, [{ name: m.questions[0]!.name, type: DNS_TYPE_MX, class: 1, ttl: 60, data: { kind: 'raw', data: Buffer.from([0, 10, 0xc0, 0x0c]) } }])),
    );
    const net = makeGatewayNet({ name: 'lan', subnet: '10.1.0.0/24', gatewayIp: '10.1.0.1', gatewayMac: 0x5254_0000_00fe });
    const s = new DnsServer(net, new UpstreamResolver({ server: { host: '127.0.0.1', port: up.port } }));
    const query = encodeDns({ id: 1, qr: false, opcode: 0, aa: false, tc: false, rd: true, ra: false, ad: false, cd: false, rcode: 0, questions: [{ name: 'example.com', type: DNS_TYPE_MX, class: 1 }], answers: [], authorities: [], additionals: [] });
    const r = parseDns((await s.answer(query, 'vm', 'udp', 0))!);
    if (!r.ok) throw new Error();
    const rdata = r.value.answers[0]!.data;
    expect(rdata).toEqual({ kind: 'raw', data: Buffer.concat([Buffer.from([0, 10]), Buffer.from('\x07example\x03com\x00', 'latin1')]) });
  });

  it('re-asks over TCP when the UDP answer is truncated', async () => {
    const big = Array.from({ length: 100 }, (_, i) => A('big.example', 0x0a00_0000 + i));
    const up = await fakeUpstream(
      (m, send) => send(answerTo(m, [], { tc: true })),
      (m, send) => send(answerTo(m, big)),
    );
    const r = new UpstreamResolver({ server: { host: '127.0.0.1', port: up.port }, timeoutMs: 1000 });
    const a = await r.resolve('vm', q('big.example'), 0);
    expect(a.kind === 'records' && a.answers).toHaveLength(100);
    expect(up.tcpReceived).toBe(1);
    expect(r.stats.tcpFallbacks).toBe(1);
  });

  it('no upstream configured, closed, or overloaded: SERVFAIL', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mvnet-gw-'));
    try {
      writeFileSync(join(dir, 'empty.conf'), '# nothing\n');
      const none = new UpstreamResolver({ resolvConf: join(dir, 'empty.conf') });
      expect(none.server).toBeUndefined();
      expect(await none.resolve('vm', q('example.com'), 0)).toEqual({ kind: 'servfail' });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    const silent = await fakeUpstream(() => {});
    const r = new UpstreamResolver({ server: { host: '127.0.0.1', port: silent.port }, timeoutMs: 5000, maxInFlight: 1 });
    const pending = r.resolve('vm', q('a.example'), 0);
    expect(await r.resolve('vm', q('b.example'), 0)).toEqual({ kind: 'servfail' });
    expect(r.stats.overloaded).toBe(1);
    r.close();
    expect(await pending).toEqual({ kind: 'servfail' });
    expect(() => new UpstreamResolver({ server: { host: 'dns.example', port: 53 } })).toThrow(RangeError);
  });

  it('readResolvConf takes the first nameserver', () => {
    const dir = mkdtempSync(join(tmpdir(), 'mvnet-gw-'));
    try {
      const p = join(dir, 'resolv.conf');
      writeFileSync(p, '# generated\nsearch example\nnameserver fe80::1%eth0\nnameserver 9.9.9.9\n');
      expect(readResolvConf(p)).toEqual({ host: 'fe80::1', port: 53 });
      writeFileSync(p, 'options edns0\n  nameserver 10.255.255.53\n');
      expect(readResolvConf(p)).toEqual({ host: '10.255.255.53', port: 53 });
      expect(readResolvConf(join(dir, 'missing'))).toBeUndefined();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('end to end: the front end relays through the upstream, local names stay local', async () => {
    const up = await fakeUpstream((m, send) => send(answerTo(m, [A(m.questions[0]!.name, 0x5db8_d822)])));
    const net = makeGatewayNet({ name: 'lan', subnet: '10.1.0.0/24', gatewayIp: '10.1.0.1', gatewayMac: 0x5254_0000_00fe });
    const s = new DnsServer(net, new LocalFirstResolver(new LocalZone(net), new UpstreamResolver({ server: { host: '127.0.0.1', port: up.port } })));
    const ask = async (name: string): Promise<DnsMessage> => {
      const query = encodeDns({ id: 42, qr: false, opcode: 0, aa: false, tc: false, rd: true, ra: false, ad: false, cd: false, rcode: 0, questions: [q(name)], answers: [], authorities: [], additionals: [] });
      const r = parseDns((await s.answer(query, 'vm', 'udp', 0))!);
      if (!r.ok) throw new Error();
      return r.value;
    };
    const out = await ask('Example.COM');
    expect(out).toMatchObject({ id: 42, rcode: 0, ra: true, aa: false, questions: [q('Example.COM')] });
    expect(out.answers.map((x) => x.data)).toEqual([{ kind: 'a', address: 0x5db8_d822 }]);
    expect((await ask('gateway.lan.mvnet')).answers.map((x) => x.data)).toEqual([{ kind: 'a', address: 0x0a01_0001 }]);
    expect(up.received.map((x) => x.msg.questions[0]!.name)).toEqual(['Example.COM']);
  });
});
