/**
 * `node dist/bench/stack.js`: mvnet's direct route (userland TCP/IP endpoint + host sockets)
 * against pasta (Debian's passt package), both connecting a "VM" namespace to the same upstream
 * server through the same router namespace, measured in the same run.
 *
 * Topology (fresh for each MTU; unique names, all removed at the end, on error and on signals):
 *
 *   upstream ns  UP_IP (10.88.0.1)  iperf3 -s, request/response server (bench/stack-rr.ts)
 *        | veth
 *   router ns    R_IP (10.88.0.2), default via UP_IP
 *        |-- mvnet daemon: net 10.66.0.0/24 --mtu M, VM "vm" by --tap tapv --netns VM1,
 *        |   route --direct; VM1 is configured statically (10.66.0.2/24, default via 10.66.0.1).
 *        `-- pasta --config-net -m M --netns VM2 (foreground, IPv4 only, no port forwards, no
 *            DNS, --no-map-gw since the upstream server *is* the router's gateway); it creates
 *            VM2's tap "tapp" and gives it R_IP, default via UP_IP.
 *
 * Both VMs reach UP_IP only through their forwarder's userland stack, which re-originates every
 * TCP connection as a host socket in the router namespace.
 *
 * Per (path, MTU), repeated --reps times, interleaved (mvnet, pasta, mvnet, ...), medians shown:
 *   - up:   iperf3 -c UP_IP -t N -J in the VM (VM→upstream), received bits/s;
 *   - down: the same with -R (upstream→VM);
 *   - RR:   1-byte request / 1-byte response exchanges on one connection for --rr-time s;
 *   - CRR:  the same with a new connection per exchange (client closes first);
 *   - the forwarder process's CPU (all threads, from /proc; 100% = one core) during up/down.
 *
 * The VM↔forwarder MTU is M; the router↔upstream veth keeps the default 1500 with the kernel's
 * offloads (both forwarders' host sockets share it).
 *
 *   node dist/bench/stack.js [--mtu 1500,65520] [--time 5] [--reps 3] [--rr-time 3]
 *                            [--only mvnet,pasta] [--prof DIR] [--vnet-hdr]
 *
 * --prof DIR runs the daemon with `node --cpu-prof --cpu-prof-dir DIR` (one .cpuprofile per MTU,
 * written when the daemon stops). Results also go to bench/out/stack-*.json. Needs root, iperf3,
 * pasta, ss and a built tree (`npx tsc -p tsconfig.build.json`).
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  background,
  cpuSeconds,
  createNs,
  fmt,
  linkExists,
  machineTicks,
  median,
  nsx,
  run,
  table,
  undoAll,
  undoMark,
  undoTo,
  waitFor,
  onUndo,
  type RunResult,
} from './util.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url)); // dist/bench/stack.js → repo root
const CLI = join(ROOT, 'dist', 'cli', 'main.js');
const RR = join(ROOT, 'dist', 'bench', 'stack-rr.js');

const UP_IP = '10.88.0.1';
const R_IP = '10.88.0.2';
const NET_SUBNET = '10.66.0.0/24';
const VM_IP = '10.66.0.2';
const GW_IP = '10.66.0.1';
const IPERF_PORT = 5201;
const RR_PORT = 7001;
/** Many short connections (CRR): room for ports and reuse of TIME-WAIT ones in client stacks. */
const CLIENT_SYSCTLS = ['net.ipv4.ip_local_port_range=1024 65535', 'net.ipv4.tcp_tw_reuse=1'];

type PathId = 'mvnet' | 'pasta';
const PATH_LABEL: Record<PathId, string> = { mvnet: 'mvnet direct', pasta: 'pasta' };

interface Opts {
  mtus: number[];
  seconds: number;
  rrSeconds: number;
  reps: number;
  paths: PathId[];
  profDir?: string;
}

