/**
 * Bounded send buffer: the bytes from SND.UNA onward (unacknowledged, then unsent). Data is
 * copied in once, into chunks; segments are views (`subarray`) of a chunk, so a segment never
 * crosses a chunk boundary (one shorter segment per chunk at worst). Chunks are taken from and
 * returned to shared pools, so an idle connection holds no memory and a busy one does not
 * churn the allocator. The buffer grows on demand: a small write into an empty buffer (a
 * request, a greeting, a keystroke) takes a small chunk, so the many connections that send
 * little hold a few KB each while unacknowledged, not a bulk chunk; bulk data goes to the
 * large chunks. Only the first chunk can be small.
 */

export const DEFAULT_CHUNK_SIZE = 64 * 1024;
/** The chunk for a small write into an empty buffer. */
export const SMALL_CHUNK_SIZE = 4 * 1024;

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
  /** Size of chunks[0] (the small chunk or a large one); every later chunk is `chunkSize`. */
  private first: number;

  constructor(
    readonly capacity: number,
    private readonly pool: ChunkPool = sharedPool(DEFAULT_CHUNK_SIZE),
    private readonly smallPool: ChunkPool | null = pool.chunkSize > SMALL_CHUNK_SIZE ? sharedPool(SMALL_CHUNK_SIZE) : null,
  ) {
    this.chunkSize = pool.chunkSize;
    this.first = this.chunkSize;
  }

  /** Bytes of chunk memory held. */
  get allocated(): number {
    const n = this.chunks.length;
    return n === 0 ? 0 : this.first + (n - 1) * this.chunkSize;
  }

  /** Chunk index and offset in it of byte `abs` (counted from the start of chunks[0]). */
  private locate(abs: number): [number, number] {
    const f = this.first;
    if (abs < f) return [0, abs];
    const cs = this.chunkSize;
    const ci = 1 + Math.floor((abs - f) / cs);
    return [ci, abs - f - (ci - 1) * cs];
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
    if (n > 0 && this.chunks.length === 0) {
      const small = this.smallPool !== null && n <= this.smallPool.chunkSize;
      this.chunks.push(small ? this.smallPool.get() : this.pool.get());
      this.first = small ? this.smallPool.chunkSize : this.chunkSize;
    }
    let src = 0;
    while (src < n) {
      const [ci, off] = this.locate(this.head + this.len);
      if (ci === this.chunks.length) this.chunks.push(this.pool.get());
      const k = Math.min(n - src, (ci === 0 ? this.first : this.chunkSize) - off);
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
    const [ci, off] = this.locate(this.head + offset);
    const k = Math.max(0, Math.min(max, this.len - offset, (ci === 0 ? this.first : this.chunkSize) - off));
    return this.chunks[ci]!.subarray(off, off + k);
  }

  /** Drops `n` bytes from the front (they were acknowledged). */
  consume(n: number): void {
    if (n <= 0) return;
    if (n > this.len) n = this.len;
    this.head += n;
    this.len -= n;
    while (this.chunks.length > 0 && this.head >= this.first) {
      this.put(this.chunks.shift()!);
      this.head -= this.first;
      this.first = this.chunkSize;
    }
    if (this.len === 0) this.release();
  }

  private put(c: Buffer): void {
    if (c.length === this.chunkSize) this.pool.put(c);
    else this.smallPool?.put(c);
  }

  /** Returns every chunk to its pool and forgets the content. */
  release(): void {
    for (const c of this.chunks) this.put(c);
    this.chunks.length = 0;
    this.head = 0;
    this.len = 0;
    this.first = this.chunkSize;
  }
}
