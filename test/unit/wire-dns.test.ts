import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  DNS_TYPE_A,
  DNS_TYPE_AAAA,
  DNS_TYPE_CNAME,
  DNS_TYPE_OPT,
  DNS_TYPE_SOA,
  dnsNameToLabels,
  encodeDns,
  normalizeDnsName,
  parseDns,
  parseDnsHeader,
  type DnsMessage,
  type DnsRecord,
} from '../../daemon/wire/dns.js';

/** A real resolver response: www.facebook.com CNAME star-mini.c10r.facebook.com, A 31.13.83.36, with pointers into the question and into the CNAME. */
const CNAME_RESPONSE = Buffer.from(
  '786c81800001000200000000037777770866616365626f6f6b03636f6d0000010001' +
    'c00c0005000100' + '0005f30011' + '09737461722d6d696e690463313072c010' +
    'c02e000100010000000500041f0d5324',
  'hex',
);

/** A real NXDOMAIN with the com. SOA in the authority section (a.gtld-servers.net. nstld.verisign-grs.com.). */
const NXDOMAIN_RESPONSE = Buffer.from(
  '63c48183000100000001000013616861736467686c616b736a68626161736c6403636f6d0000010001' +
    'c0200006000100000383003d' +
    '01610c67746c642d73657276657273036e657400056e73746c640c766572697369676e2d677273c0205fce8b85000007080000038400093a8000015180',
  'hex',
);

function header(over: Partial<DnsMessage<Uint8Array>> = {}): DnsMessage<Uint8Array> {
  return { id: 1, qr: false, opcode: 0, aa: false, tc: false, rd: true, ra: false, ad: false, cd: false, rcode: 0, questions: [], answers: [], authorities: [], additionals: [], ...over };
}

const label = fc.oneof(
  fc.stringMatching(/^[a-z0-9-]{1,12}$/),
  fc.uint8Array({ minLength: 1, maxLength: 20 }).map((b) => Buffer.from(b).toString('latin1').replace(/\\/g, '\\\\').replace(/\./g, '\\.')),
);
/** Names from a small pool of suffixes so that compression has something to do. */
const name = fc
  .tuple(fc.array(label, { maxLength: 3 }), fc.constantFrom('', 'example.com', 'vm.internal', 'in-addr.arpa'))
  .map(([ls, suffix]) => [...ls, ...(suffix ? [suffix] : [])].join('.'))
  .filter((n) => {
    try {
      dnsNameToLabels(n);
      return true;
    } catch {
      return false;
    }
  })
  // the canonical text form: what the parser returns for these labels
  .map((n) => (n === '' ? '' : dnsNameToLabels(n).map((l) => [...l].map((c) => (c > 0x20 && c < 0x7f && c !== 0x2e && c !== 0x5c ? String.fromCharCode(c) : c === 0x2e || c === 0x5c ? '\\' + String.fromCharCode(c) : '\\' + c.toString().padStart(3, '0'))).join('')).join('.')));
