/**
 * The UDP carrier: one socket, any number of remotes, each message one datagram. A dual-stack
 * `udp6` socket when bound to any address ('') or an IPv6 address, `udp4` for an IPv4 one; a
 * v4-mapped source is shown as plain IPv4, so a remote has one name whichever family it used.
 *
 * The socket is the addon's UdpSocket (plugins/native/src/udp.cc), not node:dgram: datagrams
 * are read with recvmmsg in batches of up to 64 into one reused arena and handed over with one
 * call into JS per batch (sources as indices into a table of strings the socket keeps), and a
 * send of several messages to one remote is one sendmmsg. dgram costs a syscall, a callback and
 * a fresh 64 KiB receive buffer per datagram.
 */
import { lookup } from 'node:dns/promises';
import net from 'node:net';
import type { Logger } from 'pino';
import { loadNative, type NativeUdpSocket } from '../../plugins/native/index.js';
import { dataPathFault } from '../errors.js';
import type { Endpoint } from './endpoint.js';
import { MAX_MESSAGE, StatsCounter, addressRateKey, ignoreMessage, reasonOf, type Carrier, type CarrierStats } from './types.js';

/** The arena's slot stride (udp.cc kUdpSlot); a length above MAX_DATAGRAM means truncated. */
const SLOT = 65536;
const MAX_DATAGRAM = 65535;
/** Parsed `to` strings kept; cleared when full (a remote set larger than this just re-parses). */
const MAX_TARGETS = 4096;

interface Target {
  address: string;
  port: number;
}

