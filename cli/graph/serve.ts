/**
 * `mvnet graph --serve ADDR:PORT`: an HTTP server in the CLI process, bound only to the loopback
 * address given, serving the page (`/`) and the graph as JSON (`/graph.json`, fetched fresh from
 * the daemon on each request) that the page polls. The topology is not for the network: any
 * address that is not loopback is refused, and a request whose Host header names another host
 * is refused too (a DNS-rebinding page cannot read it).
 */
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { CliError, UsageError } from '../client.js';
import type { Graph } from './model.js';
import { PAGE_CSP, toHtml } from './html.js';

export interface ServeAddress {
  host: string;
  port: number;
}

/** True for 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104: addresses only this host can reach. */
export function isLoopback(host: string): boolean {
  if (net.isIPv4(host)) return host.split('.')[0] === '127';
  if (net.isIPv6(host)) {
    const h = host.toLowerCase();
    if (h === '::1' || h === '0:0:0:0:0:0:0:1') return true;
    const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(h);
    return m !== null && net.isIPv4(m[1]!) && m[1]!.split('.')[0] === '127';
  }
  return false;
}

/** "127.0.0.1:8080", "[::1]:8080" (port 0: the kernel picks one). Anything not a loopback address is refused. */
export function parseServeAddress(text: string): ServeAddress {
  const m = /^\[([^\]]+)\]:(\d{1,5})$/.exec(text) ?? /^([^:[\]]+):(\d{1,5})$/.exec(text);
  if (m === null) throw new UsageError(`--serve takes ADDRESS:PORT (e.g. 127.0.0.1:8080 or [::1]:8080), got ${JSON.stringify(text)}`);
  const host = m[1]!;
  const port = Number(m[2]);
  if (port > 65535) throw new UsageError(`--serve: port ${port} is out of range (0-65535)`);
  if (net.isIP(host) === 0) throw new UsageError(`--serve: ${JSON.stringify(host)} is not an IP address: give a loopback address (127.0.0.1 or ::1)`);
  if (!isLoopback(host)) throw new UsageError(`--serve: ${host} is not a loopback address; the topology is served only to this host (127.0.0.0/8 or ::1)`);
  return { host, port };
}

export interface GraphServer {
  url: string;
  address: AddressInfo;
  close(): Promise<void>;
}

/** Serves the page and `/graph.json`; `load` asks the daemon for a fresh graph. */
export function serveGraph(addr: ServeAddress, load: () => Promise<Graph>, opts: { refreshMs?: number } = {}): Promise<GraphServer> {
  const server = http.createServer((req, res) => {
    const send = (code: number, type: string, body: string, extra: Record<string, string> = {}): void => {
      res.writeHead(code, { 'content-type': type, 'cache-control': 'no-store', 'x-content-type-options': 'nosniff', ...extra });
      res.end(req.method === 'HEAD' ? undefined : body);
    };
    const a = server.address();
    const port = a !== null && typeof a === 'object' ? a.port : addr.port;
    const hostPart = addr.host.includes(':') ? `[${addr.host}]` : addr.host;
    const allowed = new Set([`${hostPart}:${port}`, ...(addr.host.startsWith('127.') ? [`localhost:${port}`] : []), ...(addr.host === '::1' ? [`localhost:${port}`] : [])]);
    if (req.headers.host === undefined || !allowed.has(req.headers.host.toLowerCase())) {
      send(421, 'text/plain; charset=utf-8', `this server answers only for ${[...allowed].join(' or ')}\n`);
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      send(405, 'text/plain; charset=utf-8', 'GET only\n', { allow: 'GET, HEAD' });
      return;
    }
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/' && path !== '/graph.json') {
      send(404, 'text/plain; charset=utf-8', 'not found: / (the page) or /graph.json\n');
      return;
    }
    load().then(
      (g) => {
        if (path === '/graph.json') send(200, 'application/json', JSON.stringify(g));
        else send(200, 'text/html; charset=utf-8', toHtml(g, { endpoint: '/graph.json', refreshMs: opts.refreshMs ?? 2000 }), { 'content-security-policy': PAGE_CSP });
      },
      (e: unknown) => send(502, 'application/json', JSON.stringify({ error: e instanceof Error ? e.message : String(e) })),
    );
  });
  return new Promise((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) => reject(new CliError(`--serve ${addr.host}:${addr.port}: ${e.code ?? e.message}`)));
    server.listen({ host: addr.host, port: addr.port, exclusive: true }, () => {
      const a = server.address();
      if (a === null || typeof a === 'string') {
        reject(new CliError('--serve: the server has no address'));
        return;
      }
      const hostPart = a.family === 'IPv6' ? `[${a.address}]` : a.address;
      resolve({
        url: `http://${hostPart}:${a.port}/`,
        address: a,
        close: () => new Promise<void>((r) => server.close(() => r())),
      });
    });
  });
}
