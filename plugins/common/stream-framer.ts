/**
 * QEMU's stream framing (`-netdev stream`, `-netdev socket`): every frame is preceded by its
 * length as a 4-byte big-endian integer, no padding. A read may hold several frames or part of
 * one. Frames wholly inside a chunk are passed as views; only a frame split over reads is copied.
 */
export type FramerResult = 'ok' | 'bad-length';

export class StreamFramer {
  private readonly hdr = Buffer.alloc(4);
  private hdrHave = 0;
  /** Frame being assembled across chunks (null between frames). */
  private partial: Buffer | null = null;
  private partialHave = 0;
  private readonly out: Buffer[] = [];
  /** Length of the last rejected prefix, for the log. */
  badLength = 0;

  constructor(
    private readonly minFrame: number,
    private readonly maxFrame: number,
  ) {}

  /** Parses a chunk; hands complete frames to `emit` in one batch. Stops at a bad length prefix. */
  push(chunk: Buffer, emit: (frames: readonly Buffer[]) => void): FramerResult {
    const out = this.out;
    out.length = 0;
    let pos = 0;
    const n = chunk.length;
    let result: FramerResult = 'ok';
    while (pos < n) {
      if (this.partial !== null) {
        const want = this.partial.length - this.partialHave;
        const take = Math.min(want, n - pos);
        chunk.copy(this.partial, this.partialHave, pos, pos + take);
        this.partialHave += take;
        pos += take;
        if (this.partialHave === this.partial.length) {
          out.push(this.partial);
          this.partial = null;
        }
        continue;
      }
      let len: number;
      if (this.hdrHave === 0 && n - pos >= 4) {
        len = chunk.readUInt32BE(pos);
        pos += 4;
      } else {
        while (this.hdrHave < 4 && pos < n) this.hdr[this.hdrHave++] = chunk[pos++]!;
        if (this.hdrHave < 4) break;
        this.hdrHave = 0;
        len = this.hdr.readUInt32BE(0);
      }
      if (len < this.minFrame || len > this.maxFrame) {
        this.badLength = len;
        result = 'bad-length';
        break;
      }
      if (n - pos >= len) {
        out.push(chunk.subarray(pos, pos + len));
        pos += len;
      } else {
        this.partial = Buffer.allocUnsafe(len);
        this.partialHave = 0;
      }
    }
    if (out.length > 0) emit(out);
    out.length = 0;
    return result;
  }

  reset(): void {
    this.hdrHave = 0;
    this.partial = null;
    this.partialHave = 0;
  }
}

/** One buffer holding every frame of the batch with its length prefix: one write per batch. */
export function encodeStreamBatch(frames: readonly Buffer[], count: number): Buffer {
  let total = 0;
  for (let i = 0; i < count; i++) total += 4 + frames[i]!.length;
  const buf = Buffer.allocUnsafe(total);
  let pos = 0;
  for (let i = 0; i < count; i++) {
    const f = frames[i]!;
    buf.writeUInt32BE(f.length, pos);
    f.copy(buf, pos + 4);
    pos += 4 + f.length;
  }
  return buf;
}
