/**
 * Capture filters: the common subset of the tcpdump/pcap-filter language, compiled to a closure tree.
 *
 * The subset: `host`, `net` (A/len, A mask M), `port`, `portrange`, each with `src`/`dst`/`src or dst`/
 * `src and dst`; `ether host|src|dst`; protocol primitives `arp ip ip6 tcp udp icmp icmp6 vlan [N]`;
 * protocol qualifiers `ip|ip6|arp host|net` and `tcp|udp port|portrange`; `and &&`, `or ||`, `not !`,
 * parentheses; a bare value repeats the previous qualifiers (`host a or b`) as pcap does. Anything
 * else is refused with a message naming the token and its column, never silently widened.
 *
 * Semantics follow libpcap 1.10's generated BPF (checked with `tcpdump -d`), since a test compares
 * with tcpdump: `and` and `or` have the same precedence and associate left; `host`/`net` with an
 * IPv4 address also match ARP and RARP sender/target; `port` matches TCP, UDP and SCTP (as pcap) in
 * IPv4 packets that are not a non-first fragment, and in IPv6 only when the fixed header's next header
 * is the protocol (no extension header walk); `tcp`/`udp`/`icmp6` on IPv6 also accept a Fragment header
 * directly after the fixed header; `vlan` shifts the link offsets of every primitive parsed after it
 * (textually, whatever the parentheses), as pcap does. As in BPF, a read past the end of the frame
 * rejects the whole packet. On raw IP (LINKTYPE_RAW) `arp`, `ether …` and `vlan` never match (tcpdump
 * refuses them for that link type).
 *
 * match() reads only through bounds-checked helpers and allocates nothing per packet.
 */

import { parseIpv4Text, parseIpv6Text } from '../wire/ip-text.js';
import { parseMacString } from '../wire/mac.js';

export type LinkType = 'ether' | 'raw';

export type CompiledFilter =
  | { readonly ok: true; match(frame: Buffer, linkType: LinkType): boolean }
  | { readonly ok: false; readonly error: string; readonly at: number };

/** 1 = matches, 0 = does not, -1 = a read past the end: BPF rejects the whole packet then. */
type Verdict = 1 | 0 | -1;
type Node = () => Verdict;

interface Ctx {
  buf: Buffer;
  raw: boolean;
}

interface Token {
  readonly text: string;
  /** 0-based offset in the filter text. */
  readonly at: number;
  /** Set for a character outside the language subset: the parser refuses it when it gets there. */
  readonly refused?: string;
}

type Dir = 'any' | 'src' | 'dst' | 'both';
type QType = 'host' | 'net' | 'port' | 'portrange';
type QProto = 'ip' | 'ip6' | 'arp' | 'tcp' | 'udp' | 'ether' | undefined;
interface Qual {
  readonly proto: QProto;
  readonly dir: Dir;
  readonly type: QType;
}

class FilterError extends Error {
  constructor(
    message: string,
    readonly at: number,
  ) {
    super(message);
  }
}

const ETHERTYPE_IP = 0x0800;
const ETHERTYPE_ARP = 0x0806;
const ETHERTYPE_RARP = 0x8035;
const ETHERTYPE_IPV6 = 0x86dd;
const PROTO_ICMP = 1;
const PROTO_TCP = 6;
const PROTO_UDP = 17;
const PROTO_ICMPV6 = 58;
const PROTO_SCTP = 132;
const PROTO_FRAGMENT = 44;

/** pcap-filter words outside the subset: refused by name rather than taken for host names. */
const UNSUPPORTED = new Set(
  (
    'greater less proto protochain broadcast multicast gateway sctp rarp decnet atalk aarp lat moprc ' +
    'mopdl iso esis es-is isis is-is clnp stp ipx netbeui igmp igrp pim vrrp carp ah esp len inbound ' +
    'outbound ifname on rnr rulenum reason rset srnr subrulenum action wlan type subtype ra ta addr1 ' +
    'addr2 addr3 addr4 dir mpls pppoed pppoes geneve llc fddi tr link slip lane metac bcc sc ilmic ' +
    'oamf4 oamf4ec oamf4sc oam vpi vci connectmsg metaconnect radio ppp hdpe l1 l2 iih lsp snp csnp psnp'
  ).split(' '),
);
const PROTO_WORDS = new Set(['ip', 'ip6', 'arp', 'tcp', 'udp', 'icmp', 'icmp6']);
const TYPE_WORDS = new Set(['host', 'net', 'port', 'portrange']);

function describe(t: Token | undefined, textLength: number): string {
  return t === undefined ? `the end (column ${textLength + 1})` : `'${t.text}' (column ${t.at + 1})`;
}

