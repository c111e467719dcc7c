/**
 * Forwards questions to an upstream recursive resolver over the host's network (node:dgram),
 * for VMs routed "direct". Each attempt uses a fresh socket bound to port 0 (the kernel picks a
 * random ephemeral port) and a random 16-bit id from crypto; an answer counts only if it comes
 * from the server's address and port and carries our id and the same question (RFC 5452), so
 * spoofed or stray datagrams are dropped and the wait goes on. A timeout is retried once (new
 * id, new port), then the answer is SERVFAIL. A truncated answer is re-asked over TCP.
 *
 * This module does I/O, so unlike the rest of daemon/gateway it uses real timers.
 */
import { randomInt } from 'node:crypto';
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import { isIP, Socket, connect } from 'node:net';
import {
  DNS_RCODE_NOERROR,
  DNS_RCODE_NXDOMAIN,
  DNS_RCODE_REFUSED,
  DNS_TYPE_OPT,
  encodeDns,
  normalizeDnsName,
  parseDns,
  type DnsMessage,
  type DnsQuestion,
  type DnsRecord,
} from '../wire/dns.js';
import { parseIpv6Text } from '../wire/ip-text.js';
import { DnsTcpFramer, frameDnsTcp, type DnsAnswer, type Resolver } from './dns.js';

export interface UpstreamServer {
  /** An IP literal (IPv4 or IPv6). */
  readonly host: string;
  readonly port: number;
}

export interface UpstreamOptions {
  /** Default: the first nameserver of `resolvConf`. */
  readonly server?: UpstreamServer | undefined;
  /** Default /etc/resolv.conf. */
  readonly resolvConf?: string | undefined;
  /** Per attempt, default 2000 ms. */
  readonly timeoutMs?: number | undefined;
  /** Attempts over UDP, default 2 (one retry). */
  readonly attempts?: number | undefined;
  /** Re-ask over TCP when the UDP answer has TC set; default true. */
  readonly tcpFallback?: boolean | undefined;
  /** Questions in flight at once; more get SERVFAIL at once. Default 256. */
  readonly maxInFlight?: number | undefined;
  /** EDNS UDP size we advertise upstream; default 1232. 0 sends no OPT record. */
  readonly ednsSize?: number | undefined;
}

export interface UpstreamStats {
  queries: number;
  answers: number;
  timeouts: number;
  /** Datagrams dropped: wrong source, id or question, or unparseable. */
  spoofed: number;
  tcpFallbacks: number;
  errors: number;
  overloaded: number;
}

/** The first `nameserver` of a resolv.conf, or undefined (missing file, none listed). */
export function readResolvConf(path = '/etc/resolv.conf'): UpstreamServer | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
  for (const line of text.split('\n')) {
    const m = /^\s*nameserver\s+(\S+)/.exec(line);
    if (!m) continue;
    const host = m[1]!.replace(/%.*$/, '');
    if (isIP(host) !== 0) return { host, port: 53 };
  }
  return undefined;
}

function sameAddress(a: string, b: string): boolean {
  if (a === b) return true;
  if (isIP(a) === 6 && isIP(b) === 6) {
    const x = parseIpv6Text(a);
    const y = parseIpv6Text(b);
    return x.ok && y.ok && x.value.equals(y.value);
  }
  return false;
}

function sameQuestion(m: DnsMessage, q: DnsQuestion): boolean {
  if (m.questions.length !== 1) return false;
  const r = m.questions[0]!;
  return r.type === q.type && r.class === q.class && normalizeDnsName(r.name) === normalizeDnsName(q.name);
}

type Outcome = { readonly kind: 'message'; readonly message: DnsMessage; readonly bytes: Buffer } | { readonly kind: 'timeout' } | { readonly kind: 'error' };

/**
 * Record types whose RDATA is a 16-bit preference and a domain name that senders may compress
 * (RFC 3597 §4: MX, and AFSDB, RT, KX by common practice). The codec keeps their RDATA raw, so a
 * compression pointer would point into the upstream message; relayed as is it would point into
 * ours. These are rewritten with the name expanded.
 */
const PREFERENCE_NAME_TYPES = new Set([15, 18, 21, 36]);
const MAX_POINTER_JUMPS = 64;

