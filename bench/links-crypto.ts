/**
 * Throughput of the link protocol's transport on one core: seal + open (Keypair.seal/open, the
 * code a link runs per frame, over node's chacha20-poly1305) of 1420-byte and 64 KiB payloads,
 * and the raw AEAD alone for comparison. Prints packets/s and Gbit/s of payload, the best of
 * BENCH_ROUNDS (default 3) runs of BENCH_SECONDS each: the machine may be shared.
 *
 *   npx tsc -p tsconfig.build.json && node dist/bench/links-crypto.js
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { decodeTransport } from '../daemon/links/messages.js';
import { Keypair } from '../daemon/links/transport.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 1);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);

function measure(name: string, size: number, fn: () => void): void {
  for (let i = 0; i < 200; i++) fn(); // warm-up
  let pps = 0;
  for (let r = 0; r < ROUNDS; r++) {
    let n = 0;
    const start = process.hrtime.bigint();
    const stop = start + BigInt(SECONDS * 1e9);
    let now = start;
    while (now < stop) {
      for (let i = 0; i < 64; i++) fn();
      n += 64;
      now = process.hrtime.bigint();
    }
    pps = Math.max(pps, n / (Number(now - start) / 1e9));
  }
  console.log(`${name.padEnd(34)} ${String(size).padStart(6)} B  ${Math.round(pps).toString().padStart(9)} /s  ${((pps * size * 8) / 1e9).toFixed(2)} Gbit/s`);
}

const keys = { send: randomBytes(32), recv: randomBytes(32) };
for (const size of [1420, 65536 - 1]) {
  const payload = randomBytes(size);
  const a = new Keypair(keys, 1, 2, true, 0);
  const b = new Keypair({ send: keys.recv, recv: keys.send }, 2, 1, false, 0);
  measure('Keypair seal + open', size, () => {
    const m = decodeTransport(a.seal(payload));
    if (!m.ok || !b.open(m.value).ok) throw new Error('did not open');
  });
  measure('Keypair seal only', size, () => a.seal(payload));
  const key = randomBytes(32);
  const nonce = Buffer.alloc(12);
  measure('raw chacha20-poly1305 enc + dec', size, () => {
    const c = createCipheriv('chacha20-poly1305', key, nonce, { authTagLength: 16 });
    const ct = c.update(payload);
    c.final();
    const tag = c.getAuthTag();
    const d = createDecipheriv('chacha20-poly1305', key, nonce, { authTagLength: 16 });
    d.setAuthTag(tag);
    d.update(ct);
    d.final();
  });
}
