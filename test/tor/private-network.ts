/**
 * A private Tor network for tests, ready in ~6–9 s (client bootstrapped, exit and onion
 * working), that never touches the public one.
 *
 * Topology — all of it inside ONE network namespace, `mvt-tor-<random>`, which has no default
 * route, no gateway, no IPv6 and no forwarding:
 *
 *   relays, /32s on `lo`:  203.0.113.1  authority (also a relay and HSDir; DirPort 9030)
 *                          203.0.113.2… relays; the last one is the only exit (ExitPolicy accept *:*)
 *                          every ORPort is 9001
 *   the client:            SocksPort/ControlPort as unix sockets in `<dir>/sock` (world-accessible,
 *                          so processes in other namespaces can use them), CookieAuthentication;
 *                          also the host of the onion service, whose target is a tiny HTTP server
 *                          on 127.0.0.1:8080 in the tor namespace ("hello from onion")
 *   upstream link (opt.):  a veth into a caller's namespace (198.51.100.1 ↔ 198.51.100.80 by
 *                          default). The exit binds its outgoing connections to its relay address
 *                          (OutboundBindAddressExit), so the upstream sees exactly the exit's
 *                          address; it resolves names only through `<dir>/resolv.conf`, whose one
 *                          nameserver is the upstream (by default)
 *   router links:          `routerLink(ns)`: a /30 veth (10.250.x.y) into a router namespace plus
 *                          a route there to 203.0.113.0/24, so an embedded Tor reaches the relays
 *                          at the same addresses they have inside the tor namespace — and, the tor
 *                          namespace not forwarding, nothing else (not the upstream)
 *
 * Every tor has `TestingTorNetwork 1`, one `DirAuthority` line (our authority), and
 * `__OwningControllerProcess <this pid>`, so tors exit by themselves (within ~20 s) if this
 * process dies. Processes, the namespace and the temp dir are registered with
 * test/support/netns.ts (`stop()`, `cleanupAll()`), and with `onExitSync` (below), which also
 * works in vitest's main process. Only a SIGKILL leaves the namespace and dir behind
 * (test/support/cleanup.sh removes mvt-* namespaces and /tmp/mvt-*).
 *
 * 203.0.113.0/24 and 198.51.100.0/24 are TEST-NET documentation ranges: to Tor and to mvnet they
 * look like internet hosts (no private-address special cases), and they exist only inside our
 * namespaces.
 *
 * Why it is fast (and what it waits for — conditions through the control ports, never fixed
 * sleeps):
 *   - keys are made here (1024-bit RSA), so every fingerprint is known up front and tor-gencert
 *     does not spend seconds on a 3072-bit identity key;
 *   - the authority votes every 10 s, and is told (SETCONF TestingV3AuthVotingStartOffset) to
 *     vote as soon as it has accepted every relay's descriptor → consensus at ~4 s;
 *   - the relays, which asked for a consensus before there was one and back off after the 404s,
 *     are reloaded (SIGNAL RELOAD resets their download schedules) until they have it: an exit
 *     without a consensus fails exit streams (SOCKS "general failure") for seconds;
 *   - the client starts alongside the relays with DisableNetwork 1 and joins (torrc rewritten,
 *     RELOAD) as soon as the consensus lists every relay → bootstrapped at ~5 s;
 *   - ready means: client at 100 %, every relay has the consensus, an exit stream works (GET of
 *     the built-in server through the exit), the onion descriptor is uploaded and the onion
 *     answers through the client → ~6–9 s in all.
 *
 * Use: test/tor/global-setup.ts starts one network per test run and `provide`s `info()` (JSON);
 * test files call `privateTor()` (test/tor/context.ts), which gives the same handle minus
 * `stop()`.
 *
 * Environment: MVNET_TOR_DEBUG=1 (progress on stderr), MVNET_TOR_LOG_LEVEL=info|debug (tor log
 * files, `<dir>/<nickname>/tor.log`), MVNET_TOR_KEEP_DIR=1 (keep `<dir>` after stop, to read
 * the logs), MVNET_TOR_BIN / MVNET_TOR_GENCERT_BIN (binaries; default from PATH).
 */
import { spawnSync } from 'node:child_process';
import { createHash, generateKeyPair } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import {
  NETNS_PREFIX,
  createNetns,
  randomSuffix,
  registerCleanup,
  run,
  uniqueName,
  waitFor,
  withTimeout,
  type ManagedProcess,
  type Netns,
} from '../support/netns.js';
import { TorControl } from '../support/tor-control.js';
import { SocksError, httpGetViaSocks } from '../support/tor-socks.js';
import type { ServersConfig, ServersReady } from './test-servers.js';

// ---------------------------------------------------------------------------------------------
// Constants

export const TOR_BIN = process.env.MVNET_TOR_BIN ?? 'tor';
export const TOR_GENCERT_BIN = process.env.MVNET_TOR_GENCERT_BIN ?? 'tor-gencert';

/** The relays' subnet (/32s on `lo` in the tor namespace). */
export const RELAY_NET = '203.0.113.0/24';
const RELAY_PREFIX = '203.0.113.';
/** ORPort of every relay (each has its own address). */
export const OR_PORT = 9001;
/** The authority's DirPort. */
export const DIR_PORT = 9030;
/** Default upstream link: tor side and upstream side. */
export const UPSTREAM_TOR_ADDRESS = '198.51.100.1';
export const UPSTREAM_ADDRESS = '198.51.100.80';
/** Router links are /30s carved out of this /16, one per `routerLink()` call (any process). */
const ROUTER_LINK_BASE = [10, 250] as const;
const ROUTER_LINK_SLOTS = 16384;

/** Greeting of the built-in onion target. */
export const ONION_HELLO = 'hello from onion';

