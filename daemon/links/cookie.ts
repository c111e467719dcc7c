/**
 * mac1, mac2 and the cookie reply (WireGuard's scheme, docs/links-protocol.md "Cookies").
 *
 * mac1 = MAC(HASH(LABEL_MAC1 || receiver's static public), message up to mac1): anyone who
 * knows the receiver's public key can make it, so checking it (one keyed hash) drops random
 * packets and probes from those who do not, before any DH.
 * Under load (the caller says so), an initiation also needs mac2 = MAC(cookie, message up to
 * mac2), where cookie = MAC(secret, source) and the secret changes every 2 minutes. Without it
 * the responder answers with a cookie reply (the cookie, XChaCha20-Poly1305-sealed under a key
 * from its public key, with mac1 as associated data so only the real sender can open it) and
 * does no DH; the sender retries with mac2, which proves it receives at that source.
 */
import { equalMac, hash, mac, MAC_LEN, xaeadOpen, xaeadSeal } from './primitives.js';
import { encodeCookieReply, type CookieReply } from './messages.js';

export const LABEL_MAC1 = 'mvnet link mac1';
export const LABEL_COOKIE = 'mvnet link cookie';
/** The responder's cookie secret is replaced after this long, and an initiator's cookie expires then. */
export const COOKIE_SECRET_MAX_AGE_MS = 120_000;

const ZERO_MAC = Buffer.alloc(MAC_LEN);

function sourceBytes(source: string): Buffer {
  return Buffer.from(source, 'utf8');
}

/** The receiving side's checks, for one local static key. */
export class CookieChecker {
  private readonly mac1Key: Buffer;
  private readonly cookieKey: Buffer;
  private secret: Buffer | null = null;
  private secretBorn = 0;

  constructor(
    localPublic: Buffer,
    private readonly random: (n: number) => Buffer,
  ) {
    this.mac1Key = hash(Buffer.from(LABEL_MAC1), localPublic);
    this.cookieKey = hash(Buffer.from(LABEL_COOKIE), localPublic);
  }

  checkMac1(msg: Buffer, mac1At: number): boolean {
    return equalMac(mac(this.mac1Key, msg.subarray(0, mac1At)), msg.subarray(mac1At, mac1At + MAC_LEN));
  }

  /** Whether mac2 is the one this source's current cookie makes. */
  checkMac2(msg: Buffer, mac2At: number, source: string, now: number): boolean {
    if (this.secret === null || now - this.secretBorn >= COOKIE_SECRET_MAX_AGE_MS) return false;
    const cookie = mac(this.secret, sourceBytes(source));
    return equalMac(mac(cookie, msg.subarray(0, mac2At)), msg.subarray(mac2At, mac2At + MAC_LEN));
  }

  /** A cookie reply to `msg` (whose sender index is `receiver`), for `source`. */
  createReply(msg: Buffer, mac1At: number, receiver: number, source: string, now: number): Buffer {
    if (this.secret === null || now - this.secretBorn >= COOKIE_SECRET_MAX_AGE_MS) {
      this.secret = this.random(32);
      this.secretBorn = now;
    }
    const cookie = mac(this.secret, sourceBytes(source));
    const nonce = this.random(24);
    const encryptedCookie = xaeadSeal(this.cookieKey, nonce, cookie, msg.subarray(mac1At, mac1At + MAC_LEN));
    return encodeCookieReply({ receiver, nonce, encryptedCookie });
  }
}

/** The sending side, for one peer: adds mac1 and mac2 and keeps the cookie the peer sent. */
export class CookieGenerator {
  private readonly mac1Key: Buffer;
  private readonly cookieKey: Buffer;
  private lastMac1: Buffer | null = null;
  private cookie: Buffer | null = null;
  private cookieTime = 0;

  constructor(remotePublic: Buffer) {
    this.mac1Key = hash(Buffer.from(LABEL_MAC1), remotePublic);
    this.cookieKey = hash(Buffer.from(LABEL_COOKIE), remotePublic);
  }

  /** Fills in mac1 and mac2 (zero without a fresh cookie) of `msg`, in place. */
  addMacs(msg: Buffer, mac1At: number, now: number): void {
    const m1 = mac(this.mac1Key, msg.subarray(0, mac1At));
    m1.copy(msg, mac1At);
    this.lastMac1 = m1;
    const mac2At = mac1At + MAC_LEN;
    if (this.cookie !== null && now - this.cookieTime < COOKIE_SECRET_MAX_AGE_MS) mac(this.cookie, msg.subarray(0, mac2At)).copy(msg, mac2At);
    else ZERO_MAC.copy(msg, mac2At);
  }

  /** Keeps the cookie of a reply to our last message; false when it does not open (not for us, or forged). */
  consumeReply(reply: CookieReply, now: number): boolean {
    if (this.lastMac1 === null) return false;
    const cookie = xaeadOpen(this.cookieKey, reply.nonce, reply.encryptedCookie, this.lastMac1);
    if (cookie === null) return false;
    this.cookie = cookie;
    this.cookieTime = now;
    return true;
  }

  hasCookie(now: number): boolean {
    return this.cookie !== null && now - this.cookieTime < COOKIE_SECRET_MAX_AGE_MS;
  }
}
