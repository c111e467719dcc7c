import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { compileFilter, type LinkType } from '../../daemon/capture/filter.js';
import { ETHER_FRAMES, EXPRS, IP_PACKETS } from '../support/filter-corpus.js';

/** Classic libpcap file: 24-byte global header, 16-byte record headers; packet i at time i s. */
function pcapFile(frames: Buffer[], linkType: number): Buffer {
  const g = Buffer.alloc(24);
  g.writeUInt32LE(0xa1b2c3d4, 0);
  g.writeUInt16LE(2, 4);
  g.writeUInt16LE(4, 6);
  g.writeUInt32LE(65535, 16);
  g.writeUInt32LE(linkType, 20);
  const parts: Buffer[] = [g];
  frames.forEach((f, i) => {
    const r = Buffer.alloc(16);
    r.writeUInt32LE(i, 0);
    r.writeUInt32LE(f.length, 8);
    r.writeUInt32LE(f.length, 12);
    parts.push(r, f);
  });
  return Buffer.concat(parts);
}

// ---- parser ---------------------------------------------------------------------------------

function err(text: string): { error: string; at: number } {
  const c = compileFilter(text);
  if (c.ok) throw new Error(`expected '${text}' to be refused`);
  return { error: c.error, at: c.at };
}
function sel(text: string, frames: Buffer[], lt: LinkType = 'ether'): number[] {
  const c = compileFilter(text);
  if (!c.ok) throw new Error(`'${text}' refused: ${c.error}`);
  return frames.flatMap((f, i) => (c.match(f, lt) ? [i] : []));
}

describe('capture filter: parser', () => {
  it('and/or have one precedence and associate left; not binds tighter', () => {
    // `arp or ip and tcp` is (arp or ip) and tcp in pcap-filter: no ARP frame passes.
    expect(sel('arp or ip and tcp', ETHER_FRAMES)).toEqual(sel('(arp or ip) and tcp', ETHER_FRAMES));
    expect(sel('arp or ip and tcp', ETHER_FRAMES)).not.toContain(0);
    expect(sel('tcp and ip or arp', ETHER_FRAMES)).toContain(0);
    expect(sel('not arp and not ip6', ETHER_FRAMES)).toEqual(sel('(not arp) and (not ip6)', ETHER_FRAMES));
    expect(sel('! arp && ! ip6', ETHER_FRAMES)).toEqual(sel('not arp and not ip6', ETHER_FRAMES));
    expect(sel('', ETHER_FRAMES)).toHaveLength(ETHER_FRAMES.length);
  });

  it('a bare value repeats the previous qualifiers', () => {
    expect(sel('host 10.0.0.3 or 8.8.8.8', ETHER_FRAMES)).toEqual(sel('host 10.0.0.3 or host 8.8.8.8', ETHER_FRAMES));
    expect(sel('tcp dst port 80 or 443', ETHER_FRAMES)).toEqual(sel('tcp dst port 80 or tcp dst port 443', ETHER_FRAMES));
    expect(err('tcp or 10.0.0.1').error).toMatch(/bare value needs a qualifier/);
    expect(err('(host 10.0.0.1) or 10.0.0.2').at).toBe(19);
  });

  it('errors name the bad token and its column', () => {
    expect(err('port foo')).toEqual({ error: "expected a port number at 'foo' (column 6)", at: 5 });
    expect(err('host 10.0.0.1 and')).toEqual({ error: 'expected a primitive (host, net, port, tcp, …) at the end (column 18)', at: 17 });
    expect(err('(tcp or udp').error).toBe("expected ')' at the end (column 12)");
    expect(err('tcp)').error).toBe("unbalanced ')' at ')' (column 4)");
    expect(err('tcp udp').error).toBe("expected 'and' or 'or' at 'udp' (column 5)");
    expect(err('host example.com').error).toMatch(/expected an IPv4 or IPv6 address at 'example.com' \(column 6\)/);
    expect(err('net 10.0.0.1/8').error).toMatch(/non-network bits/);
    expect(err('portrange 10-').error).toMatch(/port range/);
    expect(err('port 70000').error).toMatch(/port number/);
    expect(err('ether host 10.0.0.1').error).toMatch(/MAC address/);
    expect(err('vlan 5000').error).toMatch(/VLAN id/);
    expect(err('foo').error).toMatch(/host names are not looked up/);
  });

  it('refuses everything outside the subset, saying so', () => {
    for (const [text, at] of [
      ['greater 100', 0],
      ['less 100', 0],
      ['ip proto 6', 3],
      ['ip[0] = 0x45', 2],
      ['broadcast', 0],
      ['ether multicast', 6],
      ['gateway 10.0.0.1', 0],
      ['sctp', 0],
      ['tcp and len > 5', 8],
      ['tcp[13] & 2 != 0', 3],
    ] as const) {
      const e = err(text);
      expect(e.error, text).toMatch(/not supported/);
      expect(e.at, text).toBe(at);
    }
  });

  it('match() never throws and never matches past the end on arbitrary bytes', () => {
    const filters = ['host 10.0.0.1 or port 80', 'vlan and tcp port 80', 'net fd00::/16 or portrange 1-100', 'not ether src 52:54:00:00:00:0a', 'icmp6 or udp'].map(
      (t) => compileFilter(t),
    );
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 80 }), fc.boolean(), (bytes, raw) => {
        for (const f of filters) if (f.ok) f.match(Buffer.from(bytes), raw ? 'raw' : 'ether');
      }),
    );
    // A frame cut inside the IPv4 header is rejected (as BPF does) even under `not`.
    const cut = (ETHER_FRAMES[2] as Buffer).subarray(0, 30);
    expect(sel('not host 10.0.0.7', [cut])).toEqual([]);
  });
});

