/**
 * `node dist/bench/links.js`: an mvnet link (issue 11, UDP carrier) against wireguard-go, both
 * carrying one TCP stream from VM A to VM B through the same two router namespaces and the same
 * veth between them, measured in the same run on the same machine.
 *
 *   mvnet:  VM A ns ─TAP─> daemon A (rA) ═ link, UDP over the veth ═ daemon B (rB) ─TAP─> VM B ns
 *           one Ethernet segment 10.98.0.0/24 (test/support/link-topology.ts)
 *   wg:     VM A ns ─veth─> rA kernel ─> wireguard-go (rA) ═ UDP over the veth ═ wireguard-go (rB)
 *           ─> rB kernel ─veth─> VM B ns; routed: 10.97.1.11/24 via rA, 10.97.2.12/24 via rB
 *
 * So both paths are: VM → router namespace → one encrypted UDP datagram per packet on the veth →
 * router namespace → VM. The VMs' own links (mvnet: TAP without vnet header; wg: veth with TSO
 * off, as bench/run.ts does) make the VM kernels segment TCP at the MTU alike.
 *
 * Settings (fresh routers, daemons and wireguard-go for each):
 *   - 1420: the tunnel MTU WireGuard uses on a 1500 underlay; the veth stays at 1500. mvnet's
 *     network MTU and wg's interface MTU are 1420 (an mvnet link message carries an Ethernet
 *     frame, 14 bytes more than wg's IP packet: 1420 + 14 + 32 + padding fits 1472).
 *   - 65000: large frames, the veth at 65535, network and wg MTU 65000 on both: the largest round
 *     number whose encrypted message (65000 + 14 + 32 + padding) fits one IPv4 UDP datagram
 *     (65507 bytes of payload) for both.
 *   - 1420tso (not run by default): 1420 with the VMs' TSO on (mvnet TAPs with --vnet-hdr; wg
 *     VMs' veths keep TSO). Neither tunnel carries super-frames: mvnet's link port has no vnet
 *     header (the switch segments them), this wireguard-go (2022) reads its TUN without offloads.
 *
 * Per setting, --reps samples of each path, interleaved (the order alternates, so drift in the
 * machine's load hits both alike): `iperf3 -t T -O 1` (TCP, one stream, the first second not
 * counted), then a ping RTT (median of 20 echoes, -i 0.01). The table shows medians with the
 * min-max, the CPU of each side's forwarder (the mvnet daemon, wireguard-go; /proc, all threads,
 * 100% = one core) and the kernel's share of it (system time), Gbit/s per core of the two forwarders together (their cost per byte: on a
 * machine that other work or the iperf3 ends saturate, a steadier figure than Gbit/s), the
 * machine's CPU (all processes and the kernel), and mvnet/wg ratios.
 *
 *   node dist/bench/links.js [--settings 1420,65000,1420tso] [--time 5] [--reps 3] [--only mvnet,wg] [--prof DIR]
 *                            [--node-args 'NODE OPTIONS FOR THE DAEMONS']
 *
 * --prof DIR runs the daemons with `node --cpu-prof` (a .cpuprofile per daemon, written when it
 * stops). Needs root, iperf3, ss, ethtool, wireguard-go and wg (scripts/deps.sh), and a built
 * tree (`npx tsc -p tsconfig.build.json`). Results also go to bench/out/links-*.json.
 * Namespaces are test/support/netns.ts ones (mvt-lb*-…), removed at the end, on error and on
 * signals; addresses exist only inside them.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { addVeth, cleanupAll, createNetns, makeTempDir, registerCleanup, run, uniqueName, waitFor, type ManagedProcess, type Netns } from '../test/support/netns.js';
import {
  ROUTER_A_IP,
  ROUTER_B_IP,
  VM_B_IP,
  createRouters,
  iperf3,
  startLinkTopology,
  type LinkTopology,
  type RouterDaemon,
  type Routers,
} from '../test/support/link-topology.js';
import { fmt, machineTicks, median, table } from './util.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url)); // dist/bench/links.js → repo root
const CLI = join(ROOT, 'dist', 'cli', 'main.js');
/** Names this run's profiles (a --prof directory may hold older ones). */
const RUN_ID = randomBytes(3).toString('hex');

