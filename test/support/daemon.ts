/**
 * Runs the real daemon (`node dist/cli/main.js daemon`) for integration tests, and its CLI.
 *
 * Each daemon gets its own temp state dir and control socket (so tests run side by side), is
 * started in the foreground with its pino JSON log on stdout, and counts as started only when it
 * logs `"msg":"ready"` — no sleeps. It is stopped (SIGTERM, then SIGKILL) by `cleanupAll()` or at
 * process exit, and its state dir is removed after it.
 *
 * A daemon that logs at error level (pino level >= 50) fails the test that was running (an
 * afterEach hook this module installs), or the file's cleanup for lines logged while it stops,
 * unless the test expects it: `expectErrors: true` (any), or a list of message patterns, given
 * at start or later with `daemon.expectErrors(...)`. An error line is a bug or a failure the
 * test must have asked for.
 *
 * The CLI always runs in the root namespace: the control socket is a filesystem path, reachable
 * from anywhere, even when the daemon itself runs inside a namespace.
 */
import { existsSync } from 'node:fs';
import { createConnection } from 'node:net';
import { afterEach, expect } from 'vitest';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeTempDir, registerCleanup, run, spawnProcess, withTimeout, type ExitInfo, type ManagedProcess, type Netns } from './netns.js';
import type { NetInfo, StatusInfo, VmInfo } from '../../daemon/control/api.js';

/** Repository root (this file is test/support/daemon.ts). */
export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
/** The compiled CLI entry point. */
export const CLI_JS = join(REPO_ROOT, 'dist', 'cli', 'main.js');

/** One parsed log line. Non-JSON stdout lines are kept as `{ msg, raw: true }`. */
export interface LogLine {
  level?: number;
  msg?: string;
  raw?: boolean;
  [key: string]: unknown;
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

// ---------------------------------------------------------------------------------------------

export interface DaemonOptions {
  /** Run the daemon inside this namespace (`ip netns exec`). */
  netns?: Netns | string;
  /** Default: a fresh temp dir (removed on cleanup). */
  stateDir?: string;
  /** Default: `<stateDir>/mvnet.sock`. */
  socket?: string;
  /** `--config FILE`. */
  config?: string;
  /** More daemon arguments. */
  extraArgs?: string[];
  env?: NodeJS.ProcessEnv;
  /** How long to wait for the "ready" line (default 20 s). */
  readyTimeoutMs?: number;
  /**
   * Error-level log lines this test provokes on purpose: true for any, or patterns matched
   * against the line's `msg` (a string: contained in it). Any other error line fails the test.
   */
  expectErrors?: ErrorPattern[] | true;
}

export type ErrorPattern = string | RegExp;

/** pino's "error"; "fatal" is 60. */
const LEVEL_ERROR = 50;

/** Daemons of this test file whose logs the afterEach hook checks. */
const watched = new Set<Daemon>();

afterEach(() => {
  const problems = [...watched].flatMap((d) => d.unexpectedErrors());
  if (problems.length > 0) throw new Error(`the daemon logged at error level, and the test did not expect it:\n${problems.join('\n')}`);
});

function parseLog(line: string): LogLine {
  try {
    const v: unknown = JSON.parse(line);
    if (typeof v === 'object' && v !== null && !Array.isArray(v)) return v as LogLine;
  } catch {
    // not JSON
  }
  return { msg: line, raw: true };
}

/** Runs the CLI against `socket`. Global options go before the subcommand. */
export async function runCli(
  socket: string | undefined,
  args: readonly string[],
  opts: { json?: boolean; timeoutMs?: number; env?: NodeJS.ProcessEnv; netns?: string } = {},
): Promise<CliResult> {
  const globals = [...(socket !== undefined ? ['--socket', socket] : []), ...(opts.json ? ['--json'] : [])];
  const r = await run(['node', CLI_JS, ...globals, ...args], {
    check: false,
    timeoutMs: opts.timeoutMs ?? 30_000,
    ...(opts.env ? { env: opts.env } : {}),
    ...(opts.netns ? { netns: opts.netns } : {}),
  });
  return { code: r.code, stdout: r.stdout, stderr: r.stderr };
}

export class Daemon {
  readonly stateDir: string;
  readonly socket: string;
  readonly netns: string | undefined;
  /** Parsed log lines of the current run (reset by restart()). */
  logs: LogLine[] = [];
  /** Parsed log lines of every run so far. */
  readonly allLogs: LogLine[] = [];
  private proc: ManagedProcess | undefined;
  private runs = 0;
  private expected: ErrorPattern[] | true;
  /** allLogs before this index were checked for error lines. */
  private checked = 0;