// ---- differential test against tcpdump ----------------------------------------------------------


const tcpdump = spawnSync('tcpdump', ['--version'], { encoding: 'utf8' });
const dir = mkdtempSync(join(tmpdir(), 'mvnet-filter-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Packet indices tcpdump selects, or undefined when tcpdump refuses the expression for this link type. */
function tcpdumpSelect(file: string, expr: string): number[] | undefined {
  const r = spawnSync('tcpdump', ['-nn', '-q', '-tt', '-r', file, expr], { encoding: 'utf8' });
  // pcap's optimizer refuses an expression it proves matches nothing (`ip and vlan`): that selects [].
  if (r.status !== 0) return /rejects all packets/.test(r.stderr) ? [] : undefined;
  return r.stdout
    .split('\n')
    .map((l) => /^(\d+)\.\d{6} /.exec(l))
    .flatMap((m) => (m ? [Number(m[1])] : []));
}

describe('capture filter: same packets as tcpdump', () => {
  it('tcpdump is installed (Debian package tcpdump)', () => {
    expect(tcpdump.error, 'tcpdump is missing: apt-get install tcpdump').toBeUndefined();
    expect(tcpdump.status).toBe(0);
  });

  for (const [name, frames, linkType, lt] of [
    ['ethernet', ETHER_FRAMES, 1, 'ether'],
    ['raw IP', IP_PACKETS, 101, 'raw'],
  ] as const) {
    it(`selects the same ${name} packets as tcpdump for each expression`, () => {
      expect(tcpdump.error, 'tcpdump is missing: apt-get install tcpdump').toBeUndefined();
      const file = join(dir, `${lt}.pcap`);
      writeFileSync(file, pcapFile([...frames], linkType));
      let compared = 0;
      for (const expr of EXPRS) {
        const want = tcpdumpSelect(file, expr);
        if (want === undefined) {
          // tcpdump refuses ether and vlan on raw IP; on Ethernet every expression must run.
          expect(lt, `tcpdump refused '${expr}' on ${name}`).toBe('raw');
          continue;
        }
        expect(sel(expr, [...frames], lt), `${expr} on ${name}`).toEqual(want);
        compared++;
      }
      expect(compared).toBeGreaterThan(lt === 'raw' ? 30 : EXPRS.length - 1);
    });
  }
});
