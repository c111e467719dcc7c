/**
 * Network namespaces as test "VMs", and the process/temp-dir bookkeeping that goes with them.
 *
 * Everything a test creates through this module (namespaces, root-namespace links, long-running
 * processes, temp dirs, arbitrary cleanup callbacks) is recorded in one process-wide registry.
 * `cleanupAll()` (call it from `afterAll`) tears it down in reverse order; if the process exits
 * first — a crashed test, an uncaught exception, SIGINT/SIGTERM from the runner — a synchronous
 * fallback kills the processes and deletes the namespaces, so nothing leaks. Only a SIGKILL of
 * the test process itself escapes; `test/support/cleanup.sh` removes what that leaves.
 *
 * Naming: every namespace is `mvt-<prefix>-<random>` and every interface name produced by
 * `uniqueName()` starts with the caller's prefix and is at most 15 characters (IFNAMSIZ - 1), so
 * tests running side by side never collide and the cleanup script can recognise leftovers.
 *
 * Waiting: nothing here sleeps for a fixed time. Use `ManagedProcess.waitForLine()` / `exited`
 * for processes, and `waitFor()` (a deadline-bounded poll) only for kernel state that has no
 * event to await.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Prefix of every namespace this module creates (tests); the cleanup script looks for it. */
export const NETNS_PREFIX = 'mvt-';
/** Linux IFNAMSIZ - 1. */
export const IFNAME_MAX = 15;

// ---------------------------------------------------------------------------------------------
// Registry

interface CleanupEntry {
  id: number;
  label: string;
  /** Graceful teardown, used by cleanupAll(). */
  run: () => Promise<void>;
  /** Last-resort teardown at process exit; must be synchronous. */
  runSync: () => void;
}

const entries: CleanupEntry[] = [];
let nextId = 1;
let hooksInstalled = false;

function installExitHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', cleanupAllSync);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const handler = (): void => {
      cleanupAllSync();
      process.removeListener(sig, handler);
      // Re-raise so the default action (or the runner's own handler) still happens.
      process.kill(process.pid, sig);
    };
    process.on(sig, handler);
  }
}

/**
 * Registers a teardown step. Returns a function that runs it now (once) and unregisters it.
 * `runSync` defaults to a no-op (fine for things that vanish with the process anyway).
 */
export function registerCleanup(
  label: string,
  run: () => Promise<void>,
  runSync: () => void = () => {},
): () => Promise<void> {
  installExitHooks();
  const entry: CleanupEntry = { id: nextId++, label, run, runSync };
  entries.push(entry);
  return async () => {
    const i = entries.indexOf(entry);
    if (i < 0) return;
    entries.splice(i, 1);
    await entry.run();
  };
}

/**
 * Tears down everything registered so far, newest first. Errors are collected and thrown
 * together at the end, after every step had its chance.
 */
export async function cleanupAll(): Promise<void> {
  const errors: string[] = [];
  while (entries.length > 0) {
    const entry = entries.pop()!;
    try {
      await entry.run();
    } catch (err) {
      errors.push(`${entry.label}: ${(err as Error).message}`);
      try {
        entry.runSync();
      } catch {
        // best effort
      }
    }
  }
  if (errors.length > 0) throw new Error(`cleanup failed:\n${errors.join('\n')}`);
}