type PathId = 'mvnet' | 'wg';
const PATH_LABEL: Record<PathId, string> = { mvnet: 'mvnet link', wg: 'wireguard-go' };

interface Setting {
  id: string;
  /** Tunnel MTU: mvnet's network MTU, wg's interface MTU, the VMs' MTU. */
  mtu: number;
  /** The router↔router veth. */
  underlay: number;
  /** The VMs' TSO: mvnet TAPs with --vnet-hdr, wg VMs' veths with TSO on (default: off for both). */
  tso: boolean;
}
const SETTINGS: Record<string, Setting> = {
  '1420': { id: '1420', mtu: 1420, underlay: 1500, tso: false },
  '65000': { id: '65000', mtu: 65000, underlay: 65535, tso: false },
  '1420tso': { id: '1420tso', mtu: 1420, underlay: 1500, tso: true },
};

interface Opts {
  settings: string[];
  seconds: number;
  reps: number;
  paths: PathId[];
  profDir?: string;
  /** More `node` options for the daemons (experiments: e.g. --max-semi-space-size=64). */
  nodeArgs: string[];
}

interface Sample {
  path: PathId;
  setting: string;
  rep: number;
  gbps?: number;
  retransmits?: number;
  rttMs?: number;
  /** CPU % of side A's and side B's forwarder during the iperf3 run. */
  cpuA?: number;
  cpuB?: number;
  /** Of which in the kernel (system time: syscalls, and the network stack work they do). */
  sysA?: number;
  sysB?: number;
  /** The machine's busy CPU % (100 = one core) during the run. */
  machine?: number;
  /** Gbit/s per core the two forwarders used together: their cost per byte, less sensitive to other load. */
  perCore?: number;
  error?: string;
}

// ---------------------------------------------------------------------------------------------
// The mvnet daemon, outside vitest (test/support/daemon.ts needs vitest's hooks).

class BenchDaemon implements RouterDaemon {
  private constructor(
    readonly proc: ManagedProcess,
    readonly socket: string,
  ) {}

  static async start(netns: Netns, label: string, o: Pick<Opts, 'profDir' | 'nodeArgs'>): Promise<BenchDaemon> {
    const stateDir = makeTempDir('lbd');
    const socket = join(stateDir, 'mvnet.sock');
    const prof = o.profDir ? ['--cpu-prof', '--cpu-prof-dir', o.profDir, '--cpu-prof-name', `links-daemon-${RUN_ID}-${label}.cpuprofile`] : [];
    const node = ['node', ...prof, ...o.nodeArgs];
    const proc = netns.spawn([...node, CLI, 'daemon', '--state-dir', stateDir, '--socket', socket], { label: `mvnet daemon ${label} in ${netns.name}` });
    await proc.waitForLine((l) => l.includes('"msg":"ready"'), { timeoutMs: 20_000 });
    return new BenchDaemon(proc, socket);
  }

  get pid(): number {
    return this.proc.pid;
  }

  async cliOk(args: readonly string[], json = false): Promise<string> {
    const r = await run(['node', CLI, '--socket', this.socket, ...(json ? ['--json'] : []), ...args], { check: false, timeoutMs: 30_000 });
    if (r.code !== 0) {
      const errors = this.proc.lines.filter((l) => /"level":[5-6]\d/.test(l)).slice(-5).join('\n');
      throw new Error(`mvnet ${args.join(' ')}: exit ${r.code}: ${(r.stderr || r.stdout).trim()}${errors ? `\ndaemon errors:\n${errors}` : ''}`);
    }
    return r.stdout;
  }

  async cliJson<T>(args: readonly string[]): Promise<T> {
    return JSON.parse(await this.cliOk(args, true)) as T;
  }
}

// ---------------------------------------------------------------------------------------------
// The two paths: each gives a client ns, a server ns + address, and the forwarders' pids.

interface PathEnv {
  client: Netns;
  server: Netns;
  serverIp: string;
  pidA: number;
  pidB: number;
}

