/**
 * `npm run bench:switch`: mvnet's switch against two yardsticks, measured in the same run on the
 * same machine.
 *
 * Two network namespaces play the VMs; between them, one of these paths:
 *   - kernel veth: a veth pair, one end in each namespace (the ceiling);
 *   - C forwarder: bench/c-forwarder/fwd.c, a plain epoll read()/write() loop between two TAPs
 *     (compiled with `cc -O2` into a temp dir), each TAP moved into its namespace (the floor);
 *   - mvnet (native cut-through): a daemon with one network and two VMs attached by
 *     `--tap IF --netns NS`; frames between two TAP ports that the switch guard calls plain are
 *     forwarded by the addon straight from its read batch (the native cut-through path), the
 *     rest (ARP, the first frames before the MAC table knows both ends) by the JS switch;
 *   - not by default (`--only`): mvnet with a capture running (`mvnet capture a`, both
 *     directions of VM a's port): to a file (rotating, 2 x 256 MB), and with a filter that
 *     matches none of the traffic (`udp port 9`); the table's "x mvnet" column is their
 *     throughput over mvnet's without a capture.
 * each at three settings: MTU 1500, MTU 65520, and MTU 1500 with TSO (`--vnet-hdr` on both
 * mvnet attaches, `-v` for the C forwarder, the default offloads for veth; in the other two
 * settings TSO is switched off on the veth so it segments like a TAP without vnet header does).
 *
 * Per cell: a fresh topology, a short warm-up ping, then `ping -c 50 -i 0.01` (average and
 * median RTT), then `iperf3 -c -t T -O 1 -J` (TCP, one stream, received bits/s; the first second
 * is a warm-up iperf3 does not count). The whole matrix runs --repeat times (default 5),
 * interleaved: every repetition visits every setting and path, the order of the paths rotated
 * by one each time, so a change in the machine's load hits every path alike. The table shows
 * per-cell medians with min–max, the ratios of the medians to veth and to the C forwarder, the
 * ping medians, and the latency each forwarder adds per hop: (RTT − veth RTT) / 2, since an echo
 * crosses the forwarder twice, from the averages and from the medians (a loaded machine's
 * scheduling spikes move the former). Goal lines follow (issue 13: mvnet ≥ 0.95× the C
 * forwarder at plain 1500, ≥ 0.8× veth at 65520 and with TSO). `--quick` is one repetition.
 *
 * All traffic stays between the two namespaces (10.77.0.11 ↔ 10.77.0.12 exist only there; not
 * .1, which is the mvnet network's gateway and would answer ARP for it too). Everything is
 * removed at the end, on error, and on SIGINT/SIGTERM. Needs root, iperf3, ping, cc, and a
 * built tree (`npm run bench` builds first). Every sample goes to bench/out/bench-*.json.
 *
 *   node dist/bench/run.js [--only veth,cfwd,mvnet,mvnet-cap,mvnet-nomatch] [--settings 1500,65520,tso]
 *                          [--time 5] [--repeat 5 | --quick]
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fmtSpread, goalLine, goalMet, interleave, perRunRatios, ratioText, spread, type Goal, type Spread } from './stats.js';
import { background, createNs, fmt, linkExists, median, nsx, onUndo, run, table, undoAll, undoMark, undoTo, waitFor, type RunResult } from './util.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url)); // dist/bench/run.js → repo root
const CLI = join(ROOT, 'dist', 'cli', 'main.js');
const FWD_C = join(ROOT, 'bench', 'c-forwarder', 'fwd.c');
// Not 10.77.0.1: that is the gateway of the mvnet network (it answers ARP for it).
const IP_A = '10.77.0.11';
const IP_B = '10.77.0.12';
const SUBNET = '10.77.0.0/24';

type PathId = 'veth' | 'cfwd' | 'mvnet' | 'mvnet-cap' | 'mvnet-nomatch';
const ALL_PATHS: PathId[] = ['veth', 'cfwd', 'mvnet', 'mvnet-cap', 'mvnet-nomatch'];
/** The capture paths are a study of their own (README "Capture cost"): by `--only` only, which keeps `npm run bench` shorter. */
const DEFAULT_PATHS: PathId[] = ['veth', 'cfwd', 'mvnet'];
/** A capture of VM a that matches nothing of the iperf3/ping traffic (it runs in the daemon all the same). */
const NO_MATCH_FILTER = ['udp', 'port', '9'];
type SettingId = '1500' | '65520' | 'tso';