/** The preference and the name of `rdata` (a view into `message`) without compression. */
function expandPreferenceName(message: Buffer, rdata: Buffer): Buffer | undefined {
  const start = rdata.byteOffset - message.byteOffset;
  if (start < 0 || start + rdata.length > message.length || rdata.length < 3) return undefined;
  const parts: Buffer[] = [rdata.subarray(0, 2)];
  let pos = start + 2;
  let bound = pos; // pointers must go backwards (RFC 1035 §4.1.4: a prior occurrence)
  let jumps = 0;
  let total = 1;
  for (;;) {
    if (pos >= message.length) return undefined;
    const len = message[pos]!;
    if (len === 0) break;
    if ((len & 0xc0) === 0xc0) {
      if (pos + 1 >= message.length) return undefined;
      const target = ((len & 0x3f) << 8) | message[pos + 1]!;
      if (target >= bound || ++jumps > MAX_POINTER_JUMPS) return undefined;
      bound = target;
      pos = target;
      continue;
    }
    if ((len & 0xc0) !== 0 || pos + 1 + len > message.length) return undefined;
    total += 1 + len;
    if (total > 255) return undefined;
    parts.push(message.subarray(pos, pos + 1 + len));
    pos += 1 + len;
  }
  parts.push(Buffer.from([0]));
  return Buffer.concat(parts);
}

function expandRecords(message: Buffer, records: readonly DnsRecord[]): DnsRecord[] {
  const out: DnsRecord[] = [];
  for (const r of records) {
    if (r.data.kind === 'raw' && PREFERENCE_NAME_TYPES.has(r.type)) {
      const data = expandPreferenceName(message, r.data.data);
      if (data === undefined) continue; // unreadable: leave the record out rather than relay garbage
      out.push({ ...r, data: { kind: 'raw', data } });
    } else {
      out.push(r);
    }
  }
  return out;
}

function checkServer(server: UpstreamServer | undefined): UpstreamServer | undefined {
  if (server && (isIP(server.host) === 0 || !Number.isInteger(server.port) || server.port < 1 || server.port > 65535)) {
    throw new RangeError(`upstream DNS server must be an IP literal and a port: ${server.host}:${server.port}`);
  }
  return server;
}

export class UpstreamResolver implements Resolver {
  readonly stats: UpstreamStats = { queries: 0, answers: 0, timeouts: 0, spoofed: 0, tcpFallbacks: 0, errors: 0, overloaded: 0 };
  server: UpstreamServer | undefined;
  private readonly timeoutMs: number;
  private readonly attempts: number;
  private readonly tcpFallback: boolean;
  private readonly maxInFlight: number;
  private readonly ednsSize: number;
  private inFlight = 0;
  private readonly cancels = new Set<() => void>();
  private closed = false;

  constructor(opts: UpstreamOptions = {}) {
    this.server = checkServer(opts.server ?? readResolvConf(opts.resolvConf));
    this.timeoutMs = opts.timeoutMs ?? 2000;
    this.attempts = Math.max(1, opts.attempts ?? 2);
    this.tcpFallback = opts.tcpFallback ?? true;
    this.maxInFlight = opts.maxInFlight ?? 256;
    this.ednsSize = opts.ednsSize ?? 1232;
  }

  /** Another upstream for queries from now on (config reload); none given: /etc/resolv.conf's. Queries in flight finish with the old one. */
  setServer(server: UpstreamServer | undefined): void {
    this.server = checkServer(server ?? readResolvConf());
  }

  recursionAvailable(): boolean {
    return true;
  }

  async resolve(_vm: string, q: DnsQuestion, _now?: number): Promise<DnsAnswer> {
    const server = this.server;
    if (!server || this.closed) return { kind: 'servfail' };
    if (this.inFlight >= this.maxInFlight) {
      this.stats.overloaded++;
      return { kind: 'servfail' };
    }
    this.stats.queries++;
    this.inFlight++;
    try {
      for (let i = 0; i < this.attempts && !this.closed; i++) {
        let out = await this.askUdp(server, q);
        if (out.kind === 'message' && out.message.tc && this.tcpFallback) {
          this.stats.tcpFallbacks++;
          out = await this.askTcp(server, q);
        }
        if (out.kind === 'message') {
          this.stats.answers++;
          return toAnswer(out.message, out.bytes);
        }
        if (out.kind === 'timeout') this.stats.timeouts++;
        else this.stats.errors++;
      }
      return { kind: 'servfail' };
    } finally {
      this.inFlight--;
    }
  }

