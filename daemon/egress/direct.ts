/**
 * The direct route's exits: each VM flow becomes a host socket to the same destination
 * (userland NAT, as passt does). No kernel forwarding, NAT or iptables is involved.
 */
import net from 'node:net';
import dgram from 'node:dgram';
import type { Duplex } from 'node:stream';
import { ipString, type IpAddr } from '../endpoint/addr.js';
import { UpstreamError, type DatagramChannel, type DatagramUpstream, type OpenFailure, type StreamUpstream } from '../endpoint/upstream.js';

export interface DirectOptions {
  /** Host address outbound IPv4 sockets bind to (default: the kernel's choice). */
  bind4?: string;
  bind6?: string;
  /** Give up on a host connect after this long: the VM's SYN then simply times out. */
  connectTimeoutMs: number;
  /** Gateway address → host loopback for direct-routed VMs... */
  hostLoopback?: boolean;
  /** ...on these ports only (inclusive ranges); none listed: no port. */
  hostLoopbackPorts?: readonly (readonly [number, number])[];
}

export const DIRECT_TAG = 'direct';

function failureOf(code: string | undefined): OpenFailure {
  switch (code) {
    case 'ECONNREFUSED':
      return 'refused';
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'EADDRNOTAVAIL':
      return 'unreachable';
    default:
      return 'timeout';
  }
}

export function directTcp(dst: IpAddr, port: number, o: DirectOptions, host?: string): StreamUpstream {
  return {
    tag: DIRECT_TAG,
    open(signal: AbortSignal): Promise<Duplex> {
      return new Promise<Duplex>((resolve, reject) => {
        const localAddress = dst.v === 4 ? o.bind4 : o.bind6;
        const sock = net.connect({ host: host ?? ipString(dst), port, allowHalfOpen: true, noDelay: true, ...(localAddress !== undefined ? { localAddress } : {}) });
        const timer = setTimeout(() => fail(new UpstreamError('timeout', 'connect timed out')), o.connectTimeoutMs);
        const onAbort = (): void => fail(new UpstreamError('timeout', 'aborted'));
        signal.addEventListener('abort', onAbort, { once: true });
        const cleanup = (): void => {
          clearTimeout(timer);
          signal.removeEventListener('abort', onAbort);
          sock.removeListener('error', onError);
        };
        function fail(e: UpstreamError): void {
          cleanup();
          sock.destroy();
          reject(e);
        }
        const onError = (e: NodeJS.ErrnoException): void => fail(new UpstreamError(failureOf(e.code), e.message));
        sock.once('error', onError);
        sock.once('connect', () => {
          cleanup();
          resolve(sock);
        });
      });
    },
  };
}

export function directUdp(dst: IpAddr, port: number, o: DirectOptions, host?: string): DatagramUpstream {
  return {
    tag: DIRECT_TAG,
    open(deliver, onError): DatagramChannel {
      const s = dgram.createSocket({ type: dst.v === 4 ? 'udp4' : 'udp6' });
      let ready = false;
      let closed = false;
      const queue: Buffer[] = [];
      s.on('message', (m) => deliver(m));
      s.on('error', (e) => {
        if (!closed) onError(e);
      });
      const localAddress = dst.v === 4 ? o.bind4 : o.bind6;
      s.bind({ port: 0, ...(localAddress !== undefined ? { address: localAddress } : {}) }, () => {
        s.connect(port, host ?? ipString(dst), () => {
          ready = true;
          for (const q of queue.splice(0)) s.send(q);
        });
      });
      return {
        send(payload) {
          if (closed) return;
          if (ready) s.send(payload);
          else if (queue.length < 16) queue.push(payload);
        },
        close() {
          if (closed) return;
          closed = true;
          s.close();
        },
      };
    },
  };
}
