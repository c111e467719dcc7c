/**
 * A small seeded PRNG (splitmix32 to seed, xorshift128 to run) so that every fuzz input is a
 * pure function of (seed, index): a crash is replayed from its seed alone (see seeds.json).
 */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number) {
    let s = seed >>> 0;
    const next = (): number => {
      s = (s + 0x9e3779b9) >>> 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = next() || 1;
    this.b = next();
    this.c = next();
    this.d = next();
  }

  /** 32 random bits. */
  u32(): number {
    const t = this.a ^ (this.a << 11);
    this.a = this.b;
    this.b = this.c;
    this.c = this.d;
    this.d = (this.d ^ (this.d >>> 19) ^ (t ^ (t >>> 8))) >>> 0;
    return this.d;
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return n <= 1 ? 0 : this.u32() % n;
  }

  bool(p = 0.5): boolean {
    return this.u32() / 0x1_0000_0000 < p;
  }

  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }

  bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    let i = 0;
    for (; i + 4 <= n; i += 4) b.writeUInt32LE(this.u32(), i);
    for (; i < n; i++) b[i] = this.u32() & 0xff;
    return b;
  }
}

/** The seed of input `i` of a run seeded `seed` (each input replayable on its own). */
export function inputSeed(seed: number, i: number): number {
  return (Math.imul(seed >>> 0, 0x9e3779b1) ^ Math.imul(i + 1, 0x85ebca77)) >>> 0;
}

/** Values that sit on the edges of length and offset checks. */
const INTERESTING = [0, 1, 2, 3, 4, 5, 7, 8, 0x0f, 0x10, 0x14, 0x28, 0x3f, 0x40, 0x7f, 0x80, 0xfe, 0xff];
const INTERESTING16 = [0, 1, 8, 20, 40, 0x5db, 0x5dc, 0x5dd, 0x5ee, 0x7fff, 0x8000, 0xfff8, 0xfffe, 0xffff];

/**
 * A mutated copy of `b`: bit flips, interesting bytes and 16-bit words, truncation, growth,
 * deletion, duplication and random splices, 1 to 8 of them.
 */
export function mutate(rng: Rng, b: Buffer): Buffer {
  let x = Buffer.from(b);
  const n = 1 + rng.int(8);
  for (let k = 0; k < n; k++) {
    const op = rng.int(10);
    const at = rng.int(Math.max(1, x.length));
    switch (op) {
      case 0:
      case 1:
        if (x.length > 0) x[at] = x[at]! ^ (1 << rng.int(8));
        break;
      case 2:
        if (x.length > 0) x[at] = rng.pick(INTERESTING);
        break;
      case 3:
        if (x.length > 1) x.writeUInt16BE(rng.pick(INTERESTING16), Math.min(at, x.length - 2));
        break;
      case 4:
        x = x.subarray(0, rng.int(x.length + 1));
        break;
      case 5:
        x = Buffer.concat([x, rng.bytes(1 + rng.int(64))]);
        break;
      case 6: {
        const len = rng.int(Math.min(32, x.length - at) + 1);
        x = Buffer.concat([x.subarray(0, at), x.subarray(at + len)]);
        break;
      }
      case 7: {
        const len = rng.int(Math.min(32, x.length - at) + 1);
        x = Buffer.concat([x.subarray(0, at + len), x.subarray(at, at + len), x.subarray(at + len)]);
        break;
      }
      case 8:
        if (x.length > 0) x[at] = rng.u32() & 0xff;
        break;
      default: {
        const len = 1 + rng.int(16);
        x = Buffer.concat([x.subarray(0, at), rng.bytes(len), x.subarray(at)]);
      }
    }
  }
  return x;
}
