/**
 * The control socket: JSON-RPC 2.0, one request per line, answered in order per connection.
 *
 * Every client has its own queue, so one slow or hostile client cannot stall the others:
 * - a client's requests are handled one after another (its answers come back in order);
 * - changes are applied one at a time across all clients (a FIFO lock that each client enters
 *   with at most one request, so a client that pipelines thousands waits its turn like the
 *   others); methods listed in `readOnly` only read and skip the lock;
 * - a line longer than `maxLine`, more than `maxPending` requests waiting, or more than
 *   `maxPendingBytes` of them: one error reply and the client is closed;
 * - a line that is begun and not finished within `lineTimeoutMs` closes the client;
 * - a client that does not read its answers (more than `maxOutput` bytes queued for it) is dropped.
 *
 * A method may answer with a TakeOver (rpc.ts): after its reply line the connection is the
 * method's (a capture's pcapng stream). The server stops reading requests from it, the lock is not
 * held (the method returned), and it still counts against `maxClients`; the method bounds what
 * it queues for a slow reader itself. close() gives taken connections a moment to finish (a
 * capture writes its statistics and ends the connection) before destroying them.
 */
import net from 'node:net';
import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { socketGroupId } from '../config.js';
import { UserError } from '../errors.js';
import type { MethodTable, RpcResponse } from './rpc.js';
import { INTERNAL_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, PARSE_ERROR, TakeOver } from './rpc.js';

export const CONTROL_LIMITS = {
  /** Longest request line, in bytes. */
  maxLine: 1 << 20,
  /** Requests of one client received and not yet answered. */
  maxPending: 64,
  /** Bytes of those requests. */
  maxPendingBytes: 4 << 20,
  /** Answers queued for a client that does not read them, in bytes. */
  maxOutput: 4 << 20,
  /** A line begun and not ended within this long closes the client. */
  lineTimeoutMs: 10_000,
  /** Connections at once; more are refused with one error line. */
  maxClients: 1024,
};
export type ControlLimits = typeof CONTROL_LIMITS;

export interface ControlServerOptions {
  socket: string;
  group?: string;
  log: Logger;
  methods: MethodTable;
  /** Methods that only read: they run without waiting for the change lock. */
  readOnly?: ReadonlySet<string>;
  limits?: Partial<ControlLimits>;
}

/** True when something accepts connections at `sock`. */
export async function isLive(sock: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.createConnection({ path: sock });
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
}

/** The pid a daemon listening at `sock` reports in its status, or null (no answer within 2 s). */
function holderPid(sock: string): Promise<number | null> {
  return new Promise((resolve) => {
    const c = net.createConnection({ path: sock });
    let buf = '';
    const done = (pid: number | null): void => {
      clearTimeout(timer);
      c.destroy();
      resolve(pid);
    };
    const timer = setTimeout(() => done(null), 2000);
    c.on('error', () => done(null));
    c.on('connect', () => c.write(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'daemon.status' }) + '\n'));
    c.setEncoding('utf8');
    c.on('data', (d: string) => {
      buf += d;
      if (!buf.includes('\n')) return;
      try {
        const pid = (JSON.parse(buf.slice(0, buf.indexOf('\n'))) as { result?: { daemon?: { pid?: unknown } } }).result?.daemon?.pid;
        done(typeof pid === 'number' ? pid : null);
      } catch {
        done(null);
      }
    });
  });
}

/** Refuses to go on when a live daemon answers at `socket` (checked before anything is touched). */
export async function checkSocketFree(socket: string): Promise<void> {
  if (!fs.existsSync(socket) || !(await isLive(socket))) return;
  const pid = await holderPid(socket);
  throw new UserError(`another mvnet daemon${pid !== null ? ` (pid ${pid})` : ''} is already listening on ${socket}`);
}

interface Client {
  sock: net.Socket;
  /** Bytes of the unfinished line. */
  partial: Buffer[];
  partialLen: number;
  lineTimer: NodeJS.Timeout | null;
  queue: string[];
  queueBytes: number;
  busy: boolean;
  closing: boolean;
  /** The client sent EOF: answer what it sent, then close. */
  ended: boolean;
  /** A method took the connection over (TakeOver): no more requests are read from it. */
  taken: boolean;
}

function rpcError(id: number | string | null, code: number, message: string): RpcResponse {
  return { jsonrpc: '2.0', id, error: { code, message } };
}

export class ControlServer {
  private server: net.Server | null = null;
  /** Tail of the FIFO change lock. */
  private lockTail: Promise<void> = Promise.resolve();
  private readonly clients = new Set<Client>();
  private readonly limits: ControlLimits;
  /** Every request being handled (for close()). */
  private readonly inFlight = new Set<Promise<void>>();

