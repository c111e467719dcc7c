/** The link protocol's primitives and key handling (daemon/links/primitives.ts, keys.ts). */
import { mkdtempSync, rmSync, statSync, writeFileSync, chmodSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { aeadOpen, aeadSeal, hchacha20, xaeadOpen, xaeadSeal, kdf2, hmac, hash } from '../../daemon/links/primitives.js';
import {
  generateKeyPair,
  keyFromBase64,
  keyPairFromPrivate,
  keyToBase64,
  privateKeyFromRaw,
  rawPrivateKey,
  readPrivateKeyFile,
  writePrivateKeyFile,
  x25519,
} from '../../daemon/links/keys.js';

const dir = mkdtempSync(join(tmpdir(), 'mvnet-keys-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('links: primitives', () => {
  it('HChaCha20 matches draft-irtf-cfrg-xchacha-03 section 2.2.1', () => {
    const key = Buffer.from(Array.from({ length: 32 }, (_, i) => i));
    const out = hchacha20(key, Buffer.from('000000090000004a0000000031415927', 'hex'));
    expect(out.toString('hex')).toBe('82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc');
  });

  it('XChaCha20-Poly1305 and ChaCha20-Poly1305 open what they seal, and nothing altered', () => {
    const key = hash(Buffer.from('k'));
    const nonce = Buffer.alloc(24, 7);
    const ad = Buffer.from('ad');
    const sealed = xaeadSeal(key, nonce, Buffer.from('cookie'), ad);
    expect(xaeadOpen(key, nonce, sealed, ad)?.toString()).toBe('cookie');
    expect(xaeadOpen(key, nonce, sealed, Buffer.from('ae'))).toBe(null);
    const s2 = aeadSeal(key, 5n, Buffer.from('x'), ad);
    expect(aeadOpen(key, 5n, s2, ad)?.toString()).toBe('x');
    expect(aeadOpen(key, 6n, s2, ad)).toBe(null);
    expect(aeadOpen(key, 5n, Buffer.alloc(3), ad)).toBe(null);
  });

  it('KDF is HKDF over HMAC-BLAKE2s', () => {
    const ck = Buffer.alloc(32, 1);
    const input = Buffer.from('input');
    const prk = hmac(ck, input);
    const t1 = hmac(prk, Buffer.from([1]));
    const t2 = hmac(prk, t1, Buffer.from([2]));
    expect(kdf2(ck, input)).toEqual([t1, t2]);
  });
});

describe('links: keys', () => {
  it('base64 keys as WireGuard writes them; anything else refused', () => {
    const k = generateKeyPair();
    const b = keyToBase64(k.publicKey);
    expect(b).toMatch(/^[A-Za-z0-9+/]{43}=$/);
    expect(keyFromBase64(` ${b}\n`)?.equals(k.publicKey)).toBe(true);
    for (const bad of ['', 'abc', b.slice(1), `${b}=`, b.replace(/.$/, 'A'), `${b.slice(0, 42)}-=`]) expect(keyFromBase64(bad)).toBe(null);
  });

  it('DH agrees both ways and refuses low-order points', () => {
    const a = generateKeyPair();
    const b = generateKeyPair();
    expect(x25519(a.privateKey, b.publicKey)!.equals(x25519(b.privateKey, a.publicKey)!)).toBe(true);
    expect(x25519(a.privateKey, Buffer.alloc(32))).toBe(null);
    expect(x25519(a.privateKey, Buffer.from('0100000000000000000000000000000000000000000000000000000000000000', 'hex'))).toBe(null);
    expect(x25519(a.privateKey, Buffer.alloc(31))).toBe(null);
  });

  it('writes a private key file mode 0600, refuses to overwrite, reads it back', () => {
    const k = generateKeyPair();
    const f = join(dir, 'k1');
    writePrivateKeyFile(f, k.privateKey);
    expect(statSync(f).mode & 0o777).toBe(0o600);
    expect(() => writePrivateKeyFile(f, k.privateKey)).toThrow(/EEXIST/);
    symlinkSync(join(dir, 'nowhere'), join(dir, 'link'));
    expect(() => writePrivateKeyFile(join(dir, 'link'), k.privateKey)).toThrow();
    expect(keyPairFromPrivate(readPrivateKeyFile(f)).publicKey.equals(k.publicKey)).toBe(true);
  });

  it('refuses to read a key file others can read, or that is not a key; never shows the key', () => {
    const raw = rawPrivateKey(generateKeyPair().privateKey);
    const f = join(dir, 'k2');
    writeFileSync(f, `${raw.toString('base64')}\n`, { mode: 0o644 });
    chmodSync(f, 0o644);
    expect(() => readPrivateKeyFile(f)).toThrow(/mode 0644/);
    try {
      readPrivateKeyFile(f);
    } catch (e) {
      expect(String(e)).not.toContain(raw.toString('base64'));
    }
    const g = join(dir, 'k3');
    writeFileSync(g, 'not a key\n', { mode: 0o600 });
    expect(() => readPrivateKeyFile(g)).toThrow(/does not hold/);
    expect(() => readPrivateKeyFile(dir)).toThrow();
    expect(keyPairFromPrivate(privateKeyFromRaw(raw)).privateKey.type).toBe('private');
  });
});
