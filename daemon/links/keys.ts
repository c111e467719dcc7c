/**
 * X25519 keys as 32 raw bytes, the way peers exchange them (base64, as WireGuard's), and the one
 * Diffie-Hellman. The CLI imports this file (`mvnet key`): it may import only node:crypto and
 * node:fs (scripts/check-layers.mjs).
 */
import { createPrivateKey, createPublicKey, diffieHellman, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { closeSync, fstatSync, openSync, readFileSync, writeSync, constants as fsc } from 'node:fs';

export const KEY_LEN = 32;

// DER wrappers of a raw X25519 key (RFC 8410): Node imports KeyObjects from DER, not from raw bytes.
const PKCS8_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');
const SPKI_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');

/** A static or ephemeral key pair: the private key as a KeyObject (raw bytes are never kept around), the public as bytes. */
export interface KeyPair {
  readonly privateKey: KeyObject;
  readonly publicKey: Buffer;
}

export function privateKeyFromRaw(raw: Buffer): KeyObject {
  if (raw.length !== KEY_LEN) throw new RangeError(`an X25519 private key is ${KEY_LEN} bytes, not ${raw.length}`);
  return createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, raw]), format: 'der', type: 'pkcs8' });
}

export function publicKeyObject(raw: Buffer): KeyObject {
  if (raw.length !== KEY_LEN) throw new RangeError(`an X25519 public key is ${KEY_LEN} bytes, not ${raw.length}`);
  return createPublicKey({ key: Buffer.concat([SPKI_PREFIX, raw]), format: 'der', type: 'spki' });
}

export function rawPrivateKey(k: KeyObject): Buffer {
  return k.export({ format: 'der', type: 'pkcs8' }).subarray(PKCS8_PREFIX.length);
}

export function rawPublicKey(k: KeyObject): Buffer {
  return createPublicKey(k).export({ format: 'der', type: 'spki' }).subarray(SPKI_PREFIX.length);
}

export function keyPairFromPrivate(privateKey: KeyObject): KeyPair {
  return { privateKey, publicKey: rawPublicKey(privateKey) };
}

export function generateKeyPair(): KeyPair {
  const { privateKey } = generateKeyPairSync('x25519');
  return keyPairFromPrivate(privateKey);
}

/**
 * X25519(priv, pub), or null when the result is all zeros (a low-order public key: OpenSSL
 * refuses to derive it, and Noise must not use it either) or `pub` does not import.
 */
export function x25519(priv: KeyObject, pub: Buffer): Buffer | null {
  try {
    const out = diffieHellman({ privateKey: priv, publicKey: publicKeyObject(pub) });
    return out.every((b) => b === 0) ? null : out;
  } catch {
    return null;
  }
}

/** 32 bytes as standard base64 (44 characters, as `wg genkey` prints). */
export function keyToBase64(raw: Buffer): string {
  return raw.toString('base64');
}

/** The 32 bytes of a base64 key, or null when `text` is not exactly that (whitespace around is allowed). */
export function keyFromBase64(text: string): Buffer | null {
  const t = text.trim();
  if (!/^[A-Za-z0-9+/]{43}=$/.test(t)) return null;
  const b = Buffer.from(t, 'base64');
  return b.length === KEY_LEN ? b : null;
}

/**
 * Writes a new private key file, mode 0600, refusing to replace anything that exists (O_EXCL,
 * O_NOFOLLOW: also not a dangling symlink).
 */
export function writePrivateKeyFile(path: string, key: KeyObject): void {
  const fd = openSync(path, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, 0o600);
  try {
    writeSync(fd, `${keyToBase64(rawPrivateKey(key))}\n`);
  } finally {
    closeSync(fd);
  }
}

/**
 * Reads a private key file. Refused (an Error with the reason, never the key's bytes) when it is
 * not a regular file, when group or others may read or write it, or when it does not hold one
 * base64 key.
 */
export function readPrivateKeyFile(path: string): KeyObject {
  const fd = openSync(path, fsc.O_RDONLY | fsc.O_NOFOLLOW);
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new Error(`${path} is not a regular file`);
    if ((st.mode & 0o077) !== 0) throw new Error(`${path} has mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}: a private key must be readable by its owner only (chmod 600 ${path})`);
    if (st.size > 4096) throw new Error(`${path} is not a key file (too large)`);
    const raw = keyFromBase64(readFileSync(fd, 'utf8'));
    if (raw === null) throw new Error(`${path} does not hold a base64 X25519 private key`);
    return privateKeyFromRaw(raw);
  } finally {
    closeSync(fd);
  }
}
