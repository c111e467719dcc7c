/**
 * A tiny Tor control-port client for tests (control-spec.txt): connect over a unix socket or
 * TCP, AUTHENTICATE with the cookie, send commands, receive asynchronous events.
 *
 *   const ctl = await TorControl.connect('/tmp/…/control');
 *   await ctl.authenticateCookie('/tmp/…/control_auth_cookie');
 *   const phase = await ctl.getInfo('status/bootstrap-phase');
 *   await ctl.setEvents(['HS_DESC']);
 *   const ev = await ctl.waitForEvent((e) => e.type === 'HS_DESC' && e.words[1] === 'UPLOADED', { timeoutMs: 20_000 });
 *   ctl.close();
 *
 * Replies come back in command order; `650` replies are events and go to the event listeners
 * instead. A `250+key=` data block (e.g. `GETINFO ns/all`) is returned dot-unstuffed as one
 * entry of `lines` whose text is the `key=` line followed by the data lines.
 */
import net from 'node:net';
import { readFile } from 'node:fs/promises';

/** Where a control port listens: a unix socket path, or host and port. */
export type ControlTarget = string | { host: string; port: number };

/** One complete reply: its status code and its lines (without the `NNN-` prefixes). */
export interface ControlReply {
  status: number;
  lines: string[];
}

/** An asynchronous event (`650 TYPE ...`). */
export interface ControlEvent {
  /** The event type, e.g. `HS_DESC`, `STATUS_CLIENT`, `NEWCONSENSUS`. */
  type: string;
  /** The words after the type on the first line (quoted strings are not re-joined). */
  words: string[];
  /** Every line of the event, as in `ControlReply.lines`. */
  lines: string[];
}

export class TorControlError extends Error {
  constructor(
    readonly reply: ControlReply,
    command: string,
  ) {
    super(`tor control: ${command.split(' ')[0]} failed: ${reply.status} ${reply.lines.join(' | ')}`);
  }
}

interface Pending {
  command: string;
  resolve: (r: ControlReply) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

export class TorControl {
  private buf = '';
  /** Lines of the reply being read. */
  private current: string[] = [];
  /** Inside a `NNN+` data block: its accumulated lines. */
  private data: string[] | null = null;
  private readonly pending: Pending[] = [];
  private readonly listeners = new Set<(e: ControlEvent) => void>();
  private closedError: Error | null = null;

  private constructor(private readonly sock: net.Socket) {
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => this.onData(d));
    const fail = (e: Error): void => {
      this.closedError ??= e;
      for (const p of this.pending.splice(0)) {
        clearTimeout(p.timer);
        p.reject(new Error(`tor control: ${p.command.split(' ')[0]}: ${e.message}`));
      }
    };
    sock.on('error', fail);
    sock.on('close', () => fail(new Error('connection closed')));
  }

  /** Connects (no authentication yet). */
  static connect(target: ControlTarget, opts: { timeoutMs?: number } = {}): Promise<TorControl> {
    const timeoutMs = opts.timeoutMs ?? 5_000;
    return new Promise((resolve, reject) => {
      const sock = typeof target === 'string' ? net.createConnection({ path: target }) : net.createConnection(target);
      const timer = setTimeout(() => {
        sock.destroy();
        reject(new Error(`tor control: connecting to ${JSON.stringify(target)} timed out`));
      }, timeoutMs);
      sock.once('connect', () => {
        clearTimeout(timer);
        sock.removeAllListeners('error');
        resolve(new TorControl(sock));
      });
      sock.once('error', (e) => {
        clearTimeout(timer);
        reject(new Error(`tor control: connecting to ${JSON.stringify(target)}: ${e.message}`));
      });
    });
  }

  /** Connects and authenticates with the cookie file in one go. */
  static async open(target: ControlTarget, cookiePath: string, opts: { timeoutMs?: number } = {}): Promise<TorControl> {
    const ctl = await TorControl.connect(target, opts);
    try {
      await ctl.authenticateCookie(cookiePath);
    } catch (err) {
      ctl.close();
      throw err;
    }
    return ctl;
  }

  /** `AUTHENTICATE <hex of the cookie file>` (CookieAuthentication 1). */
  async authenticateCookie(cookiePath: string): Promise<void> {
    const cookie = await readFile(cookiePath);
    await this.command(`AUTHENTICATE ${cookie.toString('hex')}`);
  }

