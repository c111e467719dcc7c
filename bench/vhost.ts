/**
 * `npm run bench:vhost`: one QEMU VM's TCP throughput to a TAP VM through mvnet, on a QEMU
 * stream socket (`vm attach --unix`, frames read and written by JavaScript) and on vhost-user
 * (`vm attach --vhost-user`, the guest's rings in memory the daemon maps), in the same run, and
 * what each costs mvnet in CPU (issue 14).
 *
 * Topology (fresh for each MTU; unique names, all removed at the end, on error and on signals):
 *
 *   QEMU VM (root ns, -accel tcg, busybox initramfs of test/support/qemu-vm.ts)
 *     eth0 ── -netdev stream,server=on (unix socket) ── mvnet --unix ──────── net S 10.67.0.0/24
 *     eth1 ── -netdev vhost-user (unix socket, reconnect=1) ── mvnet --vhost-user ── net V 10.68.0.0/24
 *   mvnet daemon (router ns): both networks, --mtu M; their TAP ends in the peer namespace:
 *   peer ns ("the TAP VM"): tap S 10.67.0.200, tap V 10.68.0.200 (static, --ip), a TCP sink
 *
 * The peer's TAPs have virtio-net headers (`--vnet-hdr`, as a VM's or container's TAP with
 * offloads): the vhost-user guest negotiates TSO and checksum offload, and its super-frames
 * reach the TAP whole, natively (cut-through). The stream NIC has no offloads (QEMU's stream
 * netdev carries no virtio-net header). `--plain-tap` attaches the TAPs without the header: the
 * guest's super-frames are then segmented in the daemon first.
 *
 * The same VM has both NICs (one on each network, distinct subnets, so the guest's routing picks
 * the NIC by destination); the VM and its load are the same for both modes. Per MTU, --reps
 * repetitions (default 5), interleaved (the order of the modes rotated each repetition): the
 * guest runs `timeout T nc PEER PORT < /dev/zero` (busybox) to the sink, which counts the bytes
 * from the first to the last; around it the daemon's CPU seconds (utime+stime of all threads,
 * /proc/PID/stat) and QEMU's. Reported per mode: Gbit/s at the sink, mvnet's CPU % during the
 * transfer, mvnet CPU seconds per gigabit, gigabits per mvnet CPU second, and QEMU's CPU %.
 * The goal line: vhost-user's gigabits per mvnet CPU second at least 2x the stream mode's.
 *
 * Under TCG the guest's CPU (one QEMU thread emulating it) bounds the throughput, so the
 * absolute numbers say little; the ratio between the modes and mvnet's CPU per gigabit are
 * what this measures. QEMU blocks at start until a vhost-user back-end answers, so
 * `--only stream` leaves the vhost-user NIC out (a tree without vhost-user runs that half).
 *
 *   node dist/bench/vhost.js [--mtu 1500,65520] [--time 5] [--reps 5 | --quick] [--only stream,vhost] [--plain-tap]
 *                            [--prof DIR]
 *
 * --prof DIR runs the daemon with `node --cpu-prof` (one .cpuprofile per MTU, written when the
 * daemon stops; with both modes in one daemon, run `--only` one of them to see its costs).
 *
 * Needs root, qemu-system-x86_64, the VM assets (scripts/vm-assets.sh) and a built tree
 * (`npx tsc -p tsconfig.build.json`). Every sample also goes to bench/out/vhost-*.json.
 */
import { randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fmtSpread, goalLine, goalMet, interleave, perRunRatios, spread, type Goal, type Spread } from './stats.js';
import { background, cpuSeconds, createNs, fmt, linkExists, nsx, onUndo, run, table, undoAll, undoMark, undoTo, waitFor, type RunResult } from './util.js';
import { cleanupAll, spawnProcess, type ManagedProcess } from '../test/support/netns.js';
import {
  bootVm,
  buildInitramfs,
  memfdMemoryArgs,
  streamNicArgs,
  vhostUserNicArgs,
  vmAssets,
  VmConsole,
  writeTransferProgram,
} from '../test/support/qemu-vm.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url)); // dist/bench/vhost.js → repo root
const CLI = join(ROOT, 'dist', 'cli', 'main.js');

