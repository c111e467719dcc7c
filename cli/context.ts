import type { Command } from 'commander';
import { call, DEFAULT_SOCKET, DEFAULT_TIMEOUT_SEC, UsageError, type CallOptions } from './client.js';

export { DEFAULT_SOCKET } from './client.js';

/** Global options as every subcommand sees them. */
export interface Ctx {
  socket(): string;
  json(): boolean;
  /** --quiet: no confirmation lines on stdout (errors still go to stderr; --json is unchanged). */
  quiet(): boolean;
  /** How long a call waits for its answer, in ms (--timeout, MVNET_TIMEOUT; 0: for ever). */
  timeoutMs(): number;
  /**
   * One control request. `opts.timeoutMs` overrides --timeout for this call: a method that
   * legitimately answers late (one waiting on Tor) passes longer, or 0 for no limit. Only the
   * wait for the answer line is timed, never a stream that follows it.
   */
  call<T>(method: string, params?: unknown, opts?: CallOptions): Promise<T>;
}

/** Seconds as --timeout and MVNET_TIMEOUT take them: a number >= 0 (0: wait for ever). */
export function parseTimeout(v: string, what = '--timeout'): number {
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || n < 0 || n > 86_400) throw new UsageError(`${what} takes seconds from 0 (wait for ever) to 86400, got ${JSON.stringify(v)}`);
  return n;
}

export function makeCtx(program: Command): Ctx {
  const opts = (): { socket?: string; json?: boolean; quiet?: boolean; timeout?: number } => program.opts();
  const socket = (): string => opts().socket ?? process.env.MVNET_SOCKET ?? DEFAULT_SOCKET;
  const timeoutMs = (): number => {
    const o = opts().timeout;
    if (o !== undefined) return o * 1000;
    const env = process.env.MVNET_TIMEOUT;
    return (env !== undefined && env !== '' ? parseTimeout(env, 'MVNET_TIMEOUT') : DEFAULT_TIMEOUT_SEC) * 1000;
  };
  return {
    socket,
    json: () => opts().json === true,
    quiet: () => opts().quiet === true,
    timeoutMs,
    call: <T>(method: string, params?: unknown, o?: CallOptions) => call<T>(socket(), method, params, { timeoutMs: o?.timeoutMs ?? timeoutMs() }),
  };
}
