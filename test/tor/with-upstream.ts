/**
 * The private Tor network (private-network.ts) plus the "internet site" its exit reaches: a
 * namespace mvt-torup-<random> at 198.51.100.80 running test-servers.ts (HTTP on port 80:
 * "hello from upstream", /whoami, /large, /bytes/N, POST /upload; and the exit's only DNS
 * server on port 53: upstream.test and www.upstream.test → 198.51.100.80, NXDOMAIN otherwise).
 *
 * One start for the test run (test/tor/global-setup.ts) and for the demo (scripts/demo-tor.ts,
 * compiled to dist/ with it), so both stand up the same network. Plain Node (no vitest import).
 */
import { createNetns, type ManagedProcess, type Netns } from '../support/netns.js';
import { UPSTREAM_ADDRESS, deleteNetnsSync, onExitSync, startPrivateTor, startTestServers, type PrivateTor } from './private-network.js';

export const UPSTREAM_HELLO = 'hello from upstream';
export const UPSTREAM_NAME = 'upstream.test';

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

export interface TorWithUpstream {
  tor: PrivateTor;
  upstream: TorUpstreamInfo;
  /** Milliseconds the upstream servers took after the Tor network was ready. */
  serversMs: number;
  /** Stops the servers and the network, deletes both namespaces. Idempotent. */
  stop(): Promise<void>;
}

/**
 * Starts both. If this process is interrupted (SIGINT/SIGTERM/exit) first, `onExitSync` deletes
 * the upstream namespace (and every process in it); the Tor network does the same for its own.
 */
export async function startTorWithUpstream(opts: { largeBytes?: number } = {}): Promise<TorWithUpstream> {
  const largeBytes = opts.largeBytes ?? 8 * 1024 * 1024;
  let upNs: Netns | undefined;
  let tor: PrivateTor | undefined;
  let servers: ManagedProcess | undefined;
  let dropExitSync = (): void => {};
  const stop = async (): Promise<void> => {
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
    return { tor, upstream, serversMs: Date.now() - tServers, stop };
  } catch (err) {
    await stop().catch(() => {});
    throw err;
  }
}
