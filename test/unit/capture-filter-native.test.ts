/**
 * The capture filter in the addon (tee-filter.cc, run by the native tee before the copy) against
 * the JS matcher: the same verdict for every expression of the tcpdump corpus on its frames, on
 * every truncation of them and on seeded random mutations, both link types; malformed programs
 * refused; and the hub: a port whose prefilter rejects everything gets no copies, while the
 * session's counters and ISBs still count every frame as seen and filtered out.
 */
import { describe, expect, it } from 'vitest';
import { mulberry32 } from '../support/mulberry32.js';
import { compileFilter, compileFilterProgram, PROG_AND, PROG_CMP, PROG_MAX_DEPTH, PROG_MAX_WORDS, PROG_NEED, PROG_NOT, PROG_TRUE, type LinkType } from '../../daemon/capture/filter.js';
import { CTL_FILTERED, TEE_IN, TEE_OUT, TeeRing } from '../../plugins/common/tee-ring.js';
import { native } from '../../plugins/native/index.js';
import { arpish, echo, IP1, IP2, MAC1, MAC2, MemSink, newHub, start } from '../support/capture-lab.js';
import { ETHER_FRAMES, EXPRS, IP_PACKETS } from '../support/filter-corpus.js';


/** Corpus frames, every truncation of each, and mutations (bytes flipped, cut short) from a seeded RNG. */
function frames(): Buffer[] {
  const base = [...ETHER_FRAMES, ...IP_PACKETS];
  const out: Buffer[] = [];
  for (const f of base) for (let n = 0; n <= f.length; n++) out.push(f.subarray(0, n));
  const r = mulberry32(9);
  for (let k = 0; k < 3000; k++) {
    const f = Buffer.from(base[Math.floor(r() * base.length)]!);
    const flips = 1 + Math.floor(r() * 4);
    for (let i = 0; i < flips; i++) {
      // Mostly where the filter looks (headers), sometimes anywhere.
      const at = Math.floor(r() * Math.min(f.length, r() < 0.8 ? 64 : f.length));
      f[at] = r() < 0.5 ? Math.floor(r() * 256) : (f[at]! ^ (1 << Math.floor(r() * 8)));
    }
    out.push(r() < 0.3 ? f.subarray(0, Math.floor(r() * f.length)) : f);
  }
  return out;
}

const EXTRA = ['not tcp port 80', 'not vlan', 'not (ip6 net fd00::/16 and not udp)', 'ether src 52:54:00:00:00:0a or ether dst 52:54:00:00:00:0b', 'not host fd00::1 and not arp'];

describe('capture filter: the native program agrees with the JS matcher', () => {
  const corpus = frames();
  for (const lt of ['ether', 'raw'] as const satisfies readonly LinkType[]) {
    it(`every expression, every frame (${lt})`, () => {
      let checked = 0;
      for (const expr of [...EXPRS, ...EXTRA]) {
        const js = compileFilter(expr);
        if (!js.ok) throw new Error(`'${expr}' refused: ${js.error}`);
        const prog = compileFilterProgram(expr, lt);
        expect(prog, expr).not.toBeNull();
        for (const f of corpus) {
          const want = js.match(f, lt);
          if (native.teeFilterMatch(prog!, f) !== want) expect.fail(`'${expr}' on ${lt}: native ${String(!want)}, JS ${String(want)} for ${f.toString('hex')}`);
          checked++;
        }
      }
      expect(checked).toBeGreaterThan(100_000);
    });
  }

  it('an empty filter is a program that accepts everything; a bad one has none', () => {
    const p = compileFilterProgram('', 'ether');
    expect(p).not.toBeNull();
    expect(native.teeFilterMatch(p!, Buffer.alloc(0))).toBe(true);
    expect(compileFilterProgram('host', 'ether')).toBeNull();
    expect(compileFilterProgram('tcp[13] = 2', 'raw')).toBeNull();
  });

  it('a filter past the device limits has no program (JS filters alone)', () => {
    const long = Array.from({ length: PROG_MAX_DEPTH + 5 }, (_, i) => `port ${i}`).join(' or ');
    expect(compileFilter(long).ok).toBe(true);
    expect(compileFilterProgram(long, 'ether')).toBeNull();
  });
});

