/**
 * TorManager: keeps one tor usable for the router and says whether it is.
 *
 * - embedded (default): writes `<stateDir>/tor/torrc`, runs `tor -f torrc` as a child (tied to
 *   this process by __OwningControllerProcess), connects its unix control socket once tor has
 *   created it, follows bootstrap, and restarts tor with exponential backoff (1 s → 30 s) when it
 *   exits.
 * - external: connects to a tor someone else runs (tor.control, tor.socks) and reconnects with
 *   the same backoff when the control connection drops.
 *
 * Ready means: control connected, bootstrap at 100 % and network-liveness not "down".
 * Onion services added through the manager are re-added after every tor restart or reconnect.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { existsSync, watch, type FSWatcher } from 'node:fs';
import { rm, stat } from 'node:fs/promises';
import { dirname, join, resolve as resolvePath, sep } from 'node:path';
import { createInterface } from 'node:readline';
import type { Logger } from 'pino';
import {
  parseBootstrap,
  parseCircEvent,
  parseHsDescEvent,
  parseKeyValues,
  parseStatusEvent,
  parseStreamEvent,
  parseTorAddress,
  TorControl,
  TorControlError,
  type BootstrapStatus,
  type CircEvent,
  type HsDescEvent,
  type OnionPort,
  type StreamEvent,
  type TorEvent,
} from './control.js';
import { buildTorrc, embeddedPaths, parseEmbeddedSocks, type EmbeddedPaths, type TorConfig, type TorMode } from './config.js';
import { ownDir, shareStateDir, socketGroup, writeNewFile, type TorReach } from './files.js';
import { readOnionKey, writeOnionKey, type Ed25519OnionKey } from './onion-key.js';
import type { SocksEndpoint } from './socks-endpoint.js';

export { checkTorConfig, TOR_CONFIG_DEFAULTS, type TorConfig, type TorMode } from './config.js';
export type { SocksEndpoint } from './socks-endpoint.js';

export type TorPhase = 'starting' | 'bootstrapping' | 'ready' | 'down';

export interface TorState {
  mode: TorMode;
  phase: TorPhase;
  /** Bootstrap percentage (0 while down). */
  progress: number;
  /** Bootstrap summary from tor, or why tor is down. */
  summary: string;
  /** Tor's version, once the control port answered. */
  version: string | null;
  lastError: string | null;
  /** embedded: how many times tor was started again; external: how many times the control port was reconnected. */
  restarts: number;
  /** Tor's own recent warnings (log lines at warn/err, STATUS_* warnings), most recent last, de-duplicated, at most 8. */
  warnings: string[];
  /** Why bootstrapping is stuck, as tor reported it (BOOTSTRAP PROBLEM); cleared once bootstrap moves on. */
  bootstrapProblem: BootstrapProblem | null;
  /** The embedded tor's pid while it runs. */
  pid: number | null;
  /** embedded: whom tor runs as and whether its sandbox is on (`note` says why not, when not). */
  privileges: { user: string; sandbox: boolean; note: string | null } | null;
}

export interface BootstrapProblem {
  progress: number;
  summary: string;
  /** Tor's WARNING text, e.g. "No route to host". */
  warning: string;
  /** Tor's REASON keyword, e.g. NOROUTE, TIMEOUT, CONNECTREFUSED. */
  reason: string | null;
  /** How many times tor hit it. */
  count: number | null;
}


export interface TorManagerOptions {
  config: TorConfig;
  /** The daemon's state directory: the embedded tor lives in `<stateDir>/tor/`. */
  stateDir: string;
  logger: Logger;
  /** The process whose exit takes the embedded tor down with it (default: this one). */
  ownerPid?: number;
  /** Deadline for a started tor's control port to accept us, and for one external connect (default 30 s). */
  startTimeoutMs?: number;
  /** stop(): SIGTERM, then SIGKILL after this long (default 5 s). */
  stopTimeoutMs?: number;
  /** Restart/reconnect backoff: first delay and cap (default 1 s and 30 s). */
  backoffInitialMs?: number;
  backoffMaxMs?: number;
}

export interface ManagedOnionOptions {
  ports: OnionPort[];
  /**
   * A directory under one of tor.hiddenServiceDirs: its hs_ed25519_secret_key is used when
   * present, and a new key is written there otherwise, so the address survives restarts.
   */
  keyDir?: string;
  /** An explicit "ED25519-V3:<base64>" key (a secret; never logged). */
  key?: Ed25519OnionKey;
  maxStreams?: number;
}

interface ManagedOnion {
  key: Ed25519OnionKey;
  ports: OnionPort[];
  maxStreams?: number;
}

type ManagerEvents = {
  /** Entered phase 'ready'. */
  ready: [];
  /** Entered phase 'down' (tor exited, the control connection was lost, or stop()). */
  down: [reason: string];
  /** Any change of state(). */
  state: [TorState];
  /** Bootstrap moved (a STATUS_CLIENT BOOTSTRAP event): percent and tor's summary. */
  bootstrap: [progress: number, summary: string];
  /** A new warning of tor's (see TorState.warnings). */
  warning: [message: string];
  stream: [StreamEvent];
  circ: [CircEvent];
  hs_desc: [HsDescEvent];
};

