/**
 * Where a VM's flow goes once the router has decided: a byte stream for TCP (a host socket, a
 * Tor stream, a local service) or a datagram channel for UDP. The endpoint only sees these.
 */
import type { Duplex } from 'node:stream';

/** Why an upstream could not be opened; decides what the VM sees. */
export type OpenFailure =
  /** The far side answered no: RST to the VM (the port looks closed). */
  | 'refused'
  /** No answer: the VM's SYN goes unanswered and times out as it would. */
  | 'timeout'
  /** No route to the host: ICMP unreachable to the VM. */
  | 'unreachable';

export class UpstreamError extends Error {
  constructor(
    readonly failure: OpenFailure,
    message: string,
  ) {
    super(message);
  }
}

export interface StreamUpstream {
  /** A tag for route changes: a flow whose tag the new route no longer gives is reset. */
  readonly tag: string;
  /** Resolves with a connected stream (allowHalfOpen), rejects with UpstreamError. */
  open(signal: AbortSignal): Promise<Duplex>;
  /** When the stream ends: true if that is a clean end, false if the upstream itself died. */
  confirmEnd?(): Promise<boolean>;
}

export interface DatagramChannel {
  send(payload: Buffer): void;
  close(): void;
}

export interface DatagramUpstream {
  readonly tag: string;
  /** Opens a channel; `deliver` gets every datagram back from the far side. */
  open(deliver: (payload: Buffer) => void, onError: (e: Error) => void): DatagramChannel;
}

export type TcpDecision =
  | { kind: 'open'; upstream: StreamUpstream }
  /** RST at once (fail closed, or connection limits). */
  | { kind: 'reset'; reason: string }
  /** ICMP administratively prohibited (a real router's answer for a filtered destination). */
  | { kind: 'prohibited'; reason: string }
  /** Silently dropped. */
  | { kind: 'drop'; reason: string };

export type UdpDecision =
  | { kind: 'open'; upstream: DatagramUpstream }
  | { kind: 'prohibited'; reason: string }
  | { kind: 'drop'; reason: string };
