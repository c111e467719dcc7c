/**
 * Structured JSON logs on stdout (the daemon runs in the foreground under systemd or a test).
 *
 * Logging must never block or kill the daemon: when stdout is a pipe or socket it is written
 * without blocking through a bounded buffer (a reader that stops reading costs log lines, which
 * are counted, never the daemon's time), and when the reader goes away (EPIPE: `mvnet daemon |
 * head -3`) logging to stdout stops, with one note on stderr. Files and terminals are written
 * directly; an error there also just stops logging.
 */
import fs from 'node:fs';
import net from 'node:net';
import pino, { type Logger } from 'pino';

/** Log bytes kept for a slow reader before lines are dropped. */
const MAX_BUFFERED = 1 << 20;

export class LogSink {
  private sock: net.Socket | null = null;
  private dead = false;
  /** Lines dropped because the reader was too slow. */
  dropped = 0;

  constructor(private readonly fd: number = 1) {
    let st: fs.Stats | null = null;
    try {
      st = fs.fstatSync(fd);
    } catch {
      this.dead = true;
    }
    if (st !== null && (st.isFIFO() || st.isSocket())) {
      // libuv makes the descriptor non-blocking; writes queue in userland instead of blocking.
      const s = new net.Socket({ fd, readable: false, writable: true });
      s.on('error', (e: NodeJS.ErrnoException) => this.stop(e.code ?? e.message));
      // The log stream must not keep the process alive on its own.
      s.unref();
      this.sock = s;
    }
  }

  /** Whether stdout still takes lines. */
  get open(): boolean {
    return !this.dead;
  }

  write(line: string): void {
    if (this.dead) return;
    if (this.sock !== null) {
      if (this.sock.writableLength + line.length > MAX_BUFFERED) {
        this.dropped++;
        return;
      }
      this.sock.write(line);
      return;
    }
    try {
      fs.writeSync(this.fd, line);
    } catch (e) {
      this.stop((e as NodeJS.ErrnoException).code ?? (e as Error).message);
    }
  }

  private stop(why: string): void {
    if (this.dead) return;
    this.dead = true;
    this.sock?.destroy();
    try {
      fs.writeSync(2, `mvnet: stdout is gone (${why}); logging stopped, the daemon keeps running\n`);
    } catch {
      // stderr is gone too: nothing left to tell.
    }
  }

  /** Resolves once what was logged is written, or after `timeoutMs` (a reader that never reads cannot hold up a shutdown). */
  drain(timeoutMs = 1000): Promise<void> {
    const s = this.sock;
    if (this.dead || s === null || s.writableLength === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        s.off('drain', done);
        s.off('close', done);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      s.once('drain', done);
      s.once('close', done);
    });
  }
}

export function createLogger(level: string, sink: LogSink = new LogSink()): Logger {
  return pino({ level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime }, sink);
}
export type { Logger };
