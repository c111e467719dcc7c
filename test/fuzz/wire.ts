/**
 * Fuzzes every wire codec's parser (daemon/wire, and the gateway's dissect that chains them)
 * with random bytes and with valid frames, mutated or not. A parser must answer every input
 * with a value or a WireError; a throw is a crash. Where the gateway encodes again what it
 * parsed (DNS questions, DHCP messages), encode(parse(x)) must not throw either.
 */
import { parseArp } from '../../daemon/wire/arp.js';
import { parseDhcpv4 } from '../../daemon/wire/dhcpv4.js';
import { encodeDns, parseDns, parseDnsHeader } from '../../daemon/wire/dns.js';
import { parseEthernet } from '../../daemon/wire/ethernet.js';
import { normalizeOffload } from '../../daemon/wire/gso.js';
import { parseIcmpv4 } from '../../daemon/wire/icmpv4.js';
import { parseIcmpv6, parseNdpOptions } from '../../daemon/wire/icmpv6.js';
import { parseIpv4CidrText, parseIpv4Text, parseIpv6CidrText, parseIpv6Text } from '../../daemon/wire/ip-text.js';
import { parseIpv4 } from '../../daemon/wire/ipv4.js';
import { parseIpv6 } from '../../daemon/wire/ipv6.js';
import { parseMacString } from '../../daemon/wire/mac.js';
import { parseTcp, parseTcpOptions } from '../../daemon/wire/tcp.js';
import { parseUdp } from '../../daemon/wire/udp.js';
import { parseVnetHdr } from '../../daemon/wire/vnet.js';
import { dissect } from '../../daemon/gateway/dissect.js';
import { offloadFrame, validFrame, type FrameContext } from './frames.js';
import { inputSeed, mutate, Rng } from './rng.js';
import { errorText, KEEP_CRASHES, type FuzzReport } from './report.js';

const ip6 = (hex: string): Buffer => Buffer.from(hex, 'hex');

/** Addresses the generated frames use (those of the ingress fuzzer's lab, so one corpus fits both). */
export const FRAME_CONTEXT: FrameContext = {
  vmMac: 0x5254_0000_0001,
  vmIp: 0x0a01_000a,
  gwMac: 0x0200_00aa_0001,
  gwIp: 0x0a01_0001,
  peerIp: 0x0a01_000b,
  outIp: 0xc633_640a,
  vmIp6: ip6('fd00000000000001' + '5054 00ff fe00 0001'.replace(/ /g, '')),
  gwIp6: ip6('fd000000000000010000000000000001'),
  outIp6: ip6('20010db8000000000000000000000010'),
};

const TEXTS = ['10.0.0.1', '10.0.0.0/24', '0.0.0.0/0', '255.255.255.255/32', '::1', 'fd00::/64', '::ffff:10.0.0.1', '2001:db8::1/128', 'aa:bb:cc:dd:ee:ff', 'AA-BB-CC-DD-EE-FF', '1::2:3:4:5:6:7', ':::', '01.02.03.04'];

let pool: { frames: Buffer[]; offload: Buffer[] } | null = null;

/**
 * Valid frames to start from, built once from a fixed seed (so an input's seed still replays
 * it): building frames costs more than parsing them.
 */
export function framePool(): { frames: Buffer[]; offload: Buffer[] } {
  if (pool === null) {
    const rng = new Rng(0xc0ffee);
    pool = { frames: Array.from({ length: 4096 }, () => validFrame(rng, FRAME_CONTEXT)), offload: Array.from({ length: 512 }, () => offloadFrame(rng, FRAME_CONTEXT)) };
  }
  return pool;
}

/** The frame (or text) of input `seed`. */
export function wireInput(seed: number): Buffer {
  const rng = new Rng(seed);
  const { frames, offload } = framePool();
  const k = rng.int(20);
  if (k < 3) return rng.pick(frames);
  if (k < 14) return mutate(rng, rng.pick(frames));
  if (k < 16) return rng.bool(0.2) ? rng.pick(offload) : mutate(rng, rng.pick(offload));
  if (k < 17) return mutate(rng, Buffer.from(rng.pick(TEXTS), 'latin1'));
  return rng.bytes(rng.int(rng.bool() ? 64 : 1600));
}

