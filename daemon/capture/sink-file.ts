/**
 * A tee's pcapng file, confined to the capture directory. The daemon runs as root and must not
 * become a "write any file" oracle: the path is relative to captureDir (no `..`, no empty or dot
 * segments), each directory on the way is opened with O_NOFOLLOW|O_DIRECTORY and the next one
 * looked up through it (/proc/self/fd), and the file itself is opened O_NOFOLLOW|O_NONBLOCK (a
 * FIFO does not hang the daemon) and must be a regular file. It is opened O_APPEND: each run
 * (after a restart, after its VM came back) appends a new section (SHB + IDBs).
 *
 * With `ring` the file rotates: past sizeMb the current file NAME becomes NAME.1, NAME.1 becomes
 * NAME.2 …, NAME.(files-1) is removed, and a new NAME starts with the section header and
 * interfaces again, so each file is a complete pcapng. Writes are asynchronous and bounded
 * (SINK_QUEUE_BYTES); a disk that cannot keep up loses capture packets, counted by the session.
 */
import fs from 'node:fs';
import { SINK_QUEUE_BYTES, type Sink } from './sink.js';
import { UserError } from '../errors.js';

const SEGMENT_RE = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;

/**
 * The path of `to` relative to `captureDir`, checked (a bare name, a relative path, or an
 * absolute path inside captureDir); throws a UserError saying why not.
 */
export function captureRelPath(to: string, captureDir: string): string {
  let rel = to;
  if (to.startsWith('/')) {
    const root = captureDir.endsWith('/') ? captureDir : `${captureDir}/`;
    if (!to.startsWith(root)) throw new UserError(`tee file ${to} is outside the capture directory ${captureDir}; give a name or a path under it`);
    rel = to.slice(root.length);
  }
  const segs = rel.split('/');
  if (rel.length === 0 || rel.length > 1024 || segs.some((s) => s === '..')) throw new UserError(`tee file ${JSON.stringify(to)}: no '..', a name or a path under ${captureDir}`);
  for (const s of segs) if (!SEGMENT_RE.test(s)) throw new UserError(`tee file ${JSON.stringify(to)}: each part a plain name (letters, digits, '.', '_', '-', not starting with '.')`);
  return rel;
}

const O_DIR = fs.constants.O_RDONLY | fs.constants.O_DIRECTORY | fs.constants.O_NOFOLLOW;
const O_FILE = fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_APPEND | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK;

function refuse(what: string, e: unknown): never {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ELOOP' || code === 'ENOTDIR') throw new UserError(`${what} is a symlink or not a directory/file; refused`);
  throw new UserError(`${what}: ${(e as Error).message}`);
}

/** Opens the directory holding `rel` under `captureDir` without following any symlink; returns its fd and the file name. */
function openParent(captureDir: string, rel: string): { dirFd: number; name: string } {
  const segs = rel.split('/');
  const name = segs.pop()!;
  let fd: number;
  try {
    fd = fs.openSync(captureDir, O_DIR);
  } catch (e) {
    refuse(`capture directory ${captureDir}`, e);
  }
  for (const s of segs) {
    let next: number;
    try {
      next = fs.openSync(`/proc/self/fd/${fd}/${s}`, O_DIR);
    } catch (e) {
      fs.closeSync(fd);
      refuse(`${s} in ${rel}`, e);
    }
    fs.closeSync(fd);
    fd = next;
  }
  return { dirFd: fd, name };
}

export interface FileSinkOptions {
  captureDir: string;
  /** Checked by captureRelPath. */
  rel: string;
  ring?: { files: number; sizeMb: number };
  maxQueue?: number;
}

export class FileSink implements Sink {
  readonly format = 'pcapng';
  readonly idle = false;
  onGone: ((why: string, clean: boolean) => void) | null = null;
  private readonly dirFd: number;
  private readonly name: string;
  private fd: number;
  private size: number;
  private preamble: Buffer | null = null;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private inflight = 0;
  private writing = false;
  private error: string | null = null;
  private closeWhenDone = false;
  private closed = false;
  private readonly maxQueue: number;
  private drainWaiters: (() => void)[] = [];

  /** Throws a UserError when the file cannot be opened as asked. */
  constructor(private readonly o: FileSinkOptions) {
    this.maxQueue = o.maxQueue ?? SINK_QUEUE_BYTES;
    const p = openParent(o.captureDir, o.rel);
    this.dirFd = p.dirFd;
    this.name = p.name;
    try {
      this.fd = this.openFile();
    } catch (e) {
      fs.closeSync(this.dirFd);
      throw e;
    }
    this.size = fs.fstatSync(this.fd).size;
  }

