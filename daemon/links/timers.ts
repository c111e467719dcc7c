/**
 * The protocol's clocks (WireGuard's values, docs/links-protocol.md "Timers") and one peer's
 * timer state machine. Time is an argument (ms on the caller's monotonic clock), never read
 * here: events set or clear deadlines, `due(now)` says which have passed, in a fixed order.
 */
export const REKEY_AFTER_TIME_MS = 120_000;
export const REJECT_AFTER_TIME_MS = 180_000;
export const REKEY_ATTEMPT_TIME_MS = 90_000;
export const REKEY_TIMEOUT_MS = 5_000;
export const KEEPALIVE_TIMEOUT_MS = 10_000;
/** Retries are spread by 0 to this many ms so two peers that start together do not keep colliding. */
export const REKEY_JITTER_MS = 334;
/** Initiations sent (first and retries) before the peer is given up: 90 s of 5 s retries. */
export const MAX_HANDSHAKE_ATTEMPTS = REKEY_ATTEMPT_TIME_MS / REKEY_TIMEOUT_MS;
/** An initiator that receives on a session this old starts a new handshake before REJECT cuts it off. */
export const REKEY_ON_RECEIVE_AGE_MS = REJECT_AFTER_TIME_MS - KEEPALIVE_TIMEOUT_MS - REKEY_TIMEOUT_MS;
/** A responder ignores initiations from one peer that come faster than this (a replay flood costs no DH). */
export const INITIATION_MIN_INTERVAL_MS = 50;

export type TimerAction =
  /** No response to our initiation within REKEY_TIMEOUT: send another. */
  | 'retransmit'
  /** MAX_HANDSHAKE_ATTEMPTS without a response: drop what waits to be sent and stop trying. */
  | 'give-up'
  /** We received data and sent nothing for KEEPALIVE_TIMEOUT: send an empty message. */
  | 'keepalive'
  /** We sent data and heard nothing for KEEPALIVE + REKEY_TIMEOUT: the session may be dead, handshake again. */
  | 'new-handshake'
  /** No new session for 3 × REJECT_AFTER_TIME: forget every key. */
  | 'zero-keys'
  /** The configured persistent keepalive interval passed without sending (keeps NAT mappings). */
  | 'persistent-keepalive';

export class PeerTimers {
  retransmitAt: number | null = null;
  keepaliveAt: number | null = null;
  newHandshakeAt: number | null = null;
  zeroKeysAt: number | null = null;
  persistentAt: number | null = null;
  /** Initiations sent in the current series (reset when a handshake completes). */
  attempts = 0;

  /** `persistentKeepaliveMs`: 0 for none. */
  constructor(private readonly persistentKeepaliveMs = 0) {}

  /** An initiation was sent (first or retry); `jitter` in [0, REKEY_JITTER_MS). */
  handshakeInitiated(now: number, jitter: number): void {
    this.attempts++;
    this.retransmitAt = now + REKEY_TIMEOUT_MS + jitter;
  }

  /** Our handshake completed (we were the initiator and got the response). */
  handshakeComplete(): void {
    this.retransmitAt = null;
    this.attempts = 0;
  }

  /** New transport keys exist, either side. */
  sessionDerived(now: number): void {
    this.zeroKeysAt = now + 3 * REJECT_AFTER_TIME_MS;
  }

  /** A transport message with a payload was sent. */
  dataSent(now: number): void {
    if (this.newHandshakeAt === null) this.newHandshakeAt = now + KEEPALIVE_TIMEOUT_MS + REKEY_TIMEOUT_MS;
  }

  /** Any authenticated message was sent (data, keepalive, handshake). */
  anyAuthenticatedSent(now: number): void {
    this.keepaliveAt = null;
    if (this.persistentKeepaliveMs > 0) this.persistentAt = now + this.persistentKeepaliveMs;
  }

  /** A transport message with a payload was received and authenticated. */
  dataReceived(now: number): void {
    if (this.keepaliveAt === null) this.keepaliveAt = now + KEEPALIVE_TIMEOUT_MS;
  }

  /** Any authenticated message was received. */
  anyAuthenticatedReceived(): void {
    this.newHandshakeAt = null;
  }

  /** Stop every timer but zero-keys (giving up, or keys dropped). */
  stopHandshake(): void {
    this.retransmitAt = null;
    this.attempts = 0;
  }

  clearAll(): void {
    this.retransmitAt = this.keepaliveAt = this.newHandshakeAt = this.zeroKeysAt = this.persistentAt = null;
    this.attempts = 0;
  }

  /** The actions whose deadline is at or before `now`, each deadline cleared (an action re-arms what it needs). */
  due(now: number): TimerAction[] {
    const out: TimerAction[] = [];
    if (this.retransmitAt !== null && now >= this.retransmitAt) {
      this.retransmitAt = null;
      out.push(this.attempts >= MAX_HANDSHAKE_ATTEMPTS ? 'give-up' : 'retransmit');
    }
    if (this.newHandshakeAt !== null && now >= this.newHandshakeAt) {
      this.newHandshakeAt = null;
      out.push('new-handshake');
    }
    if (this.keepaliveAt !== null && now >= this.keepaliveAt) {
      this.keepaliveAt = null;
      out.push('keepalive');
    }
    if (this.persistentAt !== null && now >= this.persistentAt) {
      this.persistentAt = null;
      out.push('persistent-keepalive');
    }
    if (this.zeroKeysAt !== null && now >= this.zeroKeysAt) {
      this.zeroKeysAt = null;
      out.push('zero-keys');
    }
    return out;
  }

  /** The earliest deadline, or null: when the caller should tick next. */
  next(): number | null {
    let n: number | null = null;
    for (const t of [this.retransmitAt, this.keepaliveAt, this.newHandshakeAt, this.zeroKeysAt, this.persistentAt]) if (t !== null && (n === null || t < n)) n = t;
    return n;
  }
}
