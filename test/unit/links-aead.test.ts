/**
 * The native transport AEAD (plugins/native/src/aead.cc) against node:crypto's
 * (nodeTransportAead, the default): the same bytes for 10^4 random payloads of 0 to 65535 bytes
 * and random counters, each opening the other's messages; tampered, truncated, misdirected
 * messages refused by the native open; malformed arguments refused with a TypeError (never a
 * crash); and Keypairs over either implementation interoperate. The test vectors go through both
 * in links-vectors.test.ts.
 */
import { createCipheriv, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { mulberry32 } from '../support/mulberry32.js';
import { decodeTransport } from '../../daemon/links/messages.js';
import { Keypair, nodeTransportAead, type TransportAead } from '../../daemon/links/transport.js';
import { native, nativeTransportAead, type NativeAeadKey } from '../../plugins/native/index.js';


function nat(): TransportAead<NativeAeadKey> {
  const a = nativeTransportAead();
  if (a === null) throw new Error('the addon has no transport AEAD (built without the OpenSSL headers?)');
  return a;
}

const POOL = randomBytes(1 << 18);
/** `n` bytes of the random pool, from a random offset (a view: cheap, and often unaligned). */
function bytes(r: () => number, n: number): Buffer {
  const at = Math.floor(r() * (POOL.length - n + 1));
  return POOL.subarray(at, at + n);
}

function counter(r: () => number): bigint {
  const edge = [0n, 1n, 2n ** 32n - 1n, 2n ** 32n, 2n ** 60n, 2n ** 64n - 2n, 2n ** 64n - 1n];
  if (r() < 0.1) return edge[Math.floor(r() * edge.length)]!;
  return (BigInt(Math.floor(r() * 2 ** 32)) << 32n) | BigInt(Math.floor(r() * 2 ** 32));
}

describe('links: the native transport AEAD', () => {
  it('seals 10^4 random payloads (0-65535 bytes) to the same bytes as node:crypto, and each opens the other', () => {
    const a = nat();
    const r = mulberry32(1);
    const raw = randomBytes(32);
    const nk = nodeTransportAead.importKey(raw);
    // One handle seals and opens: its context switches direction per call.
    const xk = a.importKey(raw);
    const sizes = [0, 1, 14, 15, 16, 17, 1420, 65535];
    for (let i = 0; i < 10_000; i++) {
      const len = i < sizes.length ? sizes[i]! : r() < 0.3 ? Math.floor(r() * 2048) : Math.floor(r() * 65536);
      const payload = bytes(r, len);
      const trailer = bytes(r, len === 0 ? 0 : 1 + Math.floor(r() * 16));
      const header = bytes(r, r() < 0.9 ? 16 : Math.floor(r() * 40));
      const c = counter(r);
      const want = nodeTransportAead.seal(nk, c, payload, trailer, header);
      const got = a.seal(xk, c, payload, trailer, header);
      if (!got.equals(want)) expect.fail(`message ${i} (${len} bytes, counter ${c}) differs`);
      const sealed = got.subarray(header.length);
      const plain = Buffer.concat([payload, trailer]);
      const opened = a.open(xk, c, want.subarray(header.length));
      if (opened === null || !opened.equals(plain)) expect.fail(`message ${i}: native open of node's message`);
      const opened2 = nodeTransportAead.open(nk, c, sealed);
      if (opened2 === null || !opened2.equals(plain)) expect.fail(`message ${i}: node open of native message`);
    }
  });

  it('refuses tampered tags and ciphertexts, truncations, another counter and another key', () => {
    const a = nat();
    const r = mulberry32(2);
    const raw = randomBytes(32);
    const k = a.importKey(raw);
    const other = a.importKey(randomBytes(32));
    for (let i = 0; i < 2000; i++) {
      const len = Math.floor(r() * 3000);
      const c = counter(r);
      const sealed = a.seal(k, c, bytes(r, len), Buffer.alloc(0), Buffer.alloc(0));
      expect(a.open(k, c, sealed)).not.toBeNull();
      // One bit flipped: in the tag half the time.
      const bad = Buffer.from(sealed);
      const at = r() < 0.5 ? len + Math.floor(r() * 16) : Math.floor(r() * sealed.length);
      bad[at]! ^= 1 << Math.floor(r() * 8);
      expect(a.open(k, c, bad)).toBeNull();
      expect(nodeTransportAead.open(nodeTransportAead.importKey(raw), c, bad)).toBeNull();
      expect(a.open(k, c ^ 1n, sealed)).toBeNull();
      expect(a.open(other, c, sealed)).toBeNull();
      if (sealed.length > 16) expect(a.open(k, c, sealed.subarray(0, sealed.length - 1 - Math.floor(r() * 16)))).toBeNull();
      // The key still works after failures (the context is re-initialised per call).
      expect(a.open(k, c, sealed)).not.toBeNull();
    }
    // Shorter than a tag: null, whatever the bytes.
    for (let n = 0; n < 16; n++) expect(a.open(k, 0n, Buffer.alloc(n))).toBeNull();
  });

  it('refuses malformed arguments with a TypeError, never a crash (random lengths and types)', () => {
    const n = native;
    const a = nat();
    const k = a.importKey(randomBytes(32));
    const r = mulberry32(3);
    for (let len = 0; len < 100; len++) {
      if (len !== 32) expect(() => n.aeadImportKey!(Buffer.alloc(len))).toThrow(TypeError);
    }
    const junk: unknown[] = [undefined, null, 0, 1.5, -1, 'key', {}, [], Symbol('s'), () => 0, new Uint8Array(32), Buffer.alloc(32), 2n ** 64n, -1n, 0n];
    for (const j of junk) {
      if (!(j instanceof Uint8Array)) expect(() => n.aeadImportKey!(j as Buffer)).toThrow(TypeError);
      expect(() => n.aeadSeal!(j as NativeAeadKey, 0n, Buffer.alloc(1), Buffer.alloc(1), Buffer.alloc(16))).toThrow(TypeError);
      expect(() => n.aeadOpen!(j as NativeAeadKey, 0n, Buffer.alloc(32))).toThrow(TypeError);
      if (typeof j !== 'bigint') {
        expect(() => n.aeadSeal!(k, j as bigint, Buffer.alloc(1), Buffer.alloc(1), Buffer.alloc(16))).toThrow(TypeError);
        expect(() => n.aeadOpen!(k, j as bigint, Buffer.alloc(32))).toThrow(TypeError);
      }
      if (!(j instanceof Uint8Array)) {
        expect(() => n.aeadSeal!(k, 0n, j as Buffer, Buffer.alloc(1), Buffer.alloc(16))).toThrow(TypeError);
        expect(() => n.aeadSeal!(k, 0n, Buffer.alloc(1), j as Buffer, Buffer.alloc(16))).toThrow(TypeError);
        expect(() => n.aeadSeal!(k, 0n, Buffer.alloc(1), Buffer.alloc(1), j as Buffer)).toThrow(TypeError);
        expect(() => n.aeadOpen!(k, 0n, j as Buffer)).toThrow(TypeError);
      }
    }
    expect(() => n.aeadSeal!(k, 2n ** 64n, Buffer.alloc(1), Buffer.alloc(1), Buffer.alloc(16))).toThrow(TypeError);
    expect(() => n.aeadSeal!(k, -1n, Buffer.alloc(1), Buffer.alloc(1), Buffer.alloc(16))).toThrow(TypeError);
    expect(() => (n.aeadSeal as unknown as (...x: unknown[]) => Buffer)(k, 0n)).toThrow(TypeError);
    expect(() => (n.aeadOpen as unknown as (...x: unknown[]) => Buffer)(k)).toThrow(TypeError);
    // An object that is not one of our tagged externals is not a key.
    expect(() => n.aeadOpen!(Object.create(null) as NativeAeadKey, 0n, Buffer.alloc(32))).toThrow(TypeError);
    // Random lengths and views at odd offsets: the output has exactly the expected length.
    for (let i = 0; i < 3000; i++) {
      const p = bytes(r, Math.floor(r() * 70_000));
      const t = bytes(r, Math.floor(r() * 40));
      const h = bytes(r, Math.floor(r() * 40));
      const s = n.aeadSeal!(k, 7n, p, t, h);
      expect(s.length).toBe(h.length + p.length + t.length + 16);
      const o = n.aeadOpen!(k, 7n, s.subarray(h.length));
      expect(o?.equals(Buffer.concat([p, t]))).toBe(true);
      expect(n.aeadOpen!(k, 7n, bytes(r, Math.floor(r() * 2000)))).toBeNull();
    }
  });

  it('seals and opens into a given buffer: exact lengths only, no overlap, in place allowed, zeroed on failure', () => {
    const n = native;
    const k = n.aeadImportKey!(randomBytes(32));
    const r = mulberry32(5);
    for (let i = 0; i < 3000; i++) {
      const p = bytes(r, Math.floor(r() * 3000));
      const t = bytes(r, Math.floor(r() * 17));
      const h = bytes(r, Math.floor(r() * 20));
      const total = h.length + p.length + t.length + 16;
      const wrong = Math.floor(r() * (total + 64));
      if (wrong !== total) expect(() => n.aeadSeal!(k, 9n, p, t, h, Buffer.alloc(wrong))).toThrow(TypeError);
      const out = Buffer.alloc(total);
      expect(n.aeadSeal!(k, 9n, p, t, h, out)).toBeUndefined();
      expect(out.equals(n.aeadSeal!(k, 9n, p, t, h))).toBe(true);
      const sealed = out.subarray(h.length);
      const wrongOpen = Math.floor(r() * (sealed.length + 64));
      if (wrongOpen !== sealed.length - 16) expect(() => n.aeadOpen!(k, 9n, sealed, Buffer.alloc(wrongOpen))).toThrow(TypeError);
      const plain = Buffer.alloc(sealed.length - 16);
      expect(n.aeadOpen!(k, 9n, sealed, plain)).toBe(true);
      expect(plain.equals(Buffer.concat([p, t]))).toBe(true);
      // A tag that does not verify: false, and nothing of the unauthenticated plaintext is left.
      const bad = Buffer.from(sealed);
      bad[bad.length - 1]! ^= 1;
      const junk = Buffer.alloc(bad.length - 16, 0xaa);
      expect(n.aeadOpen!(k, 9n, bad, junk)).toBe(false);
      expect(junk.every((b) => b === 0)).toBe(true);
      // In place: the plaintext over the ciphertext.
      const copy = Buffer.from(sealed);
      expect(n.aeadOpen!(k, 9n, copy, copy.subarray(0, copy.length - 16))).toBe(true);
      expect(copy.subarray(0, copy.length - 16).equals(plain)).toBe(true);
    }
    // Overlaps refused: output over an input, shifted in-place open.
    const big = Buffer.alloc(4096);
    expect(() => n.aeadSeal!(k, 0n, big.subarray(0, 100), Buffer.alloc(0), Buffer.alloc(0), big.subarray(50, 166))).toThrow(/overlaps/);
    expect(() => n.aeadSeal!(k, 0n, Buffer.alloc(100), Buffer.alloc(0), big.subarray(0, 16), big.subarray(10, 142))).toThrow(/overlaps/);
    const s = n.aeadSeal!(k, 0n, Buffer.alloc(100), Buffer.alloc(0), Buffer.alloc(0));
    s.copy(big, 1000);
    expect(() => n.aeadOpen!(k, 0n, big.subarray(1000, 1116), big.subarray(1001, 1101))).toThrow(/overlaps/);
    expect(() => n.aeadOpen!(k, 0n, Buffer.alloc(8), Buffer.alloc(0))).not.toThrow();
    expect(n.aeadOpen!(k, 0n, Buffer.alloc(8), Buffer.alloc(0))).toBe(false);
  });

  it('a freed key throws instead of touching freed memory', () => {
    const n = native;
    const k = n.aeadImportKey!(randomBytes(32));
    n.aeadFreeKey!(k);
    expect(() => n.aeadSeal!(k, 0n, Buffer.alloc(1), Buffer.alloc(0), Buffer.alloc(0))).toThrow(/freed/);
    expect(() => n.aeadOpen!(k, 0n, Buffer.alloc(16))).toThrow(/freed/);
    expect(() => n.aeadFreeKey!(k)).toThrow(/freed/);
  });

  it('matches RFC 8439 2.8.2 (the AEAD alone, through node:crypto with AAD as the reference shape)', () => {
    // No AAD in the link protocol; the check here is the nonce layout: 4 zero bytes, counter LE.
    const a = nat();
    const raw = Buffer.from('808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f', 'hex');
    const pt = Buffer.from("Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.");
    const c = 0x4746454443424140n;
    const nonce = Buffer.from('000000004041424344454647', 'hex');
    const ref = createCipheriv('chacha20-poly1305', raw, nonce, { authTagLength: 16 });
    const want = Buffer.concat([ref.update(pt), ref.final(), ref.getAuthTag()]);
    expect(a.seal(a.importKey(raw), c, pt, Buffer.alloc(0), Buffer.alloc(0)).equals(want)).toBe(true);
  });

  it('Keypairs over node:crypto and over the addon make the same messages and open each other\'s', () => {
    const a = nat();
    const keys = { send: randomBytes(32), recv: randomBytes(32) };
    const back = { send: keys.recv, recv: keys.send };
    const sn = new Keypair(keys, 1, 2, true, 0);
    const sx = new Keypair(keys, 1, 2, true, 0, a);
    const rn = new Keypair(back, 2, 1, false, 0);
    const rx = new Keypair(back, 2, 1, false, 0, a);
    const r = mulberry32(4);
    for (let i = 0; i < 500; i++) {
      const payload = bytes(r, i % 7 === 0 ? 0 : Math.floor(r() * 1600));
      const m = sn.seal(payload);
      expect(sx.seal(payload).equals(m)).toBe(true);
      const d = decodeTransport(m);
      if (!d.ok) throw new Error('decode');
      for (const rcv of [rn, rx]) {
        const o = rcv.open(d.value);
        expect(o.ok && o.payload.equals(payload)).toBe(true);
      }
      // A replay is refused by both; a forged one too, as bad-mac.
      expect(rx.open(d.value)).toEqual({ ok: false, reason: 'replay' });
      const forged = Buffer.from(m);
      forged[forged.length - 1]! ^= 0x80;
      forged.writeBigUInt64LE(BigInt(100_000 + i), 8);
      const f = decodeTransport(forged);
      if (!f.ok) throw new Error('decode');
      expect(rx.open(f.value)).toEqual({ ok: false, reason: 'bad-mac' });
      expect(rn.open(f.value)).toEqual({ ok: false, reason: 'bad-mac' });
    }
  });
});