type Mode = 'stream' | 'vhost';
const MODES: Mode[] = ['stream', 'vhost'];
const LABEL: Record<Mode, string> = { stream: 'stream (--unix)', vhost: 'vhost-user' };
const NET: Record<Mode, { name: string; subnet: string; peerIp: string; tap: string }> = {
  stream: { name: 'bs', subnet: '10.67.0.0/24', peerIp: '10.67.0.200', tap: 'tbs' },
  vhost: { name: 'bv', subnet: '10.68.0.0/24', peerIp: '10.68.0.200', tap: 'tbv' },
};
const SINK_PORT = 5300;
const BOOT_MS = 180_000;
/** The goal (issue 14): vhost-user's throughput per mvnet CPU second over the stream mode's. */
const GOAL = 2.0;

interface Opts {
  mtus: number[];
  seconds: number;
  reps: number;
  modes: Mode[];
  /** The peer's TAPs without --vnet-hdr (super-frames from the guest are segmented first). */
  plainTap: boolean;
  /** The daemon runs with `node --cpu-prof` into this directory (one profile per MTU). */
  profDir?: string;
}

interface Sample {
  mode: Mode;
  mtu: number;
  rep: number;
  gbps?: number;
  bytes?: number;
  /** mvnet daemon CPU seconds during the transfer, and as % of the wall time (100% = a core). */
  mvnetCpu?: number;
  mvnetPct?: number;
  /** mvnet CPU seconds per gigabit moved, and gigabits per mvnet CPU second. */
  cpuPerGbit?: number;
  gbitPerCpu?: number;
  qemuPct?: number;
  errors: string[];
}

interface Summary {
  mode: Mode;
  mtu: number;
  gbps?: Spread;
  mvnetPct?: Spread;
  cpuPerGbit?: Spread;
  gbitPerCpu?: Spread;
  qemuPct?: Spread;
  errors: string[];
}

interface Env {
  id: string;
  r: string;
  peer: string;
  work: string;
  daemonPid?: number;
  qemu?: ManagedProcess;
  vm?: VmConsole;
  sink?: ManagedProcess;
  /** The guest's interface per mode. */
  ifname: Partial<Record<Mode, string>>;
}

// ---------------------------------------------------------------------------------------------
// Setup