  constructor(private readonly opts: ControlServerOptions) {
    this.limits = { ...CONTROL_LIMITS, ...opts.limits };
  }

  async listen(): Promise<void> {
    const { socket } = this.opts;
    fs.mkdirSync(path.dirname(socket), { recursive: true, mode: 0o755 });
    if (fs.existsSync(socket)) {
      if (await isLive(socket)) throw new UserError(`another mvnet daemon is already listening on ${socket}`);
      const st = fs.lstatSync(socket);
      if (!st.isSocket()) throw new UserError(`${socket} exists and is not a socket`);
      fs.rmSync(socket);
    }
    // Half-open: a client that sends its request and EOF still gets its answer.
    const server = net.createServer({ allowHalfOpen: true }, (c) => this.onClient(c));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      // Created with a umask so the socket is never world-accessible, even briefly.
      const old = process.umask(0o117);
      try {
        server.listen({ path: socket }, () => {
          server.off('error', reject);
          resolve();
        });
      } finally {
        process.umask(old);
      }
    });
    fs.chmodSync(socket, 0o660);
    if (this.opts.group !== undefined) {
      fs.chownSync(socket, process.getuid?.() ?? 0, socketGroupId(this.opts.group)!);
    }
    this.server = server;
  }

  private onClient(sock: net.Socket): void {
    sock.on('error', () => sock.destroy());
    if (this.clients.size >= this.limits.maxClients) {
      this.opts.log.warn({ clients: this.clients.size }, 'control socket: too many clients; refusing one');
      sock.end(JSON.stringify(rpcError(null, INVALID_REQUEST, 'too many control connections')) + '\n');
      setTimeout(() => sock.destroy(), 1000).unref();
      return;
    }
    const c: Client = { sock, partial: [], partialLen: 0, lineTimer: null, queue: [], queueBytes: 0, busy: false, closing: false, ended: false, taken: false };
    this.clients.add(c);
    sock.on('close', () => {
      this.clients.delete(c);
      c.closing = true;
      this.clearLineTimer(c);
      c.queue.length = 0;
    });
    sock.on('data', (chunk: Buffer) => this.onData(c, chunk));
    sock.on('end', () => {
      // A last line without a newline still counts.
      if (!c.closing && c.partialLen > 0) this.onData(c, Buffer.from('\n'));
      c.ended = true;
      this.clearLineTimer(c);
      this.pump(c);
    });
  }

  private onData(c: Client, chunk: Buffer): void {
    if (c.closing) return;
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(0x0a, start);
      if (nl < 0) break;
      const piece = chunk.subarray(start, nl);
      if (c.partialLen + piece.length > this.limits.maxLine) return this.cutOff(c, 'request line too long');
      const line = c.partialLen === 0 ? piece.toString('utf8') : Buffer.concat([...c.partial, piece]).toString('utf8');
      c.partial = [];
      c.partialLen = 0;
      start = nl + 1;
      const trimmed = line.trim();
      if (trimmed.length === 0) continue;
      if (c.queue.length + (c.busy ? 1 : 0) >= this.limits.maxPending) return this.cutOff(c, `more than ${this.limits.maxPending} requests waiting`);
      if (c.queueBytes + trimmed.length > this.limits.maxPendingBytes) return this.cutOff(c, 'too many request bytes waiting');
      c.queue.push(trimmed);
      c.queueBytes += trimmed.length;
    }
    const rest = chunk.subarray(start);
    if (rest.length > 0) {
      if (c.partialLen + rest.length > this.limits.maxLine) return this.cutOff(c, 'request line too long');
      c.partial.push(rest);
      c.partialLen += rest.length;
    }
    // The clock runs from the first byte of a line, not the last: dribbling bytes does not extend it.
    if (c.partialLen === 0) this.clearLineTimer(c);
    else if (c.lineTimer === null) {
      c.lineTimer = setTimeout(() => {
        c.lineTimer = null;
        this.opts.log.warn('control socket: a client left a request line unfinished; closing it');
        this.drop(c);
      }, this.limits.lineTimeoutMs);
      c.lineTimer.unref();
    }
    this.pump(c);
  }

  private clearLineTimer(c: Client): void {
    if (c.lineTimer !== null) clearTimeout(c.lineTimer);
    c.lineTimer = null;
  }

  /** One error reply, then the client is closed; nothing more it sends is read. */
  private cutOff(c: Client, why: string): void {
    this.opts.log.warn({ why }, 'control socket: closing a client');
    c.closing = true;
    c.queue.length = 0;
    this.clearLineTimer(c);
    const s = c.sock;
    s.pause();
    s.end(JSON.stringify(rpcError(null, INVALID_REQUEST, why)) + '\n', () => s.destroy());
    // A client that does not read may never let the reply out.
    setTimeout(() => s.destroy(), 1000).unref();
  }

  private drop(c: Client): void {
    c.closing = true;
    c.queue.length = 0;
    this.clearLineTimer(c);
    c.sock.destroy();
  }

  /** Handles the client's queued requests, one at a time, in order. */
  private pump(c: Client): void {
    if (c.busy || c.closing) return;
    if (c.queue.length === 0) {
      if (c.ended) c.sock.end();
      return;
    }
    c.busy = true;
    const line = c.queue.shift()!;
    c.queueBytes -= line.length;
    const p = this.handle(c, line)
      .catch((e: unknown) => this.opts.log.error({ err: e }, 'control request handling failed'))
      .finally(() => {
        this.inFlight.delete(p);
        c.busy = false;
        this.pump(c);
      });
    this.inFlight.add(p);
  }

  /** Runs `fn` when every change before it is done: changes are applied one at a time across clients. */
  private async exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const prev = this.lockTail;
    let release!: () => void;
    this.lockTail = new Promise<void>((r) => (release = r));
    await prev;
    try {
      return await fn();
    } finally {
      release();
    }
  }

  private async handle(c: Client, line: string): Promise<void> {
    let req: unknown;
    try {
      req = JSON.parse(line);
    } catch {
      this.reply(c, rpcError(null, PARSE_ERROR, 'request is not valid JSON'));
      return;
    }
    const r = req as { jsonrpc?: unknown; id?: unknown; method?: unknown; params?: unknown };
    const id = typeof r?.id === 'number' || typeof r?.id === 'string' ? r.id : null;
    if (typeof r !== 'object' || r === null || r.jsonrpc !== '2.0' || typeof r.method !== 'string') {
      this.reply(c, rpcError(id, INVALID_REQUEST, 'expected a JSON-RPC 2.0 request object'));
      return;
    }
    const method = r.method;
    const handler = Object.hasOwn(this.opts.methods, method) ? this.opts.methods[method] : undefined;
    if (handler === undefined) {
      this.reply(c, rpcError(id, METHOD_NOT_FOUND, `unknown method ${method}`));
      return;
    }
    this.opts.log.debug({ method }, 'control request');
    const run = (): Promise<unknown> => handler(r.params ?? {});
    try {
      // A client dropped while it waited for the lock gets nothing applied.
      const result = this.opts.readOnly?.has(method) === true ? await run() : await this.exclusive(() => (c.closing ? Promise.resolve(undefined) : run()));
      if (result instanceof TakeOver) {
        this.takeOver(c, id, result);
        return;
      }
      this.reply(c, { jsonrpc: '2.0', id, result: result ?? null });
    } catch (e) {
      if (e instanceof UserError) {
        this.reply(c, rpcError(id, e.code, e.message));
      } else {
        this.opts.log.error({ err: e, method }, 'control request failed');
        this.reply(c, rpcError(id, INTERNAL_ERROR, `internal error: ${(e as Error).message}`));
      }
    }
  }

  /** Replies, then hands the connection to the method (see TakeOver). */
  private takeOver(c: Client, id: number | string | null, t: TakeOver): void {
    if (c.sock.destroyed || c.closing) return;
    this.reply(c, { jsonrpc: '2.0', id, result: t.result ?? null });
    if (c.closing) return;
    c.taken = true;
    c.closing = true;
    c.queue.length = 0;
    c.queueBytes = 0;
    c.partial = [];
    c.partialLen = 0;
    this.clearLineTimer(c);
    c.sock.removeAllListeners('data');
    c.sock.removeAllListeners('end');
    t.take(c.sock, c.ended);
  }

  private reply(c: Client, res: RpcResponse): void {
    if (c.sock.destroyed || c.closing) return;
    c.sock.write(JSON.stringify(res) + '\n');
    if (c.sock.writableLength > this.limits.maxOutput) {
      this.opts.log.warn({ queued: c.sock.writableLength }, 'control socket: a client does not read its answers; dropping it');
      this.drop(c);
    }
  }

  async close(): Promise<void> {
    const taken = [...this.clients].filter((c) => c.taken && !c.sock.destroyed);
    for (const c of this.clients) if (!c.taken) this.drop(c);
    // Taken connections (captures) were ended by their owner before this: let their last bytes out.
    await Promise.all(
      taken.map(
        (c) =>
          new Promise<void>((resolve) => {
            if (c.sock.closed) return resolve();
            const t = setTimeout(() => {
              c.sock.destroy();
              resolve();
            }, 2000);
            c.sock.once('close', () => {
              clearTimeout(t);
              resolve();
            });
          }),
      ),
    );
    if (this.server !== null) {
      const s = this.server;
      this.server = null;
      await new Promise<void>((resolve) => s.close(() => resolve()));
    }
    await Promise.allSettled([...this.inFlight]);
  }
}
