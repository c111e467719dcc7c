/**
 * A SOCKS5 CONNECT with username/password auth in ONE write: greeting, auth and request are
 * pipelined (Tor's SOCKS parser takes them from one buffer), so a stream costs one round trip
 * to the SOCKS port instead of three; on a loaded machine each round trip is a wake-up of Tor
 * and of the daemon. The replies are parsed as they come; bytes after the CONNECT reply (the
 * server may speak first) are put back on the socket for its reader.
 */
import { isIP, type Socket } from 'node:net';
import { parseIpv6Text } from '../wire/ip-text.js';

export interface SocksAuth {
  user: string;
  pass: string;
}

/** CONNECT (RFC 1928) and Tor's RESOLVE extension (socks-extensions.txt). */
export const SOCKS_CONNECT = 1;
export const SOCKS_RESOLVE = 0xf0;

/** A refused or failed SOCKS exchange; `reply` is the CONNECT reply code (RFC 1928 §6), or -1 before it. */
export class Socks5Error extends Error {
  constructor(
    readonly reply: number,
    message: string,
  ) {
    super(message);
  }
}

/** RFC 1928 §6 reply names (Tor's ExtendedErrors add 0xF0–0xF7 for onion services). */
const REPLY_NAMES: Record<number, string> = {
  1: 'general failure',
  2: 'connection not allowed',
  3: 'network unreachable',
  4: 'host unreachable',
  5: 'connection refused',
  6: 'TTL expired',
  7: 'command not supported',
  8: 'address type not supported',
};

/** The three client messages of a CONNECT (or `cmd`), back to back. */
export function connectRequest(auth: SocksAuth, host: string, port: number, cmd = SOCKS_CONNECT): Buffer {
  const u = Buffer.from(auth.user, 'utf8');
  const p = Buffer.from(auth.pass, 'utf8');
  if (u.length === 0 || u.length > 255 || p.length > 255) throw new Socks5Error(-1, 'SOCKS username/password must be 1–255 / 0–255 bytes');
  let addr: Buffer;
  const v = isIP(host);
  if (v === 4) addr = Buffer.from([1, ...host.split('.').map(Number)]);
  else if (v === 6) {
    const a = parseIpv6Text(host);
    if (!a.ok) throw new Socks5Error(-1, `bad IPv6 address ${host}`);
    addr = Buffer.concat([Buffer.from([4]), a.value]);
  } else {
    const name = Buffer.from(host, 'ascii');
    if (name.length === 0 || name.length > 255) throw new Socks5Error(-1, 'bad host name');
    addr = Buffer.concat([Buffer.from([3, name.length]), name]);
  }
  const out = Buffer.allocUnsafe(3 + 3 + u.length + p.length + 3 + addr.length + 2);
  let o = 0;
  o = out.writeUInt8(5, o); // greeting: version 5, one method: username/password
  o = out.writeUInt8(1, o);
  o = out.writeUInt8(2, o);
  o = out.writeUInt8(1, o); // RFC 1929 auth
  o = out.writeUInt8(u.length, o);
  o += u.copy(out, o);
  o = out.writeUInt8(p.length, o);
  o += p.copy(out, o);
  o = out.writeUInt8(5, o); // the request: CONNECT or RESOLVE
  o = out.writeUInt8(cmd, o);
  o = out.writeUInt8(0, o);
  o += addr.copy(out, o);
  out.writeUInt16BE(port, o);
  return out;
}

/**
 * Incremental parser of the server replies: method choice (RFC 1928; absent from Tor's answer
 * to a pipelined request), auth (RFC 1929), CONNECT. `push` returns the bytes after the CONNECT
 * reply once it is complete (maybe empty), null while more is needed; throws Socks5Error on a
 * refusal.
 */
export class ConnectReplyParser {
  private buf: Buffer = Buffer.alloc(0);
  private stage: 0 | 1 | 2 | 3 = 0;
  /** The reply's address type and address bytes (RESOLVE's answer), once complete. */
  bound: { atyp: number; addr: Buffer } | null = null;

