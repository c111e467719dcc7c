/**
 * The symmetric primitives of the link protocol, all from node:crypto (docs/links-protocol.md):
 * HASH = BLAKE2s-256, HMAC = HMAC-BLAKE2s, KDF = HKDF over that HMAC (as Noise and WireGuard),
 * MAC = HMAC-BLAKE2s truncated to 16 bytes (WireGuard uses keyed BLAKE2s-128, which node:crypto
 * does not offer: its BLAKE2s takes no key and has a fixed 32-byte output), AEAD =
 * ChaCha20-Poly1305 (RFC 8439) with a 64-bit little-endian counter nonce, XAEAD =
 * XChaCha20-Poly1305 (HChaCha20 derived from node's raw ChaCha20, below).
 */
import { createCipheriv, createDecipheriv, createHash, createHmac, timingSafeEqual } from 'node:crypto';

export const HASH_LEN = 32;
export const TAG_LEN = 16;
export const MAC_LEN = 16;

export function hash(...parts: Buffer[]): Buffer {
  const h = createHash('blake2s256');
  for (const p of parts) h.update(p);
  return h.digest();
}

export function hmac(key: Buffer, ...parts: Buffer[]): Buffer {
  const h = createHmac('blake2s256', key);
  for (const p of parts) h.update(p);
  return h.digest();
}

/** HKDF (Noise's, with HMAC-BLAKE2s) from chaining key `ck` and `input`: outputs of 32 bytes each. */
function hkdf(n: number, ck: Buffer, input: Buffer): Buffer[] {
  const prk = hmac(ck, input);
  const out: Buffer[] = [];
  let prev: Buffer = Buffer.alloc(0);
  for (let i = 1; i <= n; i++) {
    prev = hmac(prk, prev, Buffer.from([i]));
    out.push(prev);
  }
  return out;
}

export function kdf1(ck: Buffer, input: Buffer): Buffer {
  return hkdf(1, ck, input)[0]!;
}

export function kdf2(ck: Buffer, input: Buffer): [Buffer, Buffer] {
  const [a, b] = hkdf(2, ck, input);
  return [a!, b!];
}

export function kdf3(ck: Buffer, input: Buffer): [Buffer, Buffer, Buffer] {
  const [a, b, c] = hkdf(3, ck, input);
  return [a!, b!, c!];
}

export function mac(key: Buffer, data: Buffer): Buffer {
  return hmac(key, data).subarray(0, MAC_LEN);
}

/** Constant-time equality of two MACs or tags of the same length. */
export function equalMac(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

/** The 96-bit AEAD nonce of a 64-bit counter: 4 zero bytes, then the counter little-endian (as WireGuard). */
export function counterNonce(counter: bigint): Buffer {
  const n = Buffer.alloc(12);
  n.writeBigUInt64LE(counter, 4);
  return n;
}

export function aeadSeal(key: Buffer, counter: bigint, plaintext: Buffer, ad: Buffer): Buffer {
  return sealNonce(key, counterNonce(counter), plaintext, ad);
}

/** The plaintext, or null when the tag does not verify. */
export function aeadOpen(key: Buffer, counter: bigint, sealed: Buffer, ad: Buffer): Buffer | null {
  return openNonce(key, counterNonce(counter), sealed, ad);
}

function sealNonce(key: Buffer, nonce: Buffer, plaintext: Buffer, ad: Buffer): Buffer {
  const c = createCipheriv('chacha20-poly1305', key, nonce, { authTagLength: TAG_LEN });
  if (ad.length > 0) c.setAAD(ad, { plaintextLength: plaintext.length });
  const body = c.update(plaintext);
  c.final();
  return Buffer.concat([body, c.getAuthTag()]);
}

function openNonce(key: Buffer, nonce: Buffer, sealed: Buffer, ad: Buffer): Buffer | null {
  if (sealed.length < TAG_LEN) return null;
  const d = createDecipheriv('chacha20-poly1305', key, nonce, { authTagLength: TAG_LEN });
  d.setAuthTag(sealed.subarray(sealed.length - TAG_LEN));
  if (ad.length > 0) d.setAAD(ad, { plaintextLength: sealed.length - TAG_LEN });
  const body = d.update(sealed.subarray(0, sealed.length - TAG_LEN));
  try {
    d.final();
  } catch {
    return null;
  }
  return body;
}

const SIGMA = [0x61707865, 0x3320646e, 0x79622d32, 0x6b206574];

/**
 * HChaCha20(key, 16-byte input): ChaCha20's block function without the final addition, words
 * 0-3 and 12-15. Node has no HChaCha20 but has raw ChaCha20 whose 16-byte IV is exactly state
 * words 12-15; its first keystream block is rounds(state) + state, so subtracting the state
 * words gives HChaCha20 without a ChaCha implementation of our own.
 */
export function hchacha20(key: Buffer, input: Buffer): Buffer {
  const c = createCipheriv('chacha20', key, input);
  const ks = c.update(Buffer.alloc(64));
  const out = Buffer.alloc(32);
  for (let i = 0; i < 4; i++) {
    out.writeUInt32LE((ks.readUInt32LE(4 * i) - SIGMA[i]!) >>> 0, 4 * i);
    out.writeUInt32LE((ks.readUInt32LE(48 + 4 * i) - input.readUInt32LE(4 * i)) >>> 0, 16 + 4 * i);
  }
  return out;
}

/** XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha): a random 24-byte nonce is safe under a long-lived key. */
function xkey(key: Buffer, nonce24: Buffer): { key: Buffer; nonce: Buffer } {
  const sub = hchacha20(key, nonce24.subarray(0, 16));
  const nonce = Buffer.alloc(12);
  nonce24.copy(nonce, 4, 16, 24);
  return { key: sub, nonce };
}

export function xaeadSeal(key: Buffer, nonce24: Buffer, plaintext: Buffer, ad: Buffer): Buffer {
  const x = xkey(key, nonce24);
  return sealNonce(x.key, x.nonce, plaintext, ad);
}

export function xaeadOpen(key: Buffer, nonce24: Buffer, sealed: Buffer, ad: Buffer): Buffer | null {
  const x = xkey(key, nonce24);
  return openNonce(x.key, x.nonce, sealed, ad);
}