  constructor(private readonly opts: DaemonOptions = {}) {
    this.stateDir = opts.stateDir ?? makeTempDir('d');
    this.socket = opts.socket ?? join(this.stateDir, 'mvnet.sock');
    this.netns = typeof opts.netns === 'string' ? opts.netns : opts.netns?.name;
    this.expected = opts.expectErrors === true ? true : [...(opts.expectErrors ?? [])];
    watched.add(this);
    // Registered before the process (cleanup runs newest first): checks what it logged while stopping.
    registerCleanup(`daemon log of ${this.stateDir}`, async () => {
      watched.delete(this);
      const problems = this.unexpectedErrors();
      if (problems.length > 0) throw new Error(`the daemon logged at error level, and the test did not expect it:\n${problems.join('\n')}`);
    });
  }

  /** From now on, error lines whose msg matches one of `patterns` are expected (no pattern: any). */
  expectErrors(...patterns: ErrorPattern[]): void {
    if (patterns.length === 0) this.expected = true;
    else if (this.expected !== true) this.expected.push(...patterns);
  }

  /** Error-level lines logged since the last check that nobody expected (and marks them checked). */
  unexpectedErrors(): string[] {
    const lines = this.allLogs.slice(this.checked);
    this.checked = this.allLogs.length;
    const expected = this.expected;
    if (expected === true) return [];
    return lines
      .filter((l) => typeof l.level === 'number' && l.level >= LEVEL_ERROR)
      .filter((l) => !expected.some((p) => (typeof p === 'string' ? (l.msg ?? '').includes(p) : p.test(l.msg ?? ''))))
      .map((l) => JSON.stringify(l));
  }

  /** The daemon's pid (of the current run). */
  get pid(): number {
    return this.proc?.pid ?? -1;
  }

  get running(): boolean {
    return this.proc?.running ?? false;
  }

  /** The running process (stdout lines, stderr, exit). */
  get process(): ManagedProcess {
    if (!this.proc) throw new Error('daemon not started');
    return this.proc;
  }

  /** Starts the daemon and resolves once it logged "ready". */
  async start(): Promise<void> {
    if (this.running) throw new Error('daemon already running');
    if (!existsSync(CLI_JS)) throw new Error(`${CLI_JS} is missing: build first (npx tsc -p tsconfig.build.json)`);
    const args = [
      CLI_JS,
      'daemon',
      '--state-dir',
      this.stateDir,
      '--socket',
      this.socket,
      ...(this.opts.config ? ['--config', this.opts.config] : []),
      ...(this.opts.extraArgs ?? []),
    ];
    this.runs++;
    this.logs = [];
    const proc = spawnProcess(['node', ...args], {
      ...(this.netns ? { netns: this.netns } : {}),
      ...(this.opts.env ? { env: this.opts.env } : {}),
      label: `mvnet daemon #${this.runs} (${this.stateDir}${this.netns ? ` in ${this.netns}` : ''})`,
    });
    this.proc = proc;
    const logs = this.logs;
    proc.onLine((line) => {
      const l = parseLog(line);
      logs.push(l);
      this.allLogs.push(l);
    });
    await proc.waitForLine((line) => parseLog(line).msg === 'ready', { timeoutMs: this.opts.readyTimeoutMs ?? 20_000 });
  }

