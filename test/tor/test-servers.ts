/**
 * Tiny HTTP and DNS servers that play the hosts behind a private Tor network: the "upstream"
 * (an internet site the exit reaches) and an onion service's target.
 *
 * It runs as its own process inside a network namespace: `startTestServers()` in
 * private-network.ts transpiles this file with TypeScript's `transpileModule` (so it must import
 * nothing but `node:` modules) and starts `node FILE CONFIG_JSON` with `ip netns exec`. Imported
 * as a module (e.g. by a test, for `patternBytes`), it starts nothing.
 *
 * HTTP routes (every server):
 *   GET  /            → the configured greeting plus "\n" (e.g. "hello from upstream\n")
 *   GET  /whoami      → the client's address plus "\n" (the exit relay's, through Tor)
 *   GET  /large       → `largeBytes` bytes of `patternBytes`
 *   GET  /bytes/N     → N bytes of `patternBytes` (N ≤ 2 GiB)
 *   POST /upload      → {"bytes":N,"sha256":"…"} of the request body
 * DNS (UDP): A records for the configured names (case-insensitive), NODATA for other types of
 * those names, NXDOMAIN for everything else.
 *
 * stdout: one JSON line `{"event":"ready",...}` once everything listens, then one line per
 * HTTP request / DNS query (`{"event":"http",...}`, `{"event":"dns",...}`).
 */
import { createHash } from 'node:crypto';
import dgram from 'node:dgram';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { pathToFileURL } from 'node:url';

export interface HttpServerConfig {
  host: string;
  /** 0: any free port (reported in the ready line). */
  port: number;
  /** Body of `GET /` (without the trailing newline). */
  hello: string;
  /** Size of `GET /large`. Default 4 MiB. */
  largeBytes?: number;
}

export interface DnsServerConfig {
  host: string;
  port: number;
  /** name → IPv4 address. */
  records: Record<string, string>;
  ttl?: number;
}

export interface ServersConfig {
  http?: HttpServerConfig[];
  dns?: DnsServerConfig;
  /** Exit when this process is gone (checked every second), like tor's __OwningControllerProcess. */
  ownerPid?: number;
}

export interface ServersReady {
  event: 'ready';
  http: { host: string; port: number }[];
  dns?: { host: string; port: number };
}

const PATTERN_MOD = 251;
/** A whole number of pattern periods, so chunks can be sliced at any multiple of it. */
const BLOCK = Buffer.from(Array.from({ length: PATTERN_MOD * 256 }, (_, i) => i % PATTERN_MOD));

/** The bytes served by /large and /bytes/N: byte i (from the start of the body) is i % 251. */
export function patternBytes(offset: number, length: number): Buffer {
  const out = Buffer.alloc(length);
  for (let i = 0; i < length; i++) out[i] = (offset + i) % PATTERN_MOD;
  return out;
}

/** True when `body` is exactly `patternBytes(0, body.length)`. */
export function isPattern(body: Buffer): boolean {
  for (let off = 0; off < body.length; off += BLOCK.length) {
    const n = Math.min(BLOCK.length, body.length - off);
    if (!body.subarray(off, off + n).equals(BLOCK.subarray(0, n))) return false;
  }
  return true;
}

function log(obj: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

function streamPattern(res: http.ServerResponse, total: number): void {
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(total) });
  let sent = 0;
  const pump = (): void => {
    while (sent < total) {
      const n = Math.min(BLOCK.length, total - sent);
      sent += n;
      if (!res.write(BLOCK.subarray(0, n))) {
        res.once('drain', pump);
        return;
      }
    }
    res.end();
  };
  pump();
}

