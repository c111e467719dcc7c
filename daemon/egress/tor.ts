/**
 * The Tor route's exit: each VM TCP stream becomes a SOCKS5 CONNECT on Tor's SOCKS port with
 * credentials unique to the VM (Tor's IsolateSOCKSAuth keeps each VM on its own circuits). A
 * destination is an IP, or a .onion name recovered from the automap address the VM connected to.
 */
import type { Duplex } from 'node:stream';
import { connectSocks, type SocksEndpoint } from '../tor/socks-endpoint.js';
import { Socks5Error, socks5Connect } from '../tor/socks5.js';
import type { SocksAuth } from '../tor/socks-resolve.js';
import { UpstreamError, type OpenFailure, type StreamUpstream } from '../endpoint/upstream.js';

export const TOR_TAG = 'tor';

/** SOCKS5 reply codes (RFC 1928 §6) as Tor uses them → what the VM should see. */
export function failureOf(reply: number): OpenFailure {
  // 3 network unreachable, 4 host unreachable, 6 TTL expired: the VM's SYN times out, as it
  // would behind a router that got no answer; the rest (refused, not allowed, onion errors) is a reset.
  return reply === 3 || reply === 4 || reply === 6 ? 'timeout' : 'refused';
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
        await socks5Connect(raw, auth, host, port, deps.timeoutMs);
        // A TCP SOCKS port: no Nagle delay on the VM's small writes (a no-op on a unix socket).
        raw.setNoDelay(true);
        // net.createConnection's socket has no allowHalfOpen: keep the VM's half-close.
        (raw as unknown as { allowHalfOpen: boolean }).allowHalfOpen = true;
        return raw;
      } catch (e) {
        raw.destroy();
        throw new UpstreamError(e instanceof Socks5Error ? failureOf(e.reply) : 'refused', (e as Error).message);
      } finally {
        signal.removeEventListener('abort', onAbort);
      }
    },
  };
}