  /** Sends one command line and resolves with its reply; rejects on a non-2xx status. */
  command(line: string, opts: { timeoutMs?: number } = {}): Promise<ControlReply> {
    if (this.closedError) return Promise.reject(new Error(`tor control: ${this.closedError.message}`));
    if (/[\r\n]/.test(line)) return Promise.reject(new Error('tor control: a command must be one line'));
    const timeoutMs = opts.timeoutMs ?? 10_000;
    return new Promise<ControlReply>((resolve, reject) => {
      const p: Pending = {
        command: line,
        resolve: (r) => {
          if (r.status >= 200 && r.status < 300) resolve(r);
          else reject(new TorControlError(r, line));
        },
        reject,
        timer: setTimeout(() => {
          // The reply may still come; it is then matched to this (dropped) slot, so we must
          // not reuse the connection's ordering: close it.
          reject(new Error(`tor control: ${line.split(' ')[0]} got no reply within ${timeoutMs} ms`));
          this.close();
        }, timeoutMs),
      };
      this.pending.push(p);
      this.sock.write(`${line}\r\n`);
    });
  }

  /** `GETINFO key` → the value (multi-line values joined with "\n"). */
  async getInfo(key: string): Promise<string> {
    const r = await this.command(`GETINFO ${key}`);
    for (const l of r.lines) {
      if (l.startsWith(`${key}=`)) {
        const v = l.slice(key.length + 1);
        // A data block: "key=\n<data>"; a one-line value: "key=value".
        return v.startsWith('\n') ? v.slice(1) : v;
      }
    }
    throw new Error(`tor control: GETINFO ${key}: no value in reply ${JSON.stringify(r.lines)}`);
  }

  /** `SETEVENTS ...` (replaces the set of subscribed events). */
  async setEvents(events: readonly string[]): Promise<void> {
    await this.command(`SETEVENTS ${events.join(' ')}`.trim());
  }

  /** `SIGNAL name` (e.g. NEWNYM, HUP, SHUTDOWN). */
  async signal(name: string): Promise<void> {
    await this.command(`SIGNAL ${name}`);
  }

  /** Calls `listener` for every event. Returns an unsubscribe function. */
  onEvent(listener: (e: ControlEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Resolves with the first future event matching `pred`; rejects after the deadline. */
  waitForEvent(pred: (e: ControlEvent) => boolean, opts: { timeoutMs?: number; what?: string } = {}): Promise<ControlEvent> {
    const timeoutMs = opts.timeoutMs ?? 20_000;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        off();
        reject(new Error(`tor control: no ${opts.what ?? 'matching event'} within ${timeoutMs} ms`));
      }, timeoutMs);
      const off = this.onEvent((e) => {
        if (!pred(e)) return;
        clearTimeout(timer);
        off();
        resolve(e);
      });
    });
  }

  /** Bootstrap progress in percent (from `status/bootstrap-phase`). */
  async bootstrapProgress(): Promise<number> {
    const phase = await this.getInfo('status/bootstrap-phase');
    const m = /PROGRESS=(\d+)/.exec(phase);
    if (!m) throw new Error(`tor control: unexpected bootstrap phase ${JSON.stringify(phase)}`);
    return Number(m[1]);
  }

  close(): void {
    this.sock.destroy();
  }

  private onData(d: string): void {
    this.buf += d;
    for (;;) {
      const nl = this.buf.indexOf('\n');
      if (nl < 0) return;
      const line = this.buf.slice(0, nl).replace(/\r$/, '');
      this.buf = this.buf.slice(nl + 1);
      this.onLine(line);
    }
  }

  private onLine(line: string): void {
    if (this.data !== null) {
      if (line === '.') {
        this.current[this.current.length - 1] += `\n${this.data.join('\n')}`;
        this.data = null;
      } else {
        this.data.push(line.startsWith('..') ? line.slice(1) : line);
      }
      return;
    }
    const m = /^(\d{3})([ +-])(.*)$/.exec(line);
    if (!m) return; // not protocol: ignore
    const status = Number(m[1]);
    const sep = m[2]!;
    this.current.push(m[3]!);
    if (sep === '+') {
      this.data = [];
      return;
    }
    if (sep === '-') return;
    const reply: ControlReply = { status, lines: this.current };
    this.current = [];
    if (status === 650) {
      const first = (reply.lines[0] ?? '').split('\n')[0]!;
      const words = first.split(' ');
      const event: ControlEvent = { type: words[0] ?? '', words: words.slice(1), lines: reply.lines };
      for (const l of [...this.listeners]) l(event);
      return;
    }
    const p = this.pending.shift();
    if (p) {
      clearTimeout(p.timer);
      p.resolve(reply);
    }
  }
}
