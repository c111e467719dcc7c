/**
 * The gateway's DNS front end, UDP and TCP port 53 (RFC 1035, RFC 7766 for TCP, RFC 6891 EDNS).
 * It parses a query, asks a `Resolver` (chosen per VM by the caller's composition, see
 * dns-route.ts) and builds the response: same id and question, RD copied, RA when the resolver
 * recurses, TC with an empty answer when a UDP response exceeds 512 bytes or the client's EDNS
 * size (bounded by the network MTU). Malformed queries whose header is readable get FORMERR;
 * shorter garbage and responses (QR set) are dropped.
 */
import type { EthernetHeader } from '../wire/ethernet.js';
import {
  DNS_CLASS_IN,
  DNS_PORT,
  DNS_RCODE_FORMERR,
  DNS_RCODE_NOERROR,
  DNS_RCODE_NOTIMP,
  DNS_RCODE_NXDOMAIN,
  DNS_RCODE_REFUSED,
  DNS_RCODE_SERVFAIL,
  DNS_TYPE_OPT,
  encodeDns,
  parseDns,
  parseDnsHeader,
  type DnsMessage,
  type DnsQuestion,
  type DnsRecord,
} from '../wire/dns.js';
import type { Ipv4Packet } from '../wire/ipv4.js';
import type { Ipv6Packet } from '../wire/ipv6.js';
import type { UdpDatagram } from '../wire/udp.js';
import { udpFrame } from './frames.js';
import { ip4, ip6, type IpAddr } from '../endpoint/addr.js';
import { isGatewayIpv6, type GatewayNet } from './types.js';

export type DnsRecords = readonly DnsRecord<Uint8Array>[];

/** What a resolver says about one question. `records` with no answers is NODATA. */
export type DnsAnswer =
  | {
      readonly kind: 'records';
      readonly answers: DnsRecords;
      readonly authorities?: DnsRecords | undefined;
      readonly additionals?: DnsRecords | undefined;
      /** Sets AA (local names). */
      readonly authoritative?: boolean | undefined;
    }
  | { readonly kind: 'nxdomain'; readonly authorities?: DnsRecords | undefined; readonly authoritative?: boolean | undefined }
  | { readonly kind: 'refused' }
  | { readonly kind: 'servfail' };

export interface Resolver {
  /** Never rejects in the implementations here; a rejection is answered with SERVFAIL. */
  resolve(vm: string, q: DnsQuestion, now: number): Promise<DnsAnswer>;
  /** Whether responses to this VM set RA (recursion available). Default true. */
  recursionAvailable?(vm: string): boolean;
}

export type DnsTransport = 'udp' | 'tcp';

export interface DnsServerOptions {
  /** Our EDNS UDP payload size (default 1232, RFC 9715 / DNS flag day 2020). */
  readonly ednsSize?: number | undefined;
}

export interface DnsServerStats {
  queries: number;
  responses: number;
  formerr: number;
  notimp: number;
  refused: number;
  servfail: number;
  nxdomain: number;
  truncated: number;
  /** Not answered: unreadable header, a response, wrong address or port. */
  dropped: number;
}

const RCODE_BADVERS = 16;
const TYPE_IXFR = 251;
const TYPE_AXFR = 252;

function emptyResponse(id: number, opcode: number, rd: boolean, cd: boolean, ra: boolean, rcode: number): DnsMessage<Uint8Array> {
  return { id, qr: true, opcode, aa: false, tc: false, rd, ra, ad: false, cd, rcode, questions: [], answers: [], authorities: [], additionals: [] };
}

export class DnsServer {
  readonly stats: DnsServerStats = { queries: 0, responses: 0, formerr: 0, notimp: 0, refused: 0, servfail: 0, nxdomain: 0, truncated: 0, dropped: 0 };
  private readonly ednsSize: number;

  constructor(
    private readonly net: GatewayNet,
    private readonly resolver: Resolver,
    opts: DnsServerOptions = {},
  ) {
    this.ednsSize = Math.max(512, Math.min(opts.ednsSize ?? 1232, 65535));
  }

  /**
   * A UDP datagram to port 53 of the gateway's IPv4 address. Resolves to the response frame,
   * or null when the query is dropped.
   */
  async handleUdp4(eth: EthernetHeader, ip: Ipv4Packet, udp: UdpDatagram, vm: string, now: number): Promise<Buffer | null> {
    return this.handleUdp(eth, ip.dst === this.net.gatewayIp, ip4(ip.src), ip4(ip.dst), udp, vm, now);
  }

