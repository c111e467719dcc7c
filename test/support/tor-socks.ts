/**
 * A minimal SOCKS5 client (RFC 1928, domain-name CONNECT, optional RFC 1929 username/password
 * which Tor uses for stream isolation) over a unix socket or TCP, and an HTTP/1.0 GET on top.
 * For tests that talk to a Tor SocksPort directly, without curl.
 *
 *   const res = await httpGetViaSocks('/tmp/…/socks', 'http://upstream.test/');
 *   res.status === 200; res.body.toString() === 'hello from upstream\n';
 */
import net from 'node:net';

/** Where the SOCKS server listens: a unix socket path, or host and port. */
export type SocksTarget = string | { host: string; port: number };

const REPLY_TEXT: Record<number, string> = {
  1: 'general SOCKS server failure',
  2: 'connection not allowed by ruleset',
  3: 'network unreachable',
  4: 'host unreachable',
  5: 'connection refused',
  6: 'TTL expired',
  7: 'command not supported',
  8: 'address type not supported',
  // Tor's extended errors (SocksPort ... ExtendedErrors), socks-extensions.txt.
  0xf0: 'onion service descriptor can not be found',
  0xf1: 'onion service descriptor is invalid',
  0xf2: 'onion service introduction failed',
  0xf3: 'onion service rendezvous failed',
  0xf4: 'onion service missing client authorization',
  0xf5: 'onion service wrong client authorization',
  0xf6: 'onion service invalid address',
  0xf7: 'onion service introduction timed out',
};

export class SocksError extends Error {
  constructor(
    /** The SOCKS5 reply code (REP), or -1 for a protocol/transport problem. */
    readonly reply: number,
    message: string,
  ) {
    super(message);
  }
}

export interface SocksOptions {
  /** Whole handshake deadline (connect + negotiation + CONNECT reply). Default 30 s. */
  timeoutMs?: number;
  /** Username/password (Tor: a different pair gets a different circuit). */
  auth?: { user: string; pass: string };
}

/** Buffers a socket's data and hands out exact byte counts (for the handshake only). */
class ByteReader {
  private buf = Buffer.alloc(0);
  private waiter: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | null = null;
  private error: Error | null = null;
  private readonly onData = (d: Buffer): void => {
    this.buf = Buffer.concat([this.buf, d]);
    this.pump();
  };
  private readonly onEnd = (): void => this.fail(new SocksError(-1, 'SOCKS server closed the connection'));
  private readonly onError = (e: Error): void => this.fail(new SocksError(-1, `SOCKS connection: ${e.message}`));

  constructor(private readonly sock: net.Socket) {
    sock.on('data', this.onData);
    sock.on('end', this.onEnd);
    sock.on('close', this.onEnd);
    sock.on('error', this.onError);
  }

  read(n: number): Promise<Buffer> {
    if (this.error) return Promise.reject(this.error);
    return new Promise((resolve, reject) => {
      this.waiter = { n, resolve, reject };
      this.pump();
    });
  }

  /** Stops listening; returns bytes received beyond what was read. */
  detach(): Buffer {
    this.sock.off('data', this.onData);
    this.sock.off('end', this.onEnd);
    this.sock.off('close', this.onEnd);
    this.sock.off('error', this.onError);
    return this.buf;
  }

  private fail(e: Error): void {
    this.error ??= e;
    const w = this.waiter;
    this.waiter = null;
    w?.reject(this.error);
  }

  private pump(): void {
    const w = this.waiter;
    if (w && this.buf.length >= w.n) {
      this.waiter = null;
      const out = this.buf.subarray(0, w.n);
      this.buf = this.buf.subarray(w.n);
      w.resolve(out);
    }
  }
}

/**
 * Opens a SOCKS5 connection to `host:port` (sent as a domain name, so Tor resolves it at the
 * exit, or reaches the onion service). Resolves with the connected socket, ready for data.
 */
