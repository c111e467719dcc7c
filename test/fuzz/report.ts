/** What one fuzz run reports: inputs run, crashes, and the first few crashes with their seeds. */
export interface Crash {
  /** Replays this input alone (add it to seeds.json to keep it as a regression case). */
  seed: number;
  where: string;
  error: string;
  /** The input, hex (frames) or text (requests), cut to 512 characters. */
  input: string;
}

export interface FuzzReport {
  target: string;
  ran: number;
  crashed: number;
  crashes: Crash[];
  ms: number;
}

/** Crashes kept in a report (the count goes on). */
export const KEEP_CRASHES = 20;

export function errorText(e: unknown): string {
  if (e instanceof Error) return `${e.name}: ${e.message}${e.stack !== undefined ? ` @ ${e.stack.split('\n').slice(1, 4).map((l) => l.trim()).join(' < ')}` : ''}`;
  return String(e);
}

export function summary(r: FuzzReport): string {
  const rate = r.ms > 0 ? Math.round((r.ran * 1000) / r.ms) : 0;
  const head = `fuzz ${r.target}: ${r.ran} inputs, ${r.crashed} crashed, ${(r.ms / 1000).toFixed(1)} s, ${rate} inputs/s`;
  return [head, ...r.crashes.map((c) => `  seed ${c.seed}: ${c.where}: ${c.error}\n    input ${c.input}`)].join('\n');
}
