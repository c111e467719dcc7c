/** Talks JSON-RPC to the daemon's control socket: one request, one answer line. */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { EXIT, EXIT_NAMES, exitForRpcCode, type ExitCode } from './exit-codes.js';

/**
 * An error for the user, with the exit code it ends the process with (cli/exit-codes.ts):
 * ERROR unless given; call() gives the daemon's answers and an unreachable daemon theirs.
 */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: ExitCode = EXIT.ERROR,
    /** The name in `--json` error output (EXIT_NAMES, or `timeout`). */
    readonly code: string = EXIT_NAMES[exitCode],
    /** The daemon's JSON-RPC error code, when the daemon answered with an error. */
    readonly rpcCode: number | null = null,
  ) {
    super(message);
  }
}

/** A bad argument or option, found before anything is asked of the daemon (exit 2). */
export class UsageError extends CliError {
  constructor(message: string) {
    super(message, EXIT.USAGE);
  }
}

/** Per call: how long to wait for the answer line (ms; 0: for ever). */
export interface CallOptions {
  timeoutMs?: number;
}

/** Where the daemon's control socket is unless --socket/MVNET_SOCKET say otherwise. */
export const DEFAULT_SOCKET = '/run/mvnet/mvnet.sock';

/** Default wait for an answer, in seconds (--timeout, MVNET_TIMEOUT). */
export const DEFAULT_TIMEOUT_SEC = 10;

let nextId = 1;

/** The next JSON-RPC request id of this process. */
export function requestId(): number {
  return nextId++;
}

/** Why the control socket could not be reached, in one line. */
export function reachError(socket: string, e: NodeJS.ErrnoException): CliError {
  // A socket in a directory that does not exist is a wrong --socket, not a stopped daemon.
  if (e.code === 'ENOENT' && !fs.existsSync(path.dirname(socket))) {
    // Exit 3 all the same: on a fresh machine the default directory appears when the daemon first starts.
    const hint = socket === DEFAULT_SOCKET ? "the daemon makes it when it starts: 'mvnet daemon' or 'systemctl start mvnet'" : 'is --socket/MVNET_SOCKET right?';
    return new CliError(`no daemon socket at ${socket}: the directory ${path.dirname(socket)} does not exist (${hint})`, EXIT.UNREACHABLE);
  }
  if (e.code === 'ENOENT' || e.code === 'ECONNREFUSED') {
    return new CliError(`the mvnet daemon is not running (no daemon listening on ${socket}); start it with 'mvnet daemon' or set --socket/MVNET_SOCKET`, EXIT.UNREACHABLE);
  }
  if (e.code === 'EACCES') return new CliError(`permission denied on ${socket}: run as root or as a member of the socket's group`, EXIT.UNREACHABLE);
  return new CliError(`cannot reach the daemon on ${socket}: ${e.message}`, EXIT.UNREACHABLE);
}

/** A daemon that accepted (or is stuck accepting) and did not answer in time. */
export function timeoutError(socket: string, method: string, ms: number): CliError {
  return new CliError(`the daemon on ${socket} did not answer ${method} within ${ms / 1000} s (stopped or hung?); see --timeout/MVNET_TIMEOUT`, EXIT.UNREACHABLE, 'timeout');
}

/** The daemon's JSON-RPC error as a CliError with its exit code. */
export function rpcError(err: { code?: unknown; message?: unknown }): CliError {
  const code = typeof err.code === 'number' ? err.code : null;
  const exit = code !== null ? exitForRpcCode(code) : EXIT.ERROR;
  return new CliError(typeof err.message === 'string' ? err.message : 'the daemon answered with an error', exit, EXIT_NAMES[exit], code);
}

/**
 * One request, one answer. Only the wait for the answer line is timed (`timeoutMs`, default
 * DEFAULT_TIMEOUT_SEC): connecting, writing and reading it; 0 waits for ever.
 */
export async function call<T>(socket: string, method: string, params: unknown = {}, opts: CallOptions = {}): Promise<T> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_SEC * 1000;
  return new Promise<T>((resolve, reject) => {
    const c = net.createConnection({ path: socket });
    let buf = '';
    let done = false;
    const timer = timeoutMs > 0 ? setTimeout(() => finish(() => reject(timeoutError(socket, method, timeoutMs))), timeoutMs) : null;
    const finish = (f: () => void): void => {
      if (done) return;
      done = true;
      if (timer !== null) clearTimeout(timer);
      c.destroy();
      f();
    };
    c.setEncoding('utf8');
    c.once('connect', () => c.write(JSON.stringify({ jsonrpc: '2.0', id: requestId(), method, params }) + '\n'));
    c.on('data', (chunk: string) => {
      buf += chunk;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      let res: { result?: unknown; error?: { code?: unknown; message?: unknown } };
      try {
        res = JSON.parse(buf.slice(0, nl)) as typeof res;
      } catch {
        finish(() => reject(new CliError(`the daemon on ${socket} sent an answer that is not JSON`)));
        return;
      }
      if (res.error !== undefined) finish(() => reject(rpcError(res.error!)));
      else finish(() => resolve(res.result as T));
    });
    c.on('error', (e: NodeJS.ErrnoException) => finish(() => reject(reachError(socket, e))));
    c.on('close', () => finish(() => reject(new CliError(`the daemon on ${socket} closed the connection without answering`, EXIT.UNREACHABLE))));
  });
}