interface Setting {
  id: SettingId;
  mtu: number;
  tso: boolean;
  label: string;
}

const SETTINGS: Setting[] = [
  { id: '1500', mtu: 1500, tso: false, label: '1500' },
  { id: '65520', mtu: 65520, tso: false, label: '65520' },
  { id: 'tso', mtu: 1500, tso: true, label: '1500+TSO' },
];

/**
 * The C forwarder's row says which loop it runs: the fair one (both directions round-robin, the
 * addon's read batch per turn) or the old one that drains one side before the other, which
 * makes the floor look lower than it is. Read from the source this run compiles.
 */
function cfwdLabel(): string {
  try {
    return /round-robin/.test(readFileSync(FWD_C, 'utf8')) ? 'C forwarder (fair: both directions round-robin, same batch)' : 'C forwarder (drains one side first)';
  } catch {
    return 'C forwarder';
  }
}

const PATH_LABEL: Record<PathId, string> = {
  veth: 'kernel veth',
  cfwd: cfwdLabel(),
  mvnet: 'mvnet (native cut-through)',
  'mvnet-cap': 'mvnet (cut-through), capture to file',
  'mvnet-nomatch': 'mvnet (cut-through), capture matching nothing',
};

interface Cell {
  path: PathId;
  setting: SettingId;
  /** The repetition (1-based) this run belongs to. */
  rep?: number;
  gbps?: number;
  pingAvgMs?: number;
  pingP50Ms?: number;
  retransmits?: number;
  /** Capture paths: what `mvnet capture` reported at the end. */
  captured?: number;
  captureDropped?: number;
  error?: string;
}



async function configure(ns: string, ifname: string, cidr: string, mtu: number): Promise<void> {
  await run(nsx(ns, ['ip', 'link', 'set', 'dev', ifname, 'mtu', String(mtu)]));
  await run(nsx(ns, ['ip', 'addr', 'add', cidr, 'dev', ifname]));
  await run(nsx(ns, ['ip', 'link', 'set', 'dev', ifname, 'up']));
}

// ---------------------------------------------------------------------------------------------
// The three paths. Each sets up ns A (IP_A) and ns B (IP_B) connected, returns nothing; teardown
// is registered.

interface Topo {
  nsA: string;
  nsB: string;
  ifA: string;
  ifB: string;
}

async function setupVeth(t: Topo, s: Setting): Promise<void> {
  await run(['ip', 'link', 'add', t.ifA, 'netns', t.nsA, 'type', 'veth', 'peer', 'name', t.ifB, 'netns', t.nsB]);
  await configure(t.nsA, t.ifA, `${IP_A}/24`, s.mtu);
  await configure(t.nsB, t.ifB, `${IP_B}/24`, s.mtu);
  if (!s.tso) {
    // Segment in software at the device, like a TAP without vnet header makes the stack do.
    for (const [ns, ifn] of [
      [t.nsA, t.ifA],
      [t.nsB, t.ifB],
    ] as const) {
      await run(nsx(ns, ['ethtool', '-K', ifn, 'tso', 'off']));
    }
  }
}

async function setupCfwd(t: Topo, s: Setting, fwdBin: string): Promise<void> {
  const fwd = background([fwdBin, ...(s.tso ? ['-v'] : []), t.ifA, t.ifB], 'C forwarder');
  await fwd.waitLine((l) => l === 'ready', 10_000);
  // The TAPs exist in the root namespace: move each into its VM namespace (fds stay attached).
  await run(['ip', 'link', 'set', 'dev', t.ifA, 'netns', t.nsA]);
  await run(['ip', 'link', 'set', 'dev', t.ifB, 'netns', t.nsB]);
  await configure(t.nsA, t.ifA, `${IP_A}/24`, s.mtu);
  await configure(t.nsB, t.ifB, `${IP_B}/24`, s.mtu);
}

interface CaptureRun {
  /** Stops the capture (SIGTERM: the CLI ends it cleanly) and returns its summary. */
  finish(): Promise<{ captured: number; dropped: number }>;
}