  private at(name: string): string {
    return `/proc/self/fd/${this.dirFd}/${name}`;
  }

  private openFile(): number {
    let fd: number;
    try {
      fd = fs.openSync(this.at(this.name), O_FILE, 0o600);
    } catch (e) {
      refuse(`tee file ${this.o.rel}`, e);
    }
    if (!fs.fstatSync(fd).isFile()) {
      fs.closeSync(fd);
      throw new UserError(`tee file ${this.o.rel} is not a regular file; refused`);
    }
    return fd;
  }

  begin(preamble: Buffer): void {
    this.preamble = preamble;
    this.enqueue(preamble);
  }

  room(bytes: number): boolean {
    return this.error === null && !this.closed && this.pendingBytes + this.inflight + bytes <= this.maxQueue;
  }

  write(block: Buffer): boolean {
    if (!this.room(block.length)) return false;
    this.enqueue(block);
    return true;
  }

  private enqueue(b: Buffer): void {
    this.pending.push(b);
    this.pendingBytes += b.length;
    if (!this.writing) this.pump();
  }

  private pump(): void {
    if (this.pending.length === 0 || this.error !== null) {
      this.writing = false;
      if (this.closeWhenDone) this.closeNow();
      for (const w of this.drainWaiters.splice(0)) w();
      return;
    }
    this.writing = true;
    const ring = this.o.ring;
    let batch: Buffer;
    if (ring !== undefined && this.preamble !== null) {
      const limit = ring.sizeMb * 1024 * 1024;
      // Full (and holding more than a section header): the next file starts with one.
      if (this.size > this.preamble.length && this.size + this.pending[0]!.length > limit) {
        if (!this.rotate()) return;
        // The new file starts with the section header (unless the next block is that already).
        if (this.pending[0] !== this.preamble) {
          this.pending.unshift(this.preamble);
          this.pendingBytes += this.preamble.length;
        }
      }
      const take: Buffer[] = [this.pending.shift()!];
      let n = take[0]!.length;
      while (this.pending.length > 0 && this.size + n + this.pending[0]!.length <= limit) {
        n += this.pending[0]!.length;
        take.push(this.pending.shift()!);
      }
      batch = take.length === 1 ? take[0]! : Buffer.concat(take, n);
    } else {
      batch = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending, this.pendingBytes);
      this.pending = [];
    }
    this.pendingBytes -= batch.length;
    this.inflight = batch.length;
    fs.write(this.fd, batch, 0, batch.length, null, (err, written) => {
      this.inflight = 0;
      if (err !== null || written !== batch.length) {
        this.fail(err !== null ? err.message : 'short write');
        return;
      }
      this.size += written;
      this.pump();
    });
  }

  /** NAME → NAME.1 → … ; the oldest goes. Synchronous: metadata only, once per sizeMb. */
  private rotate(): boolean {
    const files = this.o.ring!.files;
    try {
      fs.closeSync(this.fd);
      for (let i = files - 1; i >= 1; i--) {
        const from = i === 1 ? this.name : `${this.name}.${i - 1}`;
        try {
          fs.renameSync(this.at(from), this.at(`${this.name}.${i}`));
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
        }
      }
      if (files <= 1) fs.rmSync(this.at(this.name), { force: true });
      this.fd = this.openFile();
      this.size = 0;
      return true;
    } catch (e) {
      this.fail(`rotating: ${(e as Error).message}`);
      return false;
    }
  }

  private fail(why: string): void {
    this.error = why;
    this.writing = false;
    for (const w of this.drainWaiters.splice(0)) w();
    this.pending = [];
    this.pendingBytes = 0;
    this.onGone?.(`writing ${this.o.rel} failed: ${why}`, false);
  }

  finish(tail: Buffer | null): void {
    if (tail !== null && this.error === null && !this.closed) this.enqueue(tail);
  }

  abort(): void {
    // A tee's file outlives a capture run: nothing to do until close().
  }

  /** Resolves when everything queued so far is written (or failed). */
  drained(): Promise<void> {
    if (!this.writing) return Promise.resolve();
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  /** Writes what is queued, then closes the file; resolves when it is written (the daemon may exit right after). */
  async close(): Promise<void> {
    this.closeWhenDone = true;
    if (!this.writing) this.closeNow();
    else await this.drained();
  }

  private closeNow(): void {
    if (this.closed) return;
    this.closed = true;
    fs.close(this.fd, () => {});
    fs.close(this.dirFd, () => {});
  }

  state(): { state: 'active' | 'error'; detail: string } {
    return this.error !== null ? { state: 'error', detail: `writing ${this.o.rel} failed: ${this.error}` } : { state: 'active', detail: `writing ${this.o.rel}` };
  }
}