interface Sample {
  path: PathId;
  mtu: number;
  rep: number;
  upGbps?: number;
  upRetrans?: number;
  upCpuPct?: number;
  upThreads?: Record<string, number>;
  downGbps?: number;
  downRetrans?: number;
  downCpuPct?: number;
  downThreads?: Record<string, number>;
  /** Machine busy % (all CPUs, 100% = one core) during up and down. */
  upMachinePct?: number;
  downMachinePct?: number;
  rr?: number;
  crr?: number;
  crrErrors?: number;
  errors: string[];
}

interface Summary {
  path: PathId;
  mtu: number;
  upGbps?: number;
  downGbps?: number;
  rr?: number;
  crr?: number;
  upCpuPct?: number;
  downCpuPct?: number;
  upRetrans?: number;
  downRetrans?: number;
  errors: string[];
}

interface Env {
  id: string;
  up: string;
  r: string;
  vm: Record<PathId, string>;
  ifname: Record<PathId, string>;
  pid: Partial<Record<PathId, number>>;
}

// ---------------------------------------------------------------------------------------------
// Setup

async function setupUpstream(e: Env): Promise<void> {
  await createNs(e.up);
  await createNs(e.r, [...CLIENT_SYSCTLS, 'net.ipv4.ping_group_range=0 2147483647']);
  const vr = `mvs${e.id}r`;
  const vu = `mvs${e.id}u`;
  await run(['ip', 'link', 'add', vr, 'netns', e.r, 'type', 'veth', 'peer', 'name', vu, 'netns', e.up]);
  await run(nsx(e.up, ['ip', 'addr', 'add', `${UP_IP}/24`, 'dev', vu]));
  await run(nsx(e.up, ['ip', 'link', 'set', 'dev', vu, 'up']));
  await run(nsx(e.r, ['ip', 'addr', 'add', `${R_IP}/24`, 'dev', vr]));
  await run(nsx(e.r, ['ip', 'link', 'set', 'dev', vr, 'up']));
  await run(nsx(e.r, ['ip', 'route', 'add', 'default', 'via', UP_IP]));
  const srv = background(nsx(e.up, ['node', RR, 'server', UP_IP, String(RR_PORT)]), 'rr server');
  await srv.waitLine((l) => l === 'listening', 15_000);
}

/** `--vnet-hdr`: mvnet's TAP carries virtio-net headers (TSO/GSO and checksum offload in the VM). */
let vnetHdr = false;

async function setupMvnet(e: Env, mtu: number, workDir: string, profDir: string | undefined): Promise<void> {
  const ns = e.vm.mvnet;
  const tap = e.ifname.mvnet;
  await createNs(ns, CLIENT_SYSCTLS);
  const stateDir = join(workDir, `state-${e.id}`);
  mkdirSync(stateDir);
  const socket = join(stateDir, 'mvnet.sock');
  const node = profDir ? ['node', '--cpu-prof', '--cpu-prof-dir', profDir, '--cpu-prof-name', `mvnet-daemon-mtu${mtu}-${e.id}.cpuprofile`] : ['node'];
  const daemon = background(nsx(e.r, [...node, CLI, 'daemon', '--state-dir', stateDir, '--socket', socket]), 'mvnet daemon');
  await daemon.waitLine((l) => l.includes('"msg":"ready"'), 20_000);
  e.pid.mvnet = daemon.child.pid;
  const cli = (args: string[]): Promise<RunResult> => run(['node', CLI, '--socket', socket, ...args]);
  await cli(['net', 'create', 'bench', '--subnet', NET_SUBNET, '--mtu', String(mtu)]);
  await cli(['vm', 'attach', 'vm', '--net', 'bench', '--tap', tap, '--netns', ns, ...(vnetHdr ? ['--vnet-hdr'] : [])]);
  try {
    await waitFor(() => linkExists(ns, tap), `${tap} in ${ns}`, 30_000);
  } catch (err) {
    const logs = daemon.lines.filter((l) => /"level":[4-6]\d/.test(l)).slice(-3).join(' | ');
    throw new Error(`${(err as Error).message}${logs ? `; daemon: ${logs}` : ''}${daemon.stderr().trim() ? `; stderr: ${daemon.stderr().trim().slice(-300)}` : ''}`);
  }
  await cli(['route', '--direct', 'vm']);
  await run(nsx(ns, ['ip', 'link', 'set', 'dev', tap, 'mtu', String(mtu)]));
  await run(nsx(ns, ['ip', 'addr', 'add', `${VM_IP}/24`, 'dev', tap]));
  await run(nsx(ns, ['ip', 'link', 'set', 'dev', tap, 'up']));
  await run(nsx(ns, ['ip', 'route', 'add', 'default', 'via', GW_IP]));
}