function hostPortText(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

/** "10.0.0.2:51820" / "[::1]:5" → address and port, or null. */
function parseTarget(to: string): Target | null {
  let address: string;
  let portText: string;
  if (to.startsWith('[')) {
    const close = to.indexOf(']');
    if (close < 0 || to[close + 1] !== ':') return null;
    address = to.slice(1, close);
    portText = to.slice(close + 2);
  } else {
    const colon = to.indexOf(':');
    if (colon < 0) return null;
    address = to.slice(0, colon);
    portText = to.slice(colon + 1);
  }
  const port = Number(portText);
  if (!/^\d{1,5}$/.test(portText) || port < 1 || port > 65535 || net.isIP(address) === 0) return null;
  return { address, port };
}

class UdpCarrier implements Carrier {
  readonly kind = 'udp';
  private handler: (msg: Buffer, from: string) => void = ignoreMessage;
  private readonly counters = new StatsCounter();
  /** `to` → the socket's sockaddr for it (null: unparseable or the other family). */
  private readonly targets = new Map<string, Buffer | null>();
  private closed = false;
  private readonly v6: boolean;
  private readonly port: number;
  private readonly address: string;
  // The socket's arrays, dropped at close (the arena is released with the socket object).
  private sock: NativeUdpSocket | null;
  private buffer: Buffer;
  private lengths: Uint32Array;
  private sourceIndex: Uint8Array;
  private sources: string[];
  private txInfo: Float64Array;

  constructor(
    readonly id: string,
    sock: NativeUdpSocket,
    private readonly log: Logger,
  ) {
    this.sock = sock;
    this.v6 = sock.v6;
    this.port = sock.port;
    this.address = sock.address;
    this.buffer = sock.buffer;
    this.lengths = sock.lengths;
    this.sourceIndex = sock.sourceIndex;
    this.sources = sock.sources;
    this.txInfo = sock.txInfo;
  }

  get localPort(): number {
    return this.port;
  }

  /** One batch from the socket: datagram i is in slot i of the arena, valid during this call. */
  readonly onRead = (count: number): void => {
    const { buffer, lengths, sourceIndex, sources } = this;
    const n = Math.min(count, lengths.length);
    for (let i = 0; i < n && !this.closed; i++) {
      const len = lengths[i]!;
      if (len > MAX_DATAGRAM) {
        this.counters.drop('oversize');
        continue;
      }
      const start = i * SLOT;
      this.counters.rxMessages++;
      this.counters.rxBytes += len;
      try {
        this.handler(buffer.subarray(start, start + len), sources[sourceIndex[i]!]!);
      } catch (e) {
        dataPathFault('udp carrier message', e, { carrier: this.id });
      }
    }
  };

  readonly onError = (message: string): void => {
    this.counters.drop('io-error');
    this.log.warn({ carrier: this.id, err: message }, 'udp socket failed; it no longer receives');
  };

  onMessage(h: (msg: Buffer, from: string) => void): void {
    this.handler = h;
  }

  private target(to: string): Buffer | null {
    let t = this.targets.get(to);
    if (t !== undefined) return t;
    const p = parseTarget(to);
    t = null;
    if (p !== null && this.sock !== null) {
      if (this.v6 && net.isIPv4(p.address)) t = this.sock.target(`::ffff:${p.address}`, p.port);
      else if (this.v6 || net.isIPv4(p.address)) t = this.sock.target(p.address, p.port);
    }
    if (this.targets.size >= MAX_TARGETS) this.targets.clear();
    this.targets.set(to, t);
    return t;
  }

  send(to: string, msgs: readonly Buffer[]): boolean {
    const sock = this.sock;
    const t = sock === null ? null : this.target(to);
    if (sock === null || t === null) {
      this.counters.drop('io-error', msgs.length);
      return false;
    }
    let batch = msgs;
    let ok = true;
    for (const m of msgs) {
      if (m.length > MAX_MESSAGE) {
        batch = msgs.filter((x) => x.length <= MAX_MESSAGE);
        this.counters.drop('oversize', msgs.length - batch.length);
        ok = false;
        break;
      }
    }
    if (batch.length === 0) return ok;
    try {
      sock.send(t, batch);
    } catch {
      this.counters.drop('io-error', batch.length);
      return false;
    }
    const info = this.txInfo;
    this.counters.txMessages += info[0]!;
    this.counters.txBytes += info[1]!;
    if (info[2]! > 0) this.counters.drop('queue-full', info[2]);
    if (info[3]! > 0) this.counters.drop('io-error', info[3]);
    return ok && info[0] === batch.length;
  }

  async resolve(e: Endpoint): Promise<string> {
    if (e.kind !== 'udp') throw new Error(`a udp carrier cannot reach a ${e.kind} endpoint`);
    let address = e.host;
    if (net.isIP(address.replace(/%.*$/, '')) === 0) {
      try {
        address = (await lookup(e.host, { family: this.v6 ? 0 : 4 })).address;
      } catch (err) {
        throw new Error(`cannot resolve ${e.host}: ${reasonOf(err)}`);
      }
    }
    if (address.startsWith('::ffff:') && net.isIPv4(address.slice(7))) address = address.slice(7);
    if (!this.v6 && !net.isIPv4(address)) throw new Error(`${address} is IPv6 and this udp carrier is bound to an IPv4 address`);
    return hostPortText(address, e.port);
  }

  stats(): CarrierStats {
    const s = this.counters.snapshot();
    // Errors the socket read and survived (queued ICMP errors, memory shortage), as dgram's 'error' events were.
    const rxErrors = this.sock?.stats().rxErrors ?? this.finalRxErrors;
    if (rxErrors > 0) s.drops['io-error'] = (s.drops['io-error'] ?? 0) + rxErrors;
    return s;
  }

  private finalRxErrors = 0;

  status(): string {
    if (this.closed) return 'udp closed';
    return `udp ${this.address}`;
  }

  reachable(_to: string): boolean {
    return !this.closed;
  }

  rateKey(from: string): string {
    return addressRateKey(from);
  }

  close(): Promise<void> {
    if (this.closed || this.sock === null) return Promise.resolve();
    this.closed = true;
    this.finalRxErrors = this.sock.stats().rxErrors;
    this.sock.close();
    // Release the arena with the socket object: nothing here refers to it any more.
    this.sock = null;
    this.buffer = EMPTY;
    this.lengths = new Uint32Array(0);
    this.sourceIndex = new Uint8Array(0);
    this.sources = [];
    this.txInfo = new Float64Array(4);
    this.targets.clear();
    return Promise.resolve();
  }
}

const EMPTY = Buffer.alloc(0);

export async function openUdp(o: { id: string; host: string; port: number /* 0 = ephemeral */; log: Logger }): Promise<Carrier & { readonly localPort: number }> {
  // The socket calls back into the carrier, which is made with the socket.
  const late: { carrier?: UdpCarrier } = {};
  let sock: NativeUdpSocket;
  try {
    sock = new (loadNative().UdpSocket)({
      host: o.host,
      port: o.port,
      onRead: (n) => late.carrier?.onRead(n),
      onError: (m) => late.carrier?.onError(m),
    });
  } catch (e) {
    throw new Error(`cannot listen on udp ${hostPortText(o.host === '' ? '::' : o.host, o.port)}: ${reasonOf(e)}`);
  }
  const carrier = new UdpCarrier(o.id, sock, o.log);
  late.carrier = carrier;
  sock.start();
  return carrier;
}