function tokenize(text: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  while (i < text.length) {
    const c = text[i] as string;
    if (c === ' ' || c === '\t' || c === '\n' || c === '\r') {
      i++;
      continue;
    }
    const two = text.slice(i, i + 2);
    if (two === '&&' || two === '||') {
      out.push({ text: two, at: i });
      i += 2;
      continue;
    }
    if (c === '(' || c === ')' || c === '!') {
      // `!=` is a comparison: refused below with the other relational operators.
      if (c === '!' && text[i + 1] === '=') {
        out.push({ text: '!=', at: i, refused: `comparisons are not supported: '!=' (column ${i + 1})` });
        i += 2;
        continue;
      }
      out.push({ text: c, at: i });
      i++;
      continue;
    }
    if (/[A-Za-z0-9_.:/-]/.test(c)) {
      let j = i;
      while (j < text.length && /[A-Za-z0-9_.:/-]/.test(text[j] as string)) j++;
      out.push({ text: text.slice(i, j), at: i });
      i = j;
      continue;
    }
    const what = c === '[' ? 'byte offsets (proto[off])' : /[<>=]/.test(c) ? 'comparisons' : 'arithmetic and other operators';
    out.push({ text: c, at: i, refused: `${what} are not supported: '${c}' (column ${i + 1})` });
    i++;
  }
  return out;
}

/** Bounds-checked big-endian reads over the context buffer: -1 when past the end. */
function u8(b: Buffer, o: number): number {
  return o >= 0 && o < b.length ? (b[o] as number) : -1;
}
function u16(b: Buffer, o: number): number {
  return o >= 0 && o + 2 <= b.length ? ((b[o] as number) << 8) | (b[o + 1] as number) : -1;
}
function u32(b: Buffer, o: number): number {
  return o >= 0 && o + 4 <= b.length ? b.readUInt32BE(o) : -1;
}

/** The parser: calls its back end for each primitive and operator, in parse order. */
class Compiler<N> {
  private readonly toks: Token[];
  private pos = 0;
  /** VLAN tags seen so far in parse order: each shifts the following primitives by 4 bytes. */
  private vlans = 0;
  private lastQual: Qual | undefined;

  constructor(
    private readonly text: string,
    private readonly b: Backend<N>,
  ) {
    this.toks = tokenize(text);
  }

  compile(): N {
    if (this.toks.length === 0) return this.b.all();
    const n = this.expr();
    const t = this.peek();
    if (t !== undefined) {
      if (t.text === ')') this.fail(`unbalanced ')' at ${describe(t, this.text.length)}`, t);
      this.fail(`expected 'and' or 'or' at ${describe(t, this.text.length)}`, t);
    }
    return n;
  }

  private peek(k = 0): Token | undefined {
    return this.checked(this.toks[this.pos + k]);
  }
  private next(): Token | undefined {
    return this.checked(this.toks[this.pos++]);
  }
  private checked(t: Token | undefined): Token | undefined {
    if (t?.refused !== undefined) throw new FilterError(t.refused, t.at);
    return t;
  }
  private fail(message: string, t: Token | undefined): never {
    throw new FilterError(message, t === undefined ? this.text.length : t.at);
  }
  private isWord(t: Token | undefined, ...words: string[]): boolean {
    return t !== undefined && words.includes(t.text.toLowerCase());
  }

  // expr := unary ((and|or) unary)*  — one precedence level, left-associative, as in pcap-filter.
  private expr(): N {
    let left = this.unary();
    for (;;) {
      const t = this.peek();
      if (t === undefined) return left;
      const op = t.text.toLowerCase();
      if (op !== 'and' && op !== '&&' && op !== 'or' && op !== '||') return left;
      this.pos++;
      const l = left;
      const r = this.unary();
      left = op === 'and' || op === '&&' ? this.b.and(l, r) : this.b.or(l, r);
    }
  }

  private unary(): N {
    const t = this.peek();
    if (this.isWord(t, 'not') || t?.text === '!') {
      this.pos++;
      return this.b.not(this.unary());
    }
    if (t?.text === '(') {
      this.pos++;
      const n = this.expr();
      const c = this.next();
      if (c?.text !== ')') this.fail(`expected ')' at ${describe(c, this.text.length)}`, c);
      // pcap does not carry qualifiers out of a parenthesis to a following bare value.
      this.lastQual = undefined;
      return n;
    }
    return this.primitive();
  }

