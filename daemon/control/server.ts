/**
 * The control socket: JSON-RPC 2.0, one request per line, answered in order per connection.
 * Requests are handled one at a time across all clients, so two CLIs racing to attach cannot
 * interleave half-done changes.
 */
import net from 'node:net';
import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { UserError } from '../errors.js';
import type { MethodTable, RpcResponse } from './rpc.js';
import { INTERNAL_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, PARSE_ERROR } from './rpc.js';

const MAX_LINE = 1 << 20;

export interface ControlServerOptions {
  socket: string;
  group?: string;
  log: Logger;
  methods: MethodTable;
}

async function isLive(sock: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.createConnection({ path: sock });
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
}

export class ControlServer {
  private server: net.Server | null = null;
  private queue: Promise<void> = Promise.resolve();
  private readonly clients = new Set<net.Socket>();

  constructor(private readonly opts: ControlServerOptions) {}

  async listen(): Promise<void> {
    const { socket } = this.opts;
    fs.mkdirSync(path.dirname(socket), { recursive: true, mode: 0o755 });
    if (fs.existsSync(socket)) {
      if (await isLive(socket)) throw new UserError(`another mvnet daemon is already listening on ${socket}`);
      const st = fs.lstatSync(socket);
      if (!st.isSocket()) throw new UserError(`${socket} exists and is not a socket`);
      fs.rmSync(socket);
    }
    const server = net.createServer((c) => this.onClient(c));
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
      const gid = Number.isInteger(Number(this.opts.group)) ? Number(this.opts.group) : groupId(this.opts.group);
      fs.chownSync(socket, process.getuid?.() ?? 0, gid);
    }
    this.server = server;
  }

  private onClient(c: net.Socket): void {
    this.clients.add(c);
    c.on('close', () => this.clients.delete(c));
    c.on('error', () => c.destroy());
    let buf = '';
    c.setEncoding('utf8');
    c.on('data', (chunk: string) => {
      buf += chunk;
      if (buf.length > MAX_LINE && !buf.includes('\n')) {
        this.reply(c, { jsonrpc: '2.0', id: null, error: { code: INVALID_REQUEST, message: 'request line too long' } });
        c.end();
        return;
      }
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (line.length > 0) this.enqueue(c, line);
      }
    });
  }

  private enqueue(c: net.Socket, line: string): void {
    this.queue = this.queue.then(() => this.handle(c, line));
  }

  private async handle(c: net.Socket, line: string): Promise<void> {
    let req: unknown;
    try {
      req = JSON.parse(line);
    } catch {
      this.reply(c, { jsonrpc: '2.0', id: null, error: { code: PARSE_ERROR, message: 'request is not valid JSON' } });
      return;
    }
    const r = req as { jsonrpc?: unknown; id?: unknown; method?: unknown; params?: unknown };
    const id = typeof r?.id === 'number' || typeof r?.id === 'string' ? r.id : null;
    if (typeof r !== 'object' || r === null || r.jsonrpc !== '2.0' || typeof r.method !== 'string') {
      this.reply(c, { jsonrpc: '2.0', id, error: { code: INVALID_REQUEST, message: 'expected a JSON-RPC 2.0 request object' } });
      return;
    }
    const handler = Object.hasOwn(this.opts.methods, r.method) ? this.opts.methods[r.method] : undefined;
    if (handler === undefined) {
      this.reply(c, { jsonrpc: '2.0', id, error: { code: METHOD_NOT_FOUND, message: `unknown method ${r.method}` } });
      return;
    }
    try {
      const result = await handler(r.params ?? {});
      this.reply(c, { jsonrpc: '2.0', id, result: result ?? null });
    } catch (e) {
      if (e instanceof UserError) {
        this.reply(c, { jsonrpc: '2.0', id, error: { code: e.code, message: e.message } });
      } else {
        this.opts.log.error({ err: e, method: r.method }, 'control request failed');
        this.reply(c, { jsonrpc: '2.0', id, error: { code: INTERNAL_ERROR, message: `internal error: ${(e as Error).message}` } });
      }
    }
  }

  private reply(c: net.Socket, res: RpcResponse): void {
    if (!c.destroyed) c.write(JSON.stringify(res) + '\n');
  }

  async close(): Promise<void> {
    for (const c of this.clients) c.destroy();
    if (this.server !== null) {
      const s = this.server;
      this.server = null;
      await new Promise<void>((resolve) => s.close(() => resolve()));
    }
    await this.queue;
  }
}

function groupId(name: string): number {
  const line = fs
    .readFileSync('/etc/group', 'utf8')
    .split('\n')
    .find((l) => l.split(':')[0] === name);
  if (line === undefined) throw new UserError(`no such group ${name}`);
  return Number(line.split(':')[2]);
}
