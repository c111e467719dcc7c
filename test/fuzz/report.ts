/** What one fuzz run reports: inputs run, crashes, and the first few crashes with their seeds. */
export interface Crash {
  /** Replays this input alone (add it to seeds.json to keep it as a regression case). */
  seed: number;
  where: string;
  error: string;
  /** The input: hex (wire), "vm<i> hex hex..." (ingress) or the request line (control); whole, for seeds.json. */
  input: string;
}

export interface FuzzReport {
  target: string;
  ran: number;
  crashed: number;
  crashes: Crash[];
  ms: number;
  /** Counters showing how deep the inputs went (ingress). */
  coverage?: Record<string, number>;
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
  const cov = r.coverage !== undefined ? [`  reached: ${Object.entries(r.coverage).filter(([, v]) => typeof v === 'number' && v > 0).map(([k, v]) => `${k} ${v}`).join(', ')}`] : [];
  return [head, ...cov, ...r.crashes.map((c) => `  seed ${c.seed}: ${c.where}: ${c.error}\n    input ${c.input.length > 600 ? `${c.input.slice(0, 600)}...` : c.input}`)].join('\n');
}