  private primitive(): N {
    const t = this.next();
    if (t === undefined) this.fail(`expected a primitive (host, net, port, tcp, …) at the end (column ${this.text.length + 1})`, t);
    const w = t.text.toLowerCase();
    if (w === ')' || w === 'and' || w === 'or' || w === '&&' || w === '||') {
      this.fail(`expected a primitive (host, net, port, tcp, …) at ${describe(t, this.text.length)}`, t);
    }
    if (UNSUPPORTED.has(w)) this.fail(`'${t.text}' is not supported by this filter (column ${t.at + 1})`, t);
    if (w === 'vlan') return this.vlan();
    if (w === 'ether') return this.qualified('ether', t);
    if (PROTO_WORDS.has(w)) {
      const n = this.peek();
      if (this.isWord(n, 'proto', 'broadcast', 'multicast', 'protochain')) {
        this.fail(`'${t.text} ${(n as Token).text}' is not supported by this filter (column ${t.at + 1})`, n);
      }
      if (n !== undefined && (TYPE_WORDS.has(n.text.toLowerCase()) || this.isWord(n, 'src', 'dst'))) {
        if (w === 'icmp' || w === 'icmp6') this.fail(`'${t.text}' cannot qualify '${n.text}' (column ${n.at + 1})`, n);
        return this.qualified(w as QProto, t);
      }
      this.lastQual = undefined;
      return this.b.proto(w, this.vlans);
    }
    if (TYPE_WORDS.has(w) || w === 'src' || w === 'dst') {
      this.pos--;
      return this.qualified(undefined, t);
    }
    if (this.lastQual !== undefined && /^[0-9a-fA-F:.]/.test(t.text)) return this.value(this.lastQual, t);
    if (/^[0-9]/.test(t.text) || t.text.includes(':')) {
      this.fail(`a bare value needs a qualifier (host, net, port) before it: ${describe(t, this.text.length)}`, t);
    }
    this.fail(
      `expected a primitive (host, net, port, portrange, ether, arp, ip, ip6, tcp, udp, icmp, icmp6, vlan) at ${describe(t, this.text.length)}; host names are not looked up`,
      t,
    );
  }

  /** [proto] [dir] [type] value, with the proto word (if any) already consumed. */
  private qualified(proto: QProto, protoTok: Token): N {
    let dir: Dir = 'any';
    let t = this.peek();
    if (this.isWord(t, 'src', 'dst')) {
      this.pos++;
      const first = (t as Token).text.toLowerCase();
      dir = first as Dir;
      // `src or dst` / `src and dst` are direction qualifiers when followed by the other direction.
      if (this.isWord(this.peek(), 'or', 'and') && this.isWord(this.peek(1), first === 'src' ? 'dst' : 'src')) {
        dir = (this.peek() as Token).text.toLowerCase() === 'or' ? 'any' : 'both';
        this.pos += 2;
      }
      t = this.peek();
    }
    let type: QType = 'host';
    if (t !== undefined && TYPE_WORDS.has(t.text.toLowerCase())) {
      type = t.text.toLowerCase() as QType;
      this.pos++;
    } else if (this.isWord(t, 'proto', 'broadcast', 'multicast', 'gateway')) {
      this.fail(`'${(t as Token).text}' is not supported by this filter (column ${(t as Token).at + 1})`, t);
    } else if (proto === undefined && dir === 'any') {
      this.fail(`expected host, net, port or portrange at ${describe(t, this.text.length)}`, t);
    }
    if (proto === 'ether' && type !== 'host') this.fail(`'ether ${type}' is not supported; use ether host, ether src or ether dst (column ${protoTok.at + 1})`, protoTok);
    if ((proto === 'tcp' || proto === 'udp') && type !== 'port' && type !== 'portrange') {
      this.fail(`'${proto}' can only qualify port or portrange (column ${protoTok.at + 1})`, protoTok);
    }
    if ((proto === 'ip' || proto === 'ip6' || proto === 'arp') && (type === 'port' || type === 'portrange')) {
      this.fail(`'${proto} ${type}' is not supported; use tcp ${type}, udp ${type} or ${type} (column ${protoTok.at + 1})`, protoTok);
    }
    if (proto === 'arp' && dir === 'both') this.fail(`'arp src and dst' is not supported (column ${protoTok.at + 1})`, protoTok);
    const q: Qual = { proto, dir, type };
    const v = this.next();
    if (v === undefined || !/^[0-9a-zA-Z:.]/.test(v.text) || this.isWord(v, 'and', 'or', 'not')) {
      this.fail(`expected ${this.expectWhat(q)} at ${describe(v, this.text.length)}`, v);
    }
    return this.value(q, v);
  }

  private expectWhat(q: Qual): string {
    if (q.proto === 'ether') return 'a MAC address';
    if (q.type === 'port') return 'a port number';
    if (q.type === 'portrange') return 'a port range A-B';
    if (q.type === 'net') return 'a network A.B.C.D/len or an IPv6 prefix';
    return 'an IPv4 or IPv6 address';
  }

