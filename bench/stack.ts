/**
 * `npm run bench:stack`: mvnet's direct route (userland TCP/IP endpoint + host sockets) against
 * two peers that do the same job: pasta (Debian's passt package) and slirp4netns (libslirp,
 * Debian's slirp4netns package). All three connect a "VM" namespace to the same upstream server
 * through the same router namespace, measured in the same run.
 *
 * Topology (fresh for each MTU; unique names, all removed at the end, on error and on signals):
 *
 *   upstream ns  UP_IP (10.88.0.1)  iperf3 -s, request/response server (bench/stack-rr.ts)
 *        | veth
 *   router ns    R_IP (10.88.0.2), default via UP_IP
 *        |-- mvnet daemon: net 10.66.0.0/24 --mtu M, VM "vm" by --tap tapv --netns VM1,
 *        |   route --direct; VM1 is configured statically (10.66.0.2/24, default via 10.66.0.1).
 *        |-- a second mvnet daemon, the same with --tap tapw --vnet-hdr in VM4 (path mvnet-vnet:
 *        |   virtio-net headers, TSO/GSO super-frames and partial checksums both ways, as a
 *        |   virtio-net VM has; the peers make their taps without).
 *        |-- pasta --config-net -m M --netns VM2 (foreground, IPv4 only, no port forwards, no
 *        |   DNS, --no-map-gw since the upstream server *is* the router's gateway); it creates
 *        |   VM2's tap "tapp" and gives it R_IP, default via UP_IP.
 *        `-- slirp4netns --configure --mtu M --disable-host-loopback --disable-dns
 *            --netns-type=path /run/netns/VM3 taps: VM3's tap "taps" gets 10.0.2.100/24,
 *            default via 10.0.2.2 (slirp's defaults; that subnet exists only inside VM3).
 *
 * Each VM reaches UP_IP only through its forwarder's userland stack, which re-originates every
 * TCP connection as a host socket in the router namespace.
 *
 * Per MTU, --reps repetitions (default 5), interleaved: each repetition runs every path once,
 * the order rotated by one each time (so drift in the machine's load hits every path alike):
 *   - up:   iperf3 -c UP_IP -t N -O 1 -J in the VM (VM→upstream), received bits/s; the first
 *           second is a warm-up iperf3 runs but does not count;
 *   - down: the same with -R (upstream→VM);
 *   - RR:   1-byte request / 1-byte response exchanges on one connection for --rr-time s;
 *   - CRR:  the same with a new connection per exchange (client closes first);
 *   - the forwarder process's CPU (all threads, from /proc; 100% = one core) during up/down.
 * The table shows medians with min–max, a "× best peer" row for each mvnet path (its median over
 * the better peer's median, per cell, naming the peer), and a goal line per cell (issue 13: the
 * direct route ≥ 1.0× the better of pasta and slirp4netns). `--quick` is one repetition.
 *
 * The VM↔forwarder MTU is M; the router↔upstream veth keeps the default 1500 with the kernel's
 * offloads (all forwarders' host sockets share it).
 *
 *   node dist/bench/stack.js [--mtu 1500,65520] [--time 5] [--reps 5 | --quick] [--rr-time 3]
 *                            [--only mvnet,mvnet-vnet,pasta,slirp4netns] [--prof DIR] [--vnet-hdr]
 *
 * --vnet-hdr attaches the plain mvnet path's TAP with `--vnet-hdr` too (older runs' way of
 * measuring offloads; path mvnet-vnet does it beside the plain one).
 *
 * By default every peer that is installed runs (a missing one is named; asked for by --only, it
 * is an error). --prof DIR runs the daemon with `node --cpu-prof --cpu-prof-dir DIR` (one
 * .cpuprofile per MTU, written when the daemon stops). Every sample also goes to
 * bench/out/stack-*.json. Needs root, iperf3, ss, pasta and/or slirp4netns, and a built tree
 * (`npx tsc -p tsconfig.build.json`).
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { bestPeer, fmtSpread, goalLine, goalMet, interleave, perRunRatios, ratioText, spread, type Goal, type Spread } from './stats.js';
import {
  background,
  cpuSeconds,
  createNs,
  fmt,
  linkExists,
  machineTicks,
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

type PathId = 'mvnet' | 'mvnet-vnet' | 'pasta' | 'slirp4netns';
type MvnetId = 'mvnet' | 'mvnet-vnet';
type PeerId = Exclude<PathId, MvnetId>;
/** mvnet twice: a plain TAP, and one with virtio-net headers (TSO/GSO both ways, as a virtio-net VM has). */
const MVNET_PATHS: MvnetId[] = ['mvnet', 'mvnet-vnet'];
const ALL_PATHS: PathId[] = ['mvnet', 'mvnet-vnet', 'pasta', 'slirp4netns'];
const isMvnet = (p: PathId): p is MvnetId => p === 'mvnet' || p === 'mvnet-vnet';
const PEERS: PeerId[] = ['pasta', 'slirp4netns'];
const PATH_LABEL: Record<PathId, string> = { mvnet: 'mvnet direct', 'mvnet-vnet': 'mvnet direct vnet-hdr', pasta: 'pasta', slirp4netns: 'slirp4netns' };
/** The program each peer runs as (for preflight). */
const PEER_BIN: Record<PeerId, string> = { pasta: 'pasta', slirp4netns: 'slirp4netns' };

