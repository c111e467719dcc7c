/**
 * Structured JSON logs on stdout (the daemon runs in the foreground under systemd or a test);
 * on a terminal, the same records as one readable line each (`--log-format` overrides).
 *
 * Logging must never block or kill the daemon: when stdout is a pipe or socket it is written
 * without blocking through a bounded buffer (a reader that stops reading costs log lines, which
 * are counted, never the daemon's time), and when the reader goes away (EPIPE: `mvnet daemon |
 * head -3`) logging to stdout stops, with one note on stderr. Files and terminals are written
 * directly; an error there also just stops logging.
 */
import fs from 'node:fs';
import net from 'node:net';
import tty from 'node:tty';
import pino, { type Logger } from 'pino';
import { UserError } from './errors.js';

/** Log bytes kept for a slow reader before lines are dropped. */
const MAX_BUFFERED = 1 << 20;

export class LogSink {
  private sock: net.Socket | null = null;
  private dead = false;
  /** Level names in colour: pretty lines on a terminal, unless NO_COLOR is set. */
  private readonly color: boolean;
  /** Lines dropped because the reader was too slow. */
  dropped = 0;

  constructor(
    private readonly fd: number = 1,
    /** Records re-rendered for people (prettyLine); JSON as pino wrote it otherwise. */
    private readonly pretty: boolean = false,
  ) {
    this.color = pretty && tty.isatty(fd) && (process.env.NO_COLOR ?? '') === '';
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
    if (this.pretty) line = prettyLine(line, this.color);
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

export type LogFormat = 'json' | 'pretty';

/** `--log-format`, or pretty when stdout is a terminal and JSON for everything else (services, pipes, files). */
export function logFormat(flag: string | undefined, fd = 1): LogFormat {
  if (flag === 'json' || flag === 'pretty') return flag;
  if (flag !== undefined) throw new UserError(`--log-format must be json or pretty, not '${flag}'`);
  return tty.isatty(fd) ? 'pretty' : 'json';
}

const LEVELS: Record<number, [string, string]> = {
  10: ['TRACE', '90'],
  20: ['DEBUG', '36'],
  30: ['INFO ', '32'],
  40: ['WARN ', '33'],
  50: ['ERROR', '31'],
  60: ['FATAL', '35'],
};

/** A value of a log field as `key=value` shows it: strings bare unless they hold spaces, the rest as JSON. */
function fieldText(v: unknown): string {
  if (typeof v === 'string') return /^[^\s"=]+$/.test(v) ? v : JSON.stringify(v);
  return JSON.stringify(v) ?? String(v);
}

/**
 * One pino JSON line as `HH:MM:SS.mmm LEVEL msg key=value …` (the pid and the date left out:
 * one process, watched now). An `err` with a stack gets it on the following lines. A line that
 * is not a JSON object is passed through.
 */
export function prettyLine(line: string, color: boolean): string {
  let rec: Record<string, unknown>;
  try {
    const v: unknown = JSON.parse(line);
    if (typeof v !== 'object' || v === null || Array.isArray(v)) return line;
    rec = v as Record<string, unknown>;
  } catch {
    return line;
  }
  const { level, time, msg, pid: _pid, hostname: _host, err, ...rest } = rec;
  const [name, code] = LEVELS[typeof level === 'number' ? level : 30] ?? [String(level), '0'];
  const t = typeof time === 'string' ? time.slice(11, 23) : '';
  const fields = Object.entries(rest).map(([k, v]) => `${k}=${fieldText(v)}`);
  let stack = '';
  if (typeof err === 'object' && err !== null) {
    const e = err as { message?: unknown; stack?: unknown };
    fields.push(`err=${fieldText(e.message)}`);
    if (typeof e.stack === 'string') stack = '\n' + e.stack.split('\n').slice(1).join('\n');
  } else if (err !== undefined) {
    fields.push(`err=${fieldText(err)}`);
  }
  const lvl = color ? `\x1b[${code}m${name}\x1b[0m` : name;
  return `${t} ${lvl} ${typeof msg === 'string' ? msg : ''}${fields.length > 0 ? '  ' + fields.join(' ') : ''}${stack}\n`;
}

export function createLogger(level: string, sink: LogSink = new LogSink()): Logger {
  return pino({ level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime }, sink);
}
export type { Logger };