/** One answer of callPipelined: the result, or the error this request ends with. */
export type PipelinedResult<T> = { ok: true; result: T } | { ok: false; error: CliError };

/**
 * Many requests over ONE connection, pipelined: up to `window` written ahead of their answers
 * (the daemon queues at most 64 per client and answers in order), so a thousand attaches cost one
 * connect and no round trip each. Every request gets its result or its error, in order; one
 * failing does not stop the rest. The daemon not reachable at all throws (nothing was sent).
 * `timeoutMs` bounds the wait for each next answer (0: for ever): a daemon that stops answering
 * fails the requests still open, as does a connection that closes.
 */
export async function callPipelined<T>(
  socket: string,
  requests: readonly { method: string; params: unknown }[],
  opts: CallOptions & { window?: number } = {},
): Promise<PipelinedResult<T>[]> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_SEC * 1000;
  const window = Math.max(1, Math.min(opts.window ?? 32, 63));
  const results: PipelinedResult<T>[] = new Array<PipelinedResult<T>>(requests.length);
  if (requests.length === 0) return results;
  return new Promise<PipelinedResult<T>[]>((resolve, reject) => {
    const c = net.createConnection({ path: socket });
    /** Request id → its index; ids are this process's, so an answer is matched by id, not position. */
    const byId = new Map<number, number>();
    let sent = 0;
    let answered = 0;
    let connected = false;
    let done = false;
    let buf = '';
    let timer: NodeJS.Timeout | null = null;
    const arm = (): void => {
      if (timer !== null) clearTimeout(timer);
      timer = timeoutMs > 0 ? setTimeout(() => failRest(timeoutError(socket, requests[firstOpen()]!.method, timeoutMs)), timeoutMs) : null;
    };
    const firstOpen = (): number => {
      let i = 0;
      while (i < requests.length && results[i] !== undefined) i++;
      return i;
    };
    const finish = (): void => {
      if (done) return;
      done = true;
      if (timer !== null) clearTimeout(timer);
      c.destroy();
      resolve(results);
    };
    /** Every request without an answer (sent or not) ends with `e`. */
    const failRest = (e: CliError): void => {
      if (done) return;
      for (let i = 0; i < requests.length; i++) if (results[i] === undefined) results[i] = { ok: false, error: e };
      finish();
    };
    const fill = (): void => {
      // Lines are small; the daemon reads them as they come, so the socket's buffer is the only queue.
      while (sent < requests.length && sent - answered < window) {
        const id = requestId();
        byId.set(id, sent);
        const r = requests[sent++]!;
        c.write(JSON.stringify({ jsonrpc: '2.0', id, method: r.method, params: r.params }) + '\n');
      }
    };
    c.setEncoding('utf8');
    // As in call(): connecting counts against the first answer's time.
    arm();
    c.once('connect', () => {
      connected = true;
      fill();
    });
    c.on('data', (chunk: string) => {
      buf += chunk;
      let nl: number;
      while (!done && (nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        let res: { id?: unknown; result?: unknown; error?: { code?: unknown; message?: unknown } };
        try {
          res = JSON.parse(line) as typeof res;
        } catch {
          failRest(new CliError(`the daemon on ${socket} sent an answer that is not JSON`));
          return;
        }
        const i = typeof res.id === 'number' ? byId.get(res.id) : undefined;
        // An answer to no request of ours (id null): the daemon refused the connection as a whole.
        if (i === undefined) {
          failRest(res.error !== undefined ? rpcError(res.error) : new CliError(`the daemon on ${socket} answered a request it was not sent`));
          return;
        }
        byId.delete(res.id as number);
        results[i] = res.error !== undefined ? { ok: false, error: rpcError(res.error) } : { ok: true, result: res.result as T };
        answered++;
        if (answered === requests.length) {
          finish();
          return;
        }
        arm();
        fill();
      }
    });
    c.on('error', (e: NodeJS.ErrnoException) => {
      if (done) return;
      if (!connected) {
        done = true;
        if (timer !== null) clearTimeout(timer);
        reject(reachError(socket, e));
        return;
      }
      failRest(new CliError(`the connection to the daemon on ${socket} failed: ${e.message}`, EXIT.UNREACHABLE));
    });
    c.on('close', () => failRest(new CliError(`the daemon on ${socket} closed the connection without answering`, EXIT.UNREACHABLE)));
  });
}
