/**
 * Initial sequence numbers (RFC 6528): ISN = M + F(4-tuple, secret), M a 4 µs clock and F a
 * keyed hash, so ISNs are unpredictable off-path yet increase for a reused 4-tuple.
 */
import { createHash, randomBytes } from 'node:crypto';

export interface FourTuple {
  readonly localAddr: string;
  readonly localPort: number;
  readonly remoteAddr: string;
  readonly remotePort: number;
}

export type IsnGenerator = (tuple: FourTuple, now: number) => number;

/** An RFC 6528 generator with its own secret (random unless given). `now` in milliseconds. */
export function rfc6528Isn(secret: Buffer = randomBytes(16)): IsnGenerator {
  return (t, now) => {
    const h = createHash('sha256')
      .update(secret)
      .update(`${t.localAddr}|${t.localPort}|${t.remoteAddr}|${t.remotePort}`)
      .digest();
    const m = Math.floor(now * 250) % 0x100000000;
    return (h.readUInt32BE(0) + m) >>> 0;
  };
}

let pool = Buffer.alloc(0);
let poolOff = 0;

/** A random 32-bit value (for timestamp offsets and the default ISN). */
export function randomU32(): number {
  if (poolOff + 4 > pool.length) {
    pool = randomBytes(1024);
    poolOff = 0;
  }
  const v = pool.readUInt32BE(poolOff);
  poolOff += 4;
  return v;
}