const u32 = fc.nat(0xffffffff);
const record: fc.Arbitrary<DnsRecord<Uint8Array>> = fc.oneof(
  fc.record({ name, type: fc.constant(DNS_TYPE_A), class: fc.constant(1), ttl: u32, data: fc.record({ kind: fc.constant('a' as const), address: u32 }) }),
  fc.record({ name, type: fc.constant(DNS_TYPE_AAAA), class: fc.constant(1), ttl: u32, data: fc.record({ kind: fc.constant('aaaa' as const), address: fc.uint8Array({ minLength: 16, maxLength: 16 }).map((b) => Buffer.from(b)) }) }),
  fc.record({ name, type: fc.constantFrom(2, 5, 12), class: fc.constant(1), ttl: u32, data: fc.record({ kind: fc.constant('name' as const), name }) }),
  fc.record({
    name,
    type: fc.constant(DNS_TYPE_SOA),
    class: fc.constant(1),
    ttl: u32,
    data: fc.record({ kind: fc.constant('soa' as const), mname: name, rname: name, serial: u32, refresh: u32, retry: u32, expire: u32, minimum: u32 }),
  }),
  fc.record({ name, type: fc.constant(16), class: fc.constant(1), ttl: u32, data: fc.record({ kind: fc.constant('txt' as const), strings: fc.array(fc.uint8Array({ maxLength: 40 }).map((b) => Buffer.from(b)), { maxLength: 3 }) }) }),
  fc.record({
    name,
    type: fc.constantFrom(15, 33, 41, 65, 0xff00),
    class: fc.nat(0xffff),
    ttl: u32,
    data: fc.record({ kind: fc.constant('raw' as const), data: fc.uint8Array({ maxLength: 30 }).map((b) => Buffer.from(b)) }),
  }),
);
const message: fc.Arbitrary<DnsMessage<Uint8Array>> = fc.record({
  id: fc.nat(0xffff),
  qr: fc.boolean(),
  opcode: fc.nat(15),
  aa: fc.boolean(),
  tc: fc.boolean(),
  rd: fc.boolean(),
  ra: fc.boolean(),
  ad: fc.boolean(),
  cd: fc.boolean(),
  rcode: fc.nat(15),
  questions: fc.array(fc.record({ name, type: fc.nat(0xffff), class: fc.nat(0xffff) }), { maxLength: 2 }),
  answers: fc.array(record, { maxLength: 4 }),
  authorities: fc.array(record, { maxLength: 2 }),
  additionals: fc.array(record, { maxLength: 2 }),
});

