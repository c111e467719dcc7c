/**
 * Where `mvnet capture -w FILE` puts the pcapng blocks: one file, or with `--ring N --size MB`
 * N files named as a tee's ring files are (daemon/capture/sink-file.ts): FILE is the one being
 * written, FILE.1 the one before, … FILE.(N-1) the oldest. Before a block would take FILE past
 * the size, FILE.(N-1) is removed, FILE.k becomes FILE.(k+1), FILE becomes FILE.1 and a new FILE
 * begins with the section header and every interface block so far, so each file is a complete
 * pcapng. A file holds at least one block after its preamble, so a packet larger than the size
 * still gets written (that file is then larger than the size).
 *
 * Written synchronously by the CLI process (the user's permissions): the CLI does nothing else
 * meanwhile, and a slow disk shows up at the daemon as a slow reader (capture drops), never as
 * reordering.
 */
import { accessSync, closeSync, constants, openSync, renameSync, statSync, unlinkSync, writevSync } from 'node:fs';
import { dirname } from 'node:path';
import { BLOCK_IDB, BLOCK_SHB } from './pcapng-reader.js';

/** MB as tee rings count it (sink-file.ts): 2^20 bytes. */
export const MB = 1024 * 1024;

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

function reason(err: NodeJS.ErrnoException): string {
  if (err.code === 'EISDIR') return 'is a directory';
  if (err.code === 'ENOENT') return 'its directory does not exist';
  if (err.code === 'EACCES' || err.code === 'EPERM' || err.code === 'EROFS') return 'permission denied';
  return err.message;
}

/**
 * Whether FILE can be written, without touching it: checked before the capture is asked for, so
 * that a capture the daemon refuses leaves an existing file as it was.
 */
export function checkOutput(path: string): void {
  try {
    let exists = true;
    try {
      if (statSync(path).isDirectory()) throw Object.assign(new Error('is a directory'), { code: 'EISDIR' });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      exists = false;
    }
    accessSync(exists ? path : dirname(path), constants.W_OK);
  } catch (e) {
    throw new Error(`cannot write ${path}: ${reason(e as NodeJS.ErrnoException)}`);
  }
}

/** Opens FILE for writing (truncated, created with the umask), with a one-line reason on failure. */
export function openOutput(path: string): number {
  try {
    return openSync(path, 'w', 0o666);
  } catch (e) {
    throw new Error(`cannot write ${path}: ${reason(e as NodeJS.ErrnoException)}`);
  }
}

export class CaptureFiles {
  readonly #base: string;
  readonly #ring: RingOptions | undefined;
  #fd: number;
  /** Files of this run: 1 + rotations, at most ring.files. */
  #kept = 1;
  #size = 0;
  /** Blocks written to the current file after its preamble. */
  #blocks = 0;
  /** SHB + IDBs of the current section, repeated at the start of each ring file. */
  #preamble: Buffer[] = [];

  /** Opens the file at once, so a bad path fails before the capture starts. */
  constructor(base: string, ring?: RingOptions) {
    this.#base = base;
    this.#ring = ring;
    this.#fd = openOutput(base);
  }

  /** The files this run wrote and kept, oldest first (FILE.(k) … FILE.1, FILE). */
  get files(): string[] {
    const out: string[] = [];
    for (let k = this.#kept - 1; k >= 1; k--) out.push(`${this.#base}.${k}`);
    out.push(this.#base);
    return out;
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
    const files = this.#ring!.files;
    closeSync(this.#fd);
    // FILE.(N-2) → FILE.(N-1) (replacing the oldest) … FILE → FILE.1; with N = 1 FILE just starts over.
    for (let i = files - 1; i >= 1; i--) {
      const from = i === 1 ? this.#base : `${this.#base}.${i - 1}`;
      try {
        renameSync(from, `${this.#base}.${i}`);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      }
    }
    if (files <= 1) {
      try {
        unlinkSync(this.#base);
      } catch {
        // removed meanwhile: nothing to replace
      }
    }
    this.#kept = Math.min(this.#kept + 1, files);
    this.#fd = openOutput(this.#base);
    this.#size = 0;
    this.#blocks = 0;
    writeAll(this.#fd, this.#preamble);
    for (const p of this.#preamble) this.#size += p.length;
  }

  close(): void {
    closeSync(this.#fd);
  }
}
