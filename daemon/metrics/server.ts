/**
 * The metrics endpoint: HTTP GET /metrics on a unix socket or a loopback address, nothing else
 * (metrics name every VM, network and link: they are for this host's monitoring, like the
 * control socket). A unix socket gets the control socket's mode (0660) and group.
 */
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import type { Logger } from 'pino';
import { UserError } from '../errors.js';
import type { Metrics } from './metrics.js';

export type MetricsListen = { kind: 'unix'; path: string } | { kind: 'tcp'; host: string; port: number };

function isLoopback(host: string): boolean {
  if (net.isIPv4(host)) return host.startsWith('127.');
  return net.isIPv6(host) && (host === '::1' || /^(0{1,4}:){7}0{0,3}1$/.test(host));
}

/** `metrics.listen`: unix:/PATH, 127.0.0.1:PORT (any 127.0.0.0/8 address), or [::1]:PORT. */
export function parseMetricsListen(text: string): MetricsListen {
  if (text.startsWith('unix:')) {
    const p = text.slice(5);
    if (!path.isAbsolute(p) || p.includes('\0')) throw new UserError(`${JSON.stringify(text)}: unix: needs an absolute path`);
    return { kind: 'unix', path: p };
  }
  const m = /^\[([^\]]+)\]:(\d{1,5})$/.exec(text) ?? /^([^:[\]]+):(\d{1,5})$/.exec(text);
  const port = m !== null ? Number(m[2]) : 0;
  if (m === null || port < 1 || port > 65535) throw new UserError(`${JSON.stringify(text)} is not unix:/PATH, 127.0.0.1:PORT or [::1]:PORT`);
  const host = m[1]!;
  if (!isLoopback(host)) throw new UserError(`${JSON.stringify(text)} is not a loopback address: metrics are served only on a unix socket, 127.0.0.0/8 or ::1`);
  return { kind: 'tcp', host, port };
}

export function describeListen(l: MetricsListen): string {
  return l.kind === 'unix' ? `unix:${l.path}` : l.host.includes(':') ? `[${l.host}]:${l.port}` : `${l.host}:${l.port}`;
}

export class MetricsServer {
  private server: http.Server | null = null;

  constructor(
    private readonly metrics: Metrics,
    private readonly log: Logger,
  ) {}

  async listen(l: MetricsListen, socketGid?: number): Promise<void> {
    const server = http.createServer((req, res) => {
      const url = (req.url ?? '/').split('?')[0];
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { allow: 'GET, HEAD' }).end();
        return;
      }
      if (url !== '/metrics') {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: the metrics are at /metrics\n');
        return;
      }
      this.metrics.text().then(
        (body) => res.writeHead(200, { 'content-type': this.metrics.contentType }).end(req.method === 'HEAD' ? undefined : body),
        (err: Error) => {
          this.log.error({ err: err.message }, 'metrics scrape failed');
          res.writeHead(500).end();
        },
      );
    });
    // A scraper that connects and sends nothing is not kept forever.
    server.requestTimeout = 10_000;
    server.headersTimeout = 10_000;
    if (l.kind === 'unix') {
      fs.mkdirSync(path.dirname(l.path), { recursive: true, mode: 0o755 });
      if (fs.existsSync(l.path)) {
        if (!fs.lstatSync(l.path).isSocket()) throw new UserError(`metrics.listen: ${l.path} exists and is not a socket`);
        fs.rmSync(l.path);
      }
    }
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      // As the control socket: never world-accessible, even briefly.
      const old = l.kind === 'unix' ? process.umask(0o117) : undefined;
      try {
        if (l.kind === 'unix') server.listen({ path: l.path }, resolve);
        else server.listen({ host: l.host, port: l.port }, resolve);
      } finally {
        if (old !== undefined) process.umask(old);
      }
    }).catch((e: NodeJS.ErrnoException) => {
      throw new UserError(`metrics.listen ${describeListen(l)}: ${e.code ?? e.message}`);
    });
    if (l.kind === 'unix') {
      fs.chmodSync(l.path, 0o660);
      if (socketGid !== undefined) fs.chownSync(l.path, process.getuid?.() ?? 0, socketGid);
    }
    this.server = server;
    this.where = l;
    this.log.info({ listen: describeListen(l) }, 'metrics endpoint listening');
  }
  private where: MetricsListen | null = null;

  async close(): Promise<void> {
    const s = this.server;
    const l = this.where;
    this.server = null;
    this.where = null;
    if (s === null) return;
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
    if (l?.kind === 'unix') fs.rmSync(l.path, { force: true });
  }
}