  /** Compiles `q value`, and remembers q for a following bare value (`host a or b`). */
  private value(q: Qual, v: Token): N {
    this.lastQual = q;
    const bad = (): never => this.fail(`expected ${this.expectWhat(q)} at ${describe(v, this.text.length)}`, v);
    if (q.proto === 'ether') {
      const m = parseMacString(v.text);
      if (!m.ok) bad();
      return this.b.etherHost(m.ok ? m.value : 0, q.dir);
    }
    if (q.type === 'port' || q.type === 'portrange') {
      let lo: number;
      let hi: number;
      if (q.type === 'port') {
        if (!/^[0-9]{1,5}$/.test(v.text) || Number(v.text) > 65535) bad();
        lo = hi = Number(v.text);
      } else {
        const m = /^([0-9]{1,5})-([0-9]{1,5})$/.exec(v.text);
        if (m === null || Number(m[1]) > 65535 || Number(m[2]) > 65535) bad();
        const a = Number((m as RegExpExecArray)[1]);
        const b = Number((m as RegExpExecArray)[2]);
        // pcap accepts a reversed range and swaps it.
        lo = Math.min(a, b);
        hi = Math.max(a, b);
      }
      const protos = q.proto === 'tcp' ? [PROTO_TCP] : q.proto === 'udp' ? [PROTO_UDP] : [PROTO_SCTP, PROTO_TCP, PROTO_UDP];
      return this.b.port(protos, lo, hi, q.dir, this.vlans);
    }
    // host or net
    let addrText = v.text;
    let prefix: number | undefined;
    const slash = addrText.indexOf('/');
    if (slash >= 0) {
      if (q.type !== 'net') this.fail(`a prefix length belongs to 'net', not 'host': ${describe(v, this.text.length)}`, v);
      const p = addrText.slice(slash + 1);
      if (!/^[0-9]{1,3}$/.test(p)) bad();
      prefix = Number(p);
      addrText = addrText.slice(0, slash);
    }
    if (addrText.includes(':')) {
      const a = parseIpv6Text(addrText);
      if (!a.ok) bad();
      if (q.proto === 'ip' || q.proto === 'arp') this.fail(`'${q.proto}' with an IPv6 address at ${describe(v, this.text.length)}`, v);
      if (this.isWord(this.peek(), 'mask')) this.fail(`'mask' is for IPv4 networks; use ${addrText}/len (column ${(this.peek() as Token).at + 1})`, this.peek());
      const len = prefix ?? 128;
      if (len > 128) bad();
      const addr = a.ok ? a.value : Buffer.alloc(16);
      const mask = Buffer.alloc(16);
      for (let i = 0; i < 16; i++) mask[i] = len >= (i + 1) * 8 ? 0xff : len <= i * 8 ? 0 : (0xff << (8 - (len - i * 8))) & 0xff;
      for (let i = 0; i < 16; i++) {
        if (((addr[i] as number) & ~(mask[i] as number)) !== 0) this.fail(`non-network bits set in ${v.text} (column ${v.at + 1})`, v);
      }
      return this.b.ip6Addr(addr, mask, q.dir, this.vlans);
    }
    // pcap also accepts shortened IPv4 nets (`net 10`); we ask for the full form rather than guess.
    if (!/^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$/.test(addrText)) bad();
    const a = parseIpv4Text(addrText);
    if (!a.ok) bad();
    if (q.proto === 'ip6') this.fail(`'ip6' with an IPv4 address at ${describe(v, this.text.length)}`, v);
    let mask = 0xffffffff;
    if (prefix !== undefined) {
      if (prefix > 32) bad();
      mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
    } else if (q.type === 'net' && this.isWord(this.peek(), 'mask')) {
      this.pos++;
      const m = this.next();
      const mm = m !== undefined && /^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$/.test(m.text) ? parseIpv4Text(m.text) : undefined;
      if (mm === undefined || !mm.ok) this.fail(`expected a netmask A.B.C.D at ${describe(m, this.text.length)}`, m);
      mask = mm.ok ? mm.value >>> 0 : 0;
    }
    const addr = (a.ok ? a.value : 0) >>> 0;
    if ((addr & ~mask) >>> 0 !== 0) this.fail(`non-network bits set in ${v.text} (column ${v.at + 1})`, v);
    return this.b.ip4Addr(addr, mask, q.dir, q.proto, this.vlans);
  }

  /** `vlan [id]`: the primitives parsed after it look one tag deeper. */
  private vlan(): N {
    let id = -1;
    const n = this.peek();
    if (n !== undefined && /^[0-9]/.test(n.text)) {
      if (!/^[0-9]{1,4}$/.test(n.text) || Number(n.text) > 4095) this.fail(`expected a VLAN id 0-4095 at ${describe(n, this.text.length)}`, n);
      id = Number(n.text);
      this.pos++;
    }
    const node = this.b.vlan(this.vlans, id);
    this.vlans++;
    this.lastQual = undefined;
    return node;
  }
}

