/** Helpers of bench/tor.ts: one curl transfer with its timings, medians, CPU times, Tor's view of SOCKS credentials. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeTempDir, run, spawnProcess, type ManagedProcess, type RunResult } from '../test/support/netns.js';

/** The repo root (this file runs as dist/bench/tor-util.js). */
export const REPO = fileURLToPath(new URL('../../', import.meta.url));
const CLI_JS = join(REPO, 'dist', 'cli', 'main.js');

/**
 * `node dist/cli/main.js daemon --config F` inside `netns` (test/support/daemon.ts resolves the
 * CLI relative to its own file, which is dist/dist/... once compiled; hence this small copy).
 */
export class BenchDaemon {
  private constructor(
    readonly proc: ManagedProcess,
    readonly socket: string,
    readonly cli: string,
  ) {}

  /** The daemon's pid (`ip netns exec` execs node, so the child's own pid). */
  get pid(): number {
    return this.proc.child.pid ?? -1;
  }

  /**
   * `cliJs`: another tree's dist/cli/main.js (a baseline daemon run beside this one);
   * `nodeArgs`: e.g. `--cpu-prof --cpu-prof-dir D` (written when the daemon exits on SIGTERM).
   */
  static async start(netns: string, config: string, opts: { cliJs?: string; nodeArgs?: readonly string[] } = {}): Promise<BenchDaemon> {
    const stateDir = makeTempDir('tbend');
    const socket = join(stateDir, 'mvnet.sock');
    const cli = opts.cliJs ?? CLI_JS;
    const proc = spawnProcess(['node', ...(opts.nodeArgs ?? []), cli, 'daemon', '--state-dir', stateDir, '--socket', socket, '--config', config], {
      netns,
      label: `mvnet daemon in ${netns}`,
    });
    await proc.waitForLine((l) => /"msg":"ready"/.test(l), { timeoutMs: 20_000 });
    return new BenchDaemon(proc, socket, cli);
  }

  async cliOk(args: readonly string[], json = false): Promise<string> {
    const r = await run(['node', this.cli, '--socket', this.socket, ...(json ? ['--json'] : []), ...args], { check: false, timeoutMs: 30_000 });
    if (r.code !== 0) throw new Error(`mvnet ${args.join(' ')}: exit ${r.code}\n${r.stderr}${r.stdout}\n${this.proc.lines.slice(-20).join('\n')}`);
    return r.stdout;
  }

  async cliJson<T>(args: readonly string[]): Promise<T> {
    return JSON.parse(await this.cliOk(args, true)) as T;
  }

  async stop(): Promise<void> {
    await this.proc.stop('SIGTERM', 5_000);
  }
}

export interface CurlStat {
  /** curl time_starttransfer, ms. */
  ttfbMs: number;
  /** curl time_total, ms. */
  totalMs: number;
  /** curl speed_download (whole transfer: bytes / time_total), bytes/s. */
  bytesPerSec: number;
  bytes: number;
}

/**
 * Runs `curl -q -sS -o /dev/null -w ... URL` through `exec` (e.g. inside a namespace); throws
 * unless it exited 0 and downloaded exactly `expectBytes`.
 */
export async function curlStat(
  exec: (cmd: string[]) => Promise<RunResult>,
  extra: readonly string[],
  url: string,
  expectBytes: number,
): Promise<CurlStat> {
  const r = await exec([
    'curl',
    '-q',
    '-sS',
    '--max-time',
    '240',
    '-o',
    '/dev/null',
    ...extra,
    '-w',
    '%{time_starttransfer} %{speed_download} %{size_download} %{time_total} %{http_code}',
    url,
  ]);
  const [tt, speed, size, total, code] = r.stdout.trim().split(/\s+/);
  if (r.code !== 0 || code !== '200' || Number(size) !== expectBytes) {
    throw new Error(`curl ${extra.join(' ')} ${url}: exit ${r.code}, http ${code}, ${size}/${expectBytes} bytes\n${r.stderr}`);
  }
  return { ttfbMs: Number(tt) * 1000, totalMs: Number(total) * 1000, bytesPerSec: Number(speed), bytes: Number(size) };
}

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  if (n === 0) return NaN;
  return n % 2 === 1 ? s[(n - 1) / 2]! : (s[n / 2 - 1]! + s[n / 2]!) / 2;
}

/** Percentile (linear interpolation) of `xs`, p in [0, 1]. */
export function quantile(xs: readonly number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const i = (s.length - 1) * p;
  const lo = Math.floor(i);
  const hi = Math.ceil(i);
  return s[lo]! + (s[hi]! - s[lo]!) * (i - lo);
}

/** Median, min, max and the quartiles of a sample. */
export interface Spread {
  median: number;
  min: number;
  max: number;
  p25: number;
  p75: number;
}

export function spread(xs: readonly number[]): Spread {
  return { median: median(xs), min: Math.min(...xs), max: Math.max(...xs), p25: quantile(xs, 0.25), p75: quantile(xs, 0.75) };
}

const CLK_TCK = 100;

/** User+system CPU time of `pid` in ms (/proc/PID/stat, fields 14 and 15; USER_HZ is 100 on Linux). */
export function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The command name may hold spaces: the fields after it start past the last ')'.
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(f[11]) + Number(f[12])) * 1000) / CLK_TCK;
}

/** A control-port quoted string's value (`"a\"b"` → `a"b`), from `KEY="..."` in an event line. */
export function quotedField(line: string, key: string): string | undefined {
  const m = new RegExp(`(?:^| )${key}="((?:[^"\\\\]|\\\\.)*)"`).exec(line);
  return m === null ? undefined : m[1]!.replace(/\\(.)/g, '$1');
}