async function setupMvnet(r: Routers, s: Setting, prefix: string, o: Opts): Promise<{ env: PathEnv; topo: LinkTopology<BenchDaemon> }> {
  const topo = await startLinkTopology<BenchDaemon>({
    prefix,
    routers: r,
    mtu: s.mtu,
    vnetHdr: s.tso,
    startDaemon: ({ side, netns }) => BenchDaemon.start(netns, `${s.id}-${side}`, o),
  });
  await topo.waitConnected('a', 30_000);
  return { env: { client: topo.a.vm.ns, server: topo.b.vm.ns, serverIp: VM_B_IP, pidA: topo.a.daemon.pid, pidB: topo.b.daemon.pid }, topo };
}

const WG_PORT = 51821;
const WG_SIDES = {
  a: { vmIp: '10.97.1.11', gw: '10.97.1.1', subnet: '10.97.1.0/24' },
  b: { vmIp: '10.97.2.12', gw: '10.97.2.1', subnet: '10.97.2.0/24' },
} as const;

/** wireguard-go in each router namespace, peers of each other over the veth; a routed VM behind each. */
async function setupWireguard(r: Routers, s: Setting, prefix: string): Promise<PathEnv> {
  const dir = makeTempDir('lbwg');
  const keys = { a: { priv: '', pub: '', file: join(dir, 'a.key') }, b: { priv: '', pub: '', file: join(dir, 'b.key') } };
  for (const k of [keys.a, keys.b]) {
    k.priv = (await run(['wg', 'genkey'])).stdout.trim();
    k.pub = (await run(['wg', 'pubkey'], { input: `${k.priv}\n` })).stdout.trim();
    writeFileSync(k.file, `${k.priv}\n`, { mode: 0o600 });
    chmodSync(k.file, 0o600);
  }
  const pids: Record<'a' | 'b', number> = { a: -1, b: -1 };
  const vms: Partial<Record<'a' | 'b', Netns>> = {};
  for (const side of ['a', 'b'] as const) {
    const router = side === 'a' ? r.rA : r.rB;
    const other = side === 'a' ? 'b' : 'a';
    // Unique names: wireguard-go's control socket is /var/run/wireguard/IF.sock, shared by all namespaces.
    const wgIf = uniqueName('lbwg');
    // Registered before the process (cleanup runs newest first): a killed wireguard-go leaves its socket.
    const sock = `/var/run/wireguard/${wgIf}.sock`;
    registerCleanup(`${sock}`, async () => rmSync(sock, { force: true }), () => rmSync(sock, { force: true }));
    const proc = router.spawn(['wireguard-go', '-f', wgIf], {
      env: { ...process.env, WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD: '1', LOG_LEVEL: 'error' },
      label: `wireguard-go ${side}`,
    });
    pids[side] = proc.pid;
    await router.waitForLink(wgIf);
    await waitFor(async () => (await router.exec(['wg', 'show', wgIf], { check: false })).code === 0, { what: `wireguard-go ${side} control socket` });
    await router.exec([
      'wg', 'set', wgIf, 'private-key', keys[side].file, 'listen-port', String(WG_PORT),
      'peer', keys[other].pub, 'allowed-ips', WG_SIDES[other].subnet,
      ...(side === 'b' ? ['endpoint', `${ROUTER_A_IP}:${WG_PORT}`] : ['endpoint', `${ROUTER_B_IP}:${WG_PORT}`]),
    ]);
    await router.exec(['ip', 'link', 'set', 'dev', wgIf, 'mtu', String(s.mtu), 'up']);
    await router.exec(['ip', 'route', 'add', WG_SIDES[other].subnet, 'dev', wgIf]);
    await router.exec(['sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']);
    // The VM: a veth into the router namespace, routed (the router is its gateway).
    const vm = await createNetns(`${prefix}-w${side}`);
    vms[side] = vm;
    const vmIf = uniqueName('lbwv');
    const rIf = uniqueName('lbwr');
    await addVeth({ name: vmIf, netns: vm, mtu: s.mtu }, { name: rIf, netns: router, mtu: s.mtu });
    await router.addAddr(rIf, `${WG_SIDES[side].gw}/24`);
    await vm.addAddr(vmIf, `${WG_SIDES[side].vmIp}/24`);
    await vm.exec(['ip', 'route', 'add', 'default', 'via', WG_SIDES[side].gw]);
    // No TSO on the VM's link: the VM kernel segments at the MTU, as behind mvnet's TAP without vnet header.
    if (!s.tso) await vm.exec(['ethtool', '-K', vmIf, 'tso', 'off']);
  }
  const client = vms.a!;
  await waitFor(async () => (await client.exec(['ping', '-n', '-c', '1', '-W', '1', WG_SIDES.b.vmIp], { check: false })).code === 0, {
    timeoutMs: 30_000,
    intervalMs: 100,
    what: 'VM A to reach VM B through wireguard-go',
  });
  return { client, server: vms.b!, serverIp: WG_SIDES.b.vmIp, pidA: pids.a, pidB: pids.b };
}