  /** The same for a UDP datagram to one of the gateway's IPv6 addresses. */
  async handleUdp6(eth: EthernetHeader, ip: Ipv6Packet, udp: UdpDatagram, vm: string, now: number): Promise<Buffer | null> {
    // ip6() copies the addresses: the frame they point into is only valid during the caller's call.
    return this.handleUdp(eth, isGatewayIpv6(this.net, ip.dst), ip6(ip.src), ip6(ip.dst), udp, vm, now);
  }

  private async handleUdp(eth: EthernetHeader, toGateway: boolean, src: IpAddr, dst: IpAddr, udp: UdpDatagram, vm: string, now: number): Promise<Buffer | null> {
    if (eth.vlan !== undefined || !toGateway || udp.dstPort !== DNS_PORT || udp.srcPort === 0) {
      this.stats.dropped++;
      return null;
    }
    const l2 = { gwMac: this.net.gatewayMac, vmMac: eth.src };
    const port = udp.srcPort;
    const response = await this.answer(udp.payload, vm, 'udp', now, this.net.mtu - (src.v === 4 ? 20 : 40) - 8);
    if (response === null) return null;
    return udpFrame(l2, dst, DNS_PORT, src, port, response);
  }

  /**
   * One DNS message (a UDP payload or a TCP message without its length prefix) from `vm`:
   * resolves to the response message, or null when it is dropped. `query` is read before the
   * first await, so it may be a view into a frame the caller reuses. `maxUdp` bounds UDP
   * responses (the path MTU minus headers); TCP responses are bounded only by 65535.
   */
  async answer(query: Buffer, vm: string, transport: DnsTransport, now: number, maxUdp = 1472): Promise<Buffer | null> {
    const h = parseDnsHeader(query);
    if (!h.ok || h.value.qr) {
      this.stats.dropped++;
      return null;
    }
    this.stats.queries++;
    const head = h.value;
    const ra = this.resolver.recursionAvailable?.(vm) ?? true;
    const parsed = parseDns(query);
    if (!parsed.ok || head.counts[0] !== 1) return this.finish(emptyResponse(head.id, head.opcode, head.rd, head.cd, ra, DNS_RCODE_FORMERR));
    const m = parsed.value;
    const q: DnsQuestion = { name: m.questions[0]!.name, type: m.questions[0]!.type, class: m.questions[0]!.class };
    const base = { ...emptyResponse(m.id, m.opcode, m.rd, m.cd, ra, DNS_RCODE_NOERROR), questions: [q] };

    // EDNS (RFC 6891 §6.1.1): at most one OPT, owner root; version 0 only.
    const opts = m.additionals.filter((r) => r.type === DNS_TYPE_OPT);
    if (opts.length > 1 || (opts.length === 1 && opts[0]!.name !== '')) return this.finish({ ...base, rcode: DNS_RCODE_FORMERR });
    const edns = opts[0];
    const ourOpt = (extendedRcode: number): DnsRecord<Uint8Array> => ({
      name: '',
      type: DNS_TYPE_OPT,
      class: this.ednsSize,
      ttl: (extendedRcode << 24) >>> 0,
      data: { kind: 'raw', data: Buffer.alloc(0) },
    });
    if (edns && ((edns.ttl >>> 16) & 0xff) !== 0) {
      return this.finish({ ...base, rcode: RCODE_BADVERS & 0xf, additionals: [ourOpt(RCODE_BADVERS >>> 4)] });
    }
    const optOut = edns ? [ourOpt(0)] : [];
    if (m.opcode !== 0) return this.finish({ ...base, rcode: DNS_RCODE_NOTIMP, additionals: optOut });
    if (q.type === TYPE_AXFR || q.type === TYPE_IXFR) return this.finish({ ...base, rcode: DNS_RCODE_REFUSED, additionals: optOut });

    let a: DnsAnswer;
    try {
      a = await this.resolver.resolve(vm, q, now);
    } catch {
      a = { kind: 'servfail' };
    }
    let response: DnsMessage<Uint8Array>;
    switch (a.kind) {
      case 'records':
        response = {
          ...base,
          aa: a.authoritative === true,
          answers: a.answers,
          authorities: a.authorities ?? [],
          additionals: [...(a.additionals ?? []).filter((r) => r.type !== DNS_TYPE_OPT), ...optOut],
        };
        break;
      case 'nxdomain':
        response = { ...base, aa: a.authoritative === true, rcode: DNS_RCODE_NXDOMAIN, authorities: a.authorities ?? [], additionals: optOut };
        break;
      case 'refused':
        response = { ...base, rcode: DNS_RCODE_REFUSED, additionals: optOut };
        break;
      case 'servfail':
        response = { ...base, rcode: DNS_RCODE_SERVFAIL, additionals: optOut };
        break;
    }
    let limit = 65535;
    if (transport === 'udp') {
      const requested = edns ? Math.max(512, edns.class) : 512;
      limit = Math.max(512, Math.min(requested, this.ednsSize, maxUdp));
    }
    return this.finish(response, limit, optOut);
  }

