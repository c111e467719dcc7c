/**
 * Onion service v3 addresses (Tor's rend-spec-v3, "Encoding onion addresses"): 56 base32
 * characters encoding PUBKEY (32 bytes) ‖ CHECKSUM (2) ‖ VERSION (1, = 3), where CHECKSUM is the
 * first two bytes of SHA3-256(".onion checksum" ‖ PUBKEY ‖ VERSION). Checked here so that a
 * mistyped address is refused when the link is added, not after minutes of failing circuits.
 * (daemon/tor checks only the shape, ONION_ID_RE; the key's curve point is left to Tor.)
 */
import { createHash } from 'node:crypto';
import { ONION_ID_RE } from '../tor/control.js';

const ALPHABET = 'abcdefghijklmnopqrstuvwxyz234567';
const VERSION = 3;

function base32Decode(s: string): Buffer {
  const out = Buffer.alloc(Math.floor((s.length * 5) / 8));
  let bits = 0;
  let acc = 0;
  let pos = 0;
  for (const ch of s) {
    acc = (acc << 5) | ALPHABET.indexOf(ch);
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      out[pos++] = (acc >>> bits) & 0xff;
    }
  }
  return out;
}

function base32Encode(b: Buffer): string {
  let out = '';
  let bits = 0;
  let acc = 0;
  for (const byte of b) {
    acc = ((acc << 8) | byte) & 0xffff;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      out += ALPHABET[(acc >>> bits) & 31];
    }
  }
  if (bits > 0) out += ALPHABET[(acc << (5 - bits)) & 31];
  return out;
}

function checksum(pubkey: Buffer): Buffer {
  return createHash('sha3-256')
    .update('.onion checksum')
    .update(pubkey)
    .update(Buffer.of(VERSION))
    .digest()
    .subarray(0, 2);
}

/** Why `id` (56 characters, no ".onion") is not a v3 onion address, or null when it is one. */
export function onionV3Problem(id: string): string | null {
  if (!ONION_ID_RE.test(id)) return 'expected 56 base32 characters (a-z, 2-7) before .onion';
  const raw = base32Decode(id);
  if (raw[34] !== VERSION) return `version byte is ${raw[34]}, not 3 (not a v3 onion address)`;
  if (!checksum(raw.subarray(0, 32)).equals(raw.subarray(32, 34))) return 'checksum does not match (a mistyped address?)';
  return null;
}

/** The v3 onion address (56 characters, no ".onion") of an ed25519 public key. */
export function onionV3FromPublicKey(pubkey: Buffer): string {
  if (pubkey.length !== 32) throw new Error('an onion v3 public key is 32 bytes');
  return base32Encode(Buffer.concat([pubkey, checksum(pubkey), Buffer.of(VERSION)]));
}
