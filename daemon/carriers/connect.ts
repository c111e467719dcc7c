/**
 * How a stream dialer (stream.ts dialStream) reaches its remote: a TCP connection, a unix
 * socket, or a stream through Tor's SOCKS port. Each settles within `timeoutMs` and rejects with
 * a short Error (its errno code where there is one, for the status line).
 */
import net from 'node:net';
import { SocksClient } from 'socks';
import { connectSocks as openSocksPort, type SocksEndpoint } from '../tor/socks-endpoint.js';

function connectWith(opts: net.NetConnectOpts, timeoutMs: number, what: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.createConnection(opts);
    const timer = setTimeout(() => {
      s.destroy();
      reject(Object.assign(new Error(`timed out connecting to ${what}`), { code: 'ETIMEDOUT' }));
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(timer);
      s.removeAllListeners('error');
      resolve(s);
    });
    s.once('error', (e) => {
      clearTimeout(timer);
      s.destroy();
      reject(e);
    });
  });
}

export async function connectTcp(host: string, port: number, timeoutMs: number): Promise<net.Socket> {
  const s = await connectWith({ host, port }, timeoutMs, `${host.includes(':') ? `[${host}]` : host}:${port}`);
  // Messages are whole when written: waiting for more (Nagle) only adds latency.
  s.setNoDelay(true);
  return s;
}

export function connectUnix(path: string, timeoutMs: number): Promise<net.Socket> {
  return connectWith({ path }, timeoutMs, path);
}

/**
 * Through Tor's SOCKS port (daemon/tor/socks-endpoint.ts SocksEndpoint), hostname passed to Tor
 * (never resolved locally), SOCKS5 username/password = isolation (a link's own circuit).
 */
export async function connectSocks(ep: SocksEndpoint, host: string, port: number, auth: { username: string; password: string }, timeoutMs: number): Promise<net.Socket> {
  const started = Date.now();
  const raw = await openSocksPort(ep, timeoutMs);
  try {
    const { socket } = await SocksClient.createConnection({
      // The connection is already open (the proxy may be a unix socket); the library wants an address anyway.
      proxy: { host: '127.0.0.1', port: 9, type: 5, userId: auth.username, password: auth.password },
      command: 'connect',
      // A name is sent as a SOCKS5 domain name (ATYP 3): Tor resolves it, or reaches the onion service.
      destination: { host, port },
      existing_socket: raw,
      timeout: Math.max(1, timeoutMs - (Date.now() - started)),
    });
    socket.setNoDelay?.(true);
    return socket;
  } catch (e) {
    raw.destroy();
    throw new Error(`Tor could not connect to ${host}:${port}: ${(e as Error).message}`);
  }
}
