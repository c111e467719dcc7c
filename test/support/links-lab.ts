/** Two link devices with fixed keys and deterministic entropy, for the links-* unit tests. */
import { createHash } from 'node:crypto';
import { keyPairFromPrivate, privateKeyFromRaw, type KeyPair } from '../../daemon/links/keys.js';
import { Device, type Entropy, type Peer } from '../../daemon/links/device.js';

/** A key pair from a label: the same label, the same key, every run. */
export function fixedKeyPair(label: string): KeyPair {
  return keyPairFromPrivate(privateKeyFromRaw(createHash('sha256').update(label).digest()));
}

/** Entropy that is a pure function of `label` and a counter. */
export function fixedEntropy(label: string): Entropy {
  let n = 0;
  const next = (what: string): Buffer => createHash('sha256').update(`${label}/${what}/${n++}`).digest();
  return {
    ephemeral: () => fixedKeyPair(next('ephemeral').toString('hex')),
    index: () => next('index').readUInt32LE(0),
    jitter: () => next('jitter').readUInt32LE(0) % 334,
    bytes: (k) => {
      const out = Buffer.alloc(k);
      for (let i = 0; i < k; i += 32) next('bytes').copy(out, i);
      return out;
    },
  };
}

export interface Lab {
  a: Device;
  b: Device;
  /** b as a's peer, a as b's. */
  ab: Peer;
  ba: Peer;
  keysA: KeyPair;
  keysB: KeyPair;
}

export function lab(wallMs = 1_700_000_000_000): Lab {
  const keysA = fixedKeyPair('lab a');
  const keysB = fixedKeyPair('lab b');
  let wall = wallMs;
  // Each initiation gets a later timestamp (TAI64N is whitened to ~16.7 ms).
  const wallClock = (): number => (wall += 20);
  const a = new Device({ privateKey: keysA.privateKey, entropy: fixedEntropy('a'), wallClock });
  const b = new Device({ privateKey: keysB.privateKey, entropy: fixedEntropy('b'), wallClock });
  const ab = a.addPeer({ publicKey: keysB.publicKey });
  const ba = b.addPeer({ publicKey: keysA.publicKey });
  return { a, b, ab, ba, keysA, keysB };
}

/** Runs a's handshake to b at `now`: initiation, response, and the keepalive that confirms it. */
export function handshake(l: Lab, now: number): void {
  const init = l.ab.handshakeInit(now);
  if (init === null) throw new Error('no initiation');
  const r = l.b.receive(init, now, 'a-addr');
  if (r.kind !== 'reply') throw new Error(`initiation: ${JSON.stringify(r.kind === 'drop' ? r.reason : r.kind)}`);
  const r2 = l.a.receive(r.packets[0]!, now, 'b-addr');
  if (r2.kind !== 'reply') throw new Error(`response: ${r2.kind === 'drop' ? r2.reason : r2.kind}`);
  for (const p of r2.packets) {
    const r3 = l.b.receive(p, now, 'a-addr');
    if (r3.kind === 'drop') throw new Error(`confirmation: ${r3.reason}`);
  }
}