describe('dns', () => {
  it('parses a real CNAME response with compression pointers', () => {
    const r = parseDns(CNAME_RESPONSE);
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    const m = r.value;
    expect(m).toMatchObject({ id: 0x786c, qr: true, opcode: 0, rd: true, ra: true, rcode: 0 });
    expect(m.questions).toEqual([{ name: 'www.facebook.com', type: DNS_TYPE_A, class: 1 }]);
    expect(m.answers).toEqual([
      { name: 'www.facebook.com', type: DNS_TYPE_CNAME, class: 1, ttl: 1523, data: { kind: 'name', name: 'star-mini.c10r.facebook.com' } },
      { name: 'star-mini.c10r.facebook.com', type: DNS_TYPE_A, class: 1, ttl: 5, data: { kind: 'a', address: 0x1f0d5324 } },
    ]);
    // Re-encoding with compression gives back the same bytes (same pointer choices).
    expect(encodeDns(m)).toEqual(CNAME_RESPONSE);
    expect(encodeDns(m, { compress: false }).length).toBeGreaterThan(CNAME_RESPONSE.length);
    expect(parseDns(encodeDns(m, { compress: false }))).toEqual(r);
  });

  it('parses a real NXDOMAIN with an SOA', () => {
    const r = parseDns(NXDOMAIN_RESPONSE);
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.value.rcode).toBe(3);
    expect(r.value.questions[0]?.name).toBe('ahasdghlaksjhbaasld.com');
    expect(r.value.authorities).toEqual([
      {
        name: 'com',
        type: DNS_TYPE_SOA,
        class: 1,
        ttl: 899,
        data: { kind: 'soa', mname: 'a.gtld-servers.net', rname: 'nstld.verisign-grs.com', serial: 0x5fce8b85, refresh: 1800, retry: 900, expire: 604800, minimum: 86400 },
      },
    ]);
  });

  it('tolerates an EDNS OPT record', () => {
    const q = encodeDns(
      header({
        questions: [{ name: 'example.com', type: DNS_TYPE_A, class: 1 }],
        additionals: [{ name: '', type: DNS_TYPE_OPT, class: 1232, ttl: 0, data: { kind: 'raw', data: Buffer.from('000a00080102030405060708', 'hex') } }],
      }),
    );
    expect(q.subarray(-23).toString('hex')).toBe('0000290' + '4d0' + '00000000' + '000c' + '000a00080102030405060708');
    const r = parseDns(q);
    expect(r.ok && r.value.additionals[0]).toMatchObject({ name: '', type: 41, class: 1232 });
  });

  it('stops compression loops and forward pointers with a typed error', () => {
    const hdr = '000001000001000000000000';
    const loops = [
      hdr + 'c00c' + '00010001', // points at itself
      hdr + '03616263c00c' + '00010001', // label then back to its own start
      hdr + 'c00e' + 'c00c' + '00010001', // forward, then back: a two-pointer cycle
      hdr + '0161c00c', // truncated question after a pointer loop
    ];
    for (const hex of loops) {
      const r = parseDns(Buffer.from(hex, 'hex'));
      expect(r.ok).toBe(false);
      if (!r.ok) expect(r.error).toMatchObject({ protocol: 'dns', reason: 'limit' });
    }
    // A chain of backward pointers is fine: q2 = b.<q1>, q3 = c.<q2>, q4 = <q3>.
    const chain = Buffer.from('000001000004000000000000' + '016100' + '00010001' + '0162c00c' + '00010001' + '0163c013' + '00010001' + 'c01b' + '00010001', 'hex');
    const r = parseDns(chain);
    expect(r.ok && r.value.questions.map((q) => q.name)).toEqual(['a', 'b.a', 'c.b.a', 'c.b.a']);
  });

  it('rejects names over 255 bytes and extended label types', () => {
    const long = Buffer.concat([Buffer.from('000001000001000000000000', 'hex'), ...Array.from({ length: 5 }, () => Buffer.concat([Buffer.from([63]), Buffer.alloc(63, 0x61)])), Buffer.from('0000010001', 'hex')]);
    expect(parseDns(long)).toMatchObject({ ok: false, error: { reason: 'bad-length' } });
    const ext = Buffer.from('000001000001000000000000' + '4100' + '00010001', 'hex');
    expect(parseDns(ext)).toMatchObject({ ok: false, error: { reason: 'bad-value' } });
    expect(() => encodeDns(header({ questions: [{ name: 'a'.repeat(64), type: 1, class: 1 }] }))).toThrow(RangeError);
    expect(() => encodeDns(header({ questions: [{ name: 'a..b', type: 1, class: 1 }] }))).toThrow(RangeError);
  });

  it('escapes odd label bytes and normalizes names', () => {
    const q = Buffer.from('000001000001000000000000' + '03612e62' + '025c00' + '00' + '00010001', 'hex');
    const r = parseDns(q);
    expect(r.ok && r.value.questions[0]?.name).toBe('a\\.b.\\\\\\000');
    if (r.ok) expect(encodeDns({ ...r.value })).toEqual(q);
    expect(normalizeDnsName('WWW.Example.COM.')).toBe('www.example.com');
    expect(dnsNameToLabels('example.com.').map(String)).toEqual(['example', 'com']);
    const hdr = parseDnsHeader(CNAME_RESPONSE);
    expect(hdr.ok && hdr.value.counts).toEqual([1, 2, 0, 0]);
  });

  it('emit then parse gives the same value, with and without compression', () => {
    fc.assert(
      fc.property(message, fc.boolean(), (m, compress) => {
        const b = encodeDns(m, { compress });
        const r = parseDns(b);
        expect(r.ok).toBe(true);
        if (!r.ok) return;
        expect(r.value).toEqual(m);
      }),
    );
  });

  it('random bytes and every truncation give a typed error', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
        const b = Buffer.from(bytes);
        if (b.length >= 12) b.writeUInt32BE(0x00010001, 4); // make it look like it has records
        const r = parseDns(b);
        if (!r.ok) expect(r.error.protocol).toBe('dns');
      }),
    );
    fc.assert(
      fc.property(message, (m) => {
        const b = encodeDns(m);
        const total = m.questions.length + m.answers.length + m.authorities.length + m.additionals.length;
        for (let n = 0; n < b.length; n++) {
          const r = parseDns(b.subarray(0, n));
          if (!r.ok) expect(r.error.protocol).toBe('dns');
          else expect(total === 0 || n === b.length).toBe(true);
        }
      }),
    );
    for (const pkt of [CNAME_RESPONSE, NXDOMAIN_RESPONSE]) {
      for (let n = 0; n < pkt.length; n++) expect(parseDns(pkt.subarray(0, n)).ok).toBe(false);
    }
  });
});
