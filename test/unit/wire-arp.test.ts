import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ARP_REPLY, ARP_REQUEST, encodeArp, parseArp, type ArpPacket } from '../../daemon/wire/arp.js';
import { MAC_BROADCAST } from '../../daemon/wire/mac.js';

const arp: fc.Arbitrary<ArpPacket> = fc.record({
  op: fc.oneof(fc.constantFrom(ARP_REQUEST, ARP_REPLY), fc.nat(0xffff)),
  senderMac: fc.integer({ min: 0, max: MAC_BROADCAST }),
  senderIp: fc.nat(0xffffffff),
  targetMac: fc.integer({ min: 0, max: MAC_BROADCAST }),
  targetIp: fc.nat(0xffffffff),
});

describe('arp', () => {
  it('parses a real request (who-has 192.168.1.1 tell 192.168.1.100), ignoring padding', () => {
    const b = Buffer.from('0001080006040001525400123456c0a80164000000000000c0a80101' + '00'.repeat(18), 'hex');
    expect(parseArp(b)).toEqual({
      ok: true,
      value: { op: 1, senderMac: 0x5254_0012_3456, senderIp: 0xc0a80164, targetMac: 0, targetIp: 0xc0a80101 },
    });
  });

  it('rejects non-Ethernet/IPv4 ARP as unsupported', () => {
    const b = encodeArp({ op: 1, senderMac: 1, senderIp: 2, targetMac: 3, targetIp: 4 });
    b[1] = 6; // IEEE 802
    const r = parseArp(b);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error).toMatchObject({ protocol: 'arp', reason: 'unsupported' });
  });

  it('emit then parse gives the same value', () => {
    fc.assert(
      fc.property(arp, (p) => {
        expect(parseArp(encodeArp(p))).toEqual({ ok: true, value: p });
      }),
    );
  });

  it('random bytes and truncations give typed errors', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 40 }), (bytes) => {
        const r = parseArp(Buffer.from(bytes));
        if (!r.ok) expect(r.error.protocol).toBe('arp');
      }),
    );
    fc.assert(
      fc.property(arp, (p) => {
        const b = encodeArp(p);
        for (let n = 0; n < b.length; n++) {
          const r = parseArp(b.subarray(0, n));
          expect(r.ok).toBe(false);
          if (!r.ok) expect(r.error.reason).toBe('truncated');
        }
      }),
    );
  });
});