async function setupPasta(e: Env, mtu: number): Promise<void> {
  const ns = e.vm.pasta;
  const tap = e.ifname.pasta;
  await createNs(ns, CLIENT_SYSCTLS);
  // Foreground, IPv4 only, no port forwarding either way, no DNS (the default), stays root
  // (dropping to nobody loses the right to join a root-owned namespace), gateway not mapped to
  // the host (the upstream server is the router namespace's gateway).
  const pasta = background(
    nsx(e.r, [
      'pasta', '-f', '-q', '-4', '--runas', '0:0', '--config-net', '-m', String(mtu), '-I', tap,
      '-t', 'none', '-u', 'none', '-T', 'none', '-U', 'none', '--no-map-gw', '--netns', `/run/netns/${ns}`,
    ]),
    'pasta',
  );
  e.pid.pasta = pasta.child.pid;
  await waitFor(
    async () => {
      if (pasta.child.exitCode !== null || pasta.child.signalCode !== null) throw new Error(`pasta exited: ${pasta.stderr().replace(/Failed to send \d+ bytes to syslog\n?/g, '').trim()}`);
      const r = await run(nsx(ns, ['ip', '-4', '-o', 'addr', 'show', 'dev', tap]), { check: false });
      return r.stdout.includes('inet ');
    },
    `pasta's ${tap} in ${ns}`,
  );
  const link = await run(nsx(ns, ['ip', '-o', 'link', 'show', 'dev', tap]));
  if (!link.stdout.includes(`mtu ${mtu} `)) await run(nsx(ns, ['ip', 'link', 'set', 'dev', tap, 'mtu', String(mtu)]));
}

async function reachable(ns: string, what: string): Promise<void> {
  await waitFor(
    async () => (await run(nsx(ns, ['node', RR, 'rr', UP_IP, String(RR_PORT), '0.1']), { check: false, timeoutMs: 10_000 })).code === 0,
    `${what}: ${UP_IP}:${RR_PORT} to answer`,
    30_000,
  );
}

// ---------------------------------------------------------------------------------------------
// Measurements

interface IperfJson {
  end?: { sum_received?: { bits_per_second?: number }; sum_sent?: { retransmits?: number } };
  error?: string;
}

function threadCpu(pid: number | undefined): Map<string, { comm: string; secs: number }> {
  const m = new Map<string, { comm: string; secs: number }>();
  if (pid === undefined) return m;
  let tids: string[] = [];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return m;
  }
  for (const tid of tids) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      m.set(tid, { comm, secs: (Number(rest[11]) + Number(rest[12])) / 100 });
    } catch {
      // thread gone
    }
  }
  return m;
}