function cleanupAllSync(): void {
  while (entries.length > 0) {
    const entry = entries.pop()!;
    try {
      entry.runSync();
    } catch {
      // best effort: we are exiting
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Names

/** `n` random lower-case base-36 characters. */
export function randomSuffix(n = 6): string {
  const bytes = randomBytes(n);
  return Array.from(bytes, (b) => (b % 36).toString(36)).join('');
}

/**
 * `prefix` + random suffix, at most `max` characters (default 15, an interface name). At least
 * four random characters are kept, so the prefix is shortened if it must be.
 */
export function uniqueName(prefix: string, max = IFNAME_MAX): string {
  const suffixLen = Math.max(4, Math.min(6, max - prefix.length));
  return prefix.slice(0, max - suffixLen) + randomSuffix(suffixLen);
}

// ---------------------------------------------------------------------------------------------
// Running commands

export interface RunResult {
  code: number;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  /** Run inside this namespace (`ip netns exec NAME ...`). */
  netns?: string;
  /** Written to stdin, which is then closed. */
  input?: string | Buffer;
  /** Kill the command (SIGKILL) and throw after this long. Default 30 s. */
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Throw when the exit code is not 0. Default true. */
  check?: boolean;
}

/** The argv that runs `cmd` inside `netns` (or `cmd` itself). */
export function inNetns(netns: string | undefined, cmd: readonly string[]): string[] {
  return netns ? ['ip', 'netns', 'exec', netns, ...cmd] : [...cmd];
}

function describe(cmd: readonly string[]): string {
  return cmd.map((a) => (/^[\w./:=@%+,-]+$/.test(a) ? a : JSON.stringify(a))).join(' ');
}

/** Runs a command to completion and collects its output. */
export function run(cmd: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const argv = inNetns(opts.netns, cmd);
  const timeoutMs = opts.timeoutMs ?? 30_000;
  return new Promise<RunResult>((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: opts.env ?? process.env,
      cwd: opts.cwd,
      detached: true,
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => err.push(d));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup(child, 'SIGKILL');
    }, timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`${describe(argv)}: ${e.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const res: RunResult = {
        code: code ?? -1,
        signal,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
      };
      if (timedOut) {
        reject(new Error(`${describe(argv)}: timed out after ${timeoutMs} ms\n${res.stdout}${res.stderr}`));
      } else if ((opts.check ?? true) && res.code !== 0) {
        reject(new Error(`${describe(argv)}: exit ${res.code}${signal ? ` (${signal})` : ''}\n${res.stderr}${res.stdout}`));
      } else {
        resolve(res);
      }
    });
    child.stdin.on('error', () => {}); // EPIPE when the command does not read stdin
    child.stdin.end(opts.input ?? '');
  });
}

/** Synchronous `run` for exit handlers; never throws. */
function runSync(cmd: readonly string[]): { code: number; stdout: string } {
  const r = spawnSync(cmd[0]!, cmd.slice(1), { encoding: 'utf8', timeout: 10_000 });
  return { code: r.status ?? -1, stdout: r.stdout ?? '' };
}

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    try {
      child.kill(signal);
    } catch {
      // already gone
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Long-running processes

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface SpawnOptions {
  netns?: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Shown in errors and cleanup failures. */
  label?: string;
  /** Keep stdin open as a pipe (default: closed/ignored). */
  stdin?: boolean;
}

/**
 * A child process in its own process group, registered for teardown. Its stdout is split into
 * lines (kept in `lines`), stderr is kept as text; both are readable while it runs.
 */
export class ManagedProcess {
  readonly child: ChildProcess;
  readonly label: string;
  /** Complete stdout lines so far. */
  readonly lines: string[] = [];
  stderr = '';
  /** Resolves when the process has exited and its output is drained. */
  readonly exited: Promise<ExitInfo>;
  exit: ExitInfo | undefined;
  private partial = '';
  private readonly lineListeners = new Set<(line: string) => void>();
  private readonly unregister: () => Promise<void>;

  constructor(cmd: readonly string[], opts: SpawnOptions = {}) {
    const argv = inNetns(opts.netns, cmd);
    this.label = opts.label ?? describe(cmd);
    this.child = spawn(argv[0]!, argv.slice(1), {
      stdio: [opts.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'],
      env: opts.env ?? process.env,
      cwd: opts.cwd,
      detached: true,
    });
    this.child.stdout!.setEncoding('utf8');
    this.child.stderr!.setEncoding('utf8');
    this.child.stdout!.on('data', (d: string) => this.onStdout(d));
    this.child.stderr!.on('data', (d: string) => {
      this.stderr += d;
    });
    this.exited = new Promise<ExitInfo>((resolve) => {
      this.child.on('error', (e) => {
        this.stderr += `spawn error: ${e.message}\n`;
        this.exit = { code: -1, signal: null };
        resolve(this.exit);
      });
      this.child.on('close', (code, signal) => {
        if (this.partial) this.emitLine(this.partial);
        this.partial = '';
        this.exit = { code, signal };
        resolve(this.exit);
      });
    });
    this.unregister = registerCleanup(
      `process ${this.label}`,
      async () => {
        await this.stop();
      },
      () => {
        if (!this.exit) killGroup(this.child, 'SIGKILL');
      },
    );
    void this.exited.then(() => this.unregister());
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  get running(): boolean {
    return this.exit === undefined;
  }

  private onStdout(d: string): void {
    const parts = (this.partial + d).split('\n');
    this.partial = parts.pop() ?? '';
    for (const line of parts) this.emitLine(line);
  }

  private emitLine(line: string): void {
    this.lines.push(line);
    for (const l of this.lineListeners) l(line);
  }

  /** Calls `listener` for every future stdout line. Returns an unsubscribe function. */
  onLine(listener: (line: string) => void): () => void {
    this.lineListeners.add(listener);
    return () => this.lineListeners.delete(listener);
  }

  /**
   * Resolves with the first stdout line (already seen or future) matching `pred`. Rejects when
   * the process exits first or the timeout passes, quoting its output.
   */
  waitForLine(pred: (line: string) => boolean, opts: { timeoutMs?: number; fromIndex?: number } = {}): Promise<string> {
    const timeoutMs = opts.timeoutMs ?? 20_000;
    for (let i = opts.fromIndex ?? 0; i < this.lines.length; i++) {
      if (pred(this.lines[i]!)) return Promise.resolve(this.lines[i]!);
    }
    return new Promise<string>((resolve, reject) => {
      const done = (): void => {
        clearTimeout(timer);
        off();
      };
      const off = this.onLine((line) => {
        if (pred(line)) {
          done();
          resolve(line);
        }
      });
      const timer = setTimeout(() => {
        off();
        reject(new Error(`${this.label}: no matching output line within ${timeoutMs} ms\n${this.tail()}`));
      }, timeoutMs);
      void this.exited.then((e) => {
        // Give the line listeners the last flushed lines first ('close' emits them before resolving).
        if (this.lines.slice(opts.fromIndex ?? 0).some(pred)) return;
        done();
        reject(new Error(`${this.label}: exited (${e.code ?? e.signal}) before the expected output line\n${this.tail()}`));
      });
    });
  }

  /** Last lines of stdout and stderr, for error messages. */
  tail(n = 30): string {
    const out = this.lines.slice(-n).join('\n');
    const err = this.stderr.split('\n').slice(-n).join('\n');
    return `--- stdout (${this.label}) ---\n${out}\n--- stderr ---\n${err}`;
  }

  /** Sends a signal to the whole process group. */
  signal(sig: NodeJS.Signals): void {
    if (this.running) killGroup(this.child, sig);
  }

  /** Sends `sig` (default SIGTERM), escalates to SIGKILL after `graceMs`, resolves on exit. */
  async stop(sig: NodeJS.Signals = 'SIGTERM', graceMs = 5_000): Promise<ExitInfo> {
    if (!this.running) return this.exit!;
    this.signal(sig);
    const timer = setTimeout(() => this.signal('SIGKILL'), graceMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }
}

/** Starts a long-running command (optionally inside a namespace), registered for teardown. */
export function spawnProcess(cmd: readonly string[], opts: SpawnOptions = {}): ManagedProcess {
  return new ManagedProcess(cmd, opts);
}

// ---------------------------------------------------------------------------------------------
// Waiting

export interface WaitOptions {
  timeoutMs?: number;
  /** Poll interval; default 25 ms. */
  intervalMs?: number;
  /** What we are waiting for, for the error message. */
  what?: string;
}

/**
 * Polls `probe` until it returns something other than undefined/false/null, with a deadline.
 * For kernel state that offers no event (an interface appearing, a listener bound). The last
 * error thrown by `probe`, if any, is quoted on timeout.
 */
export async function waitFor<T>(
  probe: () => T | undefined | null | false | Promise<T | undefined | null | false>,
  opts: WaitOptions = {},
): Promise<T> {
  const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
  const interval = opts.intervalMs ?? 25;
  let lastError: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined && v !== null && v !== false) return v;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) {
      const why = lastError instanceof Error ? `; last error: ${lastError.message}` : '';
      throw new Error(`timed out after ${opts.timeoutMs ?? 10_000} ms waiting for ${opts.what ?? 'condition'}${why}`);
    }
    await new Promise((r) => setTimeout(r, interval));
  }
}

/** Rejects with a labelled error if `p` does not settle within `ms`. */
export async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

// ---------------------------------------------------------------------------------------------
// Namespaces

/** Kills every process in `name` and deletes it. Synchronous; never throws. */
function deleteNetnsSync(name: string): void {
  const pids = runSync(['ip', 'netns', 'pids', name]).stdout.split(/\s+/).filter(Boolean);
  for (const pid of pids) {
    try {
      process.kill(Number(pid), 'SIGKILL');
    } catch {
      // gone
    }
  }
  runSync(['ip', 'netns', 'del', name]);
}

export interface LinkInfo {
  ifname: string;
  mtu: number;
  address?: string;
  operstate?: string;
  flags?: string[];
}

/** A network namespace playing a VM. Created by `createNetns`, deleted on cleanup. */
export class Netns {
  private readonly unregister: () => Promise<void>;

  constructor(readonly name: string) {
    this.unregister = registerCleanup(
      `netns ${name}`,
      async () => {
        const r = await run(['ip', 'netns', 'pids', name], { check: false });
        for (const pid of r.stdout.split(/\s+/).filter(Boolean)) {
          try {
            process.kill(Number(pid), 'SIGKILL');
          } catch {
            // gone
          }
        }
        await run(['ip', 'netns', 'del', name], { check: false });
      },
      () => deleteNetnsSync(name),
    );
  }

  /** The namespace file, usable as setns() target or `--netns PATH`. */
  get path(): string {
    return `/run/netns/${this.name}`;
  }

  /** Runs a command inside the namespace (see `run`). */
  exec(cmd: readonly string[], opts: Omit<RunOptions, 'netns'> = {}): Promise<RunResult> {
    return run(cmd, { ...opts, netns: this.name });
  }

  /** Starts a long-running command inside the namespace. */
  spawn(cmd: readonly string[], opts: Omit<SpawnOptions, 'netns'> = {}): ManagedProcess {
    return spawnProcess(cmd, { ...opts, netns: this.name, label: opts.label ?? `${this.name}: ${describe(cmd)}` });
  }

  /** `ip -j link show dev IF` inside the namespace, or undefined when there is no such link. */
  async link(ifname: string): Promise<LinkInfo | undefined> {
    const r = await this.exec(['ip', '-j', 'link', 'show', 'dev', ifname], { check: false });
    if (r.code !== 0) return undefined;
    const list = JSON.parse(r.stdout) as LinkInfo[];
    return list[0];
  }

  /** Waits until interface `ifname` exists here (e.g. a TAP the daemon creates). */
  waitForLink(ifname: string, opts: WaitOptions = {}): Promise<LinkInfo> {
    return waitFor(() => this.link(ifname), { what: `link ${ifname} in netns ${this.name}`, ...opts });
  }

  /** `ip addr add CIDR dev IF` and `ip link set IF up`. */
  async addAddr(ifname: string, cidr: string): Promise<void> {
    await this.exec(['ip', 'addr', 'add', cidr, 'dev', ifname]);
    await this.exec(['ip', 'link', 'set', ifname, 'up']);
  }

  async setMac(ifname: string, mac: string): Promise<void> {
    await this.exec(['ip', 'link', 'set', 'dev', ifname, 'address', mac]);
  }

  /** Current MAC of `ifname`. */
  async mac(ifname: string): Promise<string> {
    const l = await this.link(ifname);
    if (!l?.address) throw new Error(`no link ${ifname} in netns ${this.name}`);
    return l.address;
  }

  /**
   * `ping -c count -W waitS` to `ip`. Returns true when at least one reply came (exit 0).
   * `-i 0.2` keeps it quick; the kernel's own neighbour discovery runs as usual.
   */
  async ping(ip: string, opts: { count?: number; waitS?: number; intervalS?: number } = {}): Promise<boolean> {
    const r = await this.pingRaw(ip, opts);
    return r.code === 0;
  }

  pingRaw(ip: string, opts: { count?: number; waitS?: number; intervalS?: number } = {}): Promise<RunResult> {
    const count = opts.count ?? 3;
    return this.exec(
      ['ping', '-n', '-c', String(count), '-W', String(opts.waitS ?? 1), '-i', String(opts.intervalS ?? 0.2), ip],
      { check: false, timeoutMs: 10_000 + count * 3_000 },
    );
  }

  /** Deletes the namespace now (killing its processes). */
  delete(): Promise<void> {
    return this.unregister();
  }
}

/**
 * Creates namespace `mvt-<prefix>-<random>` with `lo` up, registered for deletion. `prefix`
 * should say which test made it (e.g. "sw-a"). IPv6 is disabled inside unless `ipv6: true`,
 * so the namespace kernel stays silent until a test makes it talk.
 */
export async function createNetns(prefix: string, opts: { lo?: boolean; ipv6?: boolean } = {}): Promise<Netns> {
  const name = `${NETNS_PREFIX}${prefix}-${randomSuffix(6)}`;
  await run(['ip', 'netns', 'add', name]);
  const ns = new Netns(name);
  if (opts.lo ?? true) await ns.exec(['ip', 'link', 'set', 'lo', 'up']);
  if (!(opts.ipv6 ?? false)) {
    // Interfaces created later (the daemon's TAPs) copy `default`: no RS/MLD/DAD chatter that
    // would make frame counters move on their own.
    await ns.exec(['sysctl', '-q', '-w', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
  }
  return ns;
}

// ---------------------------------------------------------------------------------------------
// Links

export interface VethEnd {
  name: string;
  /** Namespace to put this end in; omitted: the root namespace (then registered for deletion). */
  netns?: Netns;
  /** Bring it up (default true). */
  up?: boolean;
  mtu?: number;
}

/** Creates a veth pair. Ends left in the root namespace are deleted on cleanup. */
export async function addVeth(a: VethEnd, b: VethEnd): Promise<void> {
  for (const e of [a, b]) {
    if (e.name.length > IFNAME_MAX) throw new Error(`interface name too long: ${e.name}`);
  }
  const where = (e: VethEnd): string[] => (e.netns ? ['netns', e.netns.name] : []);
  await run(['ip', 'link', 'add', a.name, ...where(a), 'type', 'veth', 'peer', 'name', b.name, ...where(b)]);
  const rootEnd = !a.netns ? a.name : !b.netns ? b.name : undefined;
  if (rootEnd) registerRootLink(rootEnd);
  for (const e of [a, b]) {
    if (e.mtu !== undefined) await run(inNetns(e.netns?.name, ['ip', 'link', 'set', e.name, 'mtu', String(e.mtu)]));
    if (e.up ?? true) await run(inNetns(e.netns?.name, ['ip', 'link', 'set', e.name, 'up']));
  }
}

/** Registers a link in the root namespace for deletion on cleanup (no error if already gone). */
export function registerRootLink(ifname: string): () => Promise<void> {
  return registerCleanup(
    `link ${ifname}`,
    async () => {
      await run(['ip', 'link', 'del', ifname], { check: false });
    },
    () => {
      runSync(['ip', 'link', 'del', ifname]);
    },
  );
}

// ---------------------------------------------------------------------------------------------
// Temp dirs

/** A fresh directory under the system temp dir, `mvt-<prefix>-XXXXXX`, removed on cleanup. */
export function makeTempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), `${NETNS_PREFIX}${prefix}-`));
  registerCleanup(
    `tmpdir ${dir}`,
    async () => rmSync(dir, { recursive: true, force: true }),
    () => rmSync(dir, { recursive: true, force: true }),
  );
  return dir;
}

/** Whether a process with this pid exists (signal 0). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