// ---------------------------------------------------------------------------------------------
// Measurements

function cpuCount(): number {
  return availableParallelism();
}

/** User and system CPU seconds of a process so far (all threads), or undefined when it is gone. */
function procCpu(pid: number): { user: number; sys: number } | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // After "(comm)", which may hold spaces: utime and stime are fields 14 and 15, in clock ticks (100/s).
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { user: Number(rest[11]) / 100, sys: Number(rest[12]) / 100 };
  } catch {
    return undefined;
  }
}

async function rtt(e: PathEnv): Promise<number | undefined> {
  const r = await e.client.exec(['ping', '-n', '-c', '20', '-i', '0.01', '-W', '1', e.serverIp], { check: false, timeoutMs: 30_000 });
  return median([...r.stdout.matchAll(/time=([\d.]+) ms/g)].map((x) => Number(x[1])));
}

async function sampleOnce(e: PathEnv, path: PathId, setting: string, rep: number, seconds: number): Promise<Sample> {
  const s: Sample = { path, setting, rep };
  try {
    const a0 = procCpu(e.pidA);
    const b0 = procCpu(e.pidB);
    const m0 = machineTicks();
    const ip = await iperf3({ client: e.client, server: e.server, serverIp: e.serverIp, seconds, omit: 1 });
    const a1 = procCpu(e.pidA);
    const b1 = procCpu(e.pidB);
    const m1 = machineTicks();
    s.gbps = ip.gbps;
    s.retransmits = ip.retransmits;
    const pct = (x: number): number => (x / ip.wallS) * 100;
    if (a0 && a1) [s.cpuA, s.sysA] = [pct(a1.user + a1.sys - a0.user - a0.sys), pct(a1.sys - a0.sys)];
    if (b0 && b1) [s.cpuB, s.sysB] = [pct(b1.user + b1.sys - b0.user - b0.sys), pct(b1.sys - b0.sys)];
    if (s.cpuA !== undefined && s.cpuB !== undefined && s.cpuA + s.cpuB > 0) s.perCore = ip.gbps / ((s.cpuA + s.cpuB) / 100);
    if (m1.total > m0.total) s.machine = ((m1.busy - m0.busy) / (m1.total - m0.total)) * 100 * cpuCount();
    s.rttMs = await rtt(e);
  } catch (err) {
    s.error = (err as Error).message.split('\n')[0];
  }
  return s;
}

async function measureSetting(s: Setting, o: Opts): Promise<Sample[]> {
  const id = randomBytes(2).toString('hex');
  const prefix = `lb${id}`;
  const samples: Sample[] = [];
  try {
    const routers = await createRouters(prefix, s.underlay);
    const envs: Partial<Record<PathId, PathEnv>> = {};
    for (const p of o.paths) {
      try {
        envs[p] = p === 'mvnet' ? (await setupMvnet(routers, s, prefix, o)).env : await setupWireguard(routers, s, prefix);
      } catch (err) {
        const msg = `setup: ${(err as Error).message}`;
        process.stderr.write(`links: ${PATH_LABEL[p]} at ${s.id}: ${msg}\n`);
        samples.push({ path: p, setting: s.id, rep: 0, error: msg.split('\n')[0] });
      }
    }
    const ready = o.paths.filter((p) => envs[p] !== undefined);
    for (let rep = 1; rep <= o.reps; rep++) {
      const order = rep % 2 === 1 ? ready : [...ready].reverse();
      for (const p of order) {
        process.stderr.write(`links: ${s.id} ${PATH_LABEL[p]} rep ${rep}/${o.reps} ... `);
        const x = await sampleOnce(envs[p]!, p, s.id, rep, o.seconds);
        samples.push(x);
        process.stderr.write(
          x.error
            ? `error: ${x.error}\n`
            : `${fmt(x.gbps, 2)} Gbit/s, retr ${x.retransmits}, cpu A ${fmt(x.cpuA, 0)}% B ${fmt(x.cpuB, 0)}%, machine ${fmt(x.machine, 0)}%, rtt ${fmt(x.rttMs, 3)} ms\n`,
        );
      }
    }
  } catch (err) {
    samples.push({ path: o.paths[0]!, setting: s.id, rep: 0, error: `topology: ${(err as Error).message.split('\n')[0]}` });
    process.stderr.write(`links: ${s.id}: ${(err as Error).message}\n`);
  } finally {
    // Everything of this setting (daemons stop with SIGTERM, so --cpu-prof writes its profile).
    await cleanupAll();
  }
  return samples;
}