async function iperf(
  e: Env,
  path: PathId,
  seconds: number,
  reverse: boolean,
): Promise<{ gbps: number; retransmits: number; cpuPct?: number; machinePct: number; threads: Record<string, number> }> {
  const server = background(nsx(e.up, ['iperf3', '-s', '-1', '-B', UP_IP, '-p', String(IPERF_PORT)]), 'iperf3 server');
  await waitFor(
    async () => (await run(nsx(e.up, ['ss', '-Hltn', `sport = :${IPERF_PORT}`]), { check: false })).stdout.trim() !== '',
    'iperf3 server to listen',
  );
  const pid = e.pid[path];
  const c0 = cpuSeconds(pid);
  const th0 = threadCpu(pid);
  const m0 = machineTicks();
  const t0 = performance.now();
  const r = await run(nsx(e.vm[path], ['iperf3', '-c', UP_IP, '-p', String(IPERF_PORT), '-t', String(seconds), '-J', ...(reverse ? ['-R'] : [])]), {
    check: false,
    timeoutMs: (seconds + 30) * 1000,
  });
  const wall = (performance.now() - t0) / 1000;
  const c1 = cpuSeconds(pid);
  const th1 = threadCpu(pid);
  const m1 = machineTicks();
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
  // Per-thread CPU % of the forwarder (by thread name), busiest first.
  const byComm = new Map<string, number>();
  for (const [tid, a] of th1) {
    const d = a.secs - (th0.get(tid)?.secs ?? 0);
    if (d > 0) byComm.set(a.comm, (byComm.get(a.comm) ?? 0) + d);
  }
  const threads: Record<string, number> = {};
  for (const [comm, d] of [...byComm].sort((x, y) => y[1] - x[1])) threads[comm] = Math.round((d / wall) * 1000) / 10;
  const machinePct = m1.total > m0.total ? ((m1.busy - m0.busy) / (m1.total - m0.total)) * 100 * cpuCount() : 0;
  return {
    gbps: bps / 1e9,
    retransmits: j.end?.sum_sent?.retransmits ?? 0,
    ...(c0 !== undefined && c1 !== undefined ? { cpuPct: ((c1 - c0) / wall) * 100 } : {}),
    machinePct,
    threads,
  };
}

let ncpu: number | undefined;
function cpuCount(): number {
  if (ncpu === undefined) {
    const n = readFileSync('/proc/stat', 'utf8')
      .split('\n')
      .filter((l) => /^cpu\d+ /.test(l)).length;
    ncpu = Math.max(1, n);
  }
  return ncpu;
}

async function rrRate(e: Env, path: PathId, mode: 'rr' | 'crr', seconds: number): Promise<{ rate: number; errors: number; errorKinds?: Record<string, number> }> {
  const r = await run(nsx(e.vm[path], ['node', RR, mode, UP_IP, String(RR_PORT), String(seconds)]), { check: false, timeoutMs: (seconds + 30) * 1000 });
  const line = r.stdout.trim().split('\n').pop() ?? '';
  let j: { rate?: number; errors?: number; errorKinds?: Record<string, number> };
  try {
    j = JSON.parse(line) as typeof j;
  } catch {
    throw new Error(`${mode} client: exit ${r.code}: ${r.stderr.trim() || r.stdout.slice(0, 300)}`);
  }
  if (typeof j.rate !== 'number') throw new Error(`${mode} client: no rate in ${line}`);
  return { rate: j.rate, errors: j.errors ?? 0, ...(j.errorKinds ? { errorKinds: j.errorKinds } : {}) };
}