// ---------------------------------------------------------------------------------------------
// Types

export interface UpstreamLinkOptions {
  /** An existing namespace (the caller owns it); the fixture adds a veth into it. */
  nsName: string;
  /** The upstream's address on the link. Default 198.51.100.80. */
  address?: string;
  /** The tor namespace's address on the link. Default 198.51.100.1. */
  torAddress?: string;
  /** Prefix length of the link. Default 24. */
  prefixLen?: number;
  /**
   * The one nameserver the exit uses (its resolv.conf). Default: `address` (run a DNS server on
   * port 53 there, e.g. test-servers.ts). Must be reachable from the tor namespace.
   */
  nameserver?: string;
}

export interface OnionOptions {
  /** The onion's virtual port. Default 80. */
  port?: number;
  /** Port of the built-in target server (127.0.0.1 in the tor namespace). Default 8080. */
  targetPort?: number;
  /**
   * Where the onion forwards to, as in HiddenServicePort: "HOST:PORT" (seen from the tor
   * namespace) or "unix:/path". Default: a built-in HTTP server (test-servers.ts) on 127.0.0.1
   * in the tor namespace answering `GET /` with "hello from onion\n".
   */
  target?: string;
}

export interface StartPrivateTorOptions {
  upstream?: UpstreamLinkOptions | undefined;
  onion?: OnionOptions | undefined;
  /** Relays besides the authority (the last is the exit). Default 3, at least 3. */
  relays?: number;
  /** Deadline for the whole start. Default 90 s. */
  timeoutMs?: number;
  /** Tor's log level for the log files (notice|info|debug). Default $MVNET_TOR_LOG_LEVEL or notice. */
  logLevel?: string;
  /** Progress lines (default: stderr when $MVNET_TOR_DEBUG is set). */
  log?: (line: string) => void;
}

export type RelayRole = 'authority' | 'relay' | 'exit';

export interface RelayInfo {
  nickname: string;
  role: RelayRole;
  address: string;
  orPort: number;
  /** Only the authority has one. */
  dirPort?: number;
  /** RSA identity fingerprint, 40 hex digits. */
  fingerprint: string;
  /** Its data directory (torrc, tor.log, control socket `control`, `control_auth_cookie`). */
  dataDir: string;
  /** Process id (inside the tor namespace). */
  pid: number;
}

export interface ClientInfo {
  /** SOCKS5 unix socket (ExtendedErrors; world-writable). */
  socksPath: string;
  /** Control port unix socket (world-writable); authenticate with the cookie. */
  controlPath: string;
  /** CookieAuthentication file; AUTHENTICATE with its hex. */
  cookiePath: string;
  pid: number;
  dataDir: string;
}

export interface OnionInfo {
  /** `<56 base32>.onion`. */
  hostname: string;
  /** Virtual port. */
  port: number;
  /** The HiddenServicePort target. */
  target: string;
}

export interface UpstreamInfo {
  ns: string;
  address: string;
  torAddress: string;
  prefixLen: number;
  nameserver: string;
}

export interface PrivateTorTimings {
  /** Start → namespace set up and every key made. */
  prepareMs: number;
  /** Start → authority consensus lists every relay with the flags we need. */
  consensusMs: number;
  /** Start → client 100% bootstrapped. */
  bootstrapMs: number;
  /** Start → onion descriptor uploaded and the onion answered through the client. */
  onionMs: number;
  /** Start → every relay has the consensus and an exit stream works through the client. */
  exitMs: number;
  totalMs: number;
}

/** Everything about a running network, JSON-serialisable (what global setup `provide`s). */
export interface PrivateTorInfo {
  ns: string;
  dir: string;
  relayNet: string;
  /** The authority (also in `relays`). */
  authority: RelayInfo & { v3ident: string };
  /** Authority first, the exit last. The allow-list of address/ports a Tor client may contact. */
  relays: RelayInfo[];
  /** The only relay whose exit policy accepts anything. */
  exit: RelayInfo;
  /** `DirAuthority …` line(s). */
  dirAuthorities: string[];
  /** What `torrcForClient()` returns. */
  clientTorrc: string[];
  client: ClientInfo;
  onion: OnionInfo;
  upstream?: UpstreamInfo;
  /** Pid of the process that owns the tors (`__OwningControllerProcess`). */
  ownerPid: number;
  timings: PrivateTorTimings;
}

export interface RouterLink {
  /** The router namespace's address on the link (the embedded Tor's source address). */
  routerAddr: string;
  /** The tor namespace's address on the link (the router namespace's next hop to the relays). */
  torAddr: string;
  /** Interface names: in the router namespace and in the tor namespace. */
  routerIf: string;
  torIf: string;
  prefixLen: number;
}

/** A handle on a network: its description plus what a test does with it. */
export interface PrivateTorHandle extends PrivateTorInfo {
  /**
   * torrc lines an extra client (mvnet's embedded tor) needs to join this network:
   * TestingTorNetwork, DirAuthority and the bootstrap/timeout settings. Add your own
   * DataDirectory, SocksPort, ControlPort, __OwningControllerProcess.
   */
  torrcForClient(): string[];
  /**
   * Adds a veth between the tor namespace and `routerNs` (a namespace name) with a fresh /30,
   * and a route there to the relays. Works from any process (test workers too). The link goes
   * away with either namespace; it is also deleted by cleanup in the calling process.
   */
  routerLink(routerNs: string): Promise<RouterLink>;
  /** The network as JSON (for `provide`). */
  info(): PrivateTorInfo;
}

export interface PrivateTor extends PrivateTorHandle {
  /** Stops every tor and server, deletes the namespace and the temp dir. Idempotent. */
  stop(): Promise<void>;
}

// ---------------------------------------------------------------------------------------------
// Teardown when the process dies first