async function setup(e: Env, mtu: number, o: Opts): Promise<void> {
  await createNs(e.r);
  await createNs(e.peer);
  const stateDir = join(e.work, `state-${e.id}`);
  mkdirSync(stateDir);
  const socket = join(stateDir, 'mvnet.sock');
  const node = o.profDir ? ['node', '--cpu-prof', '--cpu-prof-dir', o.profDir, '--cpu-prof-name', `vhost-daemon-mtu${mtu}-${e.id}.cpuprofile`] : ['node'];
  const daemon = background(nsx(e.r, [...node, CLI, 'daemon', '--state-dir', stateDir, '--socket', socket]), 'mvnet daemon');
  await daemon.waitLine((l) => l.includes('"msg":"ready"'), 20_000);
  e.daemonPid = daemon.child.pid;
  const cli = (args: string[]): Promise<RunResult> => run(['node', CLI, '--socket', socket, ...args]);

  const macs: Record<Mode, string> = { stream: mac(), vhost: mac() };
  const nicArgs: string[] = [];
  for (const [i, m] of o.modes.entries()) {
    const n = NET[m];
    await cli(['net', 'create', n.name, '--subnet', n.subnet, '--mtu', String(mtu)]);
    await cli(['vm', 'attach', `peer-${m}`, '--net', n.name, '--tap', n.tap, '--netns', e.peer, '--ip', n.peerIp, ...(o.plainTap ? [] : ['--vnet-hdr'])]);
    await waitFor(() => linkExists(e.peer, n.tap), `${n.tap} in ${e.peer}`, 30_000);
    await run(nsx(e.peer, ['ip', 'link', 'set', 'dev', n.tap, 'mtu', String(mtu)]));
    await run(nsx(e.peer, ['ip', 'addr', 'add', `${n.peerIp}/24`, 'dev', n.tap]));
    await run(nsx(e.peer, ['ip', 'link', 'set', 'dev', n.tap, 'up']));
    const path = join(e.work, `${e.id}-${m}.sock`);
    if (m === 'stream') {
      // QEMU listens (server=on), mvnet connects and retries until it does.
      await cli(['vm', 'attach', 'vm-stream', '--net', n.name, '--unix', path, '--mac', macs.stream]);
      nicArgs.push(...streamNicArgs(String(i), path, macs.stream));
    } else {
      // mvnet listens; QEMU (the client) blocks at start until it answers.
      await cli(['vm', 'attach', 'vm-vhost', '--net', n.name, '--vhost-user', path, '--mac', macs.vhost]);
      nicArgs.push(...vhostUserNicArgs(String(i), path, macs.vhost));
    }
    e.ifname[m] = `eth${i}`;
  }

  const transfer = writeTransferProgram(e.work);
  e.sink = spawnProcess(['node', transfer, 'sink', String(SINK_PORT)], { netns: e.peer, label: 'tcp sink' });
  await e.sink.waitForLine((l) => l === 'listening', { timeoutMs: 20_000 });

  const assets = vmAssets();
  const initrd = buildInitramfs(e.work, assets, [], { interactive: true, interfaces: o.modes.map((m) => e.ifname[m]!) });
  const memory = o.modes.includes('vhost') ? memfdMemoryArgs() : [];
  e.qemu = bootVm(assets, initrd, [...memory, ...nicArgs], `qemu (${o.modes.join('+')})`, undefined, { stdin: true });
  e.vm = new VmConsole(e.qemu);
  await e.vm.ready(BOOT_MS);
  for (const m of o.modes) {
    const ifc = e.ifname[m]!;
    const leased = e.qemu.lines.some((l) => l.includes(`iface=${ifc}`));
    if (!leased) throw new Error(`${LABEL[m]}: the VM's ${ifc} got no DHCP lease`);
    const r = await e.vm.run('mtu', `ip link set ${ifc} mtu ${mtu} && ping -c 1 -W 10 ${NET[m].peerIp}`);
    if (r.rc !== 0) throw new Error(`${LABEL[m]}: the VM cannot reach the peer: ${r.out.trim().split('\n').pop() ?? ''}`);
  }
}

function mac(): string {
  return `52:54:00:${randomBytes(3).toString('hex').match(/../g)!.join(':')}`;
}

// ---------------------------------------------------------------------------------------------
// Measurement

