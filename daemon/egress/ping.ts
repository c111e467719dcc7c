/**
 * The direct route's ping exit: each ICMP echo request a VM sends outside becomes an echo sent
 * from the daemon's own network namespace through an unprivileged ICMP datagram socket
 * (SOCK_DGRAM + IPPROTO_ICMP / IPPROTO_ICMPV6, see plugins/native/src/ping.cc), and the reply
 * is handed back to the caller, who answers the VM with its own identifier and sequence number.
 *
 * The kernel allows such sockets only when the process's group is inside
 * net.ipv4.ping_group_range of the namespace (one sysctl for both families); elsewhere the
 * family is "unavailable" and echo() returns false (counted), so the router drops the ping.
 *
 * The kernel replaces the identifier of every echo with the socket's ident, so there is one
 * socket per family and echoes are told apart by (ident, destination, sequence number): the
 * VM's sequence number when that key is free, else the next free one. In-flight echoes live in
 * one bounded table in deadline order (insertion order, one fixed timeout), expired by a single
 * timer armed per sweep rather than one per echo.
 */
import { dataPathFault } from '../errors.js';
import { closeSync } from 'node:fs';
import { ipKey, type IpAddr } from '../endpoint/addr.js';
import { loadNative } from '../../plugins/native/index.js';
import type { NativeAddon, NativePingSocket, PingSocketStats } from '../../plugins/native/types.js';

export interface PingEgressOptions {
  /** A reply later than this is dropped (the VM sees a lost echo). Default 10 000 ms. */
  timeoutMs?: number;
  /** Echoes awaiting a reply, both families together; 1..65535, default 1024. */
  maxInFlight?: number;
  /** Largest ICMP message (8-byte header + data) sent or received; 16..65536, default 65535. */
  maxMessage?: number;
  /** Replies read per native callback; 1..256, default 8. */
  batch?: number;
  /** After openPing failed, how long a family stays unavailable before it is tried again. Default 10 000 ms. */
  retryMs?: number;
  /** The addon (tests may pass a stand-in); default: the built native addon, loaded on first use. */
  addon?: Pick<NativeAddon, 'openPing' | 'PingSocket'>;
}

export interface PingFamilyStats extends PingSocketStats {
  /** The socket's ICMP identifier: every echo it sends carries this one. */
  ident: number;
}

export interface PingEgressStats {
  /** Echoes awaiting a reply now. */
  inFlight: number;
  /** Echoes the kernel took. */
  sent: number;
  /** Replies matched to an echo and handed to its callback. */
  replies: number;
  /** Echoes given up on after timeoutMs (or when their socket failed). */
  expired: number;
  /** echo() refused: the in-flight table was full. */
  dropFull: number;
  /** echo() refused: no ICMP socket for the family (ping_group_range, no IPv6, closed). */
  dropUnavailable: number;
  /** echo() refused: the kernel did not take it (unreachable, send buffer full…). */
  dropSendError: number;
  /** echo() refused for bad arguments (id/seq not 16-bit, data too long) and replies too long or malformed. */
  dropInvalid: number;
  /** Replies that matched nothing in flight (late, duplicated, or for a closed socket). */
  unmatched: number;
  /** Exceptions thrown by onReply callbacks (caught). */
  callbackErrors: number;
  /** Native socket failures (the family's socket is reopened on the next echo). */
  socketFailures: number;
  v4?: PingFamilyStats;
  v6?: PingFamilyStats;
}

type Family = 4 | 6;

interface FamilySocket {
  readonly v: Family;
  readonly sock: NativePingSocket;
  readonly ident: number;
  /** Scratch for an IPv4 destination (network order). */
  readonly dst4: Buffer;
  /** Next sequence number to try when the VM's own is taken. */
  nextSeq: number;
}

interface InFlight {
  readonly fam: FamilySocket;
  readonly deadline: number;
  readonly onReply: (data: Buffer) => void;
}

const ICMP_HEADER = 8;
const ICMPV4_ECHO_REQUEST = 8;
const ICMPV4_ECHO_REPLY = 0;
const ICMPV6_ECHO_REQUEST = 128;
const ICMPV6_ECHO_REPLY = 129;
const ADDR_SLOT = 16;

function intOption(value: number | undefined, dflt: number, min: number, max: number, name: string): number {
  const v = value ?? dflt;
  if (!Number.isInteger(v) || v < min || v > max) throw new RangeError(`PingEgress: ${name} must be an integer in ${min}..${max}, got ${v}`);
  return v;
}

function isU16(n: number): boolean {
  return Number.isInteger(n) && n >= 0 && n <= 0xffff;
}

export class PingEgress {
  private readonly timeoutMs: number;
  private readonly maxInFlight: number;
  private readonly maxMessage: number;
  private readonly batch: number;
  private readonly retryMs: number;
  private readonly addonOpt: PingEgressOptions['addon'];
  /** Sweep slack: entries whose deadlines fall this close together expire in one sweep. */
  private readonly slackMs: number;
  private readonly scratch: Buffer;

