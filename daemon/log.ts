import pino, { type Logger } from 'pino';

/** Structured JSON logs on stdout (the daemon runs in the foreground under systemd or a test). */
export function createLogger(level: string): Logger {
  return pino({ level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime });
}
export type { Logger };
