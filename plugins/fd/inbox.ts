/**
 * The daemon's half of `--fd N` (see pass.ts): descriptors that callers sent with SCM_RIGHTS,
 * held by token until `vm.attach` claims one. Only descriptors that are connected unix stream
 * sockets or FIFOs are kept (the type is checked natively on receipt; anything else is closed at
 * once and its token remembers why). Unclaimed descriptors are closed after `ttlMs`; at most
 * `max` are held (the oldest goes first), so a flood of them cannot exhaust the daemon's fds.
 */
import fs from 'node:fs';
import type { Logger } from 'pino';
import { native } from '../native/index.js';
import type { NativeFdInbox } from '../native/index.js';

interface Held {
  fd: number;
  /** Why the descriptor sent with this token was refused (it is closed already). */
  refused?: string;
  expires: number;
}

export interface FdInboxOptions {
  log: Logger;
  ttlMs: number;
  /** Descriptors held at once; default 64. */
  max?: number;
}

/** Messages read per poll wakeup; the poll is level-triggered, so the rest comes next turn. */
const BATCH = 64;
/** Everything queued (receive stops at the first EAGAIN). */
const ALL = 0xffffffff;

export class FdInbox {
  private inbox: NativeFdInbox | null = null;
  private readonly held = new Map<string, Held>();
  private sweep: NodeJS.Timeout | null = null;
  private bound: { path: string; ino: number } | null = null;

  constructor(private readonly opts: FdInboxOptions) {}

  /**
   * Binds the fd socket at `path` with the owner, group and mode of `like` (the control socket,
   * which this daemon holds). A dead socket at `path` is replaced; a live one or a file is not.
   */
  listen(path: string, like: string): void {
    const ref = fs.statSync(like);
    // Created under a umask, so the socket is never more open than 0660, even for a moment.
    const mask = process.umask(0o117);
    try {
      this.inbox = new native.FdInbox({ path, onReadable: (ok) => this.onReadable(ok) });
    } catch (e) {
      const code = (e as { code?: unknown }).code;
      if (code === 'EADDRINUSE') throw new Error(`${path} is a live socket (another daemon's?); not replacing it`);
      if (code === 'EEXIST') throw new Error(`${path} exists and is not a socket; not replacing it`);
      throw e;
    } finally {
      process.umask(mask);
    }
    const st = fs.lstatSync(path);
    this.bound = { path, ino: st.ino };
    fs.lchownSync(path, ref.uid, ref.gid);
    fs.chmodSync(path, ref.mode & 0o660);
  }

  private onReadable(ok: boolean): void {
    if (!ok) this.opts.log.warn('polling the fd socket failed; draining it');
    this.drain(BATCH);
  }

  private drain(limit: number): void {
    if (this.inbox === null) return;
    let got: ReturnType<NativeFdInbox['receive']>;
    try {
      got = this.inbox.receive(limit);
    } catch (e) {
      this.opts.log.error({ err: (e as Error).message }, 'reading the fd socket failed');
      return;
    }
    const now = performance.now();
    for (const r of got) {
      const id = r.token.slice(0, 8);
      if (this.held.has(r.token)) {
        // A token names one descriptor; a second one under it is refused, the first kept.
        if (r.fd >= 0) closeQuietly(r.fd);
        this.opts.log.warn({ token: id }, 'a second descriptor came with a token in use; closed it');
        continue;
      }
      if ('refused' in r) {
        this.opts.log.warn({ token: id, refused: r.refused }, 'refused a passed descriptor');
        this.held.set(r.token, { fd: -1, refused: r.refused, expires: now + this.opts.ttlMs });
      } else {
        this.held.set(r.token, { fd: r.fd, expires: now + this.opts.ttlMs });
      }
      const max = this.opts.max ?? 64;
      while (this.held.size > max) {
        const [token, h] = this.held.entries().next().value as [string, Held];
        this.held.delete(token);
        if (h.fd >= 0) closeQuietly(h.fd);
        this.opts.log.warn({ token: token.slice(0, 8) }, 'too many passed descriptors held; closed the oldest');
      }
    }
    if (this.held.size > 0 && this.sweep === null) {
      this.sweep = setInterval(() => this.expire(), Math.min(this.opts.ttlMs, 1000));
      this.sweep.unref();
    }
  }

  private expire(): void {
    const now = performance.now();
    for (const [token, h] of this.held) {
      if (h.expires > now) continue;
      this.held.delete(token);
      if (h.fd >= 0) {
        closeQuietly(h.fd);
        this.opts.log.info({ token: token.slice(0, 8) }, 'a passed descriptor was not claimed in time; closed it');
      }
    }
    if (this.held.size === 0 && this.sweep !== null) {
      clearInterval(this.sweep);
      this.sweep = null;
    }
  }

  /**
   * The descriptor sent with `token`, now the caller's to close; the token is used up. Throws
   * an Error saying why when there is none. Messages still queued are read first: the caller's
   * sendmsg() completed before it sent the request.
   */
  take(token: string): number {
    this.drain(ALL);
    const h = this.held.get(token);
    if (h === undefined) throw new Error('no descriptor is waiting under that token (never sent, already used, or expired); pass it again with --fd');
    this.held.delete(token);
    if (h.refused !== undefined) throw new Error(`the descriptor passed is ${h.refused}; --fd takes a connected unix stream socket or a FIFO`);
    return h.fd;
  }

  /** Closes the descriptor held under `token`, if any (the request naming it failed). */
  discard(token: string): void {
    this.drain(ALL);
    const h = this.held.get(token);
    if (h === undefined) return;
    this.held.delete(token);
    if (h.fd >= 0) closeQuietly(h.fd);
  }

  /** Closes every held descriptor and the socket, and removes the socket file if it is still ours. */
  close(): void {
    if (this.sweep !== null) clearInterval(this.sweep);
    this.sweep = null;
    for (const h of this.held.values()) if (h.fd >= 0) closeQuietly(h.fd);
    this.held.clear();
    this.inbox?.close();
    this.inbox = null;
    if (this.bound !== null) {
      try {
        const st = fs.lstatSync(this.bound.path);
        if (st.isSocket() && st.ino === this.bound.ino) fs.rmSync(this.bound.path);
      } catch {
        // already gone
      }
      this.bound = null;
    }
  }
}

function closeQuietly(fd: number): void {
  try {
    fs.closeSync(fd);
  } catch {
    // not open any more: nothing to release
  }
}
