/**
 * Bounded send buffer: the bytes from SND.UNA onward (unacknowledged, then unsent). Data is
 * copied in once, into fixed-size chunks; segments are views (`subarray`) of a chunk, so a
 * segment never crosses a chunk boundary (one shorter segment per chunk at worst). Chunks are
 * taken from and returned to a shared pool, so an idle connection holds no memory and a busy
 * one does not churn the allocator.
 */

export const DEFAULT_CHUNK_SIZE = 64 * 1024;

/** A free list of equally sized buffers, bounded so that it cannot hoard memory. */
export class ChunkPool {
  private readonly free: Buffer[] = [];

  constructor(
    readonly chunkSize: number,
    private readonly maxFree = 256,
  ) {}

  get(): Buffer {
    return this.free.pop() ?? Buffer.allocUnsafeSlow(this.chunkSize);
  }

  put(b: Buffer): void {
    if (this.free.length < this.maxFree) this.free.push(b);
  }

  get idle(): number {
    return this.free.length;
  }
}

const pools = new Map<number, ChunkPool>();

/** The process-wide pool for a chunk size. */
export function sharedPool(chunkSize: number): ChunkPool {
  let p = pools.get(chunkSize);
  if (p === undefined) {
    p = new ChunkPool(chunkSize);
    pools.set(chunkSize, p);
  }
  return p;
}

export class SendBuffer {
  private readonly chunks: Buffer[] = [];
  /** Offset of the first buffered byte in chunks[0]. */
  private head = 0;
  private len = 0;
  private readonly chunkSize: number;

  constructor(
    readonly capacity: number,
    private readonly pool: ChunkPool = sharedPool(DEFAULT_CHUNK_SIZE),
  ) {
    this.chunkSize = pool.chunkSize;
  }

  /** Bytes held (unacknowledged plus unsent). */
  get length(): number {
    return this.len;
  }

  get free(): number {
    return this.capacity - this.len;
  }

  /** Copies as much of `data` as fits; returns how many bytes were taken. */
  write(data: Uint8Array): number {
    const n = Math.min(data.length, this.capacity - this.len);
    const cs = this.chunkSize;
    let src = 0;
    while (src < n) {
      const end = this.head + this.len;
      const ci = Math.floor(end / cs);
      const off = end - ci * cs;
      if (ci === this.chunks.length) this.chunks.push(this.pool.get());
      const k = Math.min(n - src, cs - off);
      this.chunks[ci]!.set(data.subarray(src, src + k), off);
      src += k;
      this.len += k;
    }
    return n;
  }

  /**
   * A view of up to `max` bytes starting `offset` bytes after the first buffered byte. It may
   * be shorter than asked (chunk boundary, end of data); it is valid until those bytes are
   * consumed.
   */
  view(offset: number, max: number): Buffer {
    const cs = this.chunkSize;
    const abs = this.head + offset;
    const ci = Math.floor(abs / cs);
    const off = abs - ci * cs;
    const k = Math.max(0, Math.min(max, this.len - offset, cs - off));
    return this.chunks[ci]!.subarray(off, off + k);
  }

  /** Drops `n` bytes from the front (they were acknowledged). */
  consume(n: number): void {
    if (n <= 0) return;
    if (n > this.len) n = this.len;
    this.head += n;
    this.len -= n;
    const cs = this.chunkSize;
    while (this.head >= cs) {
      this.pool.put(this.chunks.shift()!);
      this.head -= cs;
    }
    if (this.len === 0) this.release();
  }

  /** Returns every chunk to the pool and forgets the content. */
  release(): void {
    for (const c of this.chunks) this.pool.put(c);
    this.chunks.length = 0;
    this.head = 0;
    this.len = 0;
  }
}