  private finish(m: DnsMessage<Uint8Array>, limit = 65535, opt: DnsRecords = []): Buffer | null {
    let out: Buffer;
    try {
      out = encodeDns(m);
    } catch {
      // A record we cannot represent (or over 64 KiB): SERVFAIL instead.
      m = { ...m, rcode: DNS_RCODE_SERVFAIL, aa: false, answers: [], authorities: [], additionals: [...opt] };
      out = encodeDns(m);
    }
    if (out.length > limit) {
      // RFC 2181 §9: signal truncation; the client retries over TCP. Keep only the question.
      this.stats.truncated++;
      m = { ...m, tc: true, answers: [], authorities: [], additionals: [...opt] };
      out = encodeDns(m);
    }
    this.stats.responses++;
    switch (m.rcode) {
      case DNS_RCODE_FORMERR:
        this.stats.formerr++;
        break;
      case DNS_RCODE_NOTIMP:
        this.stats.notimp++;
        break;
      case DNS_RCODE_REFUSED:
        this.stats.refused++;
        break;
      case DNS_RCODE_SERVFAIL:
        this.stats.servfail++;
        break;
      case DNS_RCODE_NXDOMAIN:
        this.stats.nxdomain++;
        break;
    }
    return out;
  }
}

// TCP (RFC 1035 §4.2.2, RFC 7766): each message is preceded by its length as two bytes.

/** The message with its 2-byte length prefix. */
export function frameDnsTcp(message: Uint8Array): Buffer {
  if (message.length > 0xffff) throw new RangeError(`DNS message of ${message.length} bytes`);
  const b = Buffer.allocUnsafe(2 + message.length);
  b.writeUInt16BE(message.length, 0);
  b.set(message, 2);
  return b;
}

/**
 * Splits a TCP byte stream into DNS messages. `push` returns the messages completed by the
 * chunk (copies, safe to keep), or null once more than `maxBuffered` bytes are pending (the
 * caller closes the connection).
 */
export class DnsTcpFramer {
  private pending: Buffer = Buffer.alloc(0);
  private broken = false;

  constructor(readonly maxBuffered = 2 * (0xffff + 2)) {}

  push(chunk: Uint8Array): Buffer[] | null {
    if (this.broken) return null;
    let buf = this.pending.length === 0 ? Buffer.from(chunk) : Buffer.concat([this.pending, chunk]);
    const out: Buffer[] = [];
    while (buf.length >= 2) {
      const len = buf.readUInt16BE(0);
      if (buf.length < 2 + len) break;
      out.push(buf.subarray(2, 2 + len));
      buf = buf.subarray(2 + len);
    }
    if (buf.length > this.maxBuffered) {
      this.broken = true;
      this.pending = Buffer.alloc(0);
      return null;
    }
    this.pending = Buffer.from(buf);
    return out;
  }

  /** True after an overflow: the stream cannot be resynchronised. */
  get failed(): boolean {
    return this.broken;
  }

  /** Bytes of an incomplete message held. */
  get buffered(): number {
    return this.pending.length;
  }
}

/**
 * One DNS-over-TCP connection from a VM: feed it the bytes the TCP endpoint delivers;
 * each call resolves to the framed responses (in query order) to write back, possibly empty.
 * After `closed` turns true (a framing overflow) the connection should be closed.
 */
export class DnsTcpSession {
  private readonly framer: DnsTcpFramer;

  constructor(
    private readonly server: DnsServer,
    private readonly vm: string,
    maxBuffered?: number,
  ) {
    this.framer = new DnsTcpFramer(maxBuffered);
  }

  get closed(): boolean {
    return this.framer.failed;
  }

  async handleTcpBytes(chunk: Uint8Array, now: number): Promise<Buffer> {
    const messages = this.framer.push(chunk);
    if (messages === null || messages.length === 0) return Buffer.alloc(0);
    const responses = await Promise.all(messages.map((q) => this.server.answer(q, this.vm, 'tcp', now)));
    return Buffer.concat(responses.filter((r): r is Buffer => r !== null).map(frameDnsTcp));
  }
}

/** Convenience for tests and callers: the class of a question, IN unless said otherwise. */
export function dnsQuestion(name: string, type: number, klass = DNS_CLASS_IN): DnsQuestion {
  return { name, type, class: klass };
}