const BASE_EVENTS = ['STATUS_CLIENT', 'STATUS_GENERAL', 'CIRC', 'STREAM', 'HS_DESC'];
/** An external tor's log lines at these levels, over the control port (the embedded tor's come on its stdout). */
const LOG_EVENTS = ['WARN', 'ERR'];
const MAX_WARNINGS = 8;
const LIVENESS_EVENT = 'NETWORK_LIVENESS';
/** A tor run longer than this resets the restart backoff. */
const STABLE_RUN_MS = 60_000;

function errMsg(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

function isTransientConnectError(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ENOENT' || code === 'ECONNREFUSED' || code === 'EAGAIN') return true;
  // tor writes the cookie after creating the socket: it may be missing or short for a moment.
  return e instanceof Error && /cannot read tor's control cookie|control cookie .* is not a 32-byte file/.test(e.message);
}

/** Resolves once every path exists (fs.watch on `dir`, with a poll as a fallback); rejects on abort. */
export function waitForPaths(dir: string, paths: string[], signal: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const reasonOf = (): Error => (signal.reason instanceof Error ? signal.reason : new Error('aborted'));
    if (signal.aborted) return reject(reasonOf());
    let watcher: FSWatcher | undefined;
    const check = (): void => {
      if (paths.every((p) => existsSync(p))) done();
    };
    const poll = setInterval(check, 250);
    const onAbort = (): void => done(reasonOf());
    const done = (err?: Error): void => {
      watcher?.close();
      clearInterval(poll);
      signal.removeEventListener('abort', onAbort);
      if (err) reject(err);
      else resolve();
    };
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      watcher = watch(dir, () => check());
      watcher.on('error', () => undefined);
    } catch {
      watcher = undefined;
    }
    check();
  });
}

