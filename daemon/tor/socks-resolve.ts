/**
 * Tor's SOCKS5 RESOLVE extension (socks-extensions.txt: command 0xF0): a name resolved by an
 * exit over a circuit isolated by the SOCKS credentials, so DNS takes the VM's circuits too.
 */
import type { Socket } from 'node:net';
import { connectSocks, type SocksEndpoint } from './socks-endpoint.js';

export interface SocksAuth {
  user: string;
  pass: string;
}

export class SocksResolveError extends Error {
  constructor(
    readonly reply: number,
    message: string,
  ) {
    super(message);
  }
}

/** Reads exactly `n` bytes from a socket stream. */
class Reader {
  private buf = Buffer.alloc(0);
  private waiting: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | null = null;
  constructor(sock: Socket) {
    sock.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.pump();
    });
    sock.on('close', () => this.waiting?.reject(new Error('SOCKS connection closed')));
    sock.on('error', (e) => this.waiting?.reject(e));
  }
  private pump(): void {
    const w = this.waiting;
    if (w !== null && this.buf.length >= w.n) {
      this.waiting = null;
      const out = this.buf.subarray(0, w.n);
      this.buf = this.buf.subarray(w.n);
      w.resolve(out);
    }
  }
  read(n: number): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      this.waiting = { n, resolve, reject };
      this.pump();
    });
  }
}

export async function socksResolve(ep: SocksEndpoint, auth: SocksAuth, name: string, timeoutMs: number): Promise<Buffer> {
  const nameBytes = Buffer.from(name, 'ascii');
  if (nameBytes.length === 0 || nameBytes.length > 255) throw new SocksResolveError(1, 'bad name');
  const sock = await connectSocks(ep, timeoutMs);
  const timer = setTimeout(() => sock.destroy(new Error('SOCKS RESOLVE timed out')), timeoutMs);
  try {
    const r = new Reader(sock);
    sock.write(Buffer.from([5, 1, 2]));
    const m = await r.read(2);
    if (m[0] !== 5 || m[1] !== 2) throw new SocksResolveError(1, 'SOCKS server refused username/password auth');
    const u = Buffer.from(auth.user);
    const p = Buffer.from(auth.pass);
    sock.write(Buffer.concat([Buffer.from([1, u.length]), u, Buffer.from([p.length]), p]));
    const a = await r.read(2);
    if (a[1] !== 0) throw new SocksResolveError(1, 'SOCKS authentication failed');
    sock.write(Buffer.concat([Buffer.from([5, 0xf0, 0, 3, nameBytes.length]), nameBytes, Buffer.from([0, 0])]));
    const h = await r.read(4);
    if (h[1] !== 0) throw new SocksResolveError(h[1]!, `RESOLVE failed with SOCKS reply ${h[1]}`);
    const atyp = h[3];
    const len = atyp === 1 ? 4 : atyp === 4 ? 16 : -1;
    if (len < 0) throw new SocksResolveError(1, `unexpected address type ${atyp}`);
    const addr = await r.read(len + 2);
    return Buffer.from(addr.subarray(0, len));
  } finally {
    clearTimeout(timer);
    sock.destroy();
  }
}
