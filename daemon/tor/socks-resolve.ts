/**
 * Tor's SOCKS5 RESOLVE extension (socks-extensions.txt: command 0xF0): a name resolved by an
 * exit over a circuit isolated by the SOCKS credentials, so DNS takes the VM's circuits too.
 * Greeting, auth and RESOLVE go in one write (socks5.ts): one round trip to Tor before the exit's.
 */
import { connectSocks, type SocksEndpoint } from './socks-endpoint.js';
import { SOCKS_RESOLVE, Socks5Error, socks5Request, type SocksAuth } from './socks5.js';

export type { SocksAuth } from './socks5.js';

export class SocksResolveError extends Error {
  constructor(
    readonly reply: number,
    message: string,
  ) {
    super(message);
  }
}

export async function socksResolve(ep: SocksEndpoint, auth: SocksAuth, name: string, timeoutMs: number): Promise<Buffer> {
  const nameBytes = Buffer.from(name, 'ascii');
  if (nameBytes.length === 0 || nameBytes.length > 255) throw new SocksResolveError(1, 'bad name');
  const sock = await connectSocks(ep, timeoutMs);
  try {
    const bound = await socks5Request(sock, auth, name, 0, timeoutMs, SOCKS_RESOLVE);
    if (bound.atyp !== 1 && bound.atyp !== 4) throw new SocksResolveError(1, `unexpected address type ${bound.atyp}`);
    return bound.addr;
  } catch (e) {
    if (e instanceof Socks5Error) throw new SocksResolveError(e.reply < 0 ? 1 : e.reply, e.reply < 0 ? e.message : `RESOLVE failed with SOCKS reply ${e.reply}`);
    throw e;
  } finally {
    sock.destroy();
  }
}