/** What the parser hands a back end: one call per primitive, with the VLAN depth it was parsed at. */
interface Backend<N> {
  all(): N;
  and(l: N, r: N): N;
  or(l: N, r: N): N;
  not(x: N): N;
  /** `vlan [id]` (id -1: any) at VLAN depth `vlans` (the tags before it). */
  vlan(vlans: number, id: number): N;
  /** ip ip6 arp icmp icmp6 tcp udp. */
  proto(w: string, vlans: number): N;
  etherHost(mac: number, dir: Dir): N;
  ip4Addr(addr: number, mask: number, dir: Dir, proto: QProto, vlans: number): N;
  ip6Addr(addr: Buffer, mask: Buffer, dir: Dir, vlans: number): N;
  port(protos: readonly number[], lo: number, hi: number, dir: Dir, vlans: number): N;
}

// ---- the closure back end (compileFilter): each primitive captures the link offsets of its VLAN depth ----

class ClosureGen implements Backend<Node> {
  constructor(private readonly ctx: Ctx) {}

  all(): Node {
    return () => 1;
  }
  and(l: Node, r: Node): Node {
    return () => {
      const a = l();
      return a !== 1 ? a : r();
    };
  }
  or(l: Node, r: Node): Node {
    return or(l, r);
  }
  not(x: Node): Node {
    return () => {
      const a = x();
      return a === -1 ? -1 : a === 1 ? 0 : 1;
    };
  }

  /** The ethertype (or, on raw IP, the version) test at a VLAN depth. */
  private linkType(et: number, vlans: number): Node {
    const ctx = this.ctx;
    const off = 12 + 4 * vlans;
    const version = et === ETHERTYPE_IP ? 0x40 : et === ETHERTYPE_IPV6 ? 0x60 : -1;
    return () => {
      if (ctx.raw) {
        if (version < 0) return 0;
        const b = u8(ctx.buf, 0);
        return b < 0 ? -1 : (b & 0xf0) === version ? 1 : 0;
      }
      const v = u16(ctx.buf, off);
      return v < 0 ? -1 : v === et ? 1 : 0;
    };
  }

  /** Offset of the link-layer payload (the IP header) at a VLAN depth. */
  private payloadOffset(vlans: number): () => number {
    const ctx = this.ctx;
    const off = 14 + 4 * vlans;
    return () => (ctx.raw ? 0 : off);
  }

  vlan(vlans: number, id: number): Node {
    const ctx = this.ctx;
    const off = 12 + 4 * vlans;
    return () => {
      if (ctx.raw) return 0;
      const t = u16(ctx.buf, off);
      if (t < 0) return -1;
      if (t !== 0x8100 && t !== 0x88a8 && t !== 0x9100) return 0;
      if (id < 0) return 1;
      const tci = u16(ctx.buf, off + 2);
      return tci < 0 ? -1 : (tci & 0xfff) === id ? 1 : 0;
    };
  }

  proto(w: string, vlans: number): Node {
    if (w === 'ip') return this.linkType(ETHERTYPE_IP, vlans);
    if (w === 'ip6') return this.linkType(ETHERTYPE_IPV6, vlans);
    if (w === 'arp') return this.linkType(ETHERTYPE_ARP, vlans);
    if (w === 'icmp') return this.ip4Proto(PROTO_ICMP, vlans);
    if (w === 'icmp6') return this.ip6Proto(PROTO_ICMPV6, vlans);
    const p = w === 'tcp' ? PROTO_TCP : PROTO_UDP;
    return or(this.ip4Proto(p, vlans), this.ip6Proto(p, vlans));
  }

  private ip4Proto(p: number, vlans: number): Node {
    const ctx = this.ctx;
    const is4 = this.linkType(ETHERTYPE_IP, vlans);
    const pl = this.payloadOffset(vlans);
    return () => {
      const a = is4();
      if (a !== 1) return a;
      const v = u8(ctx.buf, pl() + 9);
      return v < 0 ? -1 : v === p ? 1 : 0;
    };
  }

  /** pcap's `ip6 proto p`: the fixed header's next header, or a Fragment header then p. */
  private ip6Proto(p: number, vlans: number): Node {
    const ctx = this.ctx;
    const is6 = this.linkType(ETHERTYPE_IPV6, vlans);
    const pl = this.payloadOffset(vlans);
    return () => {
      const a = is6();
      if (a !== 1) return a;
      const o = pl();
      const nh = u8(ctx.buf, o + 6);
      if (nh < 0) return -1;
      if (nh === p) return 1;
      if (nh !== PROTO_FRAGMENT) return 0;
      const inner = u8(ctx.buf, o + 40);
      return inner < 0 ? -1 : inner === p ? 1 : 0;
    };
  }

  etherHost(mac: number, dir: Dir): Node {
    const ctx = this.ctx;
    const hi = Math.floor(mac / 0x10000) >>> 0;
    const lo = mac % 0x10000;
    const at = (o: number): Verdict => {
      const h = u32(ctx.buf, o);
      const l = u16(ctx.buf, o + 4);
      return h < 0 || l < 0 ? -1 : h === hi && l === lo ? 1 : 0;
    };
    return () => (ctx.raw ? 0 : dirTest(dir, at, 6, 0));
  }