async function sampleOnce(e: Env, path: PathId, mtu: number, rep: number, o: Opts): Promise<Sample> {
  const s: Sample = { path, mtu, rep, errors: [] };
  const attempt = async (what: string, f: () => Promise<void>): Promise<void> => {
    try {
      await f();
    } catch (err) {
      s.errors.push(`${what}: ${(err as Error).message.split('\n')[0]}`);
    }
  };
  await attempt('up', async () => {
    const r = await iperf(e, path, o.seconds, false);
    s.upGbps = r.gbps;
    s.upRetrans = r.retransmits;
    s.upCpuPct = r.cpuPct;
    s.upMachinePct = r.machinePct;
    s.upThreads = r.threads;
  });
  await attempt('down', async () => {
    const r = await iperf(e, path, o.seconds, true);
    s.downGbps = r.gbps;
    s.downRetrans = r.retransmits;
    s.downCpuPct = r.cpuPct;
    s.downMachinePct = r.machinePct;
    s.downThreads = r.threads;
  });
  await attempt('rr', async () => {
    s.rr = (await rrRate(e, path, 'rr', o.rrSeconds)).rate;
  });
  await attempt('crr', async () => {
    const r = await rrRate(e, path, 'crr', o.rrSeconds);
    s.crr = r.rate;
    s.crrErrors = r.errors;
    if (r.errors > 0) s.errors.push(`crr: ${r.errors} failed connections ${JSON.stringify(r.errorKinds ?? {})}`);
  });
  return s;
}

async function measureMtu(mtu: number, o: Opts, workDir: string): Promise<Sample[]> {
  const id = randomBytes(3).toString('hex');
  const e: Env = {
    id,
    up: `mvs-${id}-up`,
    r: `mvs-${id}-r`,
    vm: { mvnet: `mvs-${id}-vm1`, pasta: `mvs-${id}-vm2` },
    ifname: { mvnet: 'tapv', pasta: 'tapp' },
    pid: {},
  };
  const mark = undoMark();
  const samples: Sample[] = [];
  const ready: PathId[] = [];
  try {
    await setupUpstream(e);
    for (const p of o.paths) {
      try {
        if (p === 'mvnet') await setupMvnet(e, mtu, workDir, o.profDir);
        else await setupPasta(e, mtu);
        await reachable(e.vm[p], PATH_LABEL[p]);
        ready.push(p);
      } catch (err) {
        const msg = `setup: ${(err as Error).message.split('\n')[0]}`;
        process.stderr.write(`stack: ${PATH_LABEL[p]} at MTU ${mtu}: ${msg}\n`);
        samples.push({ path: p, mtu, rep: 0, errors: [msg] });
      }
    }
    for (let rep = 1; rep <= o.reps; rep++) {
      // Alternate which path goes first so drift in the machine's load hits both alike.
      const order = rep % 2 === 1 ? ready : [...ready].reverse();
      for (const p of order) {
        process.stderr.write(`stack: MTU ${mtu} ${PATH_LABEL[p]} rep ${rep}/${o.reps} ... `);
        const s = await sampleOnce(e, p, mtu, rep, o);
        samples.push(s);
        process.stderr.write(
          `up ${fmt(s.upGbps, 2)} (cpu ${fmt(s.upCpuPct, 0)}%)  down ${fmt(s.downGbps, 2)} (cpu ${fmt(s.downCpuPct, 0)}%) Gbit/s  rr ${fmt(s.rr, 0)}/s  crr ${fmt(s.crr, 0)}/s` +
            (s.errors.length ? `  errors: ${s.errors.join('; ')}` : '') +
            '\n',
        );
      }
    }
  } catch (err) {
    samples.push({ path: o.paths[0]!, mtu, rep: 0, errors: [`topology: ${(err as Error).message.split('\n')[0]}`] });
    process.stderr.write(`stack: MTU ${mtu}: ${(err as Error).message}\n`);
  } finally {
    await undoTo(mark);
  }
  return samples;
}

// ---------------------------------------------------------------------------------------------
// Output

function summarize(samples: Sample[], o: Opts): Summary[] {
  const out: Summary[] = [];
  for (const mtu of o.mtus) {
    for (const path of o.paths) {
      const ss = samples.filter((s) => s.mtu === mtu && s.path === path);
      const med = (f: (s: Sample) => number | undefined): number | undefined => median(ss.map(f).filter((x): x is number => x !== undefined));
      out.push({
        path,
        mtu,
        upGbps: med((s) => s.upGbps),
        downGbps: med((s) => s.downGbps),
        rr: med((s) => s.rr),
        crr: med((s) => s.crr),
        upCpuPct: med((s) => s.upCpuPct),
        downCpuPct: med((s) => s.downCpuPct),
        upRetrans: med((s) => s.upRetrans),
        downRetrans: med((s) => s.downRetrans),
        errors: ss.flatMap((s) => s.errors),
      });
    }
  }
  return out;
}