async function sampleOnce(e: Env, mode: Mode, mtu: number, rep: number, o: Opts): Promise<Sample> {
  const s: Sample = { mode, mtu, rep, errors: [] };
  try {
    const sink = e.sink!;
    const from = sink.lines.length;
    const qemuPid = e.qemu!.pid;
    const c0 = cpuSeconds(e.daemonPid);
    const q0 = cpuSeconds(qemuPid);
    const t0 = performance.now();
    // busybox timeout: SIGTERM after T s; nc's socket closes with a FIN, the sink sees its end.
    const r = await e.vm!.run('send', `timeout ${o.seconds} nc ${NET[mode].peerIp} ${SINK_PORT} < /dev/zero; true`, (o.seconds + 60) * 1000);
    const line = await sink.waitForLine((l) => l.startsWith('{'), { timeoutMs: 30_000, fromIndex: from });
    const wall = (performance.now() - t0) / 1000;
    const c1 = cpuSeconds(e.daemonPid);
    const q1 = cpuSeconds(qemuPid);
    const j = JSON.parse(line) as { bytes: number; ms: number };
    if (r.rc !== 0) s.errors.push(`guest: exit ${r.rc}: ${r.out.trim().slice(-200)}`);
    if (!(j.bytes > 0 && j.ms > 0)) throw new Error(`the sink got ${j.bytes} bytes`);
    s.bytes = j.bytes;
    s.gbps = (j.bytes * 8) / (j.ms / 1000) / 1e9;
    if (c0 !== undefined && c1 !== undefined) {
      s.mvnetCpu = c1 - c0;
      s.mvnetPct = (s.mvnetCpu / wall) * 100;
      const gbit = (j.bytes * 8) / 1e9;
      s.cpuPerGbit = s.mvnetCpu / gbit;
      // No CPU tick at all (100 Hz clock) would make this infinite: count at least one tick.
      s.gbitPerCpu = gbit / Math.max(s.mvnetCpu, 0.01);
    }
    if (q0 !== undefined && q1 !== undefined) s.qemuPct = ((q1 - q0) / wall) * 100;
  } catch (err) {
    s.errors.push((err as Error).message.split('\n')[0]!);
  }
  return s;
}

async function measureMtu(mtu: number, o: Opts, work: string): Promise<Sample[]> {
  const id = randomBytes(3).toString('hex');
  const e: Env = { id, r: `mvq-${id}-r`, peer: `mvq-${id}-peer`, work, ifname: {} };
  const mark = undoMark();
  const samples: Sample[] = [];
  try {
    await setup(e, mtu, o);
    for (let rep = 1; rep <= o.reps; rep++) {
      for (const m of interleave(o.modes, rep)) {
        process.stderr.write(`vhost: MTU ${mtu} ${LABEL[m]} rep ${rep}/${o.reps} ... `);
        const s = await sampleOnce(e, m, mtu, rep, o);
        samples.push(s);
        process.stderr.write(
          `${fmt(s.gbps, 3)} Gbit/s  mvnet cpu ${fmt(s.mvnetPct, 0)}%  ${fmt(s.cpuPerGbit, 2)} cpu-s/Gbit  qemu ${fmt(s.qemuPct, 0)}%` +
            (s.errors.length ? `  errors: ${s.errors.join('; ')}` : '') +
            '\n',
        );
      }
    }
  } catch (err) {
    const msg = `setup: ${(err as Error).message.split('\n')[0]}`;
    process.stderr.write(`vhost: MTU ${mtu}: ${(err as Error).message}\n`);
    if (e.qemu) process.stderr.write(`${e.qemu.tail(15)}\n`);
    for (const m of o.modes) samples.push({ mode: m, mtu, rep: 0, errors: [msg] });
  } finally {
    await e.qemu?.stop();
    await cleanupAll().catch(() => {});
    await undoTo(mark);
  }
  return samples;
}

// ---------------------------------------------------------------------------------------------
// Output

function summarize(samples: Sample[], o: Opts): Summary[] {
  const out: Summary[] = [];
  for (const mtu of o.mtus) {
    for (const mode of o.modes) {
      const ss = samples.filter((s) => s.mtu === mtu && s.mode === mode);
      const sp = (f: (s: Sample) => number | undefined): Spread | undefined => spread(ss.map(f));
      out.push({
        mode,
        mtu,
        gbps: sp((s) => s.gbps),
        mvnetPct: sp((s) => s.mvnetPct),
        cpuPerGbit: sp((s) => s.cpuPerGbit),
        gbitPerCpu: sp((s) => s.gbitPerCpu),
        qemuPct: sp((s) => s.qemuPct),
        errors: ss.flatMap((s) => s.errors),
      });
    }
  }
  return out;
}