  ip4Addr(addr: number, mask: number, dir: Dir, proto: QProto, vlans: number): Node {
    const ctx = this.ctx;
    const pl = this.payloadOffset(vlans);
    const cmp = (o: number): Verdict => {
      const v = u32(ctx.buf, o);
      return v < 0 ? -1 : ((v & mask) >>> 0) === addr ? 1 : 0;
    };
    const over = (et: number, srcOff: number, dstOff: number): Node => {
      const is = this.linkType(et, vlans);
      return () => {
        const a = is();
        if (a !== 1) return a;
        const o = pl();
        return dirTest(dir, cmp, o + srcOff, o + dstOff);
      };
    };
    const ip = over(ETHERTYPE_IP, 12, 16);
    if (proto === 'ip') return ip;
    // ARP/RARP sender and target protocol addresses (Ethernet/IPv4 layout), as pcap's `host`.
    const arp = over(ETHERTYPE_ARP, 14, 24);
    if (proto === 'arp') return arp;
    return or(or(ip, arp), over(ETHERTYPE_RARP, 14, 24));
  }

  ip6Addr(addr: Buffer, mask: Buffer, dir: Dir, vlans: number): Node {
    const ctx = this.ctx;
    const is6 = this.linkType(ETHERTYPE_IPV6, vlans);
    const pl = this.payloadOffset(vlans);
    const cmp = (o: number): Verdict => {
      if (o + 16 > ctx.buf.length) return -1;
      for (let i = 0; i < 16; i++) if ((((ctx.buf[o + i] as number) & (mask[i] as number)) as number) !== addr[i]) return 0;
      return 1;
    };
    return () => {
      const a = is6();
      if (a !== 1) return a;
      const o = pl();
      return dirTest(dir, cmp, o + 8, o + 24);
    };
  }

  port(protos: readonly number[], lo: number, hi: number, dir: Dir, vlans: number): Node {
    const ctx = this.ctx;
    const is4 = this.linkType(ETHERTYPE_IP, vlans);
    const is6 = this.linkType(ETHERTYPE_IPV6, vlans);
    const pl = this.payloadOffset(vlans);
    const cmp = (o: number): Verdict => {
      const v = u16(ctx.buf, o);
      return v < 0 ? -1 : v >= lo && v <= hi ? 1 : 0;
    };
    // pcap tests IPv6 first, then IPv4; the order matters only for which read overruns first.
    const v6: Node = () => {
      const a = is6();
      if (a !== 1) return a;
      const o = pl();
      const nh = u8(ctx.buf, o + 6);
      if (nh < 0) return -1;
      if (!protos.includes(nh)) return 0;
      return dirTest(dir, cmp, o + 40, o + 42);
    };
    const v4: Node = () => {
      const a = is4();
      if (a !== 1) return a;
      const o = pl();
      const p = u8(ctx.buf, o + 9);
      if (p < 0) return -1;
      if (!protos.includes(p)) return 0;
      const frag = u16(ctx.buf, o + 6);
      if (frag < 0) return -1;
      if ((frag & 0x1fff) !== 0) return 0;
      const ihl = u8(ctx.buf, o);
      if (ihl < 0) return -1;
      const l4 = o + 4 * (ihl & 0xf);
      return dirTest(dir, cmp, l4, l4 + 2);
    };
    return or(v6, v4);
  }
}

function or(l: Node, r: Node): Node {
  return () => {
    const a = l();
    return a !== 0 ? a : r();
  };
}

/** Applies a direction to a field test at the source and destination offsets (no closure per packet). */
function dirTest(dir: Dir, cmp: (o: number) => Verdict, srcOff: number, dstOff: number): Verdict {
  if (dir === 'src') return cmp(srcOff);
  if (dir === 'dst') return cmp(dstOff);
  const a = cmp(srcOff);
  if (dir === 'both') return a !== 1 ? a : cmp(dstOff);
  return a !== 0 ? a : cmp(dstOff);
}

// ---- the program back end (compileFilterProgram): the same tree as words for device.cc's interpreter ----

/**
 * A filter program, run by the native tee (device.cc TeeWrite, tee-filter.cc) on each frame before it is
 * copied, so a frame the capture would filter out costs no copy. Prefix-encoded tree of
 * three-valued nodes (1 match, 0 no match, -1 a read past the end: the packet is rejected),
 * evaluated exactly as the closures above. Each node starts with a header word
 *   op (bits 0-7) | size (bits 8-15, PROG_CMP*: 1, 2 or 4 bytes) | words (bits 16-31: the whole
 *   node's length, children included, so a short-circuit skips a child in one step)
 * then its operands:
 *   PROG_TRUE, PROG_FALSE           —
 *   PROG_AND, PROG_OR               left node, right node (and: a != 1 ? a : right; or: a != 0 ? a : right)
 *   PROG_NOT                        node (-1 stays -1)
 *   PROG_NEED  off n                1 when bytes [off, off+n) are in the frame, else -1
 *   PROG_CMP   off mask lo hi       the big-endian value v at off: -1 past the end, else lo <= (v & mask) <= hi
 *   PROG_CMP_L4 net off mask lo hi  as CMP at off + net + 4 * (frame[net] & 15) (IPv4 header length)
 * Offsets are from the start of the captured bytes (the link type and VLAN depth are resolved
 * when compiling). The device checks a program once (tee-filter.cc ValidateFilter) against the limits below.
 */
