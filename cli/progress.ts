/**
 * Progress where people wait (Tor bootstrap, a VM connecting, capture counters).
 *
 * On a terminal: one line redrawn in place (`\r`, then erase to the end of the line), with a bar
 * when there is a fraction. Elsewhere (a pipe, a file, a log): one plain line per change, never
 * control characters. `null` as the stream: silent (e.g. stdout under --json).
 */

/** What a progress line is written to: process.stdout/stderr, or a test's fake. */
export interface ProgressStream {
  isTTY?: boolean;
  columns?: number;
  write(s: string): unknown;
}

const BAR_WIDTH = 24;
/** Erase from the cursor to the end of the line (ANSI EL). */
const ERASE_EOL = '\x1b[K';

/** `[#########---------------]  37%` for fraction 0.37. */
export function progressBar(fraction: number, width = BAR_WIDTH): string {
  const f = Math.min(1, Math.max(0, Number.isFinite(fraction) ? fraction : 0));
  const n = Math.round(f * width);
  return `[${'#'.repeat(n)}${'-'.repeat(width - n)}] ${String(Math.floor(f * 100)).padStart(3)}%`;
}

export class Progress {
  private readonly tty: boolean;
  /** The text on the terminal's current line (TTY), or the last plain line written. */
  private last: string | undefined;
  private drawn = false;

  constructor(private readonly out: ProgressStream | null) {
    this.tty = out?.isTTY === true;
  }

  /** Whether lines are redrawn in place. */
  get isTTY(): boolean {
    return this.tty;
  }

  /** Shows `text`, with a bar on a terminal when `fraction` (0..1) is given; plain lines only when it changed. */
  update(text: string, fraction?: number): void {
    const out = this.out;
    if (out === null) return;
    if (this.tty) {
      let line = fraction !== undefined ? `${progressBar(fraction)} ${text}` : text;
      // Longer than the terminal, the line would wrap and \r would redraw only its last part.
      const cols = out.columns !== undefined && out.columns > 0 ? out.columns : 80;
      if (line.length > cols - 1) line = `${line.slice(0, Math.max(0, cols - 2))}…`;
      if (line === this.last && this.drawn) return;
      out.write(`\r${line}${ERASE_EOL}`);
      this.last = line;
      this.drawn = true;
      return;
    }
    const line = fraction !== undefined ? `${Math.floor(Math.min(1, Math.max(0, fraction)) * 100)}% ${text}` : text;
    if (line === this.last) return;
    out.write(`${line}\n`);
    this.last = line;
  }

  /** Ends the progress: on a terminal the redrawn line is erased (or replaced by `text`); elsewhere `text` is one more line. */
  done(text?: string): void {
    const out = this.out;
    if (out === null) return;
    if (this.tty) {
      if (this.drawn) out.write(`\r${ERASE_EOL}`);
      this.drawn = false;
      if (text !== undefined) out.write(`${text}\n`);
    } else if (text !== undefined && text !== this.last) out.write(`${text}\n`);
    this.last = undefined;
  }
}

/**
 * The progress of a command that prints its result on stdout: there (a bar on a terminal, plain
 * lines otherwise), or, under --json, only on a terminal's stderr (stdout carries the JSON only).
 */
export function commandProgress(json: boolean, streams: { stdout: ProgressStream; stderr: ProgressStream } = { stdout: process.stdout, stderr: process.stderr }): Progress {
  if (!json) return new Progress(streams.stdout);
  return new Progress(streams.stderr.isTTY === true ? streams.stderr : null);
}

/** Polls `probe` every `intervalMs` until it returns a value, or until `timeoutMs`; resolves with it or undefined. */
export async function pollUntil<T>(probe: () => Promise<T | undefined>, o: { intervalMs: number; timeoutMs: number }): Promise<T | undefined> {
  const deadline = Date.now() + o.timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    const left = deadline - Date.now();
    if (left <= 0) return undefined;
    await new Promise((r) => setTimeout(r, Math.min(o.intervalMs, left)));
  }
}