function goals(sum: Summary[], samples: Sample[], o: Opts): Goal[] {
  if (!o.modes.includes('stream') || !o.modes.includes('vhost')) return [];
  return o.mtus.map((mtu) => {
    const get = (m: Mode): Summary | undefined => sum.find((s) => s.mtu === mtu && s.mode === m);
    const v = get('vhost')?.gbitPerCpu?.median;
    const st = get('stream')?.gbitPerCpu?.median;
    const runs = (m: Mode): { rep: number; value: number | undefined }[] => samples.filter((s) => s.mtu === mtu && s.mode === m && s.rep > 0).map((s) => ({ rep: s.rep, value: s.gbitPerCpu }));
    const perRun = perRunRatios(runs('vhost'), runs('stream'));
    return {
      cell: `MTU ${mtu} throughput per mvnet CPU second`,
      ratio: v !== undefined && st !== undefined && st > 0 ? v / st : undefined,
      target: GOAL,
      against: `the stream mode, ${fmt(st, 2)} Gbit per CPU-s`,
      ...(perRun ? { perRun } : {}),
    };
  });
}

function render(sum: Summary[], o: Opts): string {
  const header = ['mode', 'MTU', 'Gbit/s', 'mvnet cpu%', 'mvnet cpu-s/Gbit', 'Gbit/mvnet cpu-s', 'qemu cpu%'];
  const rows: string[][] = [];
  for (const mtu of o.mtus) {
    for (const m of o.modes) {
      const s = sum.find((x) => x.mtu === mtu && x.mode === m);
      if (!s) continue;
      rows.push([LABEL[m], String(mtu), fmtSpread(s.gbps, 3), fmt(s.mvnetPct?.median, 0), fmtSpread(s.cpuPerGbit, 2), fmtSpread(s.gbitPerCpu, 2), fmt(s.qemuPct?.median, 0)]);
    }
    const v = sum.find((x) => x.mtu === mtu && x.mode === 'vhost');
    const st = sum.find((x) => x.mtu === mtu && x.mode === 'stream');
    if (v && st) {
      const r = (a: number | undefined, b: number | undefined): string => (a !== undefined && b !== undefined && b > 0 ? `${(a / b).toFixed(2)}x` : '-');
      rows.push(['vhost / stream', String(mtu), r(v.gbps?.median, st.gbps?.median), r(v.mvnetPct?.median, st.mvnetPct?.median), r(v.cpuPerGbit?.median, st.cpuPerGbit?.median), r(v.gbitPerCpu?.median, st.gbitPerCpu?.median), '']);
    }
  }
  return table(header, rows);
}

// ---------------------------------------------------------------------------------------------

function parseArgs(argv: string[]): Opts {
  const o: Opts = { mtus: [1500, 65520], seconds: 5, reps: 5, modes: [...MODES], plainTap: false };
  const usage = 'use --mtu 1500,65520 --time N --reps N --quick --only stream,vhost --plain-tap --prof DIR';
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--quick') {
      o.reps = 1;
      continue;
    }
    if (a === '--plain-tap') {
      o.plainTap = true;
      continue;
    }
    if (!['--mtu', '--time', '--reps', '--only', '--prof'].includes(a)) throw new Error(`unknown argument ${a} (${usage})`);
    const v = argv[i + 1];
    if (v === undefined) throw new Error(`${a} needs a value (${usage})`);
    i++;
    if (a === '--mtu') {
      o.mtus = v.split(',').map(Number);
      if (o.mtus.some((m) => !Number.isInteger(m) || m < 576 || m > 65520)) throw new Error(`--mtu: 576..65520, got ${v}`);
    } else if (a === '--time') o.seconds = Math.max(1, Math.min(60, Math.floor(Number(v)) || 5));
    else if (a === '--reps') o.reps = Math.max(1, Math.min(20, Math.floor(Number(v)) || 5));
    else if (a === '--prof') o.profDir = resolve(v);
    else if (a === '--only') {
      const want = v.split(',');
      o.modes = MODES.filter((m) => want.includes(m));
      if (o.modes.length === 0 || want.some((w) => !(MODES as string[]).includes(w))) throw new Error(`--only: any of ${MODES.join(',')}, got ${v}`);
    }
  }
  return o;
}