export const PROG_TRUE = 1;
export const PROG_FALSE = 2;
export const PROG_AND = 3;
export const PROG_OR = 4;
export const PROG_NOT = 5;
export const PROG_NEED = 6;
export const PROG_CMP = 7;
export const PROG_CMP_L4 = 8;
/** Limits the device enforces (tee-filter.h kFilterMaxWords, kFilterMaxDepth, kFilterMaxOffset). */
export const PROG_MAX_WORDS = 4096;
export const PROG_MAX_DEPTH = 128;
export const PROG_MAX_OFFSET = 0xffff;

type Prog = number[];

function node(op: number, size: number, ...rest: Prog[]): Prog {
  const words = 1 + rest.reduce((n, r) => n + r.length, 0);
  return [op | (size << 8) | (words << 16), ...rest.flat()];
}

class ProgramGen implements Backend<Prog> {
  constructor(private readonly raw: boolean) {}

  all(): Prog {
    return node(PROG_TRUE, 0);
  }
  and(l: Prog, r: Prog): Prog {
    return node(PROG_AND, 0, l, r);
  }
  or(l: Prog, r: Prog): Prog {
    return node(PROG_OR, 0, l, r);
  }
  not(x: Prog): Prog {
    return node(PROG_NOT, 0, x);
  }
  private none(): Prog {
    return node(PROG_FALSE, 0);
  }
  private cmp(size: number, off: number, mask: number, lo: number, hi: number = lo): Prog {
    return node(PROG_CMP, size, [off, mask >>> 0, lo >>> 0, hi >>> 0]);
  }
  private need(off: number, n: number): Prog {
    return node(PROG_NEED, 0, [off, n]);
  }
  private dir(d: Dir, src: Prog, dst: Prog): Prog {
    if (d === 'src') return src;
    if (d === 'dst') return dst;
    return d === 'both' ? this.and(src, dst) : this.or(src, dst);
  }

  private linkType(et: number, vlans: number): Prog {
    if (this.raw) {
      const version = et === ETHERTYPE_IP ? 0x40 : et === ETHERTYPE_IPV6 ? 0x60 : -1;
      return version < 0 ? this.none() : this.cmp(1, 0, 0xf0, version);
    }
    return this.cmp(2, 12 + 4 * vlans, 0xffff, et);
  }
  private pl(vlans: number): number {
    return this.raw ? 0 : 14 + 4 * vlans;
  }

  vlan(vlans: number, id: number): Prog {
    if (this.raw) return this.none();
    const off = 12 + 4 * vlans;
    const tag = this.or(this.cmp(2, off, 0xffff, 0x8100), this.or(this.cmp(2, off, 0xffff, 0x88a8), this.cmp(2, off, 0xffff, 0x9100)));
    return id < 0 ? tag : this.and(tag, this.cmp(2, off + 2, 0xfff, id));
  }

  proto(w: string, vlans: number): Prog {
    if (w === 'ip') return this.linkType(ETHERTYPE_IP, vlans);
    if (w === 'ip6') return this.linkType(ETHERTYPE_IPV6, vlans);
    if (w === 'arp') return this.linkType(ETHERTYPE_ARP, vlans);
    if (w === 'icmp') return this.ip4Proto(PROTO_ICMP, vlans);
    if (w === 'icmp6') return this.ip6Proto(PROTO_ICMPV6, vlans);
    const p = w === 'tcp' ? PROTO_TCP : PROTO_UDP;
    return this.or(this.ip4Proto(p, vlans), this.ip6Proto(p, vlans));
  }

  private ip4Proto(p: number, vlans: number): Prog {
    return this.and(this.linkType(ETHERTYPE_IP, vlans), this.cmp(1, this.pl(vlans) + 9, 0xff, p));
  }

  private ip6Proto(p: number, vlans: number): Prog {
    const o = this.pl(vlans);
    const nh = this.or(this.cmp(1, o + 6, 0xff, p), this.and(this.cmp(1, o + 6, 0xff, PROTO_FRAGMENT), this.cmp(1, o + 40, 0xff, p)));
    return this.and(this.linkType(ETHERTYPE_IPV6, vlans), nh);
  }