async function setupMvnet(t: Topo, s: Setting, workDir: string, capture: 'none' | 'file' | 'nomatch'): Promise<CaptureRun | null> {
  const stateDir = join(workDir, `state-${randomBytes(3).toString('hex')}`);
  mkdirSync(stateDir);
  const socket = join(stateDir, 'mvnet.sock');
  const daemon = background(['node', CLI, 'daemon', '--state-dir', stateDir, '--socket', socket], 'mvnet daemon');
  await daemon.waitLine((l) => l.includes('"msg":"ready"'), 20_000);
  const cli = (args: string[]): Promise<RunResult> => run(['node', CLI, '--socket', socket, ...args]);
  await cli(['net', 'create', 'bench', '--subnet', SUBNET, '--mtu', String(s.mtu)]);
  for (const [vm, ns, ifn] of [
    ['a', t.nsA, t.ifA],
    ['b', t.nsB, t.ifB],
  ] as const) {
    await cli(['vm', 'attach', vm, '--net', 'bench', '--tap', ifn, '--netns', ns, ...(s.tso ? ['--vnet-hdr'] : [])]);
    await waitFor(() => linkExists(ns, ifn), `${ifn} in ${ns}`);
  }
  await configure(t.nsA, t.ifA, `${IP_A}/24`, s.mtu);
  await configure(t.nsB, t.ifB, `${IP_B}/24`, s.mtu);
  if (capture === 'none') return null;
  // Both directions of VM a's port; to a file kept small by rotation (a 5 s run at 65520 would
  // write gigabytes): two files of 256 MB, as a long-running capture would be set up.
  const file = join(stateDir, 'bench.pcapng');
  const cap = background(
    ['node', CLI, '--socket', socket, '--json', 'capture', 'a', '-w', capture === 'file' ? file : '/dev/null', ...(capture === 'file' ? ['--ring', '2', '--size', '256'] : NO_MATCH_FILTER)],
    'mvnet capture',
  );
  // The capture runs once the daemon lists it (no event reaches this process for that).
  await waitFor(async () => {
    const st = JSON.parse((await cli(['--json', 'status'])).stdout) as { captures?: unknown[] };
    return (st.captures?.length ?? 0) > 0;
  }, 'the capture to start');
  return {
    async finish() {
      await cap.stop();
      const last = cap.stderr().trim().split('\n').pop() ?? '';
      try {
        const j = JSON.parse(last) as { captured?: number; dropped?: number };
        return { captured: j.captured ?? NaN, dropped: j.dropped ?? NaN };
      } catch {
        throw new Error(`mvnet capture: no JSON summary on stderr: ${last}`);
      }
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Measurements

interface IperfJson {
  end?: { sum_received?: { bits_per_second?: number }; sum_sent?: { retransmits?: number } };
  error?: string;
}

async function iperf(t: Topo, seconds: number): Promise<{ gbps: number; retransmits: number }> {
  const server = background(nsx(t.nsB, ['iperf3', '-s', '-1', '-B', IP_B, '-p', '5201']), 'iperf3 server');
  await waitFor(
    async () => (await run(nsx(t.nsB, ['ss', '-Hltn', 'sport = :5201']), { check: false })).stdout.trim() !== '',
    'iperf3 server to listen',
  );
  // -O 1: the first second (slow start, a fresh daemon's JIT) is run but not counted.
  const r = await run(nsx(t.nsA, ['iperf3', '-c', IP_B, '-p', '5201', '-t', String(seconds), '-O', '1', '-J']), {
    check: false,
    timeoutMs: (seconds + 30) * 1000,
  });
  await server.stop();
  let j: IperfJson;
  try {
    j = JSON.parse(r.stdout) as IperfJson;
  } catch {
    throw new Error(`iperf3 client: exit ${r.code}: ${r.stderr.trim() || r.stdout.slice(0, 300)}`);
  }
  if (j.error) throw new Error(`iperf3: ${j.error}`);
  const bps = j.end?.sum_received?.bits_per_second;
  if (typeof bps !== 'number') throw new Error('iperf3 JSON has no end.sum_received.bits_per_second');
  return { gbps: bps / 1e9, retransmits: j.end?.sum_sent?.retransmits ?? 0 };
}


/** Average RTT (ping's own summary) and the median of the echoes' RTTs, in ms. */
async function ping(t: Topo): Promise<{ avg: number; p50: number | undefined }> {
  // Warm-up (ARP, caches, a fresh daemon's JIT); not measured.
  await run(nsx(t.nsA, ['ping', '-n', '-q', '-c', '20', '-i', '0.01', '-W', '1', IP_B]), { check: false, timeoutMs: 30_000 });
  const r = await run(nsx(t.nsA, ['ping', '-n', '-c', '50', '-i', '0.01', '-W', '1', IP_B]), { check: false, timeoutMs: 30_000 });
  const m = /= [\d.]+\/([\d.]+)\/[\d.]+\/[\d.]+ ms/.exec(r.stdout);
  if (!m) throw new Error(`ping: no rtt summary (exit ${r.code}): ${r.stdout.trim()} ${r.stderr.trim()}`);
  const rtts = [...r.stdout.matchAll(/time=([\d.]+) ms/g)].map((x) => Number(x[1]));
  return { avg: Number(m[1]), p50: median(rtts) };
}

async function connected(t: Topo): Promise<void> {
  await waitFor(
    async () => (await run(nsx(t.nsA, ['ping', '-n', '-c', '1', '-W', '1', IP_B]), { check: false })).code === 0,
    `${IP_B} to answer ping`,
    20_000,
  );
}

async function measure(path: PathId, s: Setting, ctx: { fwdBin: string; workDir: string; seconds: number }): Promise<Cell> {
  const id = randomBytes(3).toString('hex');
  const t: Topo = { nsA: `mvb-${id}-a`, nsB: `mvb-${id}-b`, ifA: `mvb${id}a`, ifB: `mvb${id}b` };
  const mark = undoMark();
  try {
    await createNs(t.nsA);
    await createNs(t.nsB);
    let cap: CaptureRun | null = null;
    if (path === 'veth') await setupVeth(t, s);
    else if (path === 'cfwd') await setupCfwd(t, s, ctx.fwdBin);
    else cap = await setupMvnet(t, s, ctx.workDir, path === 'mvnet-cap' ? 'file' : path === 'mvnet-nomatch' ? 'nomatch' : 'none');
    await connected(t);
    const p = await ping(t);
    const ip = await iperf(t, ctx.seconds);
    const c = cap === null ? undefined : await cap.finish();
    return { path, setting: s.id, gbps: ip.gbps, retransmits: ip.retransmits, pingAvgMs: p.avg, pingP50Ms: p.p50, captured: c?.captured, captureDropped: c?.dropped };
  } catch (e) {
    return { path, setting: s.id, error: (e as Error).message.split('\n')[0] };
  } finally {
    // Tear down this cell only (newest first), leaving the run-wide entries.
    await undoTo(mark);
  }
}

// ---------------------------------------------------------------------------------------------
// Output

interface Summary {
  path: PathId;
  setting: SettingId;
  /** Runs that gave a result. */
  n: number;
  gbps?: Spread;
  pingAvgMs?: Spread;
  pingP50Ms?: Spread;
  retransmits?: Spread;
  captured?: Spread;
  captureDropped?: Spread;
  /** The last error of the cell's failed runs. */
  error?: string;
  errors: number;
}

/** One summary per path and setting: medians and ranges over the runs that succeeded. */
function summarize(cells: Cell[], settings: Setting[], paths: PathId[]): Summary[] {
  const out: Summary[] = [];
  for (const s of settings) {
    for (const p of paths) {
      const all = cells.filter((c) => c.path === p && c.setting === s.id);
      if (all.length === 0) continue;
      const ok = all.filter((c) => c.error === undefined);
      const failed = all.filter((c) => c.error !== undefined);
      out.push({
        path: p,
        setting: s.id,
        n: ok.length,
        gbps: spread(ok.map((c) => c.gbps)),
        pingAvgMs: spread(ok.map((c) => c.pingAvgMs)),
        pingP50Ms: spread(ok.map((c) => c.pingP50Ms)),
        retransmits: spread(ok.map((c) => c.retransmits)),
        captured: spread(ok.map((c) => c.captured)),
        captureDropped: spread(ok.map((c) => c.captureDropped)),
        error: failed[failed.length - 1]?.error,
        errors: failed.length,
      });
    }
  }
  return out;
}

function renderTable(summary: Summary[], settings: Setting[], paths: PathId[], repeat: number): string {
  const header = ['path', 'MTU', 'runs', 'Gbit/s median (min–max)', 'x veth', 'x C fwd', 'x mvnet', 'ping avg ms', 'ping p50 ms', '+us/hop', '+us/hop p50', 'retr', 'captured/dropped'];
  const rows: string[][] = [];
  const perHop = (c: number | undefined, base: number | undefined): number | undefined =>
    c === undefined || base === undefined ? undefined : ((c - base) / 2) * 1000;
  for (const s of settings) {
    const get = (p: PathId): Summary | undefined => summary.find((c) => c.path === p && c.setting === s.id);
    const veth = get('veth');
    const cfwd = get('cfwd');
    const plain = get('mvnet');
    for (const p of paths) {
      const c = get(p);
      if (!c) continue;
      const runs = `${c.n}/${repeat}`;
      if (c.n === 0) {
        rows.push([PATH_LABEL[p], s.label, runs, 'error', '', '', '', '', '', '', '', '', c.error ?? '']);
        continue;
      }
      const g = c.gbps?.median;
      rows.push([
        PATH_LABEL[p],
        s.label,
        runs,
        fmtSpread(c.gbps, 2),
        p === 'veth' ? '' : ratioText(g, veth?.gbps?.median),
        p === 'veth' || p === 'cfwd' ? '' : ratioText(g, cfwd?.gbps?.median),
        p.startsWith('mvnet-') ? ratioText(g, plain?.gbps?.median) : '',
        fmt(c.pingAvgMs?.median, 3),
        fmt(c.pingP50Ms?.median, 3),
        p === 'veth' ? '(base)' : fmt(perHop(c.pingAvgMs?.median, veth?.pingAvgMs?.median), 1),
        p === 'veth' ? '(base)' : fmt(perHop(c.pingP50Ms?.median, veth?.pingP50Ms?.median), 1),
        fmt(c.retransmits?.median, 0),
        c.captured !== undefined ? `${fmt(c.captured.median, 0)}/${fmt(c.captureDropped?.median, 0)}` : '',
      ]);
    }
  }
  // The capture columns only when a capture path ran.
  const keep = header.map((h) => paths.some((p) => p.startsWith('mvnet-')) || (h !== 'x mvnet' && h !== 'captured/dropped'));
  const pick = (r: string[]): string[] => r.filter((_, i) => keep[i]);
  return table(pick(header), rows.map(pick));
}

/** Issue 13's switch goals, on the medians: 0.95x the C forwarder at plain 1500, 0.8x veth at 65520 and with TSO. */
function goals(summary: Summary[], cells: Cell[], settings: Setting[]): Goal[] {
  const out: Goal[] = [];
  const med = (p: PathId, s: SettingId): number | undefined => summary.find((c) => c.path === p && c.setting === s)?.gbps?.median;
  for (const s of settings) {
    const m = med('mvnet', s.id);
    if (!summary.some((c) => c.path === 'mvnet' && c.setting === s.id)) continue;
    const yard: PathId = s.id === '1500' ? 'cfwd' : 'veth';
    const runs = (p: PathId): { rep: number; value: number | undefined }[] =>
      cells.filter((c) => c.path === p && c.setting === s.id && c.rep !== undefined).map((c) => ({ rep: c.rep!, value: c.gbps }));
    const y = med(yard, s.id);
    if (!summary.some((c) => c.path === yard && c.setting === s.id)) continue;
    out.push({
      cell: `switch ${s.label}`,
      ratio: m !== undefined && y !== undefined && y > 0 ? m / y : undefined,
      perRun: perRunRatios(runs('mvnet'), runs(yard)),
      target: s.id === '1500' ? 0.95 : 0.8,
      against: `${PATH_LABEL[yard]} ${fmt(y, 2)} Gbit/s`,
    });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------

function parseArgs(argv: string[]): { paths: PathId[]; settings: Setting[]; seconds: number; repeat: number } {
  let paths: PathId[] = DEFAULT_PATHS;
  let settings = SETTINGS;
  let seconds = 5;
  let repeat = 5;
  const usage = 'use --only veth,cfwd,mvnet,mvnet-cap,mvnet-nomatch --settings 1500,65520,tso --time N --repeat N --quick';
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const v = argv[i + 1];
    if (a === '--quick') {
      repeat = 1;
      continue;
    }
    if (v === undefined) throw new Error(`${a} needs a value (${usage})`);
    i++;
    if (a === '--only') {
      paths = v.split(',').filter((p): p is PathId => (ALL_PATHS as string[]).includes(p));
      if (paths.length === 0) throw new Error(`--only: none of ${ALL_PATHS.join(',')} in ${v}`);
    } else if (a === '--settings') {
      const want = v.split(',');
      settings = SETTINGS.filter((s) => want.includes(s.id));
      if (settings.length === 0) throw new Error(`--settings: none of 1500,65520,tso in ${v}`);
    } else if (a === '--time') {
      seconds = Math.max(1, Math.min(60, Number(v) || 5));
    } else if (a === '--repeat') {
      repeat = Math.max(1, Math.min(20, Math.floor(Number(v)) || 1));
    } else {
      throw new Error(`unknown argument ${a} (${usage})`);
    }
  }
  return { paths, settings, seconds, repeat };
}

function preflight(paths: PathId[]): void {
  const problems: string[] = [];
  if (process.getuid?.() !== 0) problems.push('must run as root (namespaces, TAP devices)');
  if (!existsSync('/dev/net/tun')) problems.push('/dev/net/tun is missing');
  for (const tool of ['iperf3', 'ping', 'ss', 'ethtool', ...(paths.includes('cfwd') ? ['cc'] : [])]) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) problems.push(`${tool} is not installed (bash scripts/deps.sh)`);
  }
  if (paths.some((p) => p.startsWith('mvnet')) && !existsSync(CLI)) problems.push(`${CLI} is missing (npm run build)`);
  if (problems.length > 0) throw new Error(`bench: cannot run:\n  - ${problems.join('\n  - ')}`);
}

async function main(): Promise<void> {
  const { paths, settings, seconds, repeat } = parseArgs(process.argv.slice(2));
  preflight(paths);
  const workDir = mkdtempSync(join(tmpdir(), 'mvb-'));
  onUndo(
    async () => rmSync(workDir, { recursive: true, force: true }),
    () => rmSync(workDir, { recursive: true, force: true }),
  );
  const fwdBin = join(workDir, 'fwd');
  if (paths.includes('cfwd')) await run(['cc', '-O2', '-Wall', '-o', fwdBin, FWD_C]);

  const load0 = loadavg()[0]!;
  const started = Date.now();
  const cells: Cell[] = [];
  for (let r = 1; r <= repeat; r++) {
    for (const s of settings) {
      for (const p of interleave(paths, r)) {
        process.stderr.write(`bench${repeat > 1 ? ` [${r}/${repeat}]` : ''}: ${PATH_LABEL[p]} at ${s.label} ... `);
        const c = { ...(await measure(p, s, { fwdBin, workDir, seconds })), rep: r };
        cells.push(c);
        process.stderr.write(
          c.error ? `error: ${c.error}\n` : `${fmt(c.gbps, 2)} Gbit/s, ping avg ${fmt(c.pingAvgMs, 3)} ms, p50 ${fmt(c.pingP50Ms, 3)} ms\n`,
        );
      }
    }
  }
  const load1 = loadavg()[0]!;
  const minutes = (Date.now() - started) / 60_000;

  const summary = summarize(cells, settings, paths);
  const goalList = goals(summary, cells, settings);
  console.log(
    `\nmvnet switch bench: iperf3 TCP -t ${seconds} -O 1, ping -c 50 -i 0.01, between two namespaces; ` +
      `${repeat > 1 ? `medians (min–max) of ${repeat} interleaved runs` : 'one run (--quick): no spread, read with care'} ` +
      `(${new Date().toISOString()}; ${minutes.toFixed(1)} min; load average ${load0.toFixed(2)} → ${load1.toFixed(2)})\n`,
  );
  console.log(renderTable(summary, settings, paths, repeat));
  console.log('\nx veth, x C fwd: ratios of the medians. +us/hop = (ping RTT - veth ping RTT) / 2: latency the forwarder adds each way (from the averages; p50: from the medians).');
  console.log('mvnet (native cut-through): the addon forwards plain frames between the two TAPs from its read batch; the JS switch sees the rest.');
  if (paths.some((p) => p.startsWith('mvnet-'))) {
    console.log('x mvnet: throughput with a capture of VM a running, over mvnet without one in the same run (capture to file: both directions, ring of 2 x 256 MB; matching nothing: `udp port 9`).');
  }
  if (goalList.length > 0) console.log(`\n${goalList.map(goalLine).join('\n')}`);

  const outDir = join(ROOT, 'bench', 'out');
  mkdirSync(outDir, { recursive: true });
  const file = join(outDir, `bench-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(
    file,
    JSON.stringify({ seconds, omit: 1, repeat, minutes, loadavg: [load0, load1], summary, goals: goalList.map((g) => ({ ...g, met: goalMet(g) })), cells }, null, 2) + '\n',
  );
  console.log(`results: ${file}`);
  await undoAll();
  if (cells.some((c) => c.error)) process.exitCode = 1;
}

main().catch(async (e: unknown) => {
  console.error((e as Error).message);
  await undoAll();
  process.exitCode = 1;
});
