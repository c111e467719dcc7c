/**
 * The one result convention of every wire parser.
 *
 * Parsers take untrusted bytes and return `Parsed<T>`: either `{ ok: true, value }` or
 * `{ ok: false, error }` with a `WireError` naming the protocol and a machine-readable reason
 * (plus a short human detail). Parsers never throw, never read outside the given Buffer and
 * never loop more than a bound fixed by the input length or an explicit limit.
 *
 * Emitters take trusted values (built by our own code) and may throw a RangeError when a value
 * cannot be represented (a label longer than 63 bytes, a buffer too small); that is a bug in the
 * caller, not bad input from the network.
 */

export type WireProtocol =
  | 'mac'
  | 'ethernet'
  | 'arp'
  | 'ipv4'
  | 'ipv6'
  | 'icmpv4'
  | 'icmpv6'
  | 'udp'
  | 'tcp'
  | 'dhcpv4'
  | 'dns'
  | 'vnet'
  /** The encrypted link protocol's messages (daemon/links/messages.ts). */
  | 'link';

export type WireErrorReason =
  /** Fewer bytes than the header or a length field needs. */
  | 'truncated'
  /** Wrong version nibble / magic cookie / hardware type. */
  | 'bad-version'
  /** A length field that contradicts another or the buffer. */
  | 'bad-length'
  | 'bad-checksum'
  /** A field holds a value the protocol forbids. */
  | 'bad-value'
  /** Well-formed but not something we handle (e.g. ARP over non-Ethernet). */
  | 'unsupported'
  /** A safety limit was hit (too many extension headers, compression pointer loop). */
  | 'limit';

export interface WireError {
  readonly protocol: WireProtocol;
  readonly reason: WireErrorReason;
  /** Short text for logs and counters' examples: "total length 1500 > buffer 60". */
  readonly detail: string;
}

export interface Ok<T> {
  readonly ok: true;
  readonly value: T;
}

export interface Failure {
  readonly ok: false;
  readonly error: WireError;
}

export type Parsed<T> = Ok<T> | Failure;

export function ok<T>(value: T): Ok<T> {
  return { ok: true, value };
}

export function fail(protocol: WireProtocol, reason: WireErrorReason, detail: string): Failure {
  return { ok: false, error: { protocol, reason, detail } };
}

export function formatWireError(e: WireError): string {
  return `${e.protocol}: ${e.reason}${e.detail ? ` (${e.detail})` : ''}`;
}