  etherHost(mac: number, dir: Dir): Prog {
    if (this.raw) return this.none();
    const hi = Math.floor(mac / 0x10000) >>> 0;
    const lo = mac % 0x10000;
    // Both reads are checked before either compares, as in the closure.
    const at = (o: number): Prog => this.and(this.need(o, 6), this.and(this.cmp(4, o, 0xffffffff, hi), this.cmp(2, o + 4, 0xffff, lo)));
    return this.dir(dir, at(6), at(0));
  }

  ip4Addr(addr: number, mask: number, dir: Dir, proto: QProto, vlans: number): Prog {
    const o = this.pl(vlans);
    const over = (et: number, srcOff: number, dstOff: number): Prog =>
      this.and(this.linkType(et, vlans), this.dir(dir, this.cmp(4, o + srcOff, mask, addr), this.cmp(4, o + dstOff, mask, addr)));
    const ip = over(ETHERTYPE_IP, 12, 16);
    if (proto === 'ip') return ip;
    const arp = over(ETHERTYPE_ARP, 14, 24);
    if (proto === 'arp') return arp;
    return this.or(this.or(ip, arp), over(ETHERTYPE_RARP, 14, 24));
  }

  ip6Addr(addr: Buffer, mask: Buffer, dir: Dir, vlans: number): Prog {
    const o = this.pl(vlans);
    // All 16 bytes are checked before any compares, as in the closure.
    const at = (off: number): Prog => {
      let words = this.cmp(4, off + 12, mask.readUInt32BE(12), addr.readUInt32BE(12));
      for (let i = 2; i >= 0; i--) words = this.and(this.cmp(4, off + 4 * i, mask.readUInt32BE(4 * i), addr.readUInt32BE(4 * i)), words);
      return this.and(this.need(off, 16), words);
    };
    return this.and(this.linkType(ETHERTYPE_IPV6, vlans), this.dir(dir, at(o + 8), at(o + 24)));
  }

  port(protos: readonly number[], lo: number, hi: number, dir: Dir, vlans: number): Prog {
    const o = this.pl(vlans);
    const anyOf = (off: number): Prog => protos.map((p) => this.cmp(1, off, 0xff, p)).reduceRight((r, l) => this.or(l, r));
    const v6 = this.and(this.linkType(ETHERTYPE_IPV6, vlans), this.and(anyOf(o + 6), this.dir(dir, this.cmp(2, o + 40, 0xffff, lo, hi), this.cmp(2, o + 42, 0xffff, lo, hi))));
    const l4 = (off: number): Prog => node(PROG_CMP_L4, 2, [o, off, 0xffff, lo, hi]);
    const notFragment = this.cmp(2, o + 6, 0x1fff, 0);
    const v4 = this.and(this.linkType(ETHERTYPE_IP, vlans), this.and(anyOf(o + 9), this.and(notFragment, this.dir(dir, l4(0), l4(2)))));
    return this.or(v6, v4);
  }
}

/** Parses and compiles a filter; an empty filter matches everything (as tcpdump with no expression). */
export function compileFilter(text: string): CompiledFilter {
  const ctx: Ctx = { buf: Buffer.alloc(0), raw: false };
  let root: Node;
  try {
    root = new Compiler(text, new ClosureGen(ctx)).compile();
  } catch (e) {
    if (e instanceof FilterError) return { ok: false, error: e.message, at: e.at };
    throw e;
  }
  const empty = ctx.buf;
  return {
    ok: true,
    match(frame: Buffer, linkType: LinkType): boolean {
      ctx.buf = frame;
      ctx.raw = linkType === 'raw';
      const v = root();
      ctx.buf = empty; // do not keep the caller's frame alive
      return v === 1;
    },
  };
}

/**
 * The same filter as a program for the native tee (see PROG_TRUE), for one link type: null when
 * the filter does not compile or its program is past the device's limits (then JS filters alone).
 */
export function compileFilterProgram(text: string, link: LinkType): Uint32Array | null {
  let prog: Prog;
  try {
    prog = new Compiler(text, new ProgramGen(link === 'raw')).compile();
  } catch (e) {
    if (e instanceof FilterError) return null;
    throw e;
  }
  if (prog.length > PROG_MAX_WORDS || depth(prog, 0) > PROG_MAX_DEPTH) return null;
  return Uint32Array.from(prog);
}

/** Nesting depth of the node at `at` (the device refuses a program deeper than PROG_MAX_DEPTH). */
function depth(prog: Prog, at: number): number {
  const op = (prog[at] as number) & 0xff;
  if (op === PROG_AND || op === PROG_OR) {
    const left = at + 1;
    const right = left + ((prog[left] as number) >>> 16);
    return 1 + Math.max(depth(prog, left), depth(prog, right));
  }
  if (op === PROG_NOT) return 1 + depth(prog, at + 1);
  return 1;
}