  push(d: Buffer): Buffer | null {
    this.buf = this.buf.length === 0 ? d : Buffer.concat([this.buf, d]);
    for (;;) {
      const b = this.buf;
      if (this.stage === 0) {
        if (b.length < 1) return null;
        // Tor answers a pipelined request with the last pending reply only: its method choice is
        // overwritten by the auth reply before it is flushed. An auth reply (version 1, never 5)
        // here means the method was accepted.
        if (b[0] === 1) {
          this.stage = 1;
          continue;
        }
        if (b.length < 2) return null;
        if (b[0] !== 5 || b[1] !== 2) throw new Socks5Error(-1, `SOCKS server refused username/password auth (${b.subarray(0, 2).toString('hex')})`);
        this.take(2);
      } else if (this.stage === 1) {
        if (b.length < 2) return null;
        if (b[0] !== 1) throw new Socks5Error(-1, `bad SOCKS auth reply version ${b[0]}`);
        if (b[1] !== 0) throw new Socks5Error(-1, 'SOCKS authentication failed');
        this.take(2);
      } else if (this.stage === 2) {
        if (b.length < 2) return null;
        if (b[0] !== 5) throw new Socks5Error(-1, `bad SOCKS reply version ${b[0]}`);
        const rep = b[1]!;
        // A refusal needs no more than its code (Tor closes after it).
        if (rep !== 0) throw new Socks5Error(rep, `SOCKS CONNECT failed: ${REPLY_NAMES[rep] ?? `reply ${rep}`}`);
        if (b.length < 5) return null;
        const atyp = b[3];
        const len = atyp === 1 ? 4 : atyp === 4 ? 16 : atyp === 3 ? 1 + b[4]! : -1;
        if (len < 0) throw new Socks5Error(-1, `bad SOCKS address type ${atyp}`);
        if (b.length < 4 + len + 2) return null;
        this.bound = { atyp: atyp!, addr: Buffer.from(b.subarray(atyp === 3 ? 5 : 4, 4 + len)) };
        this.take(4 + len + 2);
        return this.buf;
      } else return this.buf;
    }
  }

  private take(n: number): void {
    this.buf = this.buf.subarray(n);
    this.stage = (this.stage + 1) as 1 | 2 | 3;
  }
}

/**
 * CONNECT through the SOCKS server `sock` is connected to. Resolves once the server said yes;
 * the socket is then paused with any early server bytes unshifted (the caller's reader resumes it).
 * Rejects (and leaves closing the socket to the caller) on refusal, close, error or timeout.
 */
export async function socks5Connect(sock: Socket, auth: SocksAuth, host: string, port: number, timeoutMs: number): Promise<void> {
  await socks5Request(sock, auth, host, port, timeoutMs, SOCKS_CONNECT);
}

/** One pipelined request (`cmd`); resolves with the reply's bound address. See socks5Connect. */
export function socks5Request(
  sock: Socket,
  auth: SocksAuth,
  host: string,
  port: number,
  timeoutMs: number,
  cmd: number,
): Promise<{ atyp: number; addr: Buffer }> {
  let req: Buffer;
  try {
    req = connectRequest(auth, host, port, cmd);
  } catch (e) {
    return Promise.reject(e as Error);
  }
  return new Promise((resolve, reject) => {
    const parser = new ConnectReplyParser();
    const done = (err: Error | null, rest?: Buffer): void => {
      clearTimeout(timer);
      sock.off('data', onData);
      sock.off('error', onError);
      sock.off('close', onClose);
      if (err !== null) {
        reject(err);
        return;
      }
      sock.pause();
      if (rest !== undefined && rest.length > 0) sock.unshift(rest);
      resolve(parser.bound!);
    };
    const onData = (d: Buffer): void => {
      let rest: Buffer | null;
      try {
        rest = parser.push(d);
      } catch (e) {
        done(e as Error);
        return;
      }
      if (rest !== null) done(null, rest);
    };
    const onError = (e: Error): void => done(e);
    const onClose = (): void => done(new Socks5Error(-1, 'SOCKS connection closed during the handshake'));
    const timer = setTimeout(() => done(new Socks5Error(-1, 'SOCKS handshake timed out')), timeoutMs);
    sock.on('data', onData);
    sock.on('error', onError);
    sock.on('close', onClose);
    sock.write(req);
  });
}