function ratio(a: number | undefined, b: number | undefined): string {
  return a === undefined || b === undefined || b === 0 ? '-' : `${(a / b).toFixed(2)}x`;
}

function render(sum: Summary[], o: Opts): string {
  const header = ['path', 'MTU', 'up Gbit/s', 'down Gbit/s', 'RR/s', 'CRR/s', 'cpu% up', 'cpu% down', 'retr up/down'];
  const rows: string[][] = [];
  for (const mtu of o.mtus) {
    const get = (p: PathId): Summary | undefined => sum.find((s) => s.mtu === mtu && s.path === p);
    for (const p of o.paths) {
      const s = get(p);
      if (!s) continue;
      rows.push([PATH_LABEL[p], String(mtu), fmt(s.upGbps, 2), fmt(s.downGbps, 2), fmt(s.rr, 0), fmt(s.crr, 0), fmt(s.upCpuPct, 0), fmt(s.downCpuPct, 0), `${fmt(s.upRetrans, 0)}/${fmt(s.downRetrans, 0)}`]);
    }
    const m = get('mvnet');
    const p = get('pasta');
    if (m && p) {
      rows.push([
        'mvnet/pasta',
        String(mtu),
        ratio(m.upGbps, p.upGbps),
        ratio(m.downGbps, p.downGbps),
        ratio(m.rr, p.rr),
        ratio(m.crr, p.crr),
        ratio(m.upCpuPct, p.upCpuPct),
        ratio(m.downCpuPct, p.downCpuPct),
        '',
      ]);
    }
  }
  return table(header, rows);
}

// ---------------------------------------------------------------------------------------------

function parseArgs(argv: string[]): Opts {
  const o: Opts = { mtus: [1500, 65520], seconds: 5, rrSeconds: 3, reps: 3, paths: ['mvnet', 'pasta'] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--vnet-hdr') {
      vnetHdr = true;
      continue;
    }
    const v = argv[i + 1];
    if (v === undefined) throw new Error(`${a} needs a value`);
    i++;
    if (a === '--mtu') {
      o.mtus = v.split(',').map(Number);
      if (o.mtus.some((m) => !Number.isInteger(m) || m < 576 || m > 65520)) throw new Error(`--mtu: 576..65520, got ${v}`);
    } else if (a === '--time') o.seconds = Math.max(1, Math.min(60, Number(v) || 5));
    else if (a === '--rr-time') o.rrSeconds = Math.max(0.5, Math.min(60, Number(v) || 3));
    else if (a === '--reps') o.reps = Math.max(1, Math.min(10, Math.floor(Number(v)) || 3));
    else if (a === '--only') {
      o.paths = v.split(',').filter((p): p is PathId => p === 'mvnet' || p === 'pasta');
      if (o.paths.length === 0) throw new Error('--only: mvnet and/or pasta');
    } else if (a === '--prof') o.profDir = resolve(v);
    else throw new Error(`unknown argument ${a} (use --mtu 1500,65520 --time N --reps N --rr-time N --only mvnet,pasta --prof DIR)`);
  }
  return o;
}

function preflight(o: Opts): void {
  const problems: string[] = [];
  if (process.getuid?.() !== 0) problems.push('must run as root (namespaces, TAP devices)');
  if (!existsSync('/dev/net/tun')) problems.push('/dev/net/tun is missing');
  for (const tool of ['iperf3', 'ss', ...(o.paths.includes('pasta') ? ['pasta'] : [])]) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) problems.push(`${tool} is not installed`);
  }
  if (o.paths.includes('mvnet') && !existsSync(CLI)) problems.push(`${CLI} is missing (npx tsc -p tsconfig.build.json)`);
  if (!existsSync(RR)) problems.push(`${RR} is missing (npx tsc -p tsconfig.build.json)`);
  if (problems.length > 0) throw new Error(`stack bench: cannot run:\n  - ${problems.join('\n  - ')}`);
}