function preflight(): void {
  const problems: string[] = [];
  if (process.getuid?.() !== 0) problems.push('must run as root (namespaces, TAP devices)');
  if (!existsSync('/dev/net/tun')) problems.push('/dev/net/tun is missing');
  if (!existsSync('/usr/bin/qemu-system-x86_64')) problems.push('qemu-system-x86_64 is not installed (bash scripts/deps.sh)');
  if (!existsSync(CLI)) problems.push(`${CLI} is missing (npx tsc -p tsconfig.build.json)`);
  if (problems.length > 0) throw new Error(`vhost bench: cannot run:\n  - ${problems.join('\n  - ')}`);
}

function commit(): string {
  const head = spawnSync('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' });
  return head.status === 0 ? head.stdout.trim() : 'unknown';
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  preflight();
  if (o.profDir) mkdirSync(o.profDir, { recursive: true });
  const work = mkdtempSync(join(tmpdir(), 'mvq-'));
  onUndo(
    async () => rmSync(work, { recursive: true, force: true }),
    () => rmSync(work, { recursive: true, force: true }),
  );
  const started = new Date();
  const load0 = loadavg();
  const samples: Sample[] = [];
  for (const mtu of o.mtus) samples.push(...(await measureMtu(mtu, o, work)));
  const sum = summarize(samples, o);
  const goalList = goals(sum, samples, o);
  const load1 = loadavg();
  const minutes = (Date.now() - started.getTime()) / 60_000;

  console.log(
    `\nmvnet vhost bench: QEMU VM (tcg) -> mvnet -> TAP VM, TCP (busybox nc from /dev/zero, ${o.seconds} s); ` +
      `${o.reps > 1 ? `medians (min–max) of ${o.reps} interleaved runs` : 'one run (--quick): no spread, read with care'}; ` +
      `peer TAPs ${o.plainTap ? 'without' : 'with'} --vnet-hdr; commit ${commit()} (${started.toISOString()}; ${minutes.toFixed(1)} min)\n`,
  );
  console.log(render(sum, o));
  console.log('\nmvnet cpu = the daemon process (all threads) during the transfer; 100% = one core. Under TCG the guest (qemu cpu%) bounds the throughput:');
  console.log('compare the modes by mvnet CPU per gigabit, not by Gbit/s.');
  console.log(`load average (1 min) at start ${load0[0]!.toFixed(2)}, at end ${load1[0]!.toFixed(2)}: other work on this machine skews every mode.`);
  for (const s of sum.filter((x) => x.errors.length > 0)) console.log(`${LABEL[s.mode]} MTU ${s.mtu}: ${s.errors.join('; ')}`);
  if (goalList.length > 0) {
    console.log(`\n${goalList.map(goalLine).join('\n')}`);
    console.log(`goals met: ${goalList.filter((g) => goalMet(g) === true).length} of ${goalList.length}`);
  }

  const outDir = join(ROOT, 'bench', 'out');
  mkdirSync(outDir, { recursive: true });
  const file = join(outDir, `vhost-${started.toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(file, JSON.stringify({ started: started.toISOString(), minutes, commit: commit(), loadavg: { start: load0, end: load1 }, options: o, summary: sum, goals: goalList.map((g) => ({ ...g, met: goalMet(g) })), samples }, null, 2) + '\n');
  console.log(`results: ${file}`);
  await undoAll();
  if (sum.some((s) => s.errors.length > 0 || s.gbps === undefined)) process.exitCode = 1;
}

main().catch(async (e: unknown) => {
  console.error((e as Error).message);
  await cleanupAll().catch(() => {});
  await undoAll();
  process.exitCode = 1;
});
