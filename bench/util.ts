/**
 * Helpers shared by the benches (bench/run.ts, bench/stack.ts): a teardown registry (async in
 * order of need, synchronous fallback at
 * exit and on signals), child processes in their own process groups, namespaces, polling.
 *
 * Importing this module installs the exit/signal handlers that run the registry.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';

// ---------------------------------------------------------------------------------------------
// Teardown registry

interface Undo {
  run: () => Promise<void>;
  runSync: () => void;
}
const undos: Undo[] = [];

export function onUndo(run: () => Promise<void>, runSync: () => void): () => Promise<void> {
  const u: Undo = { run, runSync };
  undos.push(u);
  return async () => {
    const i = undos.indexOf(u);
    if (i >= 0) {
      undos.splice(i, 1);
      await u.run();
    }
  };
}

/** Registry depth now: pass to `undoTo` to tear down only what was registered after it. */
export function undoMark(): number {
  return undos.length;
}

export async function undoTo(mark: number): Promise<void> {
  while (undos.length > mark) {
    const u = undos.pop()!;
    try {
      await u.run();
    } catch {
      u.runSync();
    }
  }
}

export function undoAll(): Promise<void> {
  return undoTo(0);
}

function undoAllSync(): void {
  while (undos.length > 0) {
    try {
      undos.pop()!.runSync();
    } catch {
      // exiting anyway
    }
  }
}

process.on('exit', undoAllSync);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.once(sig, () => {
    undoAllSync();
    process.kill(process.pid, sig);
  });
}

// ---------------------------------------------------------------------------------------------
// Processes

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export function run(cmd: string[], opts: { check?: boolean; timeoutMs?: number } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd[0]!, cmd.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => killTree(child, 'SIGKILL'), opts.timeoutMs ?? 60_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`${cmd.join(' ')}: ${e.message}`));
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      const r = { code: code ?? -1, stdout, stderr };
      if ((opts.check ?? true) && r.code !== 0) reject(new Error(`${cmd.join(' ')}: exit ${r.code}: ${stderr.trim() || stdout.trim()}`));
      else resolve(r);
    });
  });
}

export function killTree(child: ChildProcess, sig: NodeJS.Signals): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, sig);
  } catch {
    // gone
  }
}

export interface Bg {
  child: ChildProcess;
  lines: string[];
  stderr: () => string;
  waitLine(pred: (l: string) => boolean, timeoutMs: number): Promise<string>;
  stop(): Promise<void>;
}

/** A background process in its own process group, stopped by teardown (SIGTERM, then SIGKILL). */
export function background(cmd: string[], label: string): Bg {
  const child = spawn(cmd[0]!, cmd.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  const lines: string[] = [];
  let partial = '';
  let err = '';
  const listeners = new Set<(l: string) => void>();
  child.stdout!.setEncoding('utf8').on('data', (d: string) => {
    const parts = (partial + d).split('\n');
    partial = parts.pop() ?? '';
    for (const l of parts) {
      lines.push(l);
      if (lines.length > 2000) lines.shift();
      for (const f of listeners) f(l);
    }
  });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => {
    err = (err + d).slice(-8000);
  });
  const exited = new Promise<void>((r) => child.on('close', () => r()));
  const stop = async (): Promise<void> => {
    killTree(child, 'SIGTERM');
    const t = setTimeout(() => killTree(child, 'SIGKILL'), 5_000);
    await exited;
    clearTimeout(t);
  };
  const undo = onUndo(stop, () => killTree(child, 'SIGKILL'));
  return {
    child,
    lines,
    stderr: () => err,
    stop: undo,
    waitLine(pred, timeoutMs) {
      const seen = lines.find(pred);
      if (seen !== undefined) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          listeners.delete(f);
          reject(new Error(`${label}: expected output not seen in ${timeoutMs} ms; stderr: ${err.trim()}`));
        }, timeoutMs);
        const f = (l: string): void => {
          if (pred(l)) {
            clearTimeout(timer);
            listeners.delete(f);
            resolve(l);
          }
        };
        listeners.add(f);
        void exited.then(() => {
          if (!listeners.has(f)) return;
          clearTimeout(timer);
          listeners.delete(f);
          reject(new Error(`${label} exited early (${child.exitCode ?? child.signalCode}): ${err.trim()}`));
        });
      });
    },
  };
}

/** Deadline-bounded poll for kernel state that has no event to await. */
export async function waitFor(probe: () => Promise<boolean>, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

// ---------------------------------------------------------------------------------------------
// Namespaces

export function nsx(ns: string, cmd: string[]): string[] {
  return ['ip', 'netns', 'exec', ns, ...cmd];
}

function killNsPidsSync(name: string): void {
  const r = spawnSync('ip', ['netns', 'pids', name], { encoding: 'utf8' });
  for (const p of (r.stdout ?? '').split(/\s+/).filter(Boolean)) {
    try {
      process.kill(Number(p), 'SIGKILL');
    } catch {
      // gone
    }
  }
}

/** A new namespace with lo up and IPv6 off; deleted (after killing what runs in it) at teardown. */
export async function createNs(name: string, sysctls: string[] = []): Promise<void> {
  await run(['ip', 'netns', 'add', name]);
  onUndo(
    async () => {
      const pids = (await run(['ip', 'netns', 'pids', name], { check: false })).stdout.split(/\s+/).filter(Boolean);
      for (const p of pids) {
        try {
          process.kill(Number(p), 'SIGKILL');
        } catch {
          // gone
        }
      }
      await run(['ip', 'netns', 'del', name], { check: false });
    },
    () => {
      killNsPidsSync(name);
      spawnSync('ip', ['netns', 'del', name]);
    },
  );
  await run(nsx(name, ['ip', 'link', 'set', 'lo', 'up']));
  await run(nsx(name, ['sysctl', '-q', '-w', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1', ...sysctls]));
}

export async function linkExists(ns: string, ifname: string): Promise<boolean> {
  return (await run(nsx(ns, ['ip', 'link', 'show', 'dev', ifname]), { check: false })).code === 0;
}

// ---------------------------------------------------------------------------------------------
// CPU accounting from /proc (utime + stime of every thread of a process), for "how busy was the
// forwarder during this transfer".

const CLK_TCK = 100;

/** CPU seconds a process has used so far (all threads), or undefined if it is gone. */
export function cpuSeconds(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the "(comm)" which may contain spaces: state is field 3, utime 14, stime 15.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(rest[11]) + Number(rest[12])) / CLK_TCK;
  } catch {
    return undefined;
  }
}

/** Busy fraction of the whole machine between two samples of /proc/stat (0..ncpu). */
export function machineTicks(): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const idle = (v[3] ?? 0) + (v[4] ?? 0);
  const total = v.reduce((a, b) => a + b, 0);
  return { busy: total - idle, total };
}

// ---------------------------------------------------------------------------------------------
// Output helpers

export function fmt(n: number | undefined, digits: number): string {
  return n === undefined || !Number.isFinite(n) ? '-' : n.toFixed(digits);
}

export function median(xs: number[]): number | undefined {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return undefined;
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Fixed-width table: the first `leftCols` columns left-aligned, the rest right-aligned. */
export function table(header: string[], rows: string[][], leftCols = 2): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]): string => r.map((c, i) => (i < leftCols ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ').trimEnd();
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}
