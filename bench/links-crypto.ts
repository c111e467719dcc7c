/**
 * Throughput of the link protocol's transport on one core: seal + open (Keypair.seal/open, the
 * code a link runs per frame) of 1420-byte and 64 KiB payloads, over each transport AEAD —
 * node:crypto's (a cipher object per message, the default of daemon/links) and the native
 * addon's (one EVP context per key, what the daemon uses) — and the raw AEAD alone for
 * comparison. Prints packets/s and Gbit/s of payload, the best of BENCH_ROUNDS (default 3) runs
 * of BENCH_SECONDS each; the rounds of all cases of a size are interleaved, so a load that comes
 * and goes (the machine may be shared) hits them alike.
 *
 *   npx tsc -p tsconfig.build.json && node dist/bench/links-crypto.js
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { decodeTransport } from '../daemon/links/messages.js';
import { Keypair, nodeTransportAead, type TransportAead } from '../daemon/links/transport.js';
import { nativeTransportAead } from '../plugins/native/index.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 1);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);

interface Case {
  name: string;
  fn: () => void;
  pps: number;
}

function round(fn: () => void): number {
  let n = 0;
  const start = process.hrtime.bigint();
  const stop = start + BigInt(SECONDS * 1e9);
  let now = start;
  while (now < stop) {
    for (let i = 0; i < 64; i++) fn();
    n += 64;
    now = process.hrtime.bigint();
  }
  return n / (Number(now - start) / 1e9);
}

function measure(size: number, cases: Case[]): void {
  for (const c of cases) for (let i = 0; i < 200; i++) c.fn(); // warm-up
  for (let r = 0; r < ROUNDS; r++) for (const c of cases) c.pps = Math.max(c.pps, round(c.fn));
  for (const c of cases) {
    console.log(`${c.name.padEnd(40)} ${String(size).padStart(6)} B  ${Math.round(c.pps).toString().padStart(9)} /s  ${((c.pps * size * 8) / 1e9).toFixed(2)} Gbit/s`);
  }
}

const native = nativeTransportAead();
const aeads: [string, TransportAead][] = [['node:crypto', nodeTransportAead]];
if (native) aeads.push(['native', native]);
else console.log('(the native addon has no transport AEAD: node:crypto only)');

const keys = { send: randomBytes(32), recv: randomBytes(32) };
for (const size of [1420, 65536 - 1]) {
  const payload = randomBytes(size);
  const cases: Case[] = [];
  for (const [name, aead] of aeads) {
    const a = new Keypair(keys, 1, 2, true, 0, aead);
    const b = new Keypair({ send: keys.recv, recv: keys.send }, 2, 1, false, 0, aead);
    cases.push({
      name: `Keypair seal + open (${name})`,
      pps: 0,
      fn: () => {
        const m = decodeTransport(a.seal(payload));
        if (!m.ok || !b.open(m.value).ok) throw new Error('did not open');
      },
    });
  }
  for (const [name, aead] of aeads) {
    const a = new Keypair(keys, 1, 2, true, 0, aead);
    cases.push({ name: `Keypair seal only (${name})`, pps: 0, fn: () => a.seal(payload) });
  }
  const key = randomBytes(32);
  const nonce = Buffer.alloc(12);
  cases.push({
    name: 'raw enc + dec (node:crypto)',
    pps: 0,
    fn: () => {
      const c = createCipheriv('chacha20-poly1305', key, nonce, { authTagLength: 16 });
      const ct = c.update(payload);
      c.final();
      const tag = c.getAuthTag();
      const d = createDecipheriv('chacha20-poly1305', key, nonce, { authTagLength: 16 });
      d.setAuthTag(tag);
      d.update(ct);
      d.final();
    },
  });
  if (native) {
    const k = native.importKey(key);
    const empty = Buffer.alloc(0);
    cases.push({
      name: 'raw enc + dec (native)',
      pps: 0,
      fn: () => {
        if (native.open(k, 0n, native.seal(k, 0n, payload, empty, empty)) === null) throw new Error('did not open');
      },
    });
  }
  measure(size, cases);
}
