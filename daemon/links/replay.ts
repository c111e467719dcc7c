/**
 * The receive counter window of one session (RFC 6479): a ring of 256 32-bit words, 8192 bits,
 * of which WINDOW = 8160 counters behind the highest one accepted are tracked exactly. Moving
 * forward clears whole words rather than shifting bits, so each packet costs O(1) (at most the
 * ring once after a jump). Counters are bigints (they run to 2^64); only their low bits index
 * the ring.
 */
const WORD_BITS = 32;
const WORDS = 256;
const RING_BITS = WORD_BITS * WORDS;
/** Counters up to this far behind the highest accepted are still accepted once. */
export const WINDOW = RING_BITS - WORD_BITS;
/** WireGuard's REJECT_AFTER_MESSAGES: counters at or above it are never accepted. */
export const REJECT_AFTER_MESSAGES = 2n ** 64n - 2n ** 13n - 1n;

const RING_MASK = BigInt(WORDS - 1);

export class ReplayWindow {
  private readonly ring = new Uint32Array(WORDS);
  /** Highest counter accepted, plus one (0: none yet), so counter 0 is an ordinary counter. */
  private last = 0n;

  /**
   * Whether `counter` could still be accepted: not too old, not seen. Changes nothing, so it can
   * run before the packet is authenticated (a replay then costs no decryption).
   */
  check(counter: bigint): boolean {
    if (counter >= REJECT_AFTER_MESSAGES) return false;
    const c = counter + 1n;
    if (c + BigInt(WINDOW) < this.last) return false;
    if (c > this.last) return true;
    return (this.ring[Number((c >> 5n) & RING_MASK)]! & (1 << Number(c & 31n))) === 0;
  }

  /**
   * Accepts `counter` (true) or refuses it as replayed or too old (false). Call only once the
   * packet is authenticated: a forged counter must not move the window.
   */
  update(counter: bigint): boolean {
    if (counter >= REJECT_AFTER_MESSAGES) return false;
    const c = counter + 1n;
    if (c + BigInt(WINDOW) < this.last) return false;
    const index = c >> 5n;
    if (c > this.last) {
      const current = this.last >> 5n;
      const diff = index - current;
      const top = diff > BigInt(WORDS) ? WORDS : Number(diff);
      for (let i = 1; i <= top; i++) this.ring[Number((current + BigInt(i)) & RING_MASK)] = 0;
      this.last = c;
    }
    const w = Number(index & RING_MASK);
    const bit = 1 << Number(c & 31n);
    if ((this.ring[w]! & bit) !== 0) return false;
    this.ring[w] = this.ring[w]! | bit;
    return true;
  }

  /** The highest counter accepted, or -1n before the first. */
  highest(): bigint {
    return this.last - 1n;
  }
}