  private readonly fams = new Map<Family, FamilySocket>();
  private readonly retryAt = new Map<Family, number>();
  private readonly reasons = new Map<Family, string>();
  /** key `${ident}|${ipKey(dst)}|${seq}`, in insertion (= deadline) order. */
  private readonly table = new Map<string, InFlight>();
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  private readonly counters = {
    sent: 0,
    replies: 0,
    expired: 0,
    dropFull: 0,
    dropUnavailable: 0,
    dropSendError: 0,
    dropInvalid: 0,
    unmatched: 0,
    callbackErrors: 0,
    socketFailures: 0,
  };

  constructor(opts: PingEgressOptions = {}) {
    this.timeoutMs = intOption(opts.timeoutMs, 10_000, 1, 3_600_000, 'timeoutMs');
    this.maxInFlight = intOption(opts.maxInFlight, 1024, 1, 65_535, 'maxInFlight');
    this.maxMessage = intOption(opts.maxMessage, 65_535, 16, 65_536, 'maxMessage');
    this.batch = intOption(opts.batch, 8, 1, 256, 'batch');
    this.retryMs = intOption(opts.retryMs, 10_000, 0, 3_600_000, 'retryMs');
    this.addonOpt = opts.addon;
    this.slackMs = Math.min(100, Math.floor(this.timeoutMs / 4));
    this.scratch = Buffer.alloc(Math.min(this.maxMessage, 65_535));
  }

  /**
   * Whether echoes to this family can be sent now. Opens the family's socket on first use; a
   * refusal (EACCES/EPERM: the group is outside ping_group_range) is remembered for retryMs.
   */
  available(v: Family): boolean {
    return this.family(v) !== undefined;
  }

  /** Why the family is unavailable ('EACCES: …'), when it is. */
  unavailableReason(v: Family): string | undefined {
    if (this.closed) return 'closed';
    return this.fams.has(v) ? undefined : this.reasons.get(v);
  }

  /**
   * Sends an echo request with `data` (a Buffer, or the Uint8Array of a parsed ICMPv6 echo; it
   * is copied, so it may be reused right after) to `dst` on behalf of a VM whose request carried (id, seq).
   * Returns false (counted) when it is not sent: family unavailable, table full, bad arguments,
   * or the kernel refused it. Otherwise `onReply` is called at most once, with the reply's data
   * (a view into a reused read buffer, valid only during the call: copy it to keep it), within
   * timeoutMs; nothing is called when the echo expires. The caller answers the VM with its own
   * (id, seq): the ones on the wire are the socket's ident and possibly another sequence number.
   */
  echo(dst: IpAddr, id: number, seq: number, data: Uint8Array, onReply: (data: Buffer) => void): boolean {
    if (!isU16(id) || !isU16(seq) || ICMP_HEADER + data.length > this.scratch.length || (dst.v === 6 && dst.b.length !== 16)) {
      this.counters.dropInvalid++;
      return false;
    }
    const fam = this.family(dst.v);
    if (fam === undefined) {
      this.counters.dropUnavailable++;
      return false;
    }
    if (this.table.size >= this.maxInFlight) {
      this.counters.dropFull++;
      return false;
    }
    // The VM's sequence number when (ident, dst, seq) is free, else the next free one; one is
    // always free as the table holds at most 65535 echoes.
    const prefix = `${fam.ident}|${dst.v === 4 ? String(dst.n >>> 0) : ipKey(dst)}|`;
    let wireSeq = seq;
    let key = prefix + wireSeq;
    if (this.table.has(key)) {
      wireSeq = fam.nextSeq;
      key = prefix + wireSeq;
      while (this.table.has(key)) {
        wireSeq = (wireSeq + 1) & 0xffff;
        key = prefix + wireSeq;
      }
      fam.nextSeq = (wireSeq + 1) & 0xffff;
    }
    const msg = this.scratch;
    msg[0] = dst.v === 4 ? ICMPV4_ECHO_REQUEST : ICMPV6_ECHO_REQUEST;
    msg[1] = 0;
    msg.writeUInt16BE(0, 2); // checksum: the kernel computes it
    msg.writeUInt16BE(id, 4); // the kernel replaces it with the socket's ident
    msg.writeUInt16BE(wireSeq, 6);
    msg.set(data, ICMP_HEADER);
    let dstBytes: Buffer;
    if (dst.v === 4) {
      fam.dst4.writeUInt32BE(dst.n >>> 0, 0);
      dstBytes = fam.dst4;
    } else {
      dstBytes = dst.b;
    }
    const err = fam.sock.send(dstBytes, msg.subarray(0, ICMP_HEADER + data.length));
    if (err !== 0) {
      this.counters.dropSendError++;
      return false;
    }
    this.counters.sent++;
    this.table.set(key, { fam, deadline: performance.now() + this.timeoutMs, onReply });
    this.arm();
    return true;
  }

