/**
 * Loads the N-API addon (build/Release/mvnet_native.node, built by `node-gyp rebuild` during
 * `npm ci`). This file runs both compiled (dist/plugins/native/index.js) and from source
 * (vitest), so the addon is found by searching upward from here for the build directory.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createCipheriv, randomBytes } from 'node:crypto';
import type { NativeAddon, NativeAeadKey } from './types.js';
import { useNativeOnesSum } from '../../daemon/wire/checksum.js';

export type * from './types.js';

const ADDON_REL = join('build', 'Release', 'mvnet_native.node');

/** The addon's path: the nearest `build/Release/mvnet_native.node` above this file, if any. */
export function findAddon(start: string = dirname(fileURLToPath(import.meta.url))): string | undefined {
  let dir = start;
  for (;;) {
    const candidate = join(dir, ADDON_REL);
    if (existsSync(candidate)) return candidate;
    const parent = dirname(dir);
    if (parent === dir) return undefined;
    dir = parent;
  }
}

let loaded: NativeAddon | undefined;

/** Loads the addon on first use; throws a clear error when it has not been built. */
export function loadNative(): NativeAddon {
  if (loaded) return loaded;
  const path = findAddon();
  if (!path) {
    throw new Error(
      `mvnet native addon not found (looked for ${ADDON_REL} above ${dirname(fileURLToPath(import.meta.url))}). ` +
        'Build it with `npm ci` or `npx node-gyp rebuild` (needs g++, make, python3 and Node headers).',
    );
  }
  const require = createRequire(import.meta.url);
  try {
    loaded = require(path) as NativeAddon;
    // The data path's checksums of long ranges use the addon's from now on.
    if (typeof loaded.onesSum === 'function') useNativeOnesSum(loaded.onesSum);
  } catch (err) {
    throw new Error(`mvnet native addon ${path} failed to load: ${(err as Error).message}. Rebuild it with \`npx node-gyp rebuild\`.`, {
      cause: err,
    });
  }
  return loaded;
}

/**
 * The addon, loaded lazily: importing this module never fails; the first property access does
 * when the addon is missing.
 */
export const native: NativeAddon = new Proxy({} as NativeAddon, {
  get(_target, prop) {
    return Reflect.get(loadNative(), prop);
  },
  has(_target, prop) {
    return Reflect.has(loadNative(), prop);
  },
});

/** Linux network namespace names as `ip netns` accepts them (a file name under /run/netns). */
const NETNS_NAME = /^[A-Za-z0-9_.-]{1,255}$/;

/**
 * A namespace argument as a path for setns(): a bare NAME means `ip netns`'s /run/netns/NAME,
 * an absolute path (/run/netns/x, /proc/PID/ns/net, /var/run/netns/x) is used as it is.
 */
export function netnsPath(nameOrPath: string): string {
  if (nameOrPath.startsWith('/')) {
    if (nameOrPath.includes('\0')) throw new TypeError(`invalid network namespace path: ${JSON.stringify(nameOrPath)}`);
    return nameOrPath;
  }
  if (!NETNS_NAME.test(nameOrPath) || nameOrPath === '.' || nameOrPath === '..') {
    throw new TypeError(
      `invalid network namespace name ${JSON.stringify(nameOrPath)}: use letters, digits, '.', '_' or '-', or an absolute path`,
    );
  }
  return `/run/netns/${nameOrPath}`;
}

/**
 * The addon's ChaCha20-Poly1305 for the link transport (daemon/links TransportAead, which this
 * matches structurally: plugins do not import daemon/links): one cipher context per key, the
 * message written into one Buffer. Null when the addon is missing, was built without it, or
 * fails a self-test against node:crypto (checked once).
 */
export interface NativeTransportAead {
  importKey(raw: Buffer): NativeAeadKey;
  seal(key: NativeAeadKey, counter: bigint, payload: Buffer, trailer: Buffer, header: Buffer): Buffer;
  open(key: NativeAeadKey, counter: bigint, sealed: Buffer): Buffer | null;
}

const AEAD_TAG_LEN = 16;
let aead: NativeTransportAead | null | undefined;

export function nativeTransportAead(): NativeTransportAead | null {
  if (aead !== undefined) return aead;
  aead = null;
  let n: NativeAddon;
  try {
    n = loadNative();
  } catch {
    return null;
  }
  const { aeadImportKey, aeadSeal, aeadOpen } = n;
  if (aeadImportKey === undefined || aeadSeal === undefined || aeadOpen === undefined) return null;
  // The output is allocated here, not in the addon: Buffer.allocUnsafe slices node's pool for
  // packet sizes, ~0.4 µs a message cheaper than napi_create_buffer's malloc'd external memory.
  // The addon overwrites every byte of it (or zeroes it when a tag does not verify).
  const impl: NativeTransportAead = {
    importKey: aeadImportKey,
    seal(key, counter, payload, trailer, header) {
      const out = Buffer.allocUnsafe(header.length + payload.length + trailer.length + AEAD_TAG_LEN);
      aeadSeal(key, counter, payload, trailer, header, out);
      return out;
    },
    open(key, counter, sealed) {
      if (sealed.length < AEAD_TAG_LEN) return null;
      const out = Buffer.allocUnsafe(sealed.length - AEAD_TAG_LEN);
      return aeadOpen(key, counter, sealed, out) ? out : null;
    },
  };
  try {
    const raw = randomBytes(32);
    const counter = 0x0102030405060708n;
    const payload = randomBytes(100);
    const header = Buffer.from('header');
    const nonce = Buffer.alloc(12);
    nonce.writeBigUInt64LE(counter, 4);
    const c = createCipheriv('chacha20-poly1305', raw, nonce, { authTagLength: 16 });
    const want = Buffer.concat([header, c.update(payload), c.final(), c.getAuthTag()]);
    const key = impl.importKey(raw);
    const got = impl.seal(key, counter, payload, Buffer.alloc(0), header);
    const back = impl.open(key, counter, got.subarray(header.length));
    if (got.equals(want) && back !== null && back.equals(payload)) aead = impl;
  } catch {
    // Unusable (an OpenSSL without ChaCha20-Poly1305, FIPS mode): node:crypto it is.
  }
  return aead;
}
