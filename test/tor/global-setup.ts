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
import { createNetns, type ManagedProcess, type Netns } from '../support/netns.js';
import type { TorUpstreamInfo } from './context.js';
import { UPSTREAM_ADDRESS, deleteNetnsSync, onExitSync, startPrivateTor, startTestServers, type PrivateTor } from './private-network.js';

export const UPSTREAM_HELLO = 'hello from upstream';
export const UPSTREAM_NAME = 'upstream.test';

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

  let upNs: Netns | undefined;
  let tor: PrivateTor | undefined;
  let servers: ManagedProcess | undefined;
  let dropExitSync = (): void => {};
  const teardown = async (): Promise<void> => {
    await servers?.stop();
    await tor?.stop();
    await upNs?.delete();
    dropExitSync();
  };
  try {
    upNs = await createNetns('torup');
    const upName = upNs.name;
    dropExitSync = onExitSync(() => deleteNetnsSync(upName));
    tor = await startPrivateTor({ upstream: { nsName: upNs.name, address: UPSTREAM_ADDRESS } });
    const names = { [UPSTREAM_NAME]: UPSTREAM_ADDRESS, [`www.${UPSTREAM_NAME}`]: UPSTREAM_ADDRESS };
    const tServers = Date.now();
    const started = await startTestServers(
      upNs,
      tor.dir,
      {
        http: [{ host: '0.0.0.0', port: 80, hello: UPSTREAM_HELLO, largeBytes }],
        dns: { host: '0.0.0.0', port: 53, records: names },
      },
      `${upNs.name}: upstream servers`,
    );
    servers = started.proc;
    const upstream: TorUpstreamInfo = {
      ns: upNs.name,
      address: UPSTREAM_ADDRESS,
      httpPort: 80,
      hello: UPSTREAM_HELLO,
      url: `http://${UPSTREAM_ADDRESS}:80/`,
      name: UPSTREAM_NAME,
      nameUrl: `http://${UPSTREAM_NAME}:80/`,
      largeBytes,
      dns: { address: UPSTREAM_ADDRESS, port: 53, names },
      exitAddress: tor.exit.address,
    };
    provide('privateTor', tor.info());
    provide('torUpstream', upstream);
    const t = tor.timings;
    process.stderr.write(
      `[tor global setup] private Tor network ${tor.ns} (${tor.dir}): consensus ${t.consensusMs} ms, ` +
        `client bootstrapped ${t.bootstrapMs} ms, exit ${t.exitMs} ms, onion ${t.onionMs} ms; ` +
        `upstream servers ${Date.now() - tServers} ms more\n`,
    );
  } catch (err) {
    await teardown().catch(() => {});
    throw err;
  }
  return teardown;
}