  /** Echoes awaiting a reply. */
  inFlight(): number {
    return this.table.size;
  }

  stats(): PingEgressStats {
    const s: PingEgressStats = { inFlight: this.table.size, ...this.counters };
    for (const [v, f] of this.fams) {
      const st: PingFamilyStats = { ident: f.ident, ...f.sock.stats() };
      if (v === 4) s.v4 = st;
      else s.v6 = st;
    }
    return s;
  }

  /** Closes the sockets and forgets every echo in flight (no callback is called). Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.table.clear();
    for (const f of this.fams.values()) f.sock.close();
    this.fams.clear();
  }

  private addon(): Pick<NativeAddon, 'openPing' | 'PingSocket'> {
    return this.addonOpt ?? loadNative();
  }

  private family(v: Family): FamilySocket | undefined {
    if (this.closed) return undefined;
    const have = this.fams.get(v);
    if (have !== undefined) return have;
    const now = performance.now();
    const retryAt = this.retryAt.get(v);
    if (retryAt !== undefined && now < retryAt) return undefined;
    let fd: number;
    let ident: number;
    let addon: Pick<NativeAddon, 'openPing' | 'PingSocket'>;
    try {
      addon = this.addon();
      ({ fd, ident } = addon.openPing({ v6: v === 6 }));
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      this.reasons.set(v, e.code !== undefined ? `${e.code}: ${e.message}` : e.message);
      this.retryAt.set(v, now + this.retryMs);
      return undefined;
    }
    let sock: NativePingSocket;
    const maxMessage = this.maxMessage;
    try {
      sock = new addon.PingSocket({
        fd,
        maxMessage,
        batch: this.batch,
        onRead: (count) => this.onRead(fam, count),
        onError: (message) => this.onSocketError(fam, message),
      });
    } catch (err) {
      try {
        closeSync(fd);
      } catch {
        // already closed
      }
      this.reasons.set(v, (err as Error).message);
      this.retryAt.set(v, now + this.retryMs);
      return undefined;
    }
    const fam: FamilySocket = { v, sock, ident, dst4: Buffer.alloc(4), nextSeq: 0 };
    this.fams.set(v, fam);
    this.reasons.delete(v);
    this.retryAt.delete(v);
    sock.start();
    return fam;
  }

  private onRead(fam: FamilySocket, count: number): void {
    const { sock } = fam;
    const slot = this.maxMessage;
    const replyType = fam.v === 4 ? ICMPV4_ECHO_REPLY : ICMPV6_ECHO_REPLY;
    for (let i = 0; i < count; i++) {
      const len = sock.lengths[i]!;
      const off = i * slot;
      if (len > slot || len < ICMP_HEADER || sock.buffer[off] !== replyType || sock.buffer[off + 1] !== 0) {
        this.counters.dropInvalid++;
        continue;
      }
      const ident = sock.buffer.readUInt16BE(off + 4);
      const seq = sock.buffer.readUInt16BE(off + 6);
      const a = i * ADDR_SLOT;
      const src = fam.v === 4 ? String(sock.addrs.readUInt32BE(a)) : sock.addrs.toString('hex', a, a + 16);
      const key = `${ident}|${src}|${seq}`;
      const entry = this.table.get(key);
      if (entry === undefined || entry.fam !== fam) {
        this.counters.unmatched++;
        continue;
      }
      this.table.delete(key);
      this.counters.replies++;
      try {
        entry.onReply(sock.buffer.subarray(off + ICMP_HEADER, off + len));
      } catch (e) {
        this.counters.callbackErrors++;
        dataPathFault('ping reply', e);
      }
      if (this.closed || this.fams.get(fam.v) !== fam) return; // closed from the callback
    }
  }

  private onSocketError(fam: FamilySocket, message: string): void {
    if (this.fams.get(fam.v) !== fam) return;
    this.counters.socketFailures++;
    this.fams.delete(fam.v);
    this.reasons.set(fam.v, message);
    fam.sock.close();
    for (const [k, e] of this.table) {
      if (e.fam === fam) {
        this.table.delete(k);
        this.counters.expired++;
      }
    }
  }

  private arm(): void {
    if (this.timer !== undefined || this.closed) return;
    const first = this.table.values().next();
    if (first.done === true) return;
    const delay = Math.max(0, first.value.deadline - performance.now()) + this.slackMs;
    this.timer = setTimeout(() => this.sweep(), Math.ceil(delay));
    this.timer.unref();
  }

  private sweep(): void {
    this.timer = undefined;
    if (this.closed) return;
    const now = performance.now();
    for (const [k, e] of this.table) {
      if (e.deadline > now) break;
      this.table.delete(k);
      this.counters.expired++;
    }
    this.arm();
  }
}
