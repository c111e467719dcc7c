/**
 * The Tor route's exit: each VM TCP stream becomes a SOCKS5 CONNECT on Tor's SOCKS port with
 * credentials unique to the VM (Tor's IsolateSOCKSAuth keeps each VM on its own circuits). A
 * destination is an IP, or a .onion name recovered from the automap address the VM connected to.
 */
import type { Duplex } from 'node:stream';
import { SocksClient, SocksClientError } from 'socks';
import { connectSocks, type SocksEndpoint } from '../tor/socks-endpoint.js';
import type { SocksAuth } from '../tor/socks-resolve.js';
import { UpstreamError, type OpenFailure, type StreamUpstream } from '../endpoint/upstream.js';

export const TOR_TAG = 'tor';

/** SOCKS5 reply codes (RFC 1928 §6) as Tor uses them → what the VM should see. */
function failureOf(e: unknown): OpenFailure {
  const msg = e instanceof Error ? e.message : String(e);
  if (/ConnectionRefused|ConnectionNotAllowed/i.test(msg)) return 'refused';
  if (/TTLExpired|HostUnreachable|NetworkUnreachable/i.test(msg)) return 'timeout';
  return 'refused';
}

export interface TorEgressDeps {
  /** The SOCKS endpoint while Tor is ready; null while it is not (fail closed). */
  socks(): SocksEndpoint | null;
  timeoutMs: number;
  /** Whether Tor is still alive (asked when a stream ends, to tell an end from a crash). */
  alive(): Promise<boolean>;
}

export function torTcp(deps: TorEgressDeps, auth: SocksAuth, host: string, port: number): StreamUpstream {
  return {
    tag: TOR_TAG,
    confirmEnd: () => deps.alive(),
    async open(signal: AbortSignal): Promise<Duplex> {
      const ep = deps.socks();
      if (ep === null) throw new UpstreamError('refused', 'Tor is not ready');
      let raw;
      try {
        raw = await connectSocks(ep, deps.timeoutMs);
      } catch (e) {
        throw new UpstreamError('refused', `Tor SOCKS port: ${(e as Error).message}`);
      }
      const onAbort = (): void => {
        raw.destroy();
      };
      signal.addEventListener('abort', onAbort, { once: true });
      try {
        const { socket } = await SocksClient.createConnection({
          proxy: { host: '127.0.0.1', port: 9, type: 5, userId: auth.user, password: auth.pass },
          command: 'connect',
          destination: { host, port },
          existing_socket: raw,
          timeout: deps.timeoutMs,
        });
        socket.setNoDelay?.(true);
        // The SOCKS library's socket was created without allowHalfOpen: keep the VM's half-close.
        (socket as unknown as { allowHalfOpen: boolean }).allowHalfOpen = true;
        return socket;
      } catch (e) {
        raw.destroy();
        throw new UpstreamError(e instanceof SocksClientError ? failureOf(e) : 'refused', (e as Error).message);
      } finally {
        signal.removeEventListener('abort', onAbort);
      }
    },
  };
}
