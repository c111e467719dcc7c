/** Where Tor's SOCKS port is: a unix socket (the default for the embedded Tor) or HOST:PORT. */
import net from 'node:net';

export type SocksEndpoint = { path: string } | { host: string; port: number };

/** Opens a plain connection to the SOCKS port (the SOCKS handshake is the caller's). */
export function connectSocks(ep: SocksEndpoint, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = 'path' in ep ? net.createConnection({ path: ep.path }) : net.createConnection({ host: ep.host, port: ep.port });
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error('timed out connecting to the Tor SOCKS port'));
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(timer);
      s.removeAllListeners('error');
      resolve(s);
    });
    s.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}
