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
import type { TorUpstreamInfo } from './with-upstream.js';

export type { TorUpstreamInfo } from './with-upstream.js';

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