/** What mvnet was measured: the commit and the daemon/plugin files modified in the working tree. */
function treeState(): { commit: string; modified: string[] } {
  const head = spawnSync('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' });
  const st = spawnSync('git', ['-C', ROOT, 'status', '--porcelain', '--', 'daemon', 'plugins'], { encoding: 'utf8' });
  return {
    commit: head.status === 0 ? head.stdout.trim() : 'unknown',
    modified: st.status === 0 ? st.stdout.split('\n').map((l) => l.slice(3).trim()).filter(Boolean) : [],
  };
}

function pastaVersion(): string {
  const r = spawnSync('dpkg-query', ['-W', '-f', '${Version}', 'passt'], { encoding: 'utf8' });
  return r.status === 0 ? `passt ${r.stdout.trim()}` : 'pasta (version unknown)';
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  preflight(o);
  if (o.profDir) mkdirSync(o.profDir, { recursive: true });
  const workDir = mkdtempSync(join(tmpdir(), 'mvs-'));
  onUndo(
    async () => rmSync(workDir, { recursive: true, force: true }),
    () => rmSync(workDir, { recursive: true, force: true }),
  );
  const started = new Date();
  const tree = treeState();
  const load0 = loadavg();
  const samples: Sample[] = [];
  for (const mtu of o.mtus) samples.push(...(await measureMtu(mtu, o, workDir)));
  const sum = summarize(samples, o);
  const load1 = loadavg();

  console.log(
    `\nmvnet stack bench: VM ns -> forwarder (router ns) -> veth -> upstream ns; iperf3 -t ${o.seconds} (up: VM->upstream, down: -R), ` +
      `RR/CRR ${o.rrSeconds} s, median of ${o.reps}; ${pastaVersion()}; ${cpuCount()} CPUs (${started.toISOString()})\n`,
  );
  console.log(render(sum, o));
  console.log(`\nmvnet: commit ${tree.commit}${tree.modified.length ? ` + uncommitted changes in ${tree.modified.join(', ')}` : ''}`);
  console.log('cpu% = the forwarder process (mvnet daemon / pasta), all threads, during the iperf3 run; 100% = one core.');
  console.log('retr = TCP retransmissions by the iperf3 sender (VM for up, upstream for down); many with a low cpu% means the path stalled on loss recovery.');
  console.log(`load average (1 min) at start ${load0[0]!.toFixed(2)}, at end ${load1[0]!.toFixed(2)}: other work on this machine skews both paths.`);
  const errs = sum.filter((s) => s.errors.length > 0);
  for (const s of errs) console.log(`${PATH_LABEL[s.path]} MTU ${s.mtu}: ${s.errors.join('; ')}`);

  const outDir = join(ROOT, 'bench', 'out');
  mkdirSync(outDir, { recursive: true });
  const file = join(outDir, `stack-${started.toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(file, JSON.stringify({ started: started.toISOString(), pasta: pastaVersion(), cpus: cpuCount(), mvnet: tree, loadavg: { start: load0, end: load1 }, options: o, summary: sum, samples }, null, 2) + '\n');
  console.log(`results: ${file}`);
  if (o.profDir) console.log(`daemon CPU profiles: ${o.profDir}`);
  await undoAll();
  if (sum.some((s) => s.errors.length > 0 || s.upGbps === undefined)) process.exitCode = 1;
}

main().catch(async (e: unknown) => {
  console.error((e as Error).message);
  await undoAll();
  process.exitCode = 1;
});