// ---------------------------------------------------------------------------------------------
// --prof: where each daemon spent its time (self time per function, from the .cpuprofile)

interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number } }[];
  samples?: number[];
  timeDeltas?: number[];
}

/** What a function's self time counts as, for the per-kind summary of a profile. */
function kindOf(fn: string, url: string): string {
  if (url.includes('crypto/cipher')) return 'crypto (node:crypto, a cipher per message)';
  if (url === 'node:dgram' || url.includes('dgram')) return 'udp send (dgram, one sendmsg per message)';
  if (url.includes('device-port')) return 'tap read/write (native device port)';
  if (fn === '(garbage collector)') return 'gc';
  if (url.includes('internal/buffer') || url === 'node:buffer') return 'buffer alloc/copy';
  if (url.includes('/daemon/links/')) return 'link protocol (js)';
  if (url.includes('/daemon/mesh/') || url.includes('/daemon/carriers/')) return 'engine and carrier (js)';
  if (url.includes('/daemon/switch/')) return 'switch (js)';
  if (fn === '(program)') return '(program: native outside js, e.g. udp receive in libuv)';
  return 'other';
}

/** Self time of one profile by kind, then its `top` functions, with their share of the busy (non-idle) time. */
function profileTop(file: string, top = 15): string {
  const p = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(p.nodes.map((n) => [n.id, n.callFrame]));
  const self = new Map<string, number>();
  const kinds = new Map<string, number>();
  const samples = p.samples ?? [];
  const deltas = p.timeDeltas ?? [];
  for (let i = 0; i < samples.length; i++) {
    const f = byId.get(samples[i]!);
    if (!f || f.functionName === '(idle)') continue;
    const d = deltas[i] ?? 0;
    const where = f.url ? ` ${f.url.replace(/^file:\/\//, '').replace(ROOT, '').replace(/^node:/, '')}:${f.lineNumber + 1}` : '';
    const key = `${f.functionName || '(anonymous)'}${where}`;
    self.set(key, (self.get(key) ?? 0) + d);
    const kind = kindOf(f.functionName, f.url);
    kinds.set(kind, (kinds.get(kind) ?? 0) + d);
  }
  const busy = [...self.values()].reduce((a, v) => a + v, 0);
  const pct = (v: number): string => `${((v / busy) * 100).toFixed(1).padStart(5)}%`;
  return [
    `${file}: ${(busy / 1e6).toFixed(1)} s busy`,
    ...[...kinds].sort((a, b) => b[1] - a[1]).map(([k, v]) => `  ${pct(v)}  ${k}`),
    '  busiest functions:',
    ...[...self].sort((a, b) => b[1] - a[1]).slice(0, top).map(([k, v]) => `  ${pct(v)}  ${(v / 1e6).toFixed(2).padStart(6)} s  ${k}`),
  ].join('\n');
}

// ---------------------------------------------------------------------------------------------
// Output

interface Summary {
  path: PathId;
  setting: string;
  n: number;
  gbps?: number;
  min?: number;
  max?: number;
  retransmits?: number;
  rttMs?: number;
  cpuA?: number;
  cpuB?: number;
  sysA?: number;
  sysB?: number;
  machine?: number;
  perCore?: number;
  errors: string[];
}