function startHttp(cfg: HttpServerConfig): Promise<http.Server> {
  const largeBytes = cfg.largeBytes ?? 4 * 1024 * 1024;
  const server = http.createServer((req, res) => {
    const remote = (req.socket.remoteAddress ?? '').replace(/^::ffff:/, '');
    const url = req.url ?? '/';
    res.on('finish', () => log({ event: 'http', remote, method: req.method, url, status: res.statusCode }));
    const text = (status: number, body: string): void => {
      res.writeHead(status, { 'content-type': 'text/plain', 'content-length': String(Buffer.byteLength(body)) });
      res.end(body);
    };
    if (req.method === 'POST' && url === '/upload') {
      const hash = createHash('sha256');
      let bytes = 0;
      req.on('data', (d: Buffer) => {
        bytes += d.length;
        hash.update(d);
      });
      req.on('end', () => text(200, `${JSON.stringify({ bytes, sha256: hash.digest('hex') })}\n`));
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') return text(405, 'method not allowed\n');
    if (url === '/') return text(200, `${cfg.hello}\n`);
    if (url === '/whoami') return text(200, `${remote}\n`);
    if (url === '/large') return streamPattern(res, largeBytes);
    const m = /^\/bytes\/(\d{1,10})$/.exec(url);
    if (m && Number(m[1]) <= 2 ** 31) return streamPattern(res, Number(m[1]));
    return text(404, 'not found\n');
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(cfg.port, cfg.host, () => resolve(server));
  });
}

function parseQuestion(msg: Buffer): { name: string; qtype: number; end: number } | undefined {
  let off = 12;
  const labels: string[] = [];
  for (;;) {
    const len = msg[off];
    if (len === undefined || len > 63) return undefined; // no compression in questions
    off++;
    if (len === 0) break;
    if (off + len > msg.length) return undefined;
    labels.push(msg.subarray(off, off + len).toString('latin1'));
    off += len;
  }
  if (off + 4 > msg.length) return undefined;
  return { name: labels.join('.').toLowerCase(), qtype: msg.readUInt16BE(off), end: off + 4 };
}

function startDns(cfg: DnsServerConfig): Promise<dgram.Socket> {
  const records = new Map(Object.entries(cfg.records).map(([k, v]) => [k.toLowerCase().replace(/\.$/, ''), v]));
  const ttl = cfg.ttl ?? 60;
  const sock = dgram.createSocket('udp4');
  sock.on('message', (msg, rinfo) => {
    if (msg.length < 12 || (msg[2]! & 0x80) !== 0 || msg.readUInt16BE(4) !== 1) return;
    const q = parseQuestion(msg);
    if (!q) return;
    const addr = records.get(q.name);
    const answer = addr !== undefined && q.qtype === 1;
    const header = Buffer.alloc(12);
    header.writeUInt16BE(msg.readUInt16BE(0), 0); // id
    header[2] = 0x84 | (msg[2]! & 0x01); // QR, AA, RD copied
    header[3] = 0x80 | (addr === undefined ? 3 : 0); // RA, NXDOMAIN or NOERROR
    header.writeUInt16BE(1, 4);
    header.writeUInt16BE(answer ? 1 : 0, 6);
    const parts = [header, msg.subarray(12, q.end)];
    if (answer) {
      const rr = Buffer.alloc(16);
      rr.writeUInt16BE(0xc00c, 0); // pointer to the question name
      rr.writeUInt16BE(1, 2); // A
      rr.writeUInt16BE(1, 4); // IN
      rr.writeUInt32BE(ttl, 6);
      rr.writeUInt16BE(4, 10);
      addr.split('.').forEach((o, i) => (rr[12 + i] = Number(o)));
      parts.push(rr);
    }
    sock.send(Buffer.concat(parts), rinfo.port, rinfo.address);
    log({ event: 'dns', remote: rinfo.address, name: q.name, qtype: q.qtype, answer: answer ? addr : null });
  });
  return new Promise((resolve, reject) => {
    sock.once('error', reject);
    sock.bind(cfg.port, cfg.host, () => resolve(sock));
  });
}

export async function serve(config: ServersConfig): Promise<void> {
  const owner = config.ownerPid;
  if (owner !== undefined) {
    setInterval(() => {
      try {
        process.kill(owner, 0);
      } catch {
        process.exit(0);
      }
    }, 1_000).unref();
  }
  const servers = await Promise.all((config.http ?? []).map(startHttp));
  const dns = config.dns ? await startDns(config.dns) : undefined;
  const ready: ServersReady = {
    event: 'ready',
    http: servers.map((s) => {
      const a = s.address() as AddressInfo;
      return { host: a.address, port: a.port };
    }),
  };
  if (dns) ready.dns = { host: dns.address().address, port: dns.address().port };
  log({ ...ready });
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  serve(JSON.parse(process.argv[2] ?? '{}') as ServersConfig).catch((err: unknown) => {
    process.stderr.write(`test-servers: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  });
}
