/**
 * Persistent onion service identities in tor's own HiddenServiceDir layout, so that a service
 * created through ADD_ONION keeps its address across tor restarts (ADD_ONION services live only
 * as long as the tor process) and the directory stays usable by a plain `HiddenServiceDir`.
 *
 * `hs_ed25519_secret_key` is a 32-byte tag ("== ed25519v1-secret: type0 ==" padded with NULs)
 * followed by the 64-byte expanded ed25519 secret key; ADD_ONION takes the same 64 bytes as
 * "ED25519-V3:<base64>". The key is a secret: it is never logged.
 */
import { mkdir, readFile, rename, writeFile, chmod } from 'node:fs/promises';
import { join } from 'node:path';
import { ONION_ID_RE } from './control.js';

export const SECRET_KEY_FILE = 'hs_ed25519_secret_key';
export const HOSTNAME_FILE = 'hostname';
const SECRET_TAG = '== ed25519v1-secret: type0 ==';
const TAG_LEN = 32;
const KEY_LEN = 64;

export type Ed25519OnionKey = `ED25519-V3:${string}`;

/** The ADD_ONION key for the contents of an `hs_ed25519_secret_key` file. */
export function onionKeyFromFile(buf: Buffer): Ed25519OnionKey {
  const tag = Buffer.alloc(TAG_LEN);
  tag.write(SECRET_TAG, 'latin1');
  if (buf.length !== TAG_LEN + KEY_LEN || !buf.subarray(0, TAG_LEN).equals(tag)) {
    throw new Error(`not a tor ed25519 v3 onion secret key file (expected ${TAG_LEN + KEY_LEN} bytes starting with "${SECRET_TAG}")`);
  }
  return `ED25519-V3:${buf.subarray(TAG_LEN).toString('base64')}`;
}

/** The `hs_ed25519_secret_key` file contents for an ADD_ONION "ED25519-V3:<base64>" key. */
export function onionKeyToFile(key: string): Buffer {
  const m = /^ED25519-V3:([A-Za-z0-9+/]{86}==)$/.exec(key);
  const raw = m ? Buffer.from(m[1]!, 'base64') : Buffer.alloc(0);
  if (raw.length !== KEY_LEN) throw new Error('onion key must be ED25519-V3:<base64 of 64 bytes>');
  const out = Buffer.alloc(TAG_LEN + KEY_LEN);
  out.write(SECRET_TAG, 'latin1');
  raw.copy(out, TAG_LEN);
  return out;
}

/** Reads `<dir>/hs_ed25519_secret_key`; undefined when the directory holds no key yet. */
export async function readOnionKey(dir: string): Promise<Ed25519OnionKey | undefined> {
  let buf: Buffer;
  try {
    buf = await readFile(join(dir, SECRET_KEY_FILE));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new Error(`cannot read onion key in ${dir}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
  try {
    return onionKeyFromFile(buf);
  } catch (e) {
    throw new Error(`${join(dir, SECRET_KEY_FILE)}: ${(e as Error).message}`);
  }
}

/** Writes the key (mode 0600, atomically) and `hostname` into `dir` (created with mode 0700). */
export async function writeOnionKey(dir: string, key: string, serviceId: string): Promise<void> {
  if (!ONION_ID_RE.test(serviceId)) throw new Error(`invalid onion service id ${JSON.stringify(serviceId)}`);
  const data = onionKeyToFile(key);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await chmod(dir, 0o700);
  const tmp = join(dir, `.${SECRET_KEY_FILE}.${process.pid}.tmp`);
  await writeFile(tmp, data, { mode: 0o600 });
  await rename(tmp, join(dir, SECRET_KEY_FILE));
  await writeFile(join(dir, HOSTNAME_FILE), `${serviceId}.onion\n`, { mode: 0o600 });
}
