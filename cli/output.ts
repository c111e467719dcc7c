/** People get aligned tables; programs get `--json`. */
import type { Ctx } from './context.js';
import { safeLines, safeText } from './text.js';

/** Cells are one line each: any control character in one (the daemon's text) is shown as `\xNN`. */
export function table(headers: string[], rows: (string | number)[][]): string {
  const cells = [headers, ...rows.map((r) => r.map((c) => safeText(String(c))))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  return cells.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n');
}

/**
 * A listing or other data asked for: JSON under --json, else the text (never hushed by --quiet).
 * The text passes through safeLines: whatever field of the daemon's it holds, no control
 * character reaches the terminal.
 */
export function print(json: boolean, data: unknown, human: () => string): void {
  process.stdout.write(json ? JSON.stringify(data, null, 2) + '\n' : safeLines(human()) + '\n');
}

/** A change's confirmation: JSON under --json, nothing under --quiet, else the line. */
export function confirm(ctx: Ctx, data: unknown, human: () => string): void {
  if (!ctx.json() && ctx.quiet()) return;
  print(ctx.json(), data, human);
}

export function drops(d: Record<string, number | undefined>): string {
  const parts = Object.entries(d)
    .filter(([, v]) => (v ?? 0) > 0)
    .map(([k, v]) => `${k}=${v}`);
  return parts.length > 0 ? parts.join(',') : '-';
}