export async function socksConnect(proxy: SocksTarget, host: string, port: number, opts: SocksOptions = {}): Promise<net.Socket> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const hostBytes = Buffer.from(host, 'utf8');
  if (hostBytes.length === 0 || hostBytes.length > 255) throw new SocksError(-1, `bad host name ${JSON.stringify(host)}`);
  const sock = typeof proxy === 'string' ? net.createConnection({ path: proxy }) : net.createConnection(proxy);
  const reader = new ByteReader(sock);
  const timer = setTimeout(
    () => sock.destroy(new Error(`SOCKS handshake for ${host}:${port} timed out after ${timeoutMs} ms`)),
    timeoutMs,
  );
  try {
    const method = opts.auth ? 2 : 0;
    sock.write(Buffer.from([5, 1, method]));
    const sel = await reader.read(2);
    if (sel[0] !== 5 || sel[1] !== method) {
      throw new SocksError(-1, `SOCKS server refused method ${method} (answered ${sel.toString('hex')})`);
    }
    if (opts.auth) {
      const u = Buffer.from(opts.auth.user);
      const p = Buffer.from(opts.auth.pass);
      sock.write(Buffer.concat([Buffer.from([1, u.length]), u, Buffer.from([p.length]), p]));
      const ar = await reader.read(2);
      if (ar[1] !== 0) throw new SocksError(-1, 'SOCKS username/password rejected');
    }
    const portBytes = Buffer.alloc(2);
    portBytes.writeUInt16BE(port);
    sock.write(Buffer.concat([Buffer.from([5, 1, 0, 3, hostBytes.length]), hostBytes, portBytes]));
    const head = await reader.read(4);
    if (head[0] !== 5) throw new SocksError(-1, `bad SOCKS reply version ${head[0]}`);
    const rep = head[1]!;
    // Consume the bound address whatever the outcome.
    const atyp = head[3];
    const addrLen = atyp === 1 ? 4 : atyp === 4 ? 16 : atyp === 3 ? (await reader.read(1))[0]! : 0;
    await reader.read(addrLen + 2);
    if (rep !== 0) {
      throw new SocksError(rep, `SOCKS CONNECT ${host}:${port} failed: ${REPLY_TEXT[rep] ?? 'unknown'} (0x${rep.toString(16)})`);
    }
    const rest = reader.detach();
    if (rest.length > 0) sock.unshift(rest);
    return sock;
  } catch (err) {
    reader.detach();
    sock.destroy();
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

export interface HttpResponse {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}

/**
 * `GET url` (http:// only) through the SOCKS server, HTTP/1.0 with `Connection: close`; the
 * whole response is buffered. `timeoutMs` bounds everything (default 60 s).
 */
export async function httpGetViaSocks(proxy: SocksTarget, url: string, opts: SocksOptions = {}): Promise<HttpResponse> {
  const u = new URL(url);
  if (u.protocol !== 'http:') throw new Error(`httpGetViaSocks: only http:// URLs (${url})`);
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const deadline = Date.now() + timeoutMs;
  const port = u.port ? Number(u.port) : 80;
  const sock = await socksConnect(proxy, u.hostname, port, { ...opts, timeoutMs });
  return new Promise<HttpResponse>((resolve, reject) => {
    const chunks: Buffer[] = [];
    const timer = setTimeout(
      () => sock.destroy(new Error(`GET ${url} timed out after ${timeoutMs} ms`)),
      Math.max(1, deadline - Date.now()),
    );
    sock.on('data', (d: Buffer) => chunks.push(d));
    sock.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    sock.on('end', () => {
      clearTimeout(timer);
      try {
        resolve(parseHttpResponse(Buffer.concat(chunks)));
      } catch (e) {
        reject(e as Error);
      }
    });
    sock.write(`GET ${u.pathname}${u.search} HTTP/1.0\r\nHost: ${u.host}\r\nConnection: close\r\nUser-Agent: mvnet-test\r\n\r\n`);
  });
}

function parseHttpResponse(raw: Buffer): HttpResponse {
  const end = raw.indexOf('\r\n\r\n');
  if (end < 0) {
    throw new Error(`incomplete HTTP response (${raw.length} bytes): ${JSON.stringify(raw.subarray(0, 200).toString('latin1'))}`);
  }
  const [statusLine, ...headerLines] = raw.subarray(0, end).toString('latin1').split('\r\n');
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(statusLine ?? '');
  if (!m) throw new Error(`bad HTTP status line ${JSON.stringify(statusLine)}`);
  const headers: Record<string, string> = {};
  for (const h of headerLines) {
    const i = h.indexOf(':');
    if (i > 0) headers[h.slice(0, i).trim().toLowerCase()] = h.slice(i + 1).trim();
  }
  return { status: Number(m[1]), headers, body: raw.subarray(end + 4) };
}
