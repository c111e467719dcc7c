import { describe, expect, it } from 'vitest';
import { Net, Rng } from './tcp-link.js';

describe('tcp under randomized link conditions', () => {
  it('40 seeded runs (loss up to 20%, jitter, reordering, duplicates, odd MSS, wrap): data intact, both ends close', () => {
    for (let seed = 1; seed <= 40; seed++) {
      const loss = [0.01, 0.05, 0.1, 0.2][seed % 4]!;
      const sack = seed % 3 !== 0;
      const timestamps = seed % 5 !== 0;
      const net = new Net({
        link: { delay: 1 + (seed % 7), jitter: seed % 2 ? 3 : 0, loss, reorder: 0.05, dup: 0.02, seed },
        a: { sack, timestamps, rcvBuf: 16384 * (1 + (seed % 5)), isn: () => (0xffffffff - seed * 1000) >>> 0 },
        b: { sack, timestamps, mss: 536 + seed * 20, userTimeout: 600_000 },
      });
      const rng = new Rng(seed);
      const ab = rng.bytes(300_000 + seed * 1000);
      const ba = rng.bytes(200_000);
      net.establish(100_000);
      net.a.send(ab, true);
      net.b.send(ba, true);
      net.runUntil(() => net.a.ended && net.b.ended, 20_000_000, `seed ${seed}`);
      expect(net.b.data().equals(ab), `seed ${seed}`).toBe(true);
      expect(net.a.data().equals(ba), `seed ${seed}`).toBe(true);
      net.runTo(net.now + 1_000_000);
      // Both gone; a LAST-ACK end may be reset if every re-ACK of its FIN was lost for 2·MSL.
      expect(net.a.closeReason, `seed ${seed}`).not.toBeNull();
      expect(net.b.closeReason, `seed ${seed}`).not.toBeNull();
      expect([net.a.closeReason, net.b.closeReason], `seed ${seed}`).toContain('normal');
    }
  });
});
