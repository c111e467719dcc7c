/**
 * The metrics endpoint: HTTP GET /metrics on a unix socket or a loopback address, nothing else
 * (metrics name every VM, network and link: they are for this host's monitoring, like the
 * control socket). A unix socket gets the control socket's mode (0660) and group.
 */
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import type { Logger } from 'pino';
import { UserError } from '../errors.js';
import { isLive } from '../control/server.js';
import type { Metrics } from './metrics.js';
import { describeListen, type MetricsListen } from './listen.js';

/**
 * How long one exposition text is served again. Prometheus scrapes every 15 s or so; a local
 * user hammering the endpoint (it is reachable over loopback) gets the same text instead of
 * making the daemon walk every port, flow table and link again for each request.
 */
export const METRICS_CACHE_MS = 1000;

export class MetricsServer {
  private server: http.Server | null = null;
  private cached: { text: string; at: number } | null = null;
  /** The one text being made; scrapes meanwhile wait for it (one snapshot at a time). */
  private making: Promise<string> | null = null;

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
      this.exposition().then(
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
        // A stale socket (a daemon that was killed) is replaced; one something answers on is not ours to take.
        if (await isLive(l.path)) throw new UserError(`metrics.listen: something already listens on ${l.path}`);
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
    // The mode came from the umask at bind (0660). The group by lchown: a symlink put in the
    // socket's place meanwhile is changed itself, never the file it points to.
    if (l.kind === 'unix' && socketGid !== undefined) fs.lchownSync(l.path, process.getuid?.() ?? 0, socketGid);
    this.server = server;
    this.where = l;
    this.log.info({ listen: describeListen(l) }, 'metrics endpoint listening');
  }
  private where: MetricsListen | null = null;

  /** The exposition text: the cached one while fresh, else the one being made, else a new one. */
  private exposition(): Promise<string> {
    const now = performance.now();
    if (this.cached !== null && now - this.cached.at < METRICS_CACHE_MS) return Promise.resolve(this.cached.text);
    if (this.making !== null) return this.making;
    const making = this.metrics.text().then(
      (text) => {
        this.cached = { text, at: performance.now() };
        return text;
      },
    );
    this.making = making;
    const done = (): void => {
      if (this.making === making) this.making = null;
    };
    making.then(done, done);
    return making;
  }

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