const exitSyncSteps = new Set<() => void>();
let priorityHooksInstalled = false;

function runExitSyncSteps(): void {
  for (const fn of [...exitSyncSteps].reverse()) {
    exitSyncSteps.delete(fn);
    try {
      fn();
    } catch {
      // best effort: we are exiting
    }
  }
}

function installPriorityHooks(): void {
  if (priorityHooksInstalled) return;
  priorityHooksInstalled = true;
  // Prepended, not appended: in vitest's main process (where a globalSetup runs), vitest's own
  // SIGINT/SIGTERM/exit listeners call process.exit() from inside its 'exit' listener, which
  // ends the process before any listener added after it — test/support/netns.ts's — runs.
  process.prependListener('exit', runExitSyncSteps);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const handler = (): void => {
      runExitSyncSteps();
      if (process.listenerCount(sig) === 1) {
        // Nobody else handles it: restore the default action.
        process.removeListener(sig, handler);
        process.kill(process.pid, sig);
      }
    };
    process.prependListener(sig, handler);
  }
}

/**
 * Runs `fn` (synchronous) if this process exits or gets SIGINT/SIGTERM/SIGHUP before the
 * returned remover is called — ahead of every other listener, so it also works in vitest's main
 * process. For what a globalSetup creates; test/support/netns.ts's registry covers the rest.
 */
export function onExitSync(fn: () => void): () => void {
  installPriorityHooks();
  exitSyncSteps.add(fn);
  return () => {
    exitSyncSteps.delete(fn);
  };
}

/** SIGKILLs every process in namespace `name` and deletes it. Synchronous; never throws. */
export function deleteNetnsSync(name: string): void {
  const pids = spawnSync('ip', ['netns', 'pids', name], { encoding: 'utf8', timeout: 10_000 }).stdout ?? '';
  for (const pid of pids.split(/\s+/).filter(Boolean)) {
    try {
      process.kill(Number(pid), 'SIGKILL');
    } catch {
      // gone
    }
  }
  spawnSync('ip', ['netns', 'del', name], { timeout: 10_000 });
}

// ---------------------------------------------------------------------------------------------
// Handles usable from any process

/** Wraps a (provided/injected) description with the methods tests use. No `stop()`. */
export function attachPrivateTor(info: PrivateTorInfo): PrivateTorHandle {
  return {
    ...info,
    torrcForClient: () => [...info.clientTorrc],
    routerLink: (routerNs) => linkRouterToTor(info, routerNs),
    info: () => info,
  };
}