function summarize(samples: Sample[], o: Opts): Summary[] {
  const out: Summary[] = [];
  for (const setting of o.settings) {
    for (const path of o.paths) {
      const all = samples.filter((x) => x.setting === setting && x.path === path);
      const ok = all.filter((x) => x.error === undefined);
      const med = (f: (x: Sample) => number | undefined): number | undefined => median(ok.map(f).filter((v): v is number => v !== undefined));
      const g = ok.map((x) => x.gbps).filter((v): v is number => v !== undefined);
      out.push({
        path,
        setting,
        n: ok.length,
        gbps: med((x) => x.gbps),
        ...(g.length > 0 ? { min: Math.min(...g), max: Math.max(...g) } : {}),
        retransmits: med((x) => x.retransmits),
        rttMs: med((x) => x.rttMs),
        cpuA: med((x) => x.cpuA),
        cpuB: med((x) => x.cpuB),
        sysA: med((x) => x.sysA),
        sysB: med((x) => x.sysB),
        machine: med((x) => x.machine),
        perCore: med((x) => x.perCore),
        errors: all.flatMap((x) => (x.error ? [x.error] : [])),
      });
    }
  }
  return out;
}

function ratio(a: number | undefined, b: number | undefined): string {
  return a === undefined || b === undefined || b === 0 ? '-' : `${(a / b).toFixed(2)}x`;
}

function render(sum: Summary[], o: Opts): string {
  const header = ['path', 'setting', 'runs', 'Gbit/s', 'min-max', 'retr', 'rtt p50 ms', 'cpu% A (sys)', 'cpu% B (sys)', 'Gbit/s per fwd core', 'machine cpu%'];
  const rows: string[][] = [];
  for (const setting of o.settings) {
    const get = (p: PathId): Summary | undefined => sum.find((x) => x.setting === setting && x.path === p);
    for (const p of o.paths) {
      const x = get(p);
      if (!x) continue;
      rows.push([
        PATH_LABEL[p],
        setting,
        `${x.n}/${o.reps}`,
        fmt(x.gbps, 2),
        x.min !== undefined ? `${fmt(x.min, 2)}-${fmt(x.max, 2)}` : '-',
        fmt(x.retransmits, 0),
        fmt(x.rttMs, 3),
        `${fmt(x.cpuA, 0)} (${fmt(x.sysA, 0)})`,
        `${fmt(x.cpuB, 0)} (${fmt(x.sysB, 0)})`,
        fmt(x.perCore, 2),
        fmt(x.machine, 0),
      ]);
    }
    const m = get('mvnet');
    const w = get('wg');
    if (m && w) rows.push(['mvnet/wg', setting, '', ratio(m.gbps, w.gbps), '', '', ratio(m.rttMs, w.rttMs), ratio(m.cpuA, w.cpuA), ratio(m.cpuB, w.cpuB), ratio(m.perCore, w.perCore), ratio(m.machine, w.machine)]);
  }
  return table(header, rows);
}

// ---------------------------------------------------------------------------------------------

function parseArgs(argv: string[]): Opts {
  const o: Opts = { settings: ['1420', '65000'], seconds: 5, reps: 3, paths: ['mvnet', 'wg'], nodeArgs: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const v = argv[i + 1];
    if (v === undefined) throw new Error(`${a} needs a value`);
    i++;
    if (a === '--settings') {
      o.settings = v.split(',');
      const bad = o.settings.filter((m) => SETTINGS[m] === undefined);
      if (bad.length > 0) throw new Error(`--settings: some of ${Object.keys(SETTINGS).join(',')}, got ${v}`);
    } else if (a === '--time') o.seconds = Math.max(1, Math.min(60, Number(v) || 5));
    else if (a === '--reps') o.reps = Math.max(1, Math.min(20, Math.floor(Number(v)) || 3));
    else if (a === '--only') {
      o.paths = v.split(',').filter((p): p is PathId => p === 'mvnet' || p === 'wg');
      if (o.paths.length === 0) throw new Error('--only: mvnet and/or wg');
    } else if (a === '--prof') o.profDir = resolve(v);
    else if (a === '--node-args') o.nodeArgs = v.split(/\s+/).filter(Boolean);
    else throw new Error(`unknown argument ${a} (use --settings 1420,65000,1420tso --time N --reps N --only mvnet,wg --prof DIR --node-args 'ARGS')`);
  }
  return o;
}

