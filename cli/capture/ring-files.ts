/**
 * Where `mvnet capture -w FILE` puts the pcapng blocks: one file, or with `--ring N --size MB`
 * files FILE.0, FILE.1, FILE.2, … numbered in the order written, each a complete pcapng (the
 * section header and every interface block so far repeated at its start), a new one begun before
 * a block would take the current one past the size, and only the newest N kept (the oldest is
 * removed when file N+1 is begun). A file holds at least one block after its preamble, so a
 * packet larger than the size still gets written (that file is then larger than the size).
 *
 * Written synchronously by the CLI process (the user's permissions): the CLI does nothing else
 * meanwhile, and a slow disk shows up at the daemon as a slow reader (capture drops), never as
 * reordering.
 */
import { closeSync, openSync, unlinkSync, writevSync } from 'node:fs';
import { BLOCK_IDB, BLOCK_SHB } from './pcapng-reader.js';

/** MB as tcpdump -C counts it. */
export const MB = 1_000_000;

export interface RingOptions {
  readonly files: number;
  readonly sizeBytes: number;
}

/** writev until every byte is out (a regular file takes all at once; anything else may not). */
function writeAll(fd: number, bufs: Buffer[]): void {
  let left = bufs.reduce((n, b) => n + b.length, 0);
  while (left > 0) {
    let n = writevSync(fd, bufs);
    left -= n;
    if (left === 0) break;
    const rest: Buffer[] = [];
    for (const b of bufs) {
      if (n >= b.length) n -= b.length;
      else {
        rest.push(n > 0 ? b.subarray(n) : b);
        n = 0;
      }
    }
    bufs = rest;
  }
}

/** Opens FILE for writing (truncated, created with the umask), with a one-line reason on failure. */
export function openOutput(path: string): number {
  try {
    return openSync(path, 'w', 0o666);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    const why =
      err.code === 'EISDIR'
        ? 'is a directory'
        : err.code === 'ENOENT'
          ? 'its directory does not exist'
          : err.code === 'EACCES' || err.code === 'EPERM'
            ? 'permission denied'
            : err.message;
    throw new Error(`cannot write ${path}: ${why}`);
  }
}

export class CaptureFiles {
  readonly #base: string;
  readonly #ring: RingOptions | undefined;
  #fd: number;
  #seq = 0;
  #size = 0;
  /** Blocks written to the current file after its preamble. */
  #blocks = 0;
  /** SHB + IDBs of the current section, repeated at the start of each ring file. */
  #preamble: Buffer[] = [];
  readonly #written: string[] = [];

  /** Opens the first file at once, so a bad path fails before the capture starts. */
  constructor(base: string, ring?: RingOptions) {
    this.#base = base;
    this.#ring = ring;
    const first = this.#name(0);
    this.#fd = openOutput(first);
    this.#written.push(first);
  }

  /** Every file written so far, oldest first (removed ones excluded). */
  get files(): readonly string[] {
    return this.#written;
  }

  #name(seq: number): string {
    return this.#ring ? `${this.#base}.${seq}` : this.#base;
  }

  /** Writes whole blocks, in one system call per file (types given so the preamble is kept for the next ring file). */
  write(blocks: readonly { type: number; bytes: Buffer }[]): void {
    let batch: Buffer[] = [];
    for (const { type, bytes } of blocks) {
      if (type === BLOCK_SHB) this.#preamble = [Buffer.from(bytes)];
      else if (type === BLOCK_IDB) this.#preamble.push(Buffer.from(bytes));
      else if (this.#ring && this.#blocks > 0 && this.#size + bytes.length > this.#ring.sizeBytes) {
        writeAll(this.#fd, batch);
        batch = [];
        this.#rotate();
      }
      batch.push(bytes);
      this.#size += bytes.length;
      if (type !== BLOCK_SHB && type !== BLOCK_IDB) this.#blocks++;
    }
    if (batch.length > 0) writeAll(this.#fd, batch);
  }

  #rotate(): void {
    const ring = this.#ring!;
    closeSync(this.#fd);
    this.#seq++;
    const name = this.#name(this.#seq);
    this.#fd = openOutput(name);
    this.#written.push(name);
    while (this.#written.length > ring.files) {
      const old = this.#written.shift()!;
      try {
        unlinkSync(old);
      } catch {
        // already gone (removed by the user): nothing to keep track of
      }
    }
    this.#size = 0;
    this.#blocks = 0;
    writeAll(this.#fd, this.#preamble);
    for (const p of this.#preamble) this.#size += p.length;
  }

  close(): void {
    closeSync(this.#fd);
  }
}