describe('capture filter: the addon refuses a malformed program', () => {
  const hdr = (op: number, words: number, size = 0): number => op | (size << 8) | (words << 16);
  const T = hdr(PROG_TRUE, 1);
  const cmp = (off: number, size = 1): number[] => [hdr(PROG_CMP, 5, size), off, 0xff, 0, 0xff];
  const bad: [string, number[]][] = [
    ['empty', []],
    ['unknown op', [hdr(99, 1)]],
    ['op 0', [0]],
    ['words past the end', [hdr(PROG_NOT, 3), T]],
    ['words too short', [hdr(PROG_AND, 2), T, T]],
    ['trailing words', [T, T]],
    ['a leaf with operands missing', [hdr(PROG_CMP, 3, 1), 0, 0]],
    ['a load of 3 bytes', cmp(0, 3)],
    ['an offset past the limit', cmp(0x10000)],
    ['need of 0 bytes', [hdr(PROG_NEED, 3), 0, 0]],
    ['need of 17 bytes', [hdr(PROG_NEED, 3), 0, 17]],
    ['a size on an operator', [hdr(PROG_NOT, 2, 1), T]],
  ];
  for (const [what, words] of bad) {
    it(what, () => {
      expect(() => native.teeFilterMatch(Uint32Array.from(words), Buffer.alloc(64))).toThrow(TypeError);
    });
  }

  it('too deep, too long, not a Uint32Array', () => {
    let deep = [T];
    for (let i = 0; i < PROG_MAX_DEPTH; i++) deep = [hdr(PROG_NOT, deep.length + 1), ...deep];
    expect(() => native.teeFilterMatch(Uint32Array.from(deep), Buffer.alloc(1))).toThrow(TypeError);
    expect(native.teeFilterMatch(Uint32Array.from(deep.slice(1)), Buffer.alloc(1))).toBe(false); // 128 NOTs of true
    const long: number[] = [];
    while (long.length < PROG_MAX_WORDS + 1) long.push(...cmp(0));
    expect(() => native.teeFilterMatch(Uint32Array.from(long), Buffer.alloc(1))).toThrow(TypeError);
    expect(() => native.teeFilterMatch(new Int32Array([T]) as unknown as Uint32Array, Buffer.alloc(1))).toThrow(TypeError);
  });

  it('random words: refused or run, never a read outside the frame', () => {
    const r = mulberry32(42);
    let ran = 0;
    for (let k = 0; k < 20000; k++) {
      const n = 1 + Math.floor(r() * 12);
      const ops = [PROG_TRUE, PROG_AND, PROG_NOT, PROG_NEED, PROG_CMP, 8];
      const w = Array.from({ length: n }, () => (r() < 0.5 ? hdr(ops[Math.floor(r() * ops.length)]!, 1 + Math.floor(r() * n), [0, 1, 2, 4][Math.floor(r() * 4)]) : Math.floor(r() * 80)));
      try {
        native.teeFilterMatch(Uint32Array.from(w), Buffer.alloc(Math.floor(r() * 40)));
        ran++;
      } catch (e) {
        expect(e).toBeInstanceOf(TypeError);
      }
    }
    expect(ran).toBeGreaterThan(0);
  });
});

describe('capture hub: the prefilter', () => {
  /** A port that tees like the native one: the program runs before the copy (the addon's interpreter). */
  class PrefilterPort {
    readonly layer = 2;
    ring: TeeRing | null = null;
    program: Uint32Array | null = null;
    dirs = 0;
    tee(ring: TeeRing | null, dirs: number, program?: Uint32Array | null): void {
      this.ring = ring;
      this.dirs = dirs;
      this.program = program ?? null;
    }
    pass(f: Buffer, dir: 1 | 2): void {
      const ring = this.ring;
      if (ring === null || (this.dirs & dir) === 0) return;
      if (this.program !== null && !native.teeFilterMatch(this.program, f)) {
        ring.ctl[CTL_FILTERED]!++; // the low word is enough for a test
        return;
      }
      ring.write(f, 0, dir);
    }
  }

  it('a capture that matches nothing: no copies; every frame seen and filtered out, in the counters and the ISB', () => {
    const hub = newHub();
    const port = new PrefilterPort();
    hub.portAdded('vm1', 'lan', port);
    const sink = new MemSink();
    const s = start(hub, { from: { vm: 'vm1' }, filter: 'tcp port 9' }, sink);
    expect(port.program).not.toBeNull();
    for (let i = 0; i < 10; i++) port.pass(echo(MAC1, MAC2, IP1, IP2, 'echo-request', i), TEE_IN);
    port.pass(arpish(MAC2), TEE_OUT);
    hub.drainAll();
    expect(port.ring!.written).toBe(0);
    expect(port.ring!.filtered).toBe(11);
    expect(s.counters).toEqual({ seen: 11, filteredOut: 11, captured: 0, dropped: 0, bytes: 0 });
    port.pass(arpish(MAC2), TEE_IN); // counted at the stop's drain
    s.stop('test');
    expect(sink.read().isbs).toEqual([{ iface: 0, ifRecv: 12n, filterAccept: 0n, osDrop: 0n }]);
    hub.close();
  });

  it('what matches is copied and captured; sessions with different filters get no prefilter', () => {
    const hub = newHub();
    const port = new PrefilterPort();
    hub.portAdded('vm1', 'lan', port);
    const a = start(hub, { from: { vm: 'vm1' }, filter: 'icmp' }, new MemSink());
    port.pass(echo(MAC1, MAC2, IP1, IP2, 'echo-request'), TEE_IN);
    port.pass(arpish(MAC1), TEE_IN);
    hub.drainAll();
    expect(a.counters).toMatchObject({ seen: 2, filteredOut: 1, captured: 1 });
    expect(port.ring!.written).toBe(1);
    const b = start(hub, { from: { vm: 'vm1' }, filter: 'arp' }, new MemSink());
    expect(port.program).toBeNull();
    port.pass(arpish(MAC1), TEE_IN);
    hub.drainAll();
    expect(a.counters).toMatchObject({ seen: 3, filteredOut: 2, captured: 1 });
    expect(b.counters).toMatchObject({ seen: 1, filteredOut: 0, captured: 1 });
    b.stop('test');
    hub.drainAll();
    // Back to one filter (after the microtask that rebuilds): the prefilter again.
    return Promise.resolve().then(() => {
      expect(port.program).not.toBeNull();
      hub.close();
    });
  });
});