function preflight(o: Opts): void {
  const problems: string[] = [];
  if (process.getuid?.() !== 0) problems.push('must run as root (namespaces, TAP devices)');
  if (!existsSync('/dev/net/tun')) problems.push('/dev/net/tun is missing');
  const tools = ['iperf3', 'ss', 'ping', ...(o.paths.includes('wg') ? ['wireguard-go', 'wg', 'ethtool'] : [])];
  for (const tool of tools) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) problems.push(`${tool} is not installed (bash scripts/deps.sh)`);
  }
  if (o.paths.includes('mvnet') && !existsSync(CLI)) problems.push(`${CLI} is missing (npx tsc -p tsconfig.build.json)`);
  if (problems.length > 0) throw new Error(`links bench: cannot run:\n  - ${problems.join('\n  - ')}`);
}

function treeState(): string {
  const head = spawnSync('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' });
  const st = spawnSync('git', ['-C', ROOT, 'status', '--porcelain', '--', 'daemon', 'plugins'], { encoding: 'utf8' });
  const dirty = st.status === 0 && st.stdout.trim() !== '' ? ' + uncommitted changes in daemon/ or plugins/' : '';
  return `${head.status === 0 ? head.stdout.trim() : 'unknown'}${dirty}`;
}

function version(pkg: string): string {
  const r = spawnSync('dpkg-query', ['-W', '-f', '${Version}', pkg], { encoding: 'utf8' });
  return r.status === 0 ? `${pkg} ${r.stdout.trim()}` : `${pkg} (version unknown)`;
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  preflight(o);
  if (o.profDir) mkdirSync(o.profDir, { recursive: true });
  const started = new Date();
  const load0 = loadavg();
  const samples: Sample[] = [];
  for (const id of o.settings) samples.push(...(await measureSetting(SETTINGS[id]!, o)));
  const load1 = loadavg();
  const sum = summarize(samples, o);

  console.log(
    `\nmvnet links bench: VM A -> router A -> encrypted UDP over a veth -> router B -> VM B; iperf3 -t ${o.seconds} -O 1, ` +
      `median of ${o.reps} interleaved; mvnet ${treeState()}${o.nodeArgs.length ? ` (daemons: node ${o.nodeArgs.join(' ')})` : ''}; ${version('wireguard-go')}; ${cpuCount()} CPUs (${started.toISOString()})\n`,
  );
  console.log(render(sum, o));
  console.log('\ncpu% A/B = the forwarder of router A/B (mvnet daemon, wireguard-go), all threads, during the iperf3 run; 100% = one core; (sys) = of which in the kernel.');
  console.log('Gbit/s per fwd core = Gbit/s / (cpu% A + cpu% B) / 100: what a byte costs the two forwarders (less moved by other load than Gbit/s).');
  console.log('machine cpu% = every process and the kernel (iperf3 both ends, the VMs\' and routers\' stacks, the forwarders).');
  console.log(`MTU 1420: veth 1500; MTU 65000: veth 65535. Load average (1 min) at start ${load0[0]!.toFixed(2)}, at end ${load1[0]!.toFixed(2)}.`);
  for (const x of sum.filter((y) => y.errors.length > 0)) console.log(`${PATH_LABEL[x.path]} ${x.setting}: ${x.errors.join('; ')}`);

  const outDir = join(ROOT, 'bench', 'out');
  mkdirSync(outDir, { recursive: true });
  const file = join(outDir, `links-${started.toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(
    file,
    JSON.stringify({ started: started.toISOString(), mvnet: treeState(), wireguardGo: version('wireguard-go'), cpus: cpuCount(), loadavg: { start: load0, end: load1 }, options: o, summary: sum, samples }, null, 2) + '\n',
  );
  console.log(`results: ${file}`);
  if (o.profDir) {
    console.log(`\ndaemon CPU profiles (self time, busiest functions first): ${o.profDir}`);
    for (const f of readdirSync(o.profDir).filter((x) => x.startsWith(`links-daemon-${RUN_ID}-`) && x.endsWith('.cpuprofile')).sort()) {
      try {
        console.log(profileTop(join(o.profDir, f)));
      } catch (err) {
        console.log(`${f}: ${(err as Error).message}`);
      }
    }
  }
  if (sum.some((x) => x.errors.length > 0 || x.gbps === undefined)) process.exitCode = 1;
}

main().catch(async (e: unknown) => {
  console.error((e as Error).message);
  await cleanupAll().catch(() => {});
  process.exitCode = 1;
});