function abortableDelay(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(t);
      reject(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
    };
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

interface Privileges {
  user: string;
  uid: number;
  gid: number;
  sandbox: boolean;
  /** spawn: tor is started as the user; torrc: started as root, `User` in the torrc; same: as the daemon runs. */
  how: 'spawn' | 'torrc' | 'same';
  note?: string;
}

/** `name` as execvp would find it (a name with a slash as it is). */
function findOnPath(name: string): string | undefined {
  if (name.includes('/')) return resolvePath(name);
  for (const d of (process.env.PATH ?? '/usr/bin:/bin').split(':')) {
    const f = join(d || '.', name);
    if (existsSync(f)) return f;
  }
  return undefined;
}

/** Whether uid/gid may read and execute `file` (a script needs both) and pass every directory above it. */
async function canRun(file: string, uid: number, gid: number): Promise<boolean> {
  const allows = (st: { mode: number; uid: number; gid: number }, bits: number): boolean =>
    st.uid === uid ? (st.mode & (bits << 6)) === bits << 6 : st.gid === gid ? (st.mode & (bits << 3)) === bits << 3 : (st.mode & bits) === bits;
  try {
    if (!allows(await stat(file), 0o5)) return false;
    for (let d = dirname(file); ; d = dirname(d)) {
      if (!allows(await stat(d), 0o1)) return false;
      if (d === dirname(d)) return true;
    }
  } catch {
    return false;
  }
}

/** A STATUS_GENERAL/STATUS_CLIENT warning as one line: "CLOCK_SKEW SKEW=-3600 SOURCE=…". */
function statusWarningText(action: string, args: Record<string, string>): string {
  const kv = Object.entries(args).map(([k, v]) => `${k}=${/\s/.test(v) ? JSON.stringify(v) : v}`);
  return [action, ...kv].join(' ');
}

function lookupUser(name: string): { uid: number; gid: number } | undefined {
  try {
    const f = execFileSync('getent', ['passwd', name], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim().split(':');
    const uid = Number(f[2]);
    const gid = Number(f[3]);
    return Number.isInteger(uid) && Number.isInteger(gid) ? { uid, gid } : undefined;
  } catch {
    return undefined;
  }
}

function userName(uid: number): string | undefined {
  try {
    return execFileSync('getent', ['passwd', String(uid)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).split(':')[0];
  } catch {
    return undefined;
  }
}

export class TorManager extends EventEmitter<ManagerEvents> {
  private readonly cfg: TorConfig;
  private readonly log: Logger;
  private readonly paths: EmbeddedPaths | undefined;
  private readonly ownerPid: number;
  private readonly startTimeoutMs: number;
  private readonly stopTimeoutMs: number;
  private readonly backoffInitialMs: number;
  private readonly backoffMaxMs: number;

  private phase: TorPhase = 'down';
  private progress = 0;
  private summary = 'not started';
  private version: string | undefined;
  private lastError: string | undefined;
  private restarts = 0;
  private liveness: 'up' | 'down' | undefined;
  private socksListener: SocksEndpoint | undefined;

  private started = false;
  /** Bumped by every start() and stop(): a start() that waited on its directories launches only if still the latest. */
  private startToken = 0;
  private stopping = false;
  private gen = 0;
  private ctl: TorControl | null = null;
  private child: ChildProcess | null = null;
  private childExited: Promise<void> | null = null;
  private childStartedAt = 0;
  private launchAbort: AbortController | null = null;
  private timer: NodeJS.Timeout | null = null;
  private backoffMs: number;
  private torLastErr: string | undefined;
  private torLastWarn: string | undefined;
  private readonly onions = new Map<string, ManagedOnion>();
  private warnings: string[] = [];
  private bootstrapProblem: BootstrapProblem | undefined;
  /** Resolved at the first start (embedded): the user tor drops to, and whether the sandbox is on. */
  private privileges: Privileges | undefined;
  /** This launch uses Sandbox 1 (a quick exit then blames the sandbox first). */
  private launchedWithSandbox = false;
  private lastTorLines: string[] = [];

  constructor(opts: TorManagerOptions) {
    super();
    this.cfg = opts.config;
    this.log = opts.logger.child({ component: 'tor' });
    this.ownerPid = opts.ownerPid ?? process.pid;
    this.startTimeoutMs = opts.startTimeoutMs ?? 30_000;
    this.stopTimeoutMs = opts.stopTimeoutMs ?? 5_000;
    this.backoffInitialMs = opts.backoffInitialMs ?? 1_000;
    this.backoffMaxMs = opts.backoffMaxMs ?? 30_000;
    this.backoffMs = this.backoffInitialMs;
    this.paths = this.cfg.mode === 'embedded' ? embeddedPaths(opts.stateDir, this.cfg) : undefined;
  }

  // -------------------------------------------------------------------------------------------
  // Public API

  /**
   * Starts tor (embedded) or connects to it (external). Resolves once the first attempt has
   * either connected the control port or failed; a failure is in state().lastError and is
   * retried with backoff. Rejects only when the state directory cannot be prepared.
   */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    this.stopping = false;
    const token = ++this.startToken;
    this.setPhase('starting', 'starting');
    if (this.paths) {
      await this.prepareDirs(this.paths);
      // A stop (and maybe a new start) came while the directories were prepared: that start launches, not this one.
      if (token !== this.startToken) return;
      await this.launch();
    } else {
      await this.connectExternal();
    }
  }

  /** Stops: closes the control connection and ends the embedded tor (SIGTERM, then SIGKILL). `reason` becomes the summary. */
  async stop(reason = 'stopped'): Promise<void> {
    if (!this.started) return;
    this.started = false;
    this.stopping = true;
    this.gen++;
    this.startToken++;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.launchAbort?.abort(new Error('tor manager stopped'));
    this.launchAbort = null;
    const ctl = this.ctl;
    this.ctl = null;
    if (ctl) await ctl.close().catch(() => undefined);
    const child = this.child;
    const exited = this.childExited;
    if (child && exited && child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      let t: NodeJS.Timeout | undefined;
      const timedOut = await Promise.race([exited.then(() => false), new Promise<boolean>((r) => (t = setTimeout(() => r(true), this.stopTimeoutMs)))]);
      if (t) clearTimeout(t);
      if (timedOut) {
        this.log.warn({ pid: child.pid }, `tor did not exit within ${this.stopTimeoutMs} ms of SIGTERM; killing it`);
        child.kill('SIGKILL');
        await exited;
      }
    } else if (exited) await exited;
    this.child = null;
    this.childExited = null;
    this.progress = 0;
    this.bootstrapProblem = undefined;
    this.setPhase('down', reason);
  }

  state(): TorState {
    // Unset is null, never absent (the --json contract).
    const p = this.privileges;
    return {
      mode: this.cfg.mode,
      phase: this.phase,
      progress: this.progress,
      summary: this.summary,
      version: this.version ?? null,
      lastError: this.lastError ?? null,
      restarts: this.restarts,
      warnings: [...this.warnings],
      bootstrapProblem: this.bootstrapProblem !== undefined ? { ...this.bootstrapProblem } : null,
      pid: this.child?.pid ?? null,
      privileges: p !== undefined ? { user: p.user, sandbox: p.sandbox, note: p.note ?? null } : null,
    };
  }

  isReady(): boolean {
    return this.phase === 'ready';
  }

  /**
   * Where to send SOCKS: `{ path }` (unix socket) or `{ host, port }`; null only while an embedded
   * "auto" port is not known yet (tor reports it once the control port is connected).
   */
  socks(): SocksEndpoint | null {
    if (this.cfg.mode === 'external') {
      const a = parseTorAddress(this.cfg.socks!, 'socks');
      return a.kind === 'unix' ? { path: a.path } : { host: a.host, port: a.port };
    }
    if (this.paths?.socksSocket !== undefined) return { path: this.paths.socksSocket };
    const s = parseEmbeddedSocks(this.cfg.socks!);
    if (s.port !== 'auto') return { host: s.host, port: s.port };
    return this.socksListener ?? null;
  }

  /** The live control connection, or null while there is none. */
  control(): TorControl | null {
    return this.ctl;
  }

  /** The embedded tor's pid while it runs. */
  pid(): number | undefined {
    return this.child?.pid;
  }

  /** The embedded tor's files (undefined in external mode). */
  files(): EmbeddedPaths | undefined {
    return this.paths;
  }

  /** Service ids of the onion services this manager keeps up. */
  onionServices(): string[] {
    return [...this.onions.keys()];
  }

  /**
   * Adds an onion service that the manager re-adds after every tor restart or reconnect (with
   * Flags=Detach, so it does not depend on one control connection). Needs a connected control
   * port (not a finished bootstrap). Returns the service id (without ".onion").
   */
  async addOnion(o: ManagedOnionOptions): Promise<string> {
    const ctl = this.ctl;
    if (!ctl) throw new Error('tor is not connected');
    let keyDir: string | undefined;
    if (o.keyDir !== undefined) {
      keyDir = resolvePath(o.keyDir);
      const allowed = this.cfg.hiddenServiceDirs.some((d) => {
        const base = resolvePath(d);
        return keyDir === base || keyDir!.startsWith(base.endsWith(sep) ? base : base + sep);
      });
      if (!allowed) throw new Error(`onion key directory ${keyDir} is not under any of tor.hiddenServiceDirs`);
    }
    const existing = o.key ?? (keyDir !== undefined ? await readOnionKey(keyDir) : undefined);
    const r = await ctl.addOnion({
      key: existing ?? 'NEW:ED25519-V3',
      ports: o.ports,
      flags: ['Detach'],
      ...(o.maxStreams !== undefined ? { maxStreams: o.maxStreams } : {}),
    });
    const key = existing ?? (r.privateKey as Ed25519OnionKey | undefined);
    if (key === undefined) {
      await ctl.delOnion(r.serviceId).catch(() => undefined);
      throw new Error('tor returned no private key for the new onion service');
    }
    if (existing === undefined && keyDir !== undefined) {
      try {
        await writeOnionKey(keyDir, key, r.serviceId);
      } catch (e) {
        await ctl.delOnion(r.serviceId).catch(() => undefined);
        throw e;
      }
    }
    this.onions.set(r.serviceId, { key, ports: o.ports.map((p) => ({ ...p })), ...(o.maxStreams !== undefined ? { maxStreams: o.maxStreams } : {}) });
    this.log.info({ serviceId: r.serviceId, persistent: keyDir !== undefined }, 'onion service added');
    return r.serviceId;
  }

  /** The key of an onion service added by addOnion (a secret: for the state file, never logs). */
  onionKey(serviceId: string): Ed25519OnionKey | undefined {
    return this.onions.get(serviceId.replace(/\.onion$/, ''))?.key;
  }

  /** Removes an onion service added by addOnion (from tor too, when connected). */
  async delOnion(serviceId: string): Promise<void> {
    const id = serviceId.replace(/\.onion$/, '');
    this.onions.delete(id);
    const ctl = this.ctl;
    if (!ctl) return;
    try {
      await ctl.delOnion(id);
    } catch (e) {
      if (!(e instanceof TorControlError && e.code === 552)) throw e;
    }
  }

  // -------------------------------------------------------------------------------------------
  // State

  private setPhase(phase: TorPhase, summary?: string): void {
    const prev = this.phase;
    const prevSummary = this.summary;
    this.phase = phase;
    if (summary !== undefined) this.summary = summary;
    if (prev === phase && prevSummary === this.summary) return;
    if (phase === 'ready' && prev !== 'ready') {
      this.log.info({ version: this.version }, 'tor is ready');
      this.emit('ready');
    }
    if (phase === 'down' && prev !== 'down') {
      if (this.stopping) this.log.info('tor stopped');
      else this.log.warn({ reason: this.summary }, 'tor is down');
      this.emit('down', this.summary);
    }
    this.emit('state', this.state());
  }

  /** Recomputes the phase from the control connection, bootstrap and liveness. */
  private recompute(): void {
    if (!this.ctl) return;
    const ready = this.progress === 100 && this.liveness !== 'down';
    this.setPhase(ready ? 'ready' : 'bootstrapping');
  }

  private goDown(reason: string): void {
    this.progress = 0;
    this.liveness = undefined;
    this.setPhase('down', reason);
  }

  private applyBootstrap(b: BootstrapStatus, fromEvent: boolean, count?: number): void {
    if (b.warning !== undefined) {
      this.lastError = `bootstrap problem at ${b.progress}%: ${b.warning}${b.reason !== undefined ? ` (${b.reason})` : ''}`;
      this.log.warn({ progress: b.progress, tag: b.tag, reason: b.reason, warning: b.warning }, 'tor bootstrap problem');
      this.bootstrapProblem = { progress: b.progress, summary: b.summary, warning: b.warning, reason: b.reason ?? null, count: count ?? null };
      // Without COUNT/HOSTID, so one problem repeated against many relays stays one warning.
      this.addWarning(`bootstrap stuck at ${b.progress}% (${b.summary}): ${b.warning}${b.reason !== undefined ? ` [${b.reason}]` : ''}`);
    } else if (b.progress > (this.bootstrapProblem?.progress ?? 100)) this.bootstrapProblem = undefined;
    // A GETINFO answer can be older than events already applied: never go backwards. The phase
    // is still recomputed: those events came before the control connection was ours (attach),
    // when they could not make tor ready.
    if (!fromEvent && b.progress < this.progress) {
      this.recompute();
      return;
    }
    const changed = b.progress !== this.progress;
    this.progress = b.progress;
    if (b.summary.length > 0) this.summary = b.summary;
    if (b.progress === 100) this.bootstrapProblem = undefined;
    if (changed && fromEvent) this.log.info({ progress: b.progress, tag: b.tag }, `tor bootstrapped ${b.progress}%: ${b.summary}`);
    if (fromEvent) this.emit('bootstrap', b.progress, b.summary);
    this.recompute();
    this.emit('state', this.state());
  }

  private onTorEvent(ev: TorEvent): void {
    switch (ev.type) {
      case 'STATUS_CLIENT':
      case 'STATUS_GENERAL': {
        const s = parseStatusEvent(ev);
        if (s?.bootstrap) {
          const n = Number(s.args.COUNT);
          this.applyBootstrap(s.bootstrap, true, Number.isInteger(n) ? n : undefined);
        } else if (s && (s.severity === 'WARN' || s.severity === 'ERR')) this.addWarning(statusWarningText(s.action, s.args));
        break;
      }
      case 'WARN':
      case 'ERR':
        this.addWarning(ev.body.trim());
        break;
      case 'CIRC': {
        const c = parseCircEvent(ev);
        if (c) this.emit('circ', c);
        break;
      }
      case 'STREAM': {
        const s = parseStreamEvent(ev);
        if (s) this.emit('stream', s);
        break;
      }
      case 'HS_DESC': {
        const h = parseHsDescEvent(ev);
        if (h) this.emit('hs_desc', h);
        break;
      }
      case LIVENESS_EVENT: {
        const v = ev.body.trim().toLowerCase();
        if (v === 'up' || v === 'down') {
          this.liveness = v;
          this.log.info({ liveness: v }, 'tor network liveness changed');
          this.recompute();
        }
        break;
      }
    }
  }

  // -------------------------------------------------------------------------------------------
  // After connecting (both modes)

  private async attach(ctl: TorControl): Promise<void> {
    ctl.on('event', (ev) => this.onTorEvent(ev));
    ctl.on('close', (err) => this.onControlClose(ctl, err));
    const base = this.cfg.mode === 'external' ? [...BASE_EVENTS, ...LOG_EVENTS] : BASE_EVENTS;
    try {
      await ctl.setEvents([...base, LIVENESS_EVENT]);
    } catch (e) {
      if (!(e instanceof TorControlError)) throw e;
      await ctl.setEvents(base);
    }
    const info = await ctl.getInfo(['version', 'status/bootstrap-phase']);
    let liveness: 'up' | 'down' | undefined;
    try {
      const l = (await ctl.getInfo(['network-liveness']))['network-liveness'];
      if (l === 'up' || l === 'down') liveness = l;
    } catch (e) {
      if (!(e instanceof TorControlError)) throw e;
    }
    let listener: SocksEndpoint | undefined;
    if (this.cfg.mode === 'embedded' && this.paths?.socksSocket === undefined) {
      const l = (await ctl.getInfo(['net/listeners/socks']))['net/listeners/socks'] ?? '';
      const first = parseKeyValues(l).positional[0];
      const a = first !== undefined ? /^\[?([^\]]+?)\]?:(\d+)$/.exec(first) : null;
      if (a) listener = { host: a[1]!, port: Number(a[2]) };
    }
    if (ctl.closed) throw new Error('the control connection closed while setting it up');
    this.ctl = ctl;
    this.version = info.version?.split(' ', 1)[0] ?? ctl.protocolInfo.torVersion;
    this.liveness = liveness;
    if (listener) this.socksListener = listener;
    const b = info['status/bootstrap-phase'] !== undefined ? parseBootstrap(info['status/bootstrap-phase']) : null;
    if (b) this.applyBootstrap(b, false);
    else this.recompute();
    this.log.info({ version: this.version, auth: ctl.authMethod, progress: this.progress, liveness }, 'tor control connected');
    await this.republishOnions(ctl);
  }

  private async republishOnions(ctl: TorControl): Promise<void> {
    for (const [id, o] of this.onions) {
      try {
        const r = await ctl.addOnion({ key: o.key, ports: o.ports, flags: ['Detach'], ...(o.maxStreams !== undefined ? { maxStreams: o.maxStreams } : {}) });
        if (r.serviceId !== id) this.log.error({ expected: id, got: r.serviceId }, 'tor re-added an onion service under another id');
      } catch (e) {
        // 550 "Onion address collision": an external tor still has it from before the reconnect.
        if (e instanceof TorControlError && e.code === 550) continue;
        this.log.warn({ serviceId: id, err: errMsg(e) }, 'could not re-add onion service');
      }
    }
  }

  private onControlClose(ctl: TorControl, err: Error | undefined): void {
    if (this.ctl !== ctl) return;
    this.ctl = null;
    if (this.stopping) return;
    const reason = `control connection lost${err ? `: ${err.message}` : ''}`;
    if (this.cfg.mode === 'external') {
      this.lastError = reason;
      this.goDown(reason);
      this.schedule(() => void this.connectExternal(), this.nextBackoff());
      return;
    }
    // Embedded: if tor itself exited, onChildExit restarts it; otherwise reconnect to the same tor.
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    this.lastError = reason;
    this.goDown(reason);
    this.schedule(() => void this.reconnectEmbedded(child), this.backoffInitialMs);
  }

  private schedule(f: () => void, ms: number): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      if (!this.stopping) f();
    }, ms);
  }

  private nextBackoff(): number {
    const d = this.backoffMs;
    this.backoffMs = Math.min(this.backoffMs * 2, this.backoffMaxMs);
    return d;
  }

  // -------------------------------------------------------------------------------------------
  // External mode

  private async connectExternal(): Promise<void> {
    const gen = ++this.gen;
    const wasUp = this.version !== undefined;
    try {
      const ctl = await TorControl.connect({
        address: this.cfg.control!,
        ...(this.cfg.controlPassword !== undefined ? { password: this.cfg.controlPassword } : {}),
        ...(this.cfg.cookieFile !== undefined ? { cookieFile: this.cfg.cookieFile } : {}),
        timeoutMs: this.startTimeoutMs,
        logger: this.log,
      });
      if (gen !== this.gen || this.stopping) {
        ctl.destroy();
        return;
      }
      try {
        await this.attach(ctl);
      } catch (e) {
        ctl.destroy();
        throw e;
      }
      if (gen !== this.gen || this.stopping) return;
      if (wasUp) this.restarts++;
      this.backoffMs = this.backoffInitialMs;
      this.emit('state', this.state());
    } catch (e) {
      if (gen !== this.gen || this.stopping) return;
      this.lastError = `cannot connect to tor's control port ${this.cfg.control}: ${errMsg(e)}`;
      this.goDown(this.lastError);
      const delay = this.nextBackoff();
      this.log.debug({ err: this.lastError, retryInMs: delay }, 'tor control connect failed');
      this.schedule(() => void this.connectExternal(), delay);
    }
  }

  // -------------------------------------------------------------------------------------------
  // Embedded mode

  /**
   * The layout (see README, Security model): <state>/tor is root's and holds torrc; tor's own
   * data/ and run/ (sockets, cookie) are the only places its user may write. Everything is
   * made or fixed through fds opened without following links; whatever else is found in those
   * places (an older layout, a link) is moved aside and removed.
   */
  private async prepareDirs(p: EmbeddedPaths): Promise<void> {
    this.privileges ??= await this.resolvePrivileges(p);
    const { uid, gid } = this.privileges;
    const me = process.getuid?.() ?? 0;
    const separate = uid !== me;
    // tor's user gets through the state directory and into <state>/tor by its group, not as "other".
    if (separate) await shareStateDir(dirname(p.dir), gid);
    await ownDir(p.dir, me, separate ? gid : (process.getgid?.() ?? 0), separate ? 0o710 : 0o700, this.log);
    // Left by the layout before run/ (all root's then, in a directory only root writes).
    await Promise.all(['control.sock', 'socks.sock', 'control.authcookie'].map((f) => rm(join(p.dir, f), { force: true })));
    // tor checks that its data directory and its sockets' directory are its user's and private.
    await ownDir(p.dataDir, uid, gid, 0o700, this.log);
    await ownDir(p.runDir, uid, gid, 0o700, this.log);
  }

  /**
   * Who may connect to a socket tor must reach (an onion service target): the embedded tor's
   * group; an external tor's: the group of its unix control socket, else debian-tor's; unknown: everyone.
   */
  torReach(): TorReach {
    const me = process.getuid?.() ?? 0;
    if (this.cfg.mode === 'embedded') {
      if (me !== 0) return 'self';
      const wanted = this.cfg.user ?? ['debian-tor', 'nobody'].find((u) => lookupUser(u) !== undefined);
      const u = wanted !== undefined && wanted !== 'root' ? lookupUser(wanted) : undefined;
      return u !== undefined ? { gid: u.gid } : 'self';
    }
    const c = parseTorAddress(this.cfg.control!, 'control');
    const gid = (c.kind === 'unix' ? socketGroup(c.path) : undefined) ?? lookupUser('debian-tor')?.gid;
    return gid !== undefined ? { gid } : 'world';
  }

  /**
   * Whom the embedded tor runs as. As root: tor.user, else debian-tor, else nobody (tor binds
   * as root, then drops to that user itself: torrc `User`). Not root: tor runs as we do.
   */
  private async resolvePrivileges(p: EmbeddedPaths): Promise<Privileges> {
    const myUid = process.getuid?.() ?? 0;
    const sandbox = this.cfg.sandbox && process.platform === 'linux';
    const sandboxNote = this.cfg.sandbox ? (sandbox ? undefined : 'tor.sandbox: the sandbox needs Linux') : 'tor.sandbox is false';
    const asIs = (user: string, note?: string): Privileges => {
      const notes = [note, sandboxNote].filter((x): x is string => x !== undefined);
      return { user, uid: myUid, gid: process.getgid?.() ?? 0, sandbox, how: 'same', ...(notes.length > 0 ? { note: notes.join('; ') } : {}) };
    };
    if (myUid !== 0) return asIs(userName(myUid) ?? String(myUid));
    const wanted = this.cfg.user ?? ['debian-tor', 'nobody'].find((u) => lookupUser(u) !== undefined);
    if (wanted === undefined || wanted === 'root') {
      const note = wanted === 'root' ? 'tor.user is root' : 'neither debian-tor nor nobody exists';
      this.log.warn({ note }, 'the embedded tor runs as root');
      return asIs('root', note);
    }
    const u = lookupUser(wanted);
    if (u === undefined) throw new Error(`tor: tor.user ${JSON.stringify(wanted)} does not exist`);
    // After dropping privileges tor opens its files by absolute path: every directory above its
    // own must let that user through (x). The daemon's state directory does by tor's group (prepareDirs).
    for (let d = dirname(dirname(p.dir)); ; d = dirname(d)) {
      const st = await stat(d);
      const through = st.uid === u.uid ? st.mode & 0o100 : st.gid === u.gid ? st.mode & 0o010 : st.mode & 0o001;
      if (through === 0) {
        const note = `${wanted} cannot enter ${d}`;
        this.log.warn({ note }, 'the embedded tor runs as root');
        return asIs('root', note);
      }
      if (d === dirname(d)) break;
    }
    // Started as that user, tor is never root. A tor binary that user cannot run (a wrapper in
    // a root-only directory) starts as root and drops to the user itself (torrc User); tor then
    // opens no control socket while DisableNetwork is set, so the first way is preferred.
    const bin = findOnPath(this.cfg.binary);
    const how = bin !== undefined && (await canRun(bin, u.uid, u.gid)) ? 'spawn' : 'torrc';
    const notes = [how === 'torrc' ? `${wanted} cannot run ${bin ?? this.cfg.binary}: tor starts as root and switches to ${wanted} itself` : undefined, sandboxNote].filter((x): x is string => x !== undefined);
    return { user: wanted, uid: u.uid, gid: u.gid, sandbox, how, ...(notes.length > 0 ? { note: notes.join('; ') } : {}) };
  }

  private async launch(): Promise<void> {
    const p = this.paths!;
    const gen = ++this.gen;
    this.setPhase('starting', 'starting tor');
    // Stale sockets and cookie from an earlier tor would make us connect too early.
    await Promise.all([p.controlSocket, p.socksSocket, p.cookieFile].map((f) => (f !== undefined ? rm(f, { force: true }) : Promise.resolve())));
    const priv = this.privileges!;
    this.launchedWithSandbox = priv.sandbox;
    // Root's files in root's directory; tor's user reads them by its group (started as that user).
    const me = process.getuid?.() ?? 0;
    const [fileGid, fileMode] = priv.uid !== me ? [priv.gid, 0o640] : [process.getgid?.() ?? 0, 0o600];
    await writeNewFile(p.defaults, '# intentionally empty: keeps system-wide tor defaults out of mvnet\'s tor\n', me, fileGid, fileMode);
    await writeNewFile(p.torrc, buildTorrc(this.cfg, p, this.ownerPid, { ...(priv.how === 'torrc' ? { user: priv.user } : {}), sandbox: priv.sandbox }), me, fileGid, fileMode);
    if (gen !== this.gen || this.stopping) return;

    this.torLastErr = undefined;
    this.torLastWarn = undefined;
    this.lastTorLines = [];
    const abort = new AbortController();
    this.launchAbort = abort;
    const child = spawn(this.cfg.binary, ['-f', p.torrc, '--defaults-torrc', p.defaults], { stdio: ['ignore', 'pipe', 'pipe'], ...(priv.how === 'spawn' ? { uid: priv.uid, gid: priv.gid } : {}) });
    this.child = child;
    this.childStartedAt = Date.now();
    this.childExited = new Promise<void>((resolve) => {
      let done = false;
      const finish = (why: string): void => {
        if (done) return;
        done = true;
        resolve();
        this.onChildExit(child, why);
      };
      child.once('exit', (code, signal) => finish(signal !== null ? `tor was killed by ${signal}` : `tor exited with code ${code}`));
      child.once('error', (e) => finish(`cannot run ${JSON.stringify(this.cfg.binary)}: ${errMsg(e)}`));
    });
    for (const stream of [child.stdout, child.stderr]) {
      if (stream) createInterface({ input: stream, crlfDelay: Infinity }).on('line', (l) => this.onTorLog(l));
    }
    this.log.info({ pid: child.pid, torrc: p.torrc }, 'started tor');

    const deadline = setTimeout(() => abort.abort(new Error(`tor's control port did not come up within ${this.startTimeoutMs} ms`)), this.startTimeoutMs);
    try {
      const ctl = await this.connectLocal(p, abort.signal);
      if (gen !== this.gen || this.stopping || this.child !== child) {
        ctl.destroy();
        return;
      }
      try {
        await this.attach(ctl);
      } catch (e) {
        ctl.destroy();
        throw e;
      }
    } catch (e) {
      if (gen !== this.gen || this.stopping || this.child !== child) return;
      if (child.exitCode === null && child.signalCode === null) {
        this.lastError = `tor started but its control port failed: ${errMsg(e)}`;
        this.log.error({ err: this.lastError }, 'killing tor to start it again');
        child.kill('SIGKILL');
      }
    } finally {
      clearTimeout(deadline);
      if (this.launchAbort === abort) this.launchAbort = null;
    }
  }

  /** Waits for the control socket and cookie, then connects, retrying while tor is still binding. */
  private async connectLocal(p: EmbeddedPaths, signal: AbortSignal): Promise<TorControl> {
    await waitForPaths(p.runDir, [p.controlSocket, p.cookieFile], signal);
    // tor writes the cookie as its user; started as root (torrc User), before it switches.
    const priv = this.privileges!;
    const cookieOwners = priv.how === 'torrc' ? [priv.uid, process.getuid?.() ?? 0] : [priv.uid];
    for (;;) {
      try {
        return await TorControl.connect({ address: `unix:${p.controlSocket}`, cookieFile: p.cookieFile, cookieOwners, timeoutMs: this.startTimeoutMs, logger: this.log });
      } catch (e) {
        if (signal.aborted) throw signal.reason instanceof Error ? signal.reason : e;
        if (!isTransientConnectError(e)) throw e;
        await abortableDelay(100, signal);
      }
    }
  }

  private async reconnectEmbedded(child: ChildProcess): Promise<void> {
    if (this.child !== child || this.stopping || this.ctl) return;
    const gen = ++this.gen;
    const abort = new AbortController();
    this.launchAbort = abort;
    const deadline = setTimeout(() => abort.abort(new Error('reconnecting timed out')), this.startTimeoutMs);
    try {
      const ctl = await this.connectLocal(this.paths!, abort.signal);
      if (gen !== this.gen || this.stopping || this.child !== child) {
        ctl.destroy();
        return;
      }
      await this.attach(ctl).catch((e: unknown) => {
        ctl.destroy();
        throw e;
      });
    } catch (e) {
      if (gen !== this.gen || this.stopping || this.child !== child) return;
      this.lastError = `cannot reconnect to tor's control port: ${errMsg(e)}`;
      this.log.error({ err: this.lastError }, 'killing tor to start it again');
      child.kill('SIGKILL');
    } finally {
      clearTimeout(deadline);
      if (this.launchAbort === abort) this.launchAbort = null;
    }
  }

  private onChildExit(child: ChildProcess, why: string): void {
    if (this.child !== child) return;
    this.child = null;
    this.launchAbort?.abort(new Error(why));
    this.launchAbort = null;
    const ctl = this.ctl;
    this.ctl = null;
    ctl?.destroy();
    if (this.stopping) return;
    // A tor that cannot start with the sandbox (seccomp missing, a filter this kernel refuses)
    // runs without it at once: tor.sandbox asks for it "where available".
    if (this.launchedWithSandbox && child.signalCode === null && this.progress === 0 && this.lastTorLines.some((l) => /sandbox|seccomp/i.test(l))) {
      const why2 = this.lastTorLines.filter((l) => /sandbox|seccomp/i.test(l)).slice(-1)[0]!;
      this.privileges!.sandbox = false;
      this.privileges!.note = `the sandbox failed, tor runs without it: ${why2}`;
      this.log.warn({ tor: why2 }, 'tor could not start with Sandbox 1; starting it without');
      this.goDown(why);
      this.schedule(() => this.relaunch(), 0);
      return;
    }
    // tor's [err] line often just says "see warnings above": give the last warning too.
    const parts = child.signalCode === null ? [this.torLastWarn, this.torLastErr].filter((x): x is string => x !== undefined) : [];
    const detail = parts.length > 0 ? parts.join('; ') : undefined;
    this.lastError = detail !== undefined ? `${why}: ${detail}` : why;
    this.goDown(why);
    if (Date.now() - this.childStartedAt >= STABLE_RUN_MS) this.backoffMs = this.backoffInitialMs;
    const delay = this.nextBackoff();
    this.log.info({ delayMs: delay }, 'restarting tor');
    this.schedule(() => this.relaunch(), delay);
  }

  private relaunch(): void {
    this.restarts++;
    this.launch().catch((e: unknown) => {
      if (this.stopping) return;
      this.lastError = `cannot start tor: ${errMsg(e)}`;
      this.goDown(this.lastError);
      this.schedule(() => this.relaunch(), this.nextBackoff());
    });
  }

  /** Tor's own log lines (Log notice stdout): "<date> [level] message". */
  private onTorLog(line: string): void {
    const m = /\[(debug|info|notice|warn|err)\] (.*)$/.exec(line);
    const level = m?.[1] ?? 'notice';
    const msg = m?.[2] ?? line;
    this.lastTorLines.push(msg);
    if (this.lastTorLines.length > 20) this.lastTorLines.shift();
    if (level === 'err') {
      this.torLastErr = msg;
      this.log.error({ tor: msg }, 'tor');
      this.addWarning(msg);
    } else if (level === 'warn') {
      if (!/running Tor as root/.test(msg)) this.torLastWarn = msg;
      this.log.warn({ tor: msg }, 'tor');
      this.addWarning(msg);
    } else this.log.info({ tor: msg }, 'tor');
  }

  /** Keeps tor's warning (the same text again moves to the end) and says so. */
  private addWarning(msg: string): void {
    if (msg.length === 0) return;
    const i = this.warnings.indexOf(msg);
    if (i >= 0) this.warnings.splice(i, 1);
    this.warnings.push(msg);
    if (this.warnings.length > MAX_WARNINGS) this.warnings.splice(0, this.warnings.length - MAX_WARNINGS);
    if (i < 0) this.emit('warning', msg);
    this.emit('state', this.state());
  }
}