  /** Runs `mvnet --socket S ARGS` (exit code and output; never throws for a non-zero exit). */
  cli(args: readonly string[], opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<CliResult> {
    return runCli(this.socket, args, opts);
  }

  /** Runs `mvnet --socket S --json ARGS`, requires exit 0, parses stdout. */
  async cliJson<T>(args: readonly string[], opts: { timeoutMs?: number } = {}): Promise<T> {
    const r = await runCli(this.socket, args, { ...opts, json: true });
    if (r.code !== 0) throw new Error(`mvnet --json ${args.join(' ')}: exit ${r.code}\n${r.stderr}${r.stdout}`);
    try {
      return JSON.parse(r.stdout) as T;
    } catch (e) {
      throw new Error(`mvnet --json ${args.join(' ')}: stdout is not JSON (${(e as Error).message}):\n${r.stdout}`);
    }
  }

  /** Runs the CLI and requires exit 0; returns stdout. */
  async cliOk(args: readonly string[]): Promise<string> {
    const r = await this.cli(args);
    if (r.code !== 0) throw new Error(`mvnet ${args.join(' ')}: exit ${r.code}\n${r.stderr}${r.stdout}`);
    return r.stdout;
  }

  /** `mvnet status --json`. */
  status(): Promise<StatusInfo> {
    return this.cliJson<StatusInfo>(['status']);
  }

  /**
   * Frames the VMs' ports dropped (every reason: a full TAP queue on a loaded machine, …): a
   * capture shows such a gap in a stream faithfully, so tests that read a stream's analysis
   * flags allow what these explain.
   */
  async portDrops(): Promise<number> {
    let n = 0;
    for (const v of (await this.status()).vms) for (const c of Object.values(v.port.stats.drops)) n += c ?? 0;
    return n;
  }

  /** One VM's entry in `status --json` (throws when absent). */
  async vm(name: string): Promise<VmInfo> {
    const s = await this.status();
    const vm = s.vms.find((v) => v.name === name);
    if (!vm) throw new Error(`VM ${name} not in status: ${JSON.stringify(s.vms.map((v) => v.name))}`);
    return vm;
  }

  /** One network's entry in `status --json` (throws when absent). */
  async network(name: string): Promise<NetInfo> {
    const s = await this.status();
    const n = s.networks.find((x) => x.name === name);
    if (!n) throw new Error(`network ${name} not in status`);
    return n;
  }

  /** Resolves with the first log line of the current run matching `pred`. */
  async waitForLog(pred: (l: LogLine) => boolean, timeoutMs = 20_000): Promise<LogLine> {
    const line = await this.process.waitForLine((s) => pred(parseLog(s)), { timeoutMs });
    return parseLog(line);
  }

  /** Sends `signal` (default SIGTERM) and resolves when the daemon has exited. SIGKILL is immediate. */
  async kill(signal: NodeJS.Signals = 'SIGTERM'): Promise<ExitInfo> {
    const p = this.process;
    if (!p.running) return p.exit!;
    p.signal(signal);
    return p.exited;
  }

  /** Graceful stop (SIGTERM, SIGKILL after `graceMs`). */
  async stop(graceMs = 5_000): Promise<ExitInfo | undefined> {
    return this.proc?.stop('SIGTERM', graceMs);
  }

  /** Stops it if running (gracefully), then starts again with the same state dir, socket and namespace. */
  async restart(): Promise<void> {
    if (this.running) await this.stop();
    await this.start();
  }
}

/** Creates and starts a daemon (see `DaemonOptions`). Stopped by `cleanupAll()`. */
export async function startDaemon(opts: DaemonOptions = {}): Promise<Daemon> {
  const d = new Daemon(opts);
  await d.start();
  return d;
}

/** Sum of a drop counter map for one reason (0 when absent). */
export function drops(d: Readonly<Record<string, number | undefined>> | undefined, reason: string): number {
  return d?.[reason] ?? 0;
}

export interface RpcReply {
  result?: unknown;
  error?: { code: number; message: string };
}

/** One raw JSON-RPC request on the control socket, bypassing the CLI's checks, as any caller could send it. */
export function rawRpc(socket: string, method: string, params: unknown, timeoutMs = 10_000): Promise<RpcReply> {
  return withTimeout(
    new Promise<RpcReply>((resolve, reject) => {
      const c = createConnection({ path: socket });
      let buf = '';
      c.setEncoding('utf8');
      c.on('connect', () => c.write(JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }) + '\n'));
      c.on('data', (s: string) => {
        buf += s;
        const nl = buf.indexOf('\n');
        if (nl < 0) return;
        c.destroy();
        resolve(JSON.parse(buf.slice(0, nl)) as RpcReply);
      });
      c.on('error', reject);
    }),
    timeoutMs,
    `an answer to ${method}`,
  );
}

/** A refusal: non-zero exit, nothing on stdout, exactly one stderr line, containing `reason`. Returns the line. */
export function refused(r: CliResult, reason: string | RegExp): string {
  expect(r.code, `expected a refusal, got stdout: ${r.stdout}`).not.toBe(0);
  expect(r.stdout).toBe('');
  const lines = r.stderr.trimEnd().split('\n');
  expect(lines, `stderr should be one line: ${r.stderr}`).toHaveLength(1);
  if (typeof reason === 'string') expect(lines[0]).toContain(reason);
  else expect(lines[0]).toMatch(reason);
  return lines[0]!;
}
