/**
 * The UDP carrier: one socket, any number of remotes, each message one datagram. A dual-stack
 * `udp6` socket when bound to any address ('') or an IPv6 address, `udp4` for an IPv4 one; a
 * v4-mapped source is shown as plain IPv4, so a remote has one name whichever family it used.
 */
import dgram from 'node:dgram';
import { lookup } from 'node:dns/promises';
import net from 'node:net';
import type { Logger } from 'pino';
import { dataPathFault } from '../errors.js';
import type { Endpoint } from './endpoint.js';
import { MAX_MESSAGE, StatsCounter, addressRateKey, ignoreMessage, reasonOf, type Carrier, type CarrierStats } from './types.js';

/** Socket buffers asked for; the kernel may cap them (net.core.rmem_max), which is fine. */
const SOCKET_BUFFER = 4 << 20;
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
  private readonly targets = new Map<string, Target | null>();
  private closed = false;
  // The last source and its text: a burst from one remote names it once.
  private lastAddr = '';
  private lastPort = -1;
  private lastFrom = '';
  /** One completion callback for every send (no closure per message). */
  private readonly onSent = (err: Error | null): void => {
    if (err) this.counters.drop('io-error');
  };

  constructor(
    readonly id: string,
    private readonly sock: dgram.Socket,
    /** A udp6 socket (sends to IPv4 as v4-mapped) rather than udp4. */
    private readonly v6: boolean,
    private readonly log: Logger,
  ) {
    sock.on('message', (msg, rinfo) => this.receive(msg, rinfo.address, rinfo.port));
    sock.on('error', (e) => {
      this.counters.drop('io-error');
      this.log.warn({ carrier: this.id, err: reasonOf(e) }, 'udp socket error');
    });
  }

  get localPort(): number {
    return this.sock.address().port;
  }

  private receive(msg: Buffer, address: string, port: number): void {
    if (address !== this.lastAddr || port !== this.lastPort) {
      this.lastAddr = address;
      this.lastPort = port;
      const plain = address.startsWith('::ffff:') && net.isIPv4(address.slice(7)) ? address.slice(7) : address;
      this.lastFrom = hostPortText(plain, port);
    }
    this.counters.rxMessages++;
    this.counters.rxBytes += msg.length;
    try {
      this.handler(msg, this.lastFrom);
    } catch (e) {
      dataPathFault('udp carrier message', e, { carrier: this.id });
    }
  }

  onMessage(h: (msg: Buffer, from: string) => void): void {
    this.handler = h;
  }

  private target(to: string): Target | null {
    let t = this.targets.get(to);
    if (t !== undefined) return t;
    t = parseTarget(to);
    if (t !== null) {
      if (this.v6 && net.isIPv4(t.address)) t = { address: `::ffff:${t.address}`, port: t.port };
      else if (!this.v6 && !net.isIPv4(t.address)) t = null;
    }
    if (this.targets.size >= MAX_TARGETS) this.targets.clear();
    this.targets.set(to, t);
    return t;
  }

  send(to: string, msgs: readonly Buffer[]): boolean {
    const t = this.closed ? null : this.target(to);
    if (t === null) {
      this.counters.drop('io-error', msgs.length);
      return false;
    }
    let ok = true;
    for (const m of msgs) {
      if (m.length > MAX_MESSAGE) {
        this.counters.drop('oversize');
        ok = false;
        continue;
      }
      try {
        // The socket's lookup is synchronous (below): the datagram is handed to libuv here.
        this.sock.send(m, t.port, t.address, this.onSent);
        this.counters.txMessages++;
        this.counters.txBytes += m.length;
      } catch {
        this.counters.drop('io-error');
        ok = false;
      }
    }
    return ok;
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
    return this.counters.snapshot();
  }

  status(): string {
    if (this.closed) return 'udp closed';
    const a = this.sock.address();
    return `udp ${hostPortText(a.address, a.port)}`;
  }

  reachable(_to: string): boolean {
    return !this.closed;
  }

  rateKey(from: string): string {
    return addressRateKey(from);
  }

  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.closed = true;
    return new Promise((resolve) => this.sock.close(() => resolve()));
  }
}

/**
 * Every `to` is an IP literal (resolve() looks names up beforehand), so the socket's lookup
 * answers at once: dgram's default would defer each datagram to a later tick.
 */
function literalLookup(hostname: string, _options: unknown, callback: (err: NodeJS.ErrnoException | null, address: string, family: number) => void): void {
  const family = net.isIP(hostname);
  if (family === 0) callback(Object.assign(new Error(`not an IP address: ${hostname}`), { code: 'EINVAL' }), '', 0);
  else callback(null, hostname, family);
}

export async function openUdp(o: { id: string; host: string; port: number /* 0 = ephemeral */; log: Logger }): Promise<Carrier & { readonly localPort: number }> {
  const v6 = o.host === '' || o.host.includes(':');
  const sock = dgram.createSocket({ type: v6 ? 'udp6' : 'udp4', lookup: literalLookup });
  await new Promise<void>((resolve, reject) => {
    sock.once('error', reject);
    sock.bind({ address: o.host === '' ? '::' : o.host, port: o.port, exclusive: true }, () => {
      sock.removeListener('error', reject);
      resolve();
    });
  }).catch((e: unknown) => {
    try {
      sock.close();
    } catch {
      // Never bound: nothing to release.
    }
    throw new Error(`cannot listen on udp ${hostPortText(o.host === '' ? '::' : o.host, o.port)}: ${reasonOf(e)}`);
  });
  for (const set of [() => sock.setRecvBufferSize(SOCKET_BUFFER), () => sock.setSendBufferSize(SOCKET_BUFFER)]) {
    try {
      set();
    } catch {
      // Capped or refused: the default buffers still work, only bursts drop sooner.
    }
  }
  return new UdpCarrier(o.id, sock, v6, o.log);
}
