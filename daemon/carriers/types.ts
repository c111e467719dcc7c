/**
 * A carrier moves whole link-protocol messages (daemon/links) between this daemon and others:
 * UDP datagrams, or length-prefixed messages on a TCP, unix or Tor stream. It knows nothing of
 * keys or peers: the engine (daemon/mesh) hands received messages to the Device with their
 * source string and sends the Device's output to the source the Device last authenticated.
 */
import type { Endpoint } from './endpoint.js';

export type CarrierDrop = 'no-connection' | 'queue-full' | 'io-error' | 'framing' | 'oversize';

export interface CarrierStats {
  rxMessages: number;
  rxBytes: number;
  txMessages: number;
  txBytes: number;
  drops: Partial<Record<CarrierDrop, number>>;
}

/** Largest protocol message any carrier takes (a 65535-byte frame + 32 + slack). */
export const MAX_MESSAGE = 65_600;

/** Moves whole protocol messages. Never throws on the data path. */
export interface Carrier {
  /** Unique per engine, given by the creator. */
  readonly id: string;
  readonly kind: 'udp' | 'tcp' | 'unix' | 'onion';
  /**
   * Each received message with its source: a carrier-local address string (udp
   * "10.0.0.2:51820", "[fe80::1%veth0]:5"; stream listeners "c<N>" per connection; dialers
   * "remote"). `msg` is valid only during the call.
   */
  onMessage(h: (msg: Buffer, from: string) => void): void;
  /** Dialers: called after each (re)connection, so the engine can handshake at once (what was sent before went nowhere). */
  onConnected?(h: () => void): void;
  /**
   * Sends to a `from` seen earlier, or to an address from `resolve`. false (and counted) when it
   * cannot. UDP hands the buffers to the kernel during the call (a full send buffer drops the
   * rest, counted queue-full); streams copy them at once. Still, do not change them afterwards:
   * a carrier may queue.
   */
  send(to: string, msgs: readonly Buffer[]): boolean;
  /** Turns an Endpoint into a `to` string (udp: DNS lookup; dialers: "remote"). Rejects with a one-line Error. */
  resolve(e: Endpoint): Promise<string>;
  stats(): CarrierStats;
  /** For people: "udp [::]:51820", "tcp → 10.0.0.2:443 connected", "tcp → ... reconnecting in 4 s (ECONNREFUSED)". */
  status(): string;
  /**
   * The engine authenticated a message from `from` (a peer's handshake or transport message).
   * Stream listeners keep such connections over strangers': a stranger's connection is the first
   * shed, gets a small write queue, and is closed if nothing from it authenticates in time.
   */
  vouch?(from: string): void;
  /**
   * What the handshake rate limit (under load) counts `from` by: its sender's address (IPv4, or
   * IPv6 /64) for UDP and TCP. Absent: each source is its own.
   */
  rateKey?(from: string): string;
  /** Whether `send(to)` can deliver now (dialers: connected; listeners: the connection `to` is open; udp: true). */
  reachable(to: string): boolean;
  close(): Promise<void>;
}

/** Counters shared by the implementations. */
export class StatsCounter implements CarrierStats {
  rxMessages = 0;
  rxBytes = 0;
  txMessages = 0;
  txBytes = 0;
  drops: Partial<Record<CarrierDrop, number>> = {};

  drop(why: CarrierDrop, n = 1): void {
    this.drops[why] = (this.drops[why] ?? 0) + n;
  }

  snapshot(): CarrierStats {
    return { rxMessages: this.rxMessages, rxBytes: this.rxBytes, txMessages: this.txMessages, txBytes: this.txBytes, drops: { ...this.drops } };
  }
}

/** A message handler until one is set: messages are counted and dropped. */
export const ignoreMessage = (_msg: Buffer, _from: string): void => {};

/** The short reason of an error for logs and status lines: its errno code, else its message. */
export function reasonOf(e: unknown): string {
  const code = (e as NodeJS.ErrnoException | null)?.code;
  if (typeof code === 'string') return code;
  return e instanceof Error ? e.message : String(e);
}

/** "198.51.100.7:5" → "198.51.100.7"; "[2001:db8:1:2:3::4]:5" → "2001:db8:1:2::/64"; anything else as it is. */
export function addressRateKey(from: string): string {
  if (!from.startsWith('[')) {
    const colon = from.lastIndexOf(':');
    return colon > 0 ? from.slice(0, colon) : from;
  }
  const addr = from.slice(1, from.indexOf(']')).replace(/%.*$/, '');
  const halves = addr.split('::');
  if (halves.length > 2) return addr;
  const head = halves[0] !== '' ? halves[0]!.split(':') : [];
  const tail = halves.length === 2 && halves[1] !== '' ? halves[1]!.split(':') : [];
  const groups = halves.length === 2 ? [...head, ...Array<string>(Math.max(0, 8 - head.length - tail.length)).fill('0'), ...tail] : head;
  return `${groups
    .slice(0, 4)
    .map((g) => (parseInt(g, 16) || 0).toString(16))
    .join(':')}::/64`;
}
