/**
 * vitest globalSetup: ONE private Tor network for the whole run (test/tor/private-network.ts),
 * plus the upstream namespace its exit reaches, provided to test files as JSON:
 *
 *   provide('privateTor', PrivateTorInfo)   → privateTor() in test/tor/context.ts
 *   provide('torUpstream', TorUpstreamInfo) → torUpstream()
 *
 * The upstream (namespace mvt-torup-<random>, 198.51.100.80) runs test-servers.ts: HTTP on
 * port 80 ("hello from upstream", /whoami, /large of $MVNET_TOR_LARGE_BYTES bytes — default
 * 8 MiB —, /bytes/N, POST /upload) and the exit's only DNS server on port 53 (upstream.test and
 * www.upstream.test → 198.51.100.80, NXDOMAIN for anything else).
 *
 * MVNET_SKIP_PRIVILEGED=1 or MVNET_SKIP_TOR=1: starts nothing (provides null; Tor tests then
 * fail with a clear message if they run). Teardown stops everything. If the runner is
 * interrupted (SIGINT/SIGTERM/exit), `onExitSync` deletes both namespaces (and every process in
 * them) ahead of vitest's own handlers; after a SIGKILL the tors and servers exit by themselves
 * (__OwningControllerProcess / ownerPid) and test/support/cleanup.sh removes the rest.
 */
import type { TestProject } from 'vitest/node';
import { startTorWithUpstream, type TorWithUpstream } from './with-upstream.js';

export { UPSTREAM_HELLO, UPSTREAM_NAME } from './with-upstream.js';

export default async function setup({ provide }: TestProject): Promise<() => Promise<void>> {
  if (process.env.MVNET_SKIP_PRIVILEGED === '1' || process.env.MVNET_SKIP_TOR === '1') {
    provide('privateTor', null);
    provide('torUpstream', null);
    return async () => {};
  }
  const largeBytes = Number(process.env.MVNET_TOR_LARGE_BYTES ?? 8 * 1024 * 1024);
  if (!Number.isSafeInteger(largeBytes) || largeBytes < 0) {
    throw new Error(`bad MVNET_TOR_LARGE_BYTES ${process.env.MVNET_TOR_LARGE_BYTES}`);
  }
  const started: TorWithUpstream = await startTorWithUpstream({ largeBytes });
  const { tor, upstream } = started;
  provide('privateTor', tor.info());
  provide('torUpstream', upstream);
  const t = tor.timings;
  process.stderr.write(
    `[tor global setup] private Tor network ${tor.ns} (${tor.dir}): consensus ${t.consensusMs} ms, ` +
      `client bootstrapped ${t.bootstrapMs} ms, exit ${t.exitMs} ms, onion ${t.onionMs} ms; ` +
      `upstream servers ${started.serversMs} ms more\n`,
  );
  return started.stop;
}