interface Opts {
  mtus: number[];
  seconds: number;
  rrSeconds: number;
  reps: number;
  paths: PathId[];
  profDir?: string;
  /** mvnet's TAP with virtio-net headers (--vnet-hdr). */
  vnetHdr: boolean;
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
  upGbps?: Spread;
  downGbps?: Spread;
  rr?: Spread;
  crr?: Spread;
  upCpuPct?: Spread;
  downCpuPct?: Spread;
  upRetrans?: Spread;
  downRetrans?: Spread;
  errors: string[];
}

/** The four cells of a path at one MTU; higher is better for each. */
const METRICS = [
  { key: 'upGbps', name: 'up', unit: 'Gbit/s', digits: 2 },
  { key: 'downGbps', name: 'down', unit: 'Gbit/s', digits: 2 },
  { key: 'rr', name: 'RR', unit: 'exchanges/s', digits: 0 },
  { key: 'crr', name: 'CRR', unit: 'connections/s', digits: 0 },
] as const;

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

async function setupMvnet(e: Env, path: MvnetId, mtu: number, workDir: string, profDir: string | undefined, vnetHdr: boolean): Promise<void> {
  const ns = e.vm[path];
  const tap = e.ifname[path];
  await createNs(ns, CLIENT_SYSCTLS);
  const stateDir = join(workDir, `state-${e.id}-${path}`);
  mkdirSync(stateDir);
  const socket = join(stateDir, 'mvnet.sock');
  const node = profDir ? ['node', '--cpu-prof', '--cpu-prof-dir', profDir, '--cpu-prof-name', `${path}-daemon-mtu${mtu}-${e.id}.cpuprofile`] : ['node'];
  const daemon = background(nsx(e.r, [...node, CLI, 'daemon', '--state-dir', stateDir, '--socket', socket]), 'mvnet daemon');
  await daemon.waitLine((l) => l.includes('"msg":"ready"'), 20_000);
  e.pid[path] = daemon.child.pid;
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

async function setupSlirp(e: Env, mtu: number): Promise<void> {
  const ns = e.vm.slirp4netns;
  const tap = e.ifname.slirp4netns;
  await createNs(ns, CLIENT_SYSCTLS);
  // In the router namespace (its sockets leave from there, like the other two), joining VM3 by
  // path; --configure gives the tap 10.0.2.100/24 and the default route via 10.0.2.2. The host's
  // loopback and slirp's DNS forwarder stay off: nothing but the upstream namespace is reachable.
  const slirp = background(
    nsx(e.r, ['slirp4netns', '--configure', '--mtu', String(mtu), '--disable-host-loopback', '--disable-dns', '--netns-type=path', `/run/netns/${ns}`, tap]),
    'slirp4netns',
  );
  e.pid.slirp4netns = slirp.child.pid;
  await waitFor(
    async () => {
      if (slirp.child.exitCode !== null || slirp.child.signalCode !== null) throw new Error(`slirp4netns exited: ${slirp.stderr().trim()}`);
      const r = await run(nsx(ns, ['ip', '-4', 'route', 'show', 'default']), { check: false });
      return r.stdout.includes(` dev ${tap}`);
    },
    `slirp4netns's ${tap} in ${ns}`,
  );
  const link = await run(nsx(ns, ['ip', '-o', 'link', 'show', 'dev', tap]));
  if (!link.stdout.includes(`mtu ${mtu} `)) throw new Error(`slirp4netns: ${tap} has no MTU ${mtu}: ${link.stdout.trim()}`);
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
  // -O 1: the first second (slow start, a fresh forwarder's JIT) is run but not counted, and
  // the CPU sampled around the client covers it too (the same for every path).
  const r = await run(nsx(e.vm[path], ['iperf3', '-c', UP_IP, '-p', String(IPERF_PORT), '-t', String(seconds), '-O', '1', '-J', ...(reverse ? ['-R'] : [])]), {
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
    vm: { mvnet: `mvs-${id}-vm1`, 'mvnet-vnet': `mvs-${id}-vm4`, pasta: `mvs-${id}-vm2`, slirp4netns: `mvs-${id}-vm3` },
    ifname: { mvnet: 'tapv', 'mvnet-vnet': 'tapw', pasta: 'tapp', slirp4netns: 'taps' },
    pid: {},
  };
  const mark = undoMark();
  const samples: Sample[] = [];
  const ready: PathId[] = [];
  try {
    await setupUpstream(e);
    for (const p of o.paths) {
      try {
        if (isMvnet(p)) await setupMvnet(e, p, mtu, workDir, o.profDir, p === 'mvnet-vnet' || o.vnetHdr);
        else if (p === 'pasta') await setupPasta(e, mtu);
        else await setupSlirp(e, mtu);
        await reachable(e.vm[p], PATH_LABEL[p]);
        ready.push(p);
      } catch (err) {
        const msg = `setup: ${(err as Error).message.split('\n')[0]}`;
        process.stderr.write(`stack: ${PATH_LABEL[p]} at MTU ${mtu}: ${msg}\n`);
        samples.push({ path: p, mtu, rep: 0, errors: [msg] });
      }
    }
    for (let rep = 1; rep <= o.reps; rep++) {
      for (const p of interleave(ready, rep)) {
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
      const sp = (f: (s: Sample) => number | undefined): Spread | undefined => spread(ss.map(f));
      out.push({
        path,
        mtu,
        upGbps: sp((s) => s.upGbps),
        downGbps: sp((s) => s.downGbps),
        rr: sp((s) => s.rr),
        crr: sp((s) => s.crr),
        upCpuPct: sp((s) => s.upCpuPct),
        downCpuPct: sp((s) => s.downCpuPct),
        upRetrans: sp((s) => s.upRetrans),
        downRetrans: sp((s) => s.downRetrans),
        errors: ss.flatMap((s) => s.errors),
      });
    }
  }
  return out;
}

/** Per MTU and metric: mvnet's median over the better peer's (issue 13: at least 1.0x in every cell). */
function goals(sum: Summary[], samples: Sample[], o: Opts): (Goal & { peer?: PeerId; mine: MvnetId })[] {
  const out: (Goal & { peer?: PeerId; mine: MvnetId })[] = [];
  const peers = PEERS.filter((p) => o.paths.includes(p));
  if (peers.length === 0) return out;
  for (const path of MVNET_PATHS.filter((p) => o.paths.includes(p))) {
    for (const mtu of o.mtus) {
      const get = (p: PathId): Summary | undefined => sum.find((s) => s.mtu === mtu && s.path === p);
      for (const m of METRICS) {
        const mine = get(path)?.[m.key]?.median;
        const best = bestPeer(peers.map((p) => ({ path: p, value: get(p)?.[m.key]?.median })));
        const runs = (p: PathId): { rep: number; value: number | undefined }[] =>
          samples.filter((s) => s.mtu === mtu && s.path === p && s.rep > 0).map((s) => ({ rep: s.rep, value: s[m.key] }));
        const perRun = best ? perRunRatios(runs(path), runs(best.path)) : undefined;
        out.push({
          cell: `MTU ${mtu} ${m.name}${path === 'mvnet-vnet' ? ' (vnet-hdr)' : ''}`,
          mine: path,
          ratio: mine !== undefined && best !== undefined ? mine / best.value : undefined,
          target: 1.0,
          against: best ? `the better peer, ${PATH_LABEL[best.path]} ${fmt(best.value, m.digits)} ${m.unit}` : `the better of ${peers.map((p) => PATH_LABEL[p]).join(' and ')} (no result)`,
          ...(best ? { peer: best.path } : {}),
          ...(perRun ? { perRun } : {}),
        });
      }
    }
  }
  return out;
}

function render(sum: Summary[], o: Opts, goalList: (Goal & { peer?: PeerId; mine: MvnetId })[]): string {
  const header = ['path', 'MTU', 'up Gbit/s', 'down Gbit/s', 'RR/s', 'CRR/s', 'cpu% up', 'cpu% down', 'retr up/down'];
  const rows: string[][] = [];
  for (const mtu of o.mtus) {
    const get = (p: PathId): Summary | undefined => sum.find((s) => s.mtu === mtu && s.path === p);
    for (const p of o.paths) {
      const s = get(p);
      if (!s) continue;
      rows.push([
        PATH_LABEL[p],
        String(mtu),
        fmtSpread(s.upGbps, 2),
        fmtSpread(s.downGbps, 2),
        fmtSpread(s.rr, 0),
        fmtSpread(s.crr, 0),
        fmt(s.upCpuPct?.median, 0),
        fmt(s.downCpuPct?.median, 0),
        `${fmt(s.upRetrans?.median, 0)}/${fmt(s.downRetrans?.median, 0)}`,
      ]);
    }
    for (const mine of MVNET_PATHS) {
      const g = goalList.filter((x) => x.mine === mine && x.cell.startsWith(`MTU ${mtu} `));
      if (g.length !== METRICS.length) continue;
      // Which peer was the better one can differ per cell; named after the ratio.
      const cell = (x: Goal & { peer?: PeerId }): string => (x.ratio === undefined ? '-' : `${ratioText(x.ratio, 1)} ${x.peer === 'slirp4netns' ? 'slirp' : (x.peer ?? '')}`);
      rows.push([`${mine === 'mvnet' ? 'mvnet' : 'vnet-hdr'} x best peer`, String(mtu), ...g.map(cell), '', '', '']);
    }
  }
  return table(header, rows);
}

// ---------------------------------------------------------------------------------------------

function installed(tool: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0;
}

function parseArgs(argv: string[]): Opts & { skipped: PeerId[] } {
  // Every peer that is installed, by default; one asked for by --only must be there (preflight).
  const skipped = PEERS.filter((p) => !installed(PEER_BIN[p]));
  const o: Opts = { mtus: [1500, 65520], seconds: 5, rrSeconds: 3, reps: 5, paths: ALL_PATHS.filter((p) => !(skipped as PathId[]).includes(p)), vnetHdr: false };
  let only = false;
  const usage = 'use --mtu 1500,65520 --time N --reps N --quick --rr-time N --only mvnet,mvnet-vnet,pasta,slirp4netns --prof DIR --vnet-hdr';
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const v = argv[i + 1];
    if (a === '--quick') {
      o.reps = 1;
      continue;
    }
    if (a === '--vnet-hdr') {
      o.vnetHdr = true;
      continue;
    }
    if (v === undefined) throw new Error(`${a} needs a value (${usage})`);
    i++;
    if (a === '--mtu') {
      o.mtus = v.split(',').map(Number);
      if (o.mtus.some((m) => !Number.isInteger(m) || m < 576 || m > 65520)) throw new Error(`--mtu: 576..65520, got ${v}`);
    } else if (a === '--time') o.seconds = Math.max(1, Math.min(60, Number(v) || 5));
    else if (a === '--rr-time') o.rrSeconds = Math.max(0.5, Math.min(60, Number(v) || 3));
    else if (a === '--reps') o.reps = Math.max(1, Math.min(20, Math.floor(Number(v)) || 5));
    else if (a === '--only') {
      const want = v.split(',').map((p) => (p === 'slirp' ? 'slirp4netns' : p));
      o.paths = ALL_PATHS.filter((p) => want.includes(p));
      if (o.paths.length === 0) throw new Error(`--only: any of ${ALL_PATHS.join(',')}, got ${v}`);
      only = true;
    } else if (a === '--prof') o.profDir = resolve(v);
    else throw new Error(`unknown argument ${a} (${usage})`);
  }
  return { ...o, skipped: only ? [] : skipped };
}

function preflight(o: Opts): void {
  const problems: string[] = [];
  if (process.getuid?.() !== 0) problems.push('must run as root (namespaces, TAP devices)');
  if (!existsSync('/dev/net/tun')) problems.push('/dev/net/tun is missing');
  for (const tool of ['iperf3', 'ss', ...PEERS.filter((p) => o.paths.includes(p)).map((p) => PEER_BIN[p])]) {
    if (!installed(tool)) problems.push(`${tool} is not installed (bash scripts/deps.sh)`);
  }
  if (o.paths.some(isMvnet) && !existsSync(CLI)) problems.push(`${CLI} is missing (npx tsc -p tsconfig.build.json)`);
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

/** The peers' Debian package versions, e.g. "passt 0.0~git20230309.7c7625d-1, slirp4netns 1.2.0-1". */
function peerVersions(paths: PathId[]): string {
  const pkg: Record<PeerId, string> = { pasta: 'passt', slirp4netns: 'slirp4netns' };
  return PEERS.filter((p) => paths.includes(p))
    .map((p) => {
      const r = spawnSync('dpkg-query', ['-W', '-f', '${Version}', pkg[p]], { encoding: 'utf8' });
      return r.status === 0 ? `${pkg[p]} ${r.stdout.trim()}` : `${pkg[p]} (version unknown)`;
    })
    .join(', ');
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
  const goalList = goals(sum, samples, o);
  const load1 = loadavg();
  const minutes = (Date.now() - started.getTime()) / 60_000;

  console.log(
    `\nmvnet stack bench: VM ns -> forwarder (router ns) -> veth -> upstream ns; iperf3 -t ${o.seconds} -O 1 (up: VM->upstream, down: -R), ` +
      `RR/CRR ${o.rrSeconds} s; ${o.reps > 1 ? `medians (min–max) of ${o.reps} interleaved runs` : 'one run (--quick): no spread, read with care'}; ` +
      `${peerVersions(o.paths)}; ${cpuCount()} CPUs (${started.toISOString()}; ${minutes.toFixed(1)} min)\n`,
  );
  console.log(render(sum, o, goalList));
  console.log(`\nmvnet: commit ${tree.commit}${tree.modified.length ? ` + uncommitted changes in ${tree.modified.join(', ')}` : ''}; path mvnet's TAP ${o.vnetHdr ? 'with' : 'without'} --vnet-hdr, mvnet-vnet's with`);
  console.log('mvnet x best peer: mvnet\'s median over the better of the peers\' medians in that cell (named after it).');
  console.log('cpu% = the forwarder process (mvnet daemon / pasta / slirp4netns), all threads, during the iperf3 run; 100% = one core.');
  console.log('retr = TCP retransmissions by the iperf3 sender (VM for up, upstream for down); many with a low cpu% means the path stalled on loss recovery.');
  console.log(`load average (1 min) at start ${load0[0]!.toFixed(2)}, at end ${load1[0]!.toFixed(2)}: other work on this machine skews every path.`);
  for (const p of o.skipped) console.log(`${PATH_LABEL[p]}: not installed, not measured (bash scripts/deps.sh installs it).`);
  const errs = sum.filter((s) => s.errors.length > 0);
  for (const s of errs) console.log(`${PATH_LABEL[s.path]} MTU ${s.mtu}: ${s.errors.join('; ')}`);
  if (goalList.length > 0) {
    console.log(`\n${goalList.map(goalLine).join('\n')}`);
    console.log(`goals met: ${goalList.filter((g) => goalMet(g) === true).length} of ${goalList.length}`);
  }

  const outDir = join(ROOT, 'bench', 'out');
  mkdirSync(outDir, { recursive: true });
  const file = join(outDir, `stack-${started.toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(
    file,
    JSON.stringify(
      {
        started: started.toISOString(),
        minutes,
        peers: peerVersions(o.paths),
        cpus: cpuCount(),
        mvnet: tree,
        loadavg: { start: load0, end: load1 },
        options: o,
        summary: sum,
        goals: goalList.map((g) => ({ ...g, met: goalMet(g) })),
        samples,
      },
      null,
      2,
    ) + '\n',
  );
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
