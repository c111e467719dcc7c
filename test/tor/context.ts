/**
 * What test/tor/global-setup.ts provides to test files, and how they get it:
 *
 *   import { privateTor, torUpstream } from './context.js';
 *   const tor = privateTor();            // PrivateTorHandle: info + routerLink() + torrcForClient()
 *   const up = torUpstream();            // the upstream host the exit reaches
 *
 * Both throw a clear error when the run has no private Tor network (the global setup is not in
 * the vitest config, or MVNET_SKIP_TOR=1).
 */
import { inject } from 'vitest';
import { attachPrivateTor, type PrivateTorHandle, type PrivateTorInfo } from './private-network.js';

/** The upstream namespace: an "internet site" behind the exit (test-servers.ts). */
export interface TorUpstreamInfo {
  /** Its namespace (reachable only from the tor namespace, through a veth). */
  ns: string;
  /** Its address (TEST-NET-2; exists only in our namespaces). */
  address: string;
  /** HTTP on this port, all addresses. */
  httpPort: number;
  /** `GET /` answers this plus "\n". */
  hello: string;
  /** `http://<address>:<port>/`. */
  url: string;
  /** A name the exit resolves to `address` (the upstream runs the exit's only DNS server). */
  name: string;
  /** `http://<name>:<port>/`. */
  nameUrl: string;
  /** Size of `GET /large` (bytes: see `patternBytes`/`isPattern` in test-servers.ts). */
  largeBytes: number;
  /** The DNS server (UDP) the exit uses, and the names it knows; all others are NXDOMAIN. */
  dns: { address: string; port: number; names: Record<string, string> };
  /** What the upstream sees as the client address of anything coming through Tor. */
  exitAddress: string;
}

declare module 'vitest' {
  export interface ProvidedContext {
    privateTor: PrivateTorInfo | null;
    torUpstream: TorUpstreamInfo | null;
  }
}

const MISSING =
  'no private Tor network in this run: add test/tor/global-setup.ts to `globalSetup` in the vitest config ' +
  '(and do not set MVNET_SKIP_TOR=1)';

/** The run's private Tor network (started once by the global setup). */
export function privateTor(): PrivateTorHandle {
  const info = inject('privateTor');
  if (!info) throw new Error(MISSING);
  return attachPrivateTor(info);
}

/** The run's upstream host behind the exit. */
export function torUpstream(): TorUpstreamInfo {
  const up = inject('torUpstream');
  if (!up) throw new Error(MISSING);
  return up;
}
