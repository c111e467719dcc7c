/**
 * `node dist/bench/cli.js [--runs N] [--vms N] [--singles N] [--compare PATH/dist/cli/main.js]`:
 * the CLI's start-up and batch attach against a daemon of its own (temp state dir, unix sockets
 * only: no network, no namespace).
 *
 * - `status`: wall time and CPU (user+sys, from /usr/bin/time when installed) of `mvnet status`,
 *   N runs interleaved with `node` running nothing (the floor no CLI can go under) and, with
 *   --compare, another tree's CLI (e.g. a checkout of the commit before); medians, min–max.
 * - attach: `vm attach --batch -` of --vms `--dgram` VMs in one run vs --singles runs of
 *   `vm attach` (per VM), interleaved with --compare's.
 * Writes bench/out/cli-<time>.json.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
const CLI = join(HERE, '..', 'cli', 'main.js');

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : def;
}
const RUNS = Number(arg('--runs', '20'));
const VMS = Number(arg('--vms', '200'));
const SINGLES = Number(arg('--singles', '10'));
const COMPARE = arg('--compare', '');
const TIME = existsSync('/usr/bin/time') ? '/usr/bin/time' : null;

interface Sample {
  wallMs: number;
  cpuMs: number | null;
}

/** One run of `node ARGS`; throws on a non-zero exit. */
function timed(args: string[], input?: string): Sample {
  const argv = TIME !== null ? [TIME, '-f', '\nCPU %U %S', process.execPath, ...args] : [process.execPath, ...args];
  const t0 = process.hrtime.bigint();
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', ...(input !== undefined ? { input } : {}) });
  const wallMs = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.status !== 0) throw new Error(`node ${args.join(' ')}: exit ${r.status}: ${r.stderr}`);
  const m = /CPU ([\d.]+) ([\d.]+)\s*$/.exec(r.stderr);
  return { wallMs, cpuMs: m !== null ? (Number(m[1]) + Number(m[2])) * 1000 : null };
}

function stats(xs: number[]): { median: number; min: number; max: number } {
  const s = [...xs].sort((a, b) => a - b);
  return { median: s[s.length >> 1]!, min: s[0]!, max: s[s.length - 1]! };
}
const fmt = (xs: number[]): string => {
  if (xs.length === 0) return '-';
  const s = stats(xs);
  return `${s.median.toFixed(0)} (${s.min.toFixed(0)}–${s.max.toFixed(0)})`;
};

const dir = mkdtempSync(join(tmpdir(), 'mvnet-bench-cli-'));
const socket = join(dir, 'mvnet.sock');
const daemon = spawn(process.execPath, [CLI, 'daemon', '--state-dir', dir, '--socket', socket, '--log-level', 'warn'], { stdio: ['ignore', 'ignore', 'inherit'] });
const cleanup = (): void => {
  if (daemon.exitCode === null && daemon.signalCode === null) daemon.kill('SIGTERM');
  rmSync(dir, { recursive: true, force: true });
};
process.on('exit', cleanup);
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => process.exit(130));

// Ready when the control socket answers (the log is at warn: no "ready" line to wait for).
for (let i = 0; ; i++) {
  if (spawnSync(process.execPath, [CLI, '--socket', socket, '--timeout', '2', 'status'], { stdio: 'ignore' }).status === 0) break;
  if (i > 200 || daemon.exitCode !== null) throw new Error('the daemon did not start');
  await new Promise((r) => setTimeout(r, 100));
}

const trees: [string, string][] = [['this tree', CLI], ...(COMPARE !== '' ? ([['--compare', COMPARE]] as [string, string][]) : [])];
const status: Record<string, Sample[]> = { 'node (empty script)': [] };
for (const [name] of trees) status[name] = [];
for (let i = 0; i < RUNS; i++) {
  status['node (empty script)']!.push(timed(['-e', '0']));
  for (const [name, cli] of trees) status[name]!.push(timed([cli, '--socket', socket, 'status']));
}

const cli = (args: string[], input?: string): Sample => timed([CLI, '--socket', socket, '-q', ...args], input);
cli(['net', 'create', 'bench0', '--subnet', '10.77.250.0/24']);
const batchSample = cli(['vm', 'attach', '--batch', '-'], JSON.stringify(Array.from({ length: VMS }, (_, i) => ({ vm: `b${i}`, net: 'bench0', dgram: true }))));
const singles: Record<string, number[]> = {};
for (const [name] of trees) singles[name] = [];
for (let i = 0; i < SINGLES; i++) {
  for (const [t, [name, c]] of trees.entries()) singles[name]!.push(timed([c, '--socket', socket, '-q', 'vm', 'attach', `s${t}x${i}`, '--net', 'bench0', '--dgram']).wallMs);
}
cli(['net', 'delete', 'bench0', '--force']);

const load = spawnSync('uptime', { encoding: 'utf8' }).stdout.trim();
console.log(`mvnet status, ${RUNS} runs interleaved: ms, median (min–max)   [${load}]`);
console.log('| | wall | CPU (user+sys) |\n|---|---|---|');
for (const [name, xs] of Object.entries(status)) console.log(`| ${name} | ${fmt(xs.map((x) => x.wallMs))} | ${TIME !== null ? fmt(xs.map((x) => x.cpuMs!)) : 'n/a'} |`);
console.log(`\nattach: ${VMS} VMs in one vm attach --batch: ${(batchSample.wallMs / 1000).toFixed(2)} s (${(batchSample.wallMs / VMS).toFixed(1)} ms per VM)`);
for (const [name, xs] of Object.entries(singles)) console.log(`attach: one vm attach per VM (${name}): ${fmt(xs)} ms per VM → ${VMS} VMs ≈ ${((stats(xs).median * VMS) / 1000).toFixed(0)} s`);

const out = join(HERE, '..', '..', 'bench', 'out');
mkdirSync(out, { recursive: true });
const file = join(out, `cli-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
writeFileSync(file, JSON.stringify({ load, runs: RUNS, status, batch: { vms: VMS, ...batchSample }, singles }, null, 2) + '\n');
console.log(`\n${file}`);
// Stop the daemon and wait for it: its handle would keep this process alive otherwise.
const exited = new Promise((resolve) => daemon.once('exit', resolve));
daemon.kill('SIGTERM');
await exited;
cleanup();
