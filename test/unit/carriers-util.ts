/** Shared by the carriers-*.test.ts files: a silent logger and an inbox that waits for messages. */
import pino from 'pino';
import type { Carrier } from '../../daemon/carriers/types.js';

export const log = pino({ level: 'silent' });

export interface Received {
  msg: Buffer;
  from: string;
}

/** Collects a carrier's messages (copied: they are valid only during the call). */
export class Inbox {
  readonly got: Received[] = [];
  private waiters: { n: number; resolve: () => void }[] = [];

  constructor(c: Carrier) {
    c.onMessage((msg, from) => {
      this.got.push({ msg: Buffer.from(msg), from });
      this.waiters = this.waiters.filter((w) => {
        if (this.got.length < w.n) return true;
        w.resolve();
        return false;
      });
    });
  }

  /** Resolves once `n` messages in all have arrived. */
  count(n: number): Promise<Received[]> {
    if (this.got.length >= n) return Promise.resolve(this.got);
    return new Promise((resolve) => this.waiters.push({ n, resolve: () => resolve(this.got) }));
  }
}

/** A message that says which it is, `size` bytes. */
export function numbered(i: number, size = 100): Buffer {
  const b = Buffer.alloc(size, i & 0xff);
  b.writeUInt32BE(i, 0);
  return b;
}