/** See `PrivateTorHandle.routerLink`. */
export async function linkRouterToTor(info: Pick<PrivateTorInfo, 'ns' | 'dir' | 'relayNet'>, routerNs: string): Promise<RouterLink> {
  // Allocate a /30 atomically across processes: mkdir either creates the slot or fails.
  const slotsDir = join(info.dir, 'router-links');
  mkdirSync(slotsDir, { recursive: true });
  let slot = -1;
  for (let i = 0; i < ROUTER_LINK_SLOTS && slot < 0; i++) {
    try {
      mkdirSync(join(slotsDir, String(i)));
      slot = i;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
  if (slot < 0) throw new Error('routerLink: no free /30 left');
  const base = slot * 4;
  const net = `${ROUTER_LINK_BASE[0]}.${ROUTER_LINK_BASE[1]}.${base >> 8}.`;
  const torAddr = `${net}${(base & 0xff) + 1}`;
  const routerAddr = `${net}${(base & 0xff) + 2}`;
  const torIf = uniqueName('tor-r');
  const routerIf = uniqueName('tor-t');
  await run(['ip', 'link', 'add', torIf, 'netns', info.ns, 'type', 'veth', 'peer', 'name', routerIf, 'netns', routerNs]);
  const drop = registerCleanup(`tor router link ${torIf}`, async () => {
    await run(['ip', '-n', info.ns, 'link', 'del', torIf], { check: false });
  });
  try {
    await run(['ip', '-n', info.ns, 'addr', 'add', `${torAddr}/30`, 'dev', torIf]);
    await run(['ip', '-n', info.ns, 'link', 'set', torIf, 'up']);
    await run(['ip', '-n', routerNs, 'addr', 'add', `${routerAddr}/30`, 'dev', routerIf]);
    await run(['ip', '-n', routerNs, 'link', 'set', routerIf, 'up']);
    await run(['ip', '-n', routerNs, 'link', 'set', 'lo', 'up']);
    await run(['ip', '-n', routerNs, 'route', 'add', info.relayNet, 'via', torAddr, 'dev', routerIf]);
  } catch (err) {
    await drop();
    throw err;
  }
  return { routerAddr, torAddr, routerIf, torIf, prefixLen: 30 };
}

// ---------------------------------------------------------------------------------------------
// Starting

/** Default port of the built-in onion target (127.0.0.1 in the tor namespace, ours alone). */
const ONION_TARGET_PORT = 8080;
/** Voting interval of the authority (initial and later); vote + dist delays are 2 s each. */
const VOTING_INTERVAL_S = 10;
/**
 * The authority's first consensus: scheduled one interval after its start, then — as soon as
 * it has accepted every relay's descriptor — moved to this many seconds from then with
 * `SETCONF TestingV3AuthVotingStartOffset` (it then votes at once: the vote time has passed).
 */
const FIRST_CONSENSUS_AFTER_DESCRIPTORS_S = 1;

/** Lines of every tor process of the network (and its controller plumbing). */
function processTorrc(dataDir: string, logLevel: string): string[] {
  return [
    `DataDirectory ${dataDir}`,
    'RunAsDaemon 0',
    'ShutdownWaitLength 0',
    'SafeLogging 0',
    'LogTimeGranularity 1',
    'Log notice stdout',
    `Log ${logLevel} file ${join(dataDir, 'tor.log')}`,
    'CookieAuthentication 1',
    // Every tor exits by itself (within seconds) when the process that started it dies.
    `__OwningControllerProcess ${process.pid}`,
    'AvoidDiskWrites 1',
  ];
}

/** What makes a tor part of this network and nothing else. */
function networkTorrc(dirAuthorities: readonly string[]): string[] {
  return ['TestingTorNetwork 1', ...dirAuthorities, 'PathsNeededToBuildCircuits 0.25', 'ClientUseIPv6 0'];
}

/** Settings a client of this network needs (ours and mvnet's embedded one). */
function clientSettings(dirAuthorities: readonly string[]): string[] {
  return [
    ...networkTorrc(dirAuthorities),
    'FetchDirInfoEarly 1',
    'FetchDirInfoExtraEarly 1',
    // Loopback RTTs would teach Tor a ~50 ms build timeout; onion circuits then never finish.
    'LearnCircuitBuildTimeout 0',
    'CircuitBuildTimeout 30',
    'UseEntryGuards 0',
  ];
}

const generateKeyPairAsync = promisify(generateKeyPair);

/**
 * A fresh 1024-bit RSA key as PKCS#1 PEM (tor's `secret_id_key` and tor-gencert's key files
 * use that format; authority certificates accept any key size, and small keys are fast) and
 * its Tor fingerprint (SHA-1 of the DER public key).
 */
async function rsaKey(): Promise<{ pem: string; fingerprint: string }> {
  const { privateKey, publicKey } = await generateKeyPairAsync('rsa', { modulusLength: 1024, publicExponent: 65537 });
  return {
    pem: privateKey.export({ type: 'pkcs1', format: 'pem' }).toString(),
    fingerprint: createHash('sha1').update(publicKey.export({ type: 'pkcs1', format: 'der' })).digest('hex').toUpperCase(),
  };
}

/**
 * test-servers.ts, next to this file; or, when this file runs compiled in dist/test/tor/ (the
 * demo, the Tor bench), the source in test/tor/ (tsc emits no .ts).
 */
const TEST_SERVERS_TS = [new URL('./test-servers.ts', import.meta.url), new URL('../../../test/tor/test-servers.ts', import.meta.url)]
  .map((u) => fileURLToPath(u))
  .find((p) => existsSync(p)) ?? fileURLToPath(new URL('./test-servers.ts', import.meta.url));

/** In-flight/finished compilations, by output path. */
const compiling = new Map<string, Promise<string>>();

/**
 * Transpiles test-servers.ts to `<dir>/test-servers.mjs` (once per dir) with the project's
 * TypeScript, in a child process: loading TypeScript takes ~1 s of CPU that would otherwise
 * block this event loop while tor processes wait to be served. Resolves with the file's path.
 */
export function compileTestServers(dir: string): Promise<string> {
  const js = join(dir, 'test-servers.mjs');
  let p = compiling.get(js);
  if (!p) {
    p = existsSync(js)
      ? Promise.resolve(js)
      : (async (): Promise<string> => {
          // Written aside then renamed (atomic), so a concurrent caller never runs half a file.
          const tmp = `${js}.${process.pid}.${randomSuffix()}.tmp`;
          const script = [
            "const ts = require('typescript');",
            "const fs = require('node:fs');",
            'const [src, out] = process.argv.slice(1);',
            'const compilerOptions = { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 };',
            'const r = ts.transpileModule(fs.readFileSync(src, "utf8"), { compilerOptions, fileName: "test-servers.ts" });',
            'fs.writeFileSync(out, r.outputText);',
          ].join('\n');
          await run([process.execPath, '-e', script, TEST_SERVERS_TS, tmp], { cwd: HERE, timeoutMs: 30_000 });
          renameSync(tmp, js);
          return js;
        })();
    compiling.set(js, p);
    p.catch(() => compiling.delete(js));
  }
  return p;
}

/** The directory of this file (`require('typescript')` resolves from here). */
const HERE = fileURLToPath(new URL('.', import.meta.url));

/**
 * Starts test-servers.ts (compiled into `dir`, see `compileTestServers`) inside `ns` with
 * `config`; resolves when it reports that everything listens. The process is registered for
 * cleanup, dies with the namespace, and exits by itself within a second when this process is
 * gone (`ownerPid`, unless `config` sets another).
 */
export async function startTestServers(
  ns: Netns,
  dir: string,
  config: ServersConfig,
  label: string,
): Promise<{ proc: ManagedProcess; ready: ServersReady }> {
  const js = await compileTestServers(dir);
  const proc = ns.spawn([process.execPath, js, JSON.stringify({ ownerPid: process.pid, ...config })], { label });
  const line = await proc.waitForLine((l) => l.startsWith('{"event":"ready"'), { timeoutMs: 15_000 });
  return { proc, ready: JSON.parse(line) as ServersReady };
}

interface TorNode extends RelayInfo {
  proc?: ManagedProcess;
}

/** A tor process's recent log lines, for error messages. */
function torLogTail(dataDir: string, n = 25): string {
  try {
    return readFileSync(join(dataDir, 'tor.log'), 'utf8').trimEnd().split('\n').slice(-n).join('\n');
  } catch {
    return '(no log)';
  }
}

/** Parses a consensus (`GETINFO ns/all`) into nickname → flags. */
function consensusFlags(ns: string): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  let nick: string | undefined;
  for (const line of ns.split('\n')) {
    if (line.startsWith('r ')) nick = line.split(' ')[1];
    else if (line.startsWith('s ') && nick !== undefined) out.set(nick, new Set(line.slice(2).split(' ')));
  }
  return out;
}

/**
 * Starts a private Tor network (see the file comment). Rejects — after tearing down what it
 * started — with the tail of every tor log when anything fails or the deadline passes.
 */
export async function startPrivateTor(opts: StartPrivateTorOptions = {}): Promise<PrivateTor> {
  const t0 = Date.now();
  const since = (): string => `${((Date.now() - t0) / 1000).toFixed(2)}s`;
  const debugLog = (l: string): void => void process.stderr.write(`[private-tor +${since()}] ${l}\n`);
  const log = opts.log ?? (process.env.MVNET_TOR_DEBUG ? debugLog : (): void => {});
  const nRelays = Math.max(3, opts.relays ?? 3);
  const timeoutMs = opts.timeoutMs ?? 90_000;
  const deadline = t0 + timeoutMs;
  const left = (): number => Math.max(1, deadline - Date.now());
  const logLevel = opts.logLevel ?? process.env.MVNET_TOR_LOG_LEVEL ?? 'notice';

  const dir = mkdtempSync(join(tmpdir(), `${NETNS_PREFIX}tor-`));
  chmodSync(dir, 0o755); // the client's sockets inside must be reachable from anywhere
  const keepDir = process.env.MVNET_TOR_KEEP_DIR === '1';
  const rmDir = (): void => {
    if (!keepDir) rmSync(dir, { recursive: true, force: true });
  };
  const removeDir = registerCleanup(`private tor dir ${dir}`, async () => rmDir(), rmDir);
  const procs: ManagedProcess[] = [];
  const controls: TorControl[] = [];
  let ns: Netns | undefined;
  let dropExitSync = (): void => {};
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    for (const c of controls) c.close();
    await Promise.all(procs.map((p) => p.stop('SIGTERM', 3_000)));
    await ns?.delete();
    await removeDir();
    dropExitSync();
  };

  const nodes: TorNode[] = [];
  const clientDir = join(dir, 'client');
  try {
    ns = await createNetns('tor');
    const torNs = ns;
    dropExitSync = onExitSync(() => {
      deleteNetnsSync(torNs.name);
      rmDir();
    });
    log(`namespace ${torNs.name}, dir ${dir}`);
    const emptyRc = join(dir, 'empty.torrc');
    writeFileSync(emptyRc, '');
    const sockDir = join(dir, 'sock');
    mkdirSync(sockDir, { mode: 0o755 });
    chmodSync(sockDir, 0o755);
    mkdirSync(clientDir, { mode: 0o700 });

    for (let i = 0; i <= nRelays; i++) {
      const role: RelayRole = i === 0 ? 'authority' : i === nRelays ? 'exit' : 'relay';
      const nickname = role === 'authority' ? 'auth' : role === 'exit' ? 'exit' : `relay${i}`;
      const dataDir = join(dir, nickname);
      mkdirSync(join(dataDir, 'keys'), { recursive: true, mode: 0o700 });
      chmodSync(dataDir, 0o700);
      nodes.push({
        nickname,
        role,
        address: `${RELAY_PREFIX}${i + 1}`,
        orPort: OR_PORT,
        ...(role === 'authority' ? { dirPort: DIR_PORT } : {}),
        fingerprint: '',
        dataDir,
        pid: -1,
      });
    }
    const auth = nodes[0]!;
    const exit = nodes[nodes.length - 1]!;

    // --- the namespace: relay addresses on lo, no forwarding, no default route. On `lo`
    // because this kernel may lack the dummy driver; local addresses are reachable through any
    // link into the namespace whose far side routes RELAY_NET here.
    const netSetup = (async (): Promise<UpstreamInfo | undefined> => {
      await Promise.all([
        torNs.exec(['sysctl', '-q', '-w', 'net.ipv4.ip_forward=0']),
        run(['ip', '-n', torNs.name, '-batch', '-'], { input: nodes.map((n) => `addr add ${n.address}/32 dev lo\n`).join('') }),
      ]);
      const up = opts.upstream;
      if (!up) return undefined;
      const info: UpstreamInfo = {
        ns: up.nsName,
        address: up.address ?? UPSTREAM_ADDRESS,
        torAddress: up.torAddress ?? UPSTREAM_TOR_ADDRESS,
        prefixLen: up.prefixLen ?? 24,
        nameserver: up.nameserver ?? up.address ?? UPSTREAM_ADDRESS,
      };
      const torIf = uniqueName('tor-u');
      const upIf = uniqueName('tor-t');
      // Created directly inside the two namespaces (never in the root one); deleting the tor
      // namespace deletes both ends.
      await run(['ip', 'link', 'add', torIf, 'netns', torNs.name, 'type', 'veth', 'peer', 'name', upIf, 'netns', up.nsName]);
      await Promise.all([
        run(['ip', '-n', torNs.name, '-batch', '-'], {
          input: `addr add ${info.torAddress}/${info.prefixLen} dev ${torIf}\nlink set ${torIf} up\n`,
        }),
        run(['ip', '-n', up.nsName, '-batch', '-'], {
          input:
            `addr add ${info.address}/${info.prefixLen} dev ${upIf}\nlink set ${upIf} up\nlink set lo up\n` +
            `route add ${RELAY_NET} via ${info.torAddress} dev ${upIf}\n`,
        }),
      ]);
      return info;
    })();

    // --- keys: every relay's RSA identity (so we know the fingerprints before they start) and
    // the authority's v3 certificate (its keys made here too: tor-gencert's own 3072-bit
    // identity key takes seconds).
    const keysReady = (async (): Promise<string> => {
      const authKeys = join(auth.dataDir, 'keys');
      const [id, sign, ...relayIds] = await Promise.all([rsaKey(), rsaKey(), ...nodes.map(() => rsaKey())]);
      nodes.forEach((n, i) => {
        writeFileSync(join(n.dataDir, 'keys', 'secret_id_key'), relayIds[i]!.pem, { mode: 0o600 });
        n.fingerprint = relayIds[i]!.fingerprint;
      });
      writeFileSync(join(authKeys, 'authority_identity_key'), id!.pem, { mode: 0o600 });
      writeFileSync(join(authKeys, 'authority_signing_key'), sign!.pem, { mode: 0o600 });
      await run([TOR_GENCERT_BIN, '-r', '-m', '12', '-a', `${auth.address}:${DIR_PORT}`, '--passphrase-fd', '0'], {
        cwd: authKeys,
        input: '\n',
        timeoutMs: 20_000,
      });
      const cert = readFileSync(join(authKeys, 'authority_certificate'), 'utf8');
      const m = /^fingerprint ([0-9A-F]{40})$/m.exec(cert);
      if (!m) throw new Error(`no fingerprint in ${join(authKeys, 'authority_certificate')}`);
      if (m[1] !== id!.fingerprint) throw new Error(`authority certificate fingerprint ${m[1]} is not that of its identity key`);
      return m[1]!;
    })();

    // --- the onion's target (not needed before the onion is used: runs alongside).
    const onionPort = opts.onion?.port ?? 80;
    const targetPort = opts.onion?.targetPort ?? ONION_TARGET_PORT;
    const onionTarget = opts.onion?.target ?? `127.0.0.1:${targetPort}`;
    // The built-in server runs even when the onion has another target: the exit probe uses it.
    const targetServer = startTestServers(
      torNs,
      dir,
      { http: [{ host: '127.0.0.1', port: targetPort, hello: ONION_HELLO }] },
      `${torNs.name}: onion target`,
    ).then(({ proc }) => void procs.push(proc));
    targetServer.catch(() => {}); // awaited below; do not let an early failure go unhandled

    const [v3ident, upstream] = await withTimeout(Promise.all([keysReady, netSetup]), left(), 'preparing the private Tor network');
    const prepareMs = Date.now() - t0;
    log(`prepared (namespace, keys) in ${prepareMs} ms`);

    const dirAuthorities = [
      `DirAuthority ${auth.nickname} orport=${OR_PORT} no-v2 v3ident=${v3ident} ${auth.address}:${DIR_PORT} ${auth.fingerprint}`,
    ];
    const resolvConf = join(dir, 'resolv.conf');
    writeFileSync(resolvConf, `nameserver ${upstream?.nameserver ?? '127.0.0.1'}\noptions timeout:2 attempts:2\n`);

    // --- torrcs.
    const relayTorrc = (n: TorNode): string[] => {
      const lines = [
        ...processTorrc(n.dataDir, logLevel),
        ...networkTorrc(dirAuthorities),
        `ControlPort unix:${join(n.dataDir, 'control')}`,
        `Nickname ${n.nickname}`,
        'ContactInfo mvnet-test@invalid',
        `Address ${n.address}`,
        `ORPort ${n.address}:${OR_PORT}`,
        'SocksPort 0',
        'AssumeReachable 1',
        'DirCache 1',
        // Only an exit resolves names, and only through our resolv.conf.
        `ServerDNSResolvConfFile ${resolvConf}`,
        'ServerDNSAllowBrokenConfig 1',
        'ServerDNSDetectHijacking 0',
      ];
      if (n.role === 'authority') {
        // Fallback schedule: one interval from now (moved earlier once the relays are known).
        const firstValidAfter = Math.floor(Date.now() / 1000) + VOTING_INTERVAL_S;
        lines.push(
          `DirPort ${n.address}:${DIR_PORT}`,
          'AuthoritativeDirectory 1',
          'V3AuthoritativeDirectory 1',
          `TestingV3AuthInitialVotingInterval ${VOTING_INTERVAL_S}`,
          'TestingV3AuthInitialVoteDelay 2',
          'TestingV3AuthInitialDistDelay 2',
          `V3AuthVotingInterval ${VOTING_INTERVAL_S}`,
          'V3AuthVoteDelay 2',
          'V3AuthDistDelay 2',
          'V3AuthNIntervalsValid 2',
          // valid-after times are (multiples of the interval since midnight UTC) + offset.
          `TestingV3AuthVotingStartOffset ${firstValidAfter % VOTING_INTERVAL_S}`,
          'TestingDirAuthVoteExit *',
          'TestingDirAuthVoteGuard *',
          'TestingDirAuthVoteHSDir *',
          'TestingMinExitFlagThreshold 0',
          'AuthDirMaxServersPerAddr 0',
        );
      }
      if (n.role !== 'exit') {
        lines.push('ExitRelay 0', 'ExitPolicy reject *:*');
      } else {
        lines.push(
          'ExitRelay 1',
          // Microdescriptor summaries ignore private-address rules anyway; the namespace is
          // what keeps the exit's traffic on test hosts.
          'ExitPolicyRejectPrivate 0',
          'ExitPolicyRejectLocalInterfaces 0',
          'ExitPolicy accept *:*',
          'IPv6Exit 0',
          // The upstream sees exactly the exit's relay address.
          `OutboundBindAddressExit ${n.address}`,
        );
      }
      return lines;
    };
    const client: ClientInfo = {
      socksPath: join(sockDir, 'socks'),
      controlPath: join(sockDir, 'control'),
      cookiePath: join(sockDir, 'control_auth_cookie'),
      pid: -1,
      dataDir: clientDir,
    };
    const hsDir = join(clientDir, 'hs');
    const clientTorrc = [
      ...processTorrc(clientDir, logLevel),
      ...clientSettings(dirAuthorities),
      `SocksPort unix:${client.socksPath} WorldWritable RelaxDirModeCheck ExtendedErrors`,
      `ControlPort unix:${client.controlPath} WorldWritable RelaxDirModeCheck`,
      `CookieAuthFile ${client.cookiePath}`,
      'CookieAuthFileGroupReadable 1',
      `HiddenServiceDir ${hsDir}`,
      `HiddenServicePort ${onionPort} ${onionTarget}`,
      // Started early (keys, onion keys, control port) and let onto the network once the
      // consensus lists every relay.
      'DisableNetwork 1',
    ];

    const startTor = (name: string, dataDir: string, lines: string[]): ManagedProcess => {
      const rc = join(dataDir, 'torrc');
      writeFileSync(rc, `${lines.join('\n')}\n`);
      const p = torNs.spawn([TOR_BIN, '-f', rc, '--defaults-torrc', emptyRc], { label: `tor ${name}` });
      procs.push(p);
      return p;
    };
    /** Rejects when any tor started so far exits (none should while we wait). */
    const watchExits = (): Promise<never> =>
      new Promise<never>((_, reject) => {
        for (const p of procs) {
          void p.exited.then((e) => {
            if (!stopped) reject(new Error(`${p.label} exited (${e.code ?? e.signal}) during start\n${p.tail(40)}`));
          });
        }
      });
    const untilReady = <T>(p: Promise<T>): Promise<T> => Promise.race([watchExits(), p]);

    // --- authority first (relays upload to it as soon as they start), then relays and client.
    auth.proc = startTor(auth.nickname, auth.dataDir, relayTorrc(auth));
    await untilReady(auth.proc.waitForLine((l) => l.includes('Opened Directory listener'), { timeoutMs: left() }));
    for (const n of nodes.slice(1)) n.proc = startTor(n.nickname, n.dataDir, relayTorrc(n));
    const clientProc = startTor('client', clientDir, clientTorrc);
    client.pid = clientProc.pid;
    log('authority, relays and client (network disabled) started');

    const openControl = async (path: string, cookie: string, what: string): Promise<TorControl> => {
      const ctl = await untilReady(waitFor(() => TorControl.open(path, cookie), { timeoutMs: Math.min(left(), 10_000), what }));
      controls.push(ctl);
      return ctl;
    };
    const [clientCtl, ...relayCtls] = await Promise.all([
      openControl(client.controlPath, client.cookiePath, 'the client control port'),
      ...nodes.map((n) =>
        openControl(join(n.dataDir, 'control'), join(n.dataDir, 'control_auth_cookie'), `the ${n.nickname} control port`),
      ),
    ]);
    const authCtl = relayCtls[0]!;
    /** True when `ctl`'s tor has a consensus listing every relay with the flags we rely on. */
    let lastConsensus = '(none yet)';
    const hasFullConsensus = async (ctl: TorControl): Promise<boolean> => {
      let text: string;
      try {
        text = await ctl.getInfo('ns/all');
      } catch {
        return false; // no consensus yet
      }
      const flags = consensusFlags(text);
      lastConsensus = [...flags].map(([k, v]) => `${k}: ${[...v].join(' ')}`).join('; ');
      return nodes.every((n) => {
        const f = flags.get(n.nickname);
        return f !== undefined && f.has('Running') && f.has('Valid') && f.has('HSDir') && (n.role !== 'exit' || f.has('Exit'));
      });
    };
    const hsEvents: string[][] = [];
    clientCtl.onEvent((e) => {
      if (e.type === 'HS_DESC') hsEvents.push(e.words);
    });
    await clientCtl.setEvents(['HS_DESC']);

    // --- as soon as the authority has every relay's descriptor, make it vote.
    let known = '';
    await untilReady(
      waitFor(
        async () => {
          const descs = await authCtl.getInfo('desc/all-recent').catch(() => '');
          const nicks = new Set([...descs.matchAll(/^router (\S+) /gm)].map((m) => m[1]));
          known = [...nicks].join(' ');
          return nodes.every((n) => nicks.has(n.nickname));
        },
        { timeoutMs: left(), intervalMs: 100, what: 'the authority to accept every relay descriptor' },
      ).catch((err: Error) => {
        throw new Error(`${err.message} (has: ${known || 'none'})`);
      }),
    );
    const validAfter = Math.ceil(Date.now() / 1000) + FIRST_CONSENSUS_AFTER_DESCRIPTORS_S;
    await authCtl.command(`SETCONF TestingV3AuthVotingStartOffset=${validAfter % VOTING_INTERVAL_S}`).catch((err: Error) => {
      log(`could not move the first vote (${err.message}); waiting for the scheduled one`);
    });
    log('authority knows every relay; first consensus scheduled');

    // --- wait until the authority's consensus lists every relay with the flags we rely on.
    await untilReady(
      waitFor(() => hasFullConsensus(authCtl), { timeoutMs: left(), intervalMs: 100, what: 'a consensus listing every relay' }).catch(
        (err: Error) => {
          throw new Error(`${err.message}\nlast consensus: ${lastConsensus}`);
        },
      ),
    );
    const consensusMs = Date.now() - t0;
    log(`consensus lists all ${nodes.length} relays`);

    // --- every relay gets that consensus now. They asked for one before it existed and back
    // off for seconds after those 404s; a reload resets their download schedules and makes them
    // fetch at once. The authority serves a new consensus some ms after it has it (it is
    // compressed in the background), so a relay still without it is reloaded again every
    // 500 ms. (An exit without a consensus fails exit streams: SOCKS "general failure" for the
    // first seconds of a run.)
    const relaysSynced = Promise.all(
      relayCtls.slice(1).map((ctl) => {
        let lastReload = 0;
        return waitFor(
          async () => {
            if (await hasFullConsensus(ctl)) return true;
            if (Date.now() - lastReload >= 500) {
              lastReload = Date.now();
              await ctl.signal('RELOAD');
            }
            return false;
          },
          { timeoutMs: left(), intervalMs: 100, what: 'every relay to have the consensus' },
        );
      }),
    ).then(() => log('every relay has the consensus'));
    // Then an exit stream must work: the built-in HTTP server (127.0.0.1 in the tor namespace)
    // through the exit. (Not a closed port: this tor reports "connection refused" as a general
    // failure, like a broken path.)
    let lastExitError = '';
    const exitWorks = Promise.all([relaysSynced, targetServer])
      .then(() =>
        waitFor(
          async () => {
            try {
              const url = `http://127.0.0.1:${targetPort}/`;
              const res = await httpGetViaSocks(client.socksPath, url, { timeoutMs: Math.min(left(), 10_000) });
              return res.body.toString() === `${ONION_HELLO}\n`;
            } catch (err) {
              lastExitError = (err as Error).message;
              return false;
            }
          },
          { timeoutMs: left(), intervalMs: 250, what: 'an exit stream through the client' },
        ).catch((err: Error) => {
          throw new Error(`${err.message}; last error: ${lastExitError}`);
        }),
      )
      .then(() => {
        exitMs = Date.now() - t0;
        log('exit streams work');
      });
    let exitMs = -1;
    exitWorks.catch(() => {}); // awaited below

    // --- the client joins: its torrc without DisableNetwork, reloaded (not SETCONF, so later
    // reloads keep the network on). Its first consensus fetch may come a few ms before the
    // authority serves the consensus (a 404, then seconds of back-off): once the relays have it
    // (so it is served), a client still without one is reloaded again, every second.
    const clientRc = join(clientDir, 'torrc');
    writeFileSync(clientRc, `${clientTorrc.filter((l) => l !== 'DisableNetwork 1').join('\n')}\n`);
    await clientCtl.signal('RELOAD');
    let relaysHaveIt = false;
    void relaysSynced.then(() => (relaysHaveIt = true));
    let lastReload = Date.now();
    await untilReady(
      waitFor(
        async () => {
          const progress = await clientCtl.bootstrapProgress();
          if (progress === 100) return true;
          if (relaysHaveIt && progress < 40 && Date.now() - lastReload >= 1_000) {
            lastReload = Date.now();
            await clientCtl.signal('RELOAD');
          }
          return false;
        },
        { timeoutMs: left(), intervalMs: 50, what: 'the client to bootstrap' },
      ),
    );
    const bootstrapMs = Date.now() - t0;
    log('client bootstrapped');

    // --- the onion: descriptor uploaded (every upload started has finished), then reachable.
    const hostname = readFileSync(join(hsDir, 'hostname'), 'utf8').trim();
    const onionId = hostname.replace(/\.onion$/, '');
    await untilReady(
      waitFor(
        () => {
          const mine = hsEvents.filter((w) => w[1] === onionId);
          const started = new Set(mine.filter((w) => w[0] === 'UPLOAD').map((w) => w[3]));
          const done = new Set(mine.filter((w) => w[0] === 'UPLOADED' || w[0] === 'FAILED').map((w) => w[3]));
          return mine.some((w) => w[0] === 'UPLOADED') && [...started].every((h) => done.has(h));
        },
        { timeoutMs: left(), intervalMs: 50, what: 'the onion descriptor upload' },
      ),
    );
    log('onion descriptor uploaded');
    await untilReady(withTimeout(targetServer, left(), 'the onion target server'));
    let lastOnionError = '';
    await untilReady(
      waitFor(
        async () => {
          try {
            const url = `http://${hostname}:${onionPort}/`;
            const res = await httpGetViaSocks(client.socksPath, url, { timeoutMs: Math.min(left(), 20_000) });
            return res.status > 0;
          } catch (err) {
            lastOnionError = (err as Error).message;
            // A failed descriptor fetch is remembered per HSDir; NEWNYM forgets it.
            if (err instanceof SocksError && err.reply >= 0xf0) await clientCtl.signal('NEWNYM').catch(() => {});
            return false;
          }
        },
        { timeoutMs: left(), intervalMs: 250, what: `the onion ${hostname} through the client` },
      ).catch((err: Error) => {
        throw new Error(`${err.message}; last error: ${lastOnionError}`);
      }),
    );
    const onionMs = Date.now() - t0;
    log('onion answered through the client');
    await untilReady(exitWorks);

    const info: PrivateTorInfo = {
      ns: torNs.name,
      dir,
      relayNet: RELAY_NET,
      authority: { ...stripNode(auth), v3ident },
      relays: nodes.map(stripNode),
      exit: stripNode(exit),
      dirAuthorities,
      clientTorrc: clientSettings(dirAuthorities),
      client,
      onion: { hostname, port: onionPort, target: onionTarget },
      ...(upstream ? { upstream } : {}),
      ownerPid: process.pid,
      timings: { prepareMs, consensusMs, bootstrapMs, onionMs, exitMs, totalMs: Date.now() - t0 },
    };
    return { ...attachPrivateTor(info), stop };
  } catch (err) {
    const logs = [...nodes.map((n) => ({ name: n.nickname, dataDir: n.dataDir })), { name: 'client', dataDir: clientDir }]
      .map((n) => `--- ${n.name} (${n.dataDir}/tor.log) ---\n${torLogTail(n.dataDir)}`)
      .join('\n');
    await stop().catch(() => {});
    throw new Error(`startPrivateTor failed after ${since()}: ${(err as Error).message}\n${logs}`);
  }
}

function stripNode(n: TorNode): RelayInfo {
  return {
    nickname: n.nickname,
    role: n.role,
    address: n.address,
    orPort: n.orPort,
    ...(n.dirPort !== undefined ? { dirPort: n.dirPort } : {}),
    fingerprint: n.fingerprint,
    dataDir: n.dataDir,
    pid: n.proc?.pid ?? -1,
  };
}
