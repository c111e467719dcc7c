/**
 * One session's data keys: the send counter, the receive window, sealing and opening transport
 * messages. The plaintext of a non-empty message is the payload, zero padding and one trailer
 * byte (high nibble: payload type, 0 = an Ethernet frame; low nibble: padding length), a
 * multiple of 16 bytes, so lengths show only to 16 bytes. An empty plaintext is a keepalive.
 */
import { createCipheriv, createDecipheriv, createSecretKey, type KeyObject } from 'node:crypto';
import { counterNonce, TAG_LEN } from './primitives.js';
import { encodeTransportHeader, type Transport } from './messages.js';
import { REJECT_AFTER_MESSAGES, ReplayWindow } from './replay.js';
import type { TransportKeys } from './noise.js';

/** A session that has sent this many messages is replaced by a new handshake (the initiator starts it). */
export const REKEY_AFTER_MESSAGES = 2n ** 60n;
export const PAYLOAD_ETHERNET = 0;
/** Largest payload: a 64 KiB frame (an offloaded super-frame and its virtio-net header). */
export const MAX_PAYLOAD = 65535;

export type OpenFailure = 'replay' | 'bad-mac' | 'malformed';

/**
 * The AEAD of transport messages: ChaCha20-Poly1305 (RFC 8439) with the counter as the nonce (4
 * zero bytes, then the counter little-endian), no associated data. Injected through
 * DeviceOptions.aead so that a faster implementation (the native addon's, which keeps one cipher
 * context per key) can replace node:crypto's; every implementation makes the same bytes.
 * `K` is the implementation's key handle, opaque to the caller.
 */
export interface TransportAead<K = unknown> {
  /** Makes a key handle from 32 raw key bytes (which the caller may then overwrite). */
  importKey(raw: Buffer): K;
  /** One buffer: `header` ‖ encrypt(`payload` ‖ `trailer`) ‖ tag. */
  seal(key: K, counter: bigint, payload: Buffer, trailer: Buffer, header: Buffer): Buffer;
  /** The plaintext of `sealed` (ciphertext ‖ tag), or null when the tag does not verify or `sealed` is shorter than a tag. */
  open(key: K, counter: bigint, sealed: Buffer): Buffer | null;
}

/** The default TransportAead: node:crypto, a cipher object per message; keys as KeyObjects, imported once. */
export const nodeTransportAead: TransportAead<KeyObject> = {
  importKey: (raw) => createSecretKey(raw),
  seal(key, counter, payload, trailer, header) {
    const c = createCipheriv('chacha20-poly1305', key, counterNonce(counter), { authTagLength: TAG_LEN });
    const parts = [header];
    if (payload.length > 0) parts.push(c.update(payload));
    if (trailer.length > 0) parts.push(c.update(trailer));
    c.final();
    parts.push(c.getAuthTag());
    return Buffer.concat(parts);
  },
  open(key, counter, sealed) {
    if (sealed.length < TAG_LEN) return null;
    const d = createDecipheriv('chacha20-poly1305', key, counterNonce(counter), { authTagLength: TAG_LEN });
    d.setAuthTag(sealed.subarray(sealed.length - TAG_LEN));
    const plain = d.update(sealed.subarray(0, sealed.length - TAG_LEN));
    try {
      d.final();
    } catch {
      return null;
    }
    return plain;
  },
};

/** The trailers of a payload of type 0 (an Ethernet frame), by padding length: made once, not per message. */
const ETHERNET_TRAILERS: readonly Buffer[] = Array.from({ length: 16 }, (_, pad) => {
  const t = Buffer.alloc(pad + 1);
  t[pad] = (PAYLOAD_ETHERNET << 4) | pad;
  return t;
});
const EMPTY = Buffer.alloc(0);

export class Keypair {
  private readonly sendKey: unknown;
  private readonly recvKey: unknown;
  /** The header of the next message, rewritten per message (the AEAD copies it into the message). */
  private readonly header: Buffer;
  /** The counter of the next message sent. */
  sendCounter = 0n;
  readonly replay = new ReplayWindow();

  constructor(
    keys: TransportKeys,
    /** Our index: the receiver field of messages the peer sends on this session. */
    readonly localIndex: number,
    /** The peer's index, written in the messages we send. */
    readonly remoteIndex: number,
    readonly isInitiator: boolean,
    /** When the handshake completed (the caller's clock, ms). */
    readonly created: number,
    private readonly aead: TransportAead = nodeTransportAead,
  ) {
    // Key handles: imported once, not on every packet.
    this.sendKey = aead.importKey(keys.send);
    this.recvKey = aead.importKey(keys.recv);
    this.header = encodeTransportHeader(remoteIndex, 0n);
  }

  /** Whether another message may be sent: the counter is below REJECT_AFTER_MESSAGES. */
  canSend(): boolean {
    return this.sendCounter < REJECT_AFTER_MESSAGES;
  }

  /** The transport message carrying `payload` (empty: a keepalive). Call only when canSend(). */
  seal(payload: Buffer, type = PAYLOAD_ETHERNET): Buffer {
    if (payload.length > MAX_PAYLOAD) throw new RangeError(`payload of ${payload.length} bytes > ${MAX_PAYLOAD}`);
    const counter = this.sendCounter++;
    this.header.writeBigUInt64LE(counter, 8);
    let trailer: Buffer = EMPTY;
    if (payload.length > 0) {
      const pad = (16 - ((payload.length + 1) % 16)) % 16;
      if (type === PAYLOAD_ETHERNET) {
        trailer = ETHERNET_TRAILERS[pad]!;
      } else {
        trailer = Buffer.alloc(pad + 1);
        trailer[pad] = (type << 4) | pad;
      }
    }
    return this.aead.seal(this.sendKey, counter, payload, trailer, this.header);
  }

  /**
   * The payload of `msg` (an empty one: a keepalive), once it is authenticated and its counter
   * not seen before; the window moves only then.
   */
  open(msg: Transport): { ok: true; payload: Buffer; type: number } | { ok: false; reason: OpenFailure } {
    if (!this.replay.check(msg.counter)) return { ok: false, reason: 'replay' };
    const plain = this.aead.open(this.recvKey, msg.counter, msg.sealed);
    if (plain === null) return { ok: false, reason: 'bad-mac' };
    if (!this.replay.update(msg.counter)) return { ok: false, reason: 'replay' };
    if (plain.length === 0) return { ok: true, payload: plain, type: PAYLOAD_ETHERNET };
    const trailer = plain[plain.length - 1]!;
    const pad = trailer & 0x0f;
    const type = trailer >> 4;
    // Authentic but not what a sender of this protocol makes: a bug or another version at the far end.
    if (pad + 1 > plain.length || type !== PAYLOAD_ETHERNET) return { ok: false, reason: 'malformed' };
    for (let i = plain.length - 1 - pad; i < plain.length - 1; i++) if (plain[i] !== 0) return { ok: false, reason: 'malformed' };
    return { ok: true, payload: plain.subarray(0, plain.length - 1 - pad), type };
  }
}

/** Test hook: moves the send counter (counter exhaustion tests start near 2^60 or 2^64). */
export function setSendCounterForTest(k: Keypair, counter: bigint): void {
  k.sendCounter = counter;
}

export { REJECT_AFTER_MESSAGES };