/** Runs every parser on `x` (and on the slices where its layers would start); throws on a crash. */
function parseAll(x: Buffer, rng: Rng, step: (where: string) => void): void {
  step('dissect');
  dissect(x);
  step('parseEthernet');
  parseEthernet(x);
  // One place per layer and input (where the layer starts in a frame, or anywhere): the run's
  // million inputs cover them all, at a rate that keeps `npm run fuzz` short.
  {
    const p = rng.pick([x.subarray(14), x.subarray(14), x.subarray(18), x]);
    step('parseArp');
    parseArp(p);
    step('parseIpv4');
    parseIpv4(p);
    parseIpv4(p, { verifyChecksum: false });
    step('parseIpv6');
    parseIpv6(p);
    parseIpv6(p, { maxExtensionHeaders: rng.int(10) });
  }
  const v4 = { version: 4 as const, src: FRAME_CONTEXT.vmIp, dst: FRAME_CONTEXT.gwIp };
  const v6 = { version: 6 as const, src: FRAME_CONTEXT.vmIp6, dst: FRAME_CONTEXT.gwIp6 };
  {
    const l4 = rng.pick([x.subarray(34), x.subarray(54), x.subarray(rng.int(x.length + 1))]);
    step('parseTcp');
    parseTcp(l4);
    parseTcp(l4, rng.bool() ? v4 : v6);
    step('parseUdp');
    parseUdp(l4);
    parseUdp(l4, rng.bool() ? v4 : v6);
    step('parseIcmpv4');
    parseIcmpv4(l4);
    parseIcmpv4(l4, { verifyChecksum: false });
    step('parseIcmpv6');
    parseIcmpv6(l4);
    parseIcmpv6(l4, v6);
  }
  {
    const app = rng.pick([x.subarray(42), x.subarray(62), x]);
    step('parseDhcpv4');
    parseDhcpv4(app);
    step('parseDnsHeader');
    parseDnsHeader(app);
    step('parseDns');
    const d = parseDns(app);
    if (d.ok) {
      step('encodeDns(parseDns)');
      encodeDns(d.value);
    }
  }
  const a = rng.int(x.length + 1);
  const b = a + rng.int(x.length - a + 1);
  step('parseTcpOptions');
  parseTcpOptions(x, a, b);
  step('parseNdpOptions');
  parseNdpOptions(x, a, b);
  step('parseVnetHdr');
  parseVnetHdr(x);
  step('normalizeOffload');
  const out: Buffer[] = [];
  normalizeOffload(x, out);
  if (x.length > 64) return;
  const text = x.toString('latin1');
  step('ip-text');
  parseIpv4Text(text);
  parseIpv4CidrText(text);
  parseIpv6Text(text);
  parseIpv6CidrText(text);
  step('parseMacString');
  parseMacString(text);
}

/** Runs input `seed`; returns the crash (where and what) or null. */
export function wireOne(seed: number, input?: Buffer): { where: string; error: string; input: Buffer } | null {
  const x = input ?? wireInput(seed);
  let where = '';
  try {
    parseAll(x, new Rng(seed ^ 0x5a5a5a5a), (w) => {
      where = w;
    });
  } catch (e) {
    return { where, error: errorText(e), input: x };
  }
  return null;
}

export function fuzzWire(count: number, seed: number): FuzzReport {
  const t0 = performance.now();
  const r: FuzzReport = { target: 'wire codecs', ran: 0, crashed: 0, crashes: [], ms: 0 };
  for (let i = 0; i < count; i++) {
    const s = inputSeed(seed, i);
    const c = wireOne(s);
    r.ran++;
    if (c !== null) {
      r.crashed++;
      if (r.crashes.length < KEEP_CRASHES) r.crashes.push({ seed: s, where: c.where, error: c.error, input: c.input.toString('hex') });
    }
  }
  r.ms = performance.now() - t0;
  return r;
}