  /** Cancels everything in flight (answered SERVFAIL) and refuses new questions. */
  close(): void {
    this.closed = true;
    for (const c of [...this.cancels]) c();
  }

  private query(id: number, q: DnsQuestion): Buffer {
    return encodeDns({
      id,
      qr: false,
      opcode: 0,
      aa: false,
      tc: false,
      rd: true,
      ra: false,
      ad: false,
      cd: false,
      rcode: 0,
      questions: [q],
      answers: [],
      authorities: [],
      additionals: this.ednsSize > 0 ? [{ name: '', type: DNS_TYPE_OPT, class: this.ednsSize, ttl: 0, data: { kind: 'raw', data: Buffer.alloc(0) } }] : [],
    });
  }

  /** Checks a message from the server against what we asked; undefined when it is not the answer. */
  private accept(buf: Buffer, id: number, q: DnsQuestion): DnsMessage | undefined {
    const r = parseDns(buf);
    if (!r.ok || !r.value.qr || r.value.id !== id || r.value.opcode !== 0 || !sameQuestion(r.value, q)) {
      this.stats.spoofed++;
      return undefined;
    }
    return r.value;
  }

  private askUdp(server: UpstreamServer, q: DnsQuestion): Promise<Outcome> {
    const id = randomInt(0, 0x10000);
    const query = this.query(id, q);
    const sock = dgram.createSocket(isIP(server.host) === 6 ? 'udp6' : 'udp4');
    return new Promise<Outcome>((resolve) => {
      let done = false;
      const finish = (o: Outcome): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        this.cancels.delete(cancel);
        sock.removeAllListeners('message');
        sock.on('error', () => {});
        try {
          sock.close();
        } catch {
          // already closed
        }
        resolve(o);
      };
      const cancel = (): void => finish({ kind: 'error' });
      this.cancels.add(cancel);
      const timer = setTimeout(() => finish({ kind: 'timeout' }), this.timeoutMs);
      sock.on('error', () => finish({ kind: 'error' }));
      sock.on('message', (msg, rinfo) => {
        if (rinfo.port !== server.port || !sameAddress(rinfo.address, server.host)) {
          this.stats.spoofed++;
          return;
        }
        const m = this.accept(msg, id, q);
        if (m) finish({ kind: 'message', message: m, bytes: msg });
      });
      sock.bind(0, () => {
        if (done) return;
        sock.send(query, server.port, server.host, (err) => {
          if (err) finish({ kind: 'error' });
        });
      });
    });
  }

  private askTcp(server: UpstreamServer, q: DnsQuestion): Promise<Outcome> {
    const id = randomInt(0, 0x10000);
    const query = frameDnsTcp(this.query(id, q));
    return new Promise<Outcome>((resolve) => {
      let done = false;
      const framer = new DnsTcpFramer();
      const sock: Socket = connect({ host: server.host, port: server.port });
      const finish = (o: Outcome): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        this.cancels.delete(cancel);
        sock.destroy();
        resolve(o);
      };
      const cancel = (): void => finish({ kind: 'error' });
      this.cancels.add(cancel);
      const timer = setTimeout(() => finish({ kind: 'timeout' }), this.timeoutMs);
      sock.on('error', () => finish({ kind: 'error' }));
      sock.on('close', () => finish({ kind: 'error' }));
      sock.on('connect', () => sock.write(query));
      sock.on('data', (chunk: Buffer) => {
        const msgs = framer.push(chunk);
        if (msgs === null) return finish({ kind: 'error' });
        for (const msg of msgs) {
          const m = this.accept(msg, id, q);
          if (m) return finish({ kind: 'message', message: m, bytes: msg });
        }
      });
    });
  }
}

function toAnswer(m: DnsMessage, bytes: Buffer): DnsAnswer {
  switch (m.rcode) {
    case DNS_RCODE_NOERROR:
      return {
        kind: 'records',
        answers: expandRecords(bytes, m.answers),
        authorities: expandRecords(bytes, m.authorities),
        additionals: expandRecords(bytes, m.additionals.filter((r) => r.type !== DNS_TYPE_OPT)),
      };
    case DNS_RCODE_NXDOMAIN:
      return { kind: 'nxdomain', authorities: expandRecords(bytes, m.authorities) };
    case DNS_RCODE_REFUSED:
      return { kind: 'refused' };
    default:
      return { kind: 'servfail' };
  }
}
