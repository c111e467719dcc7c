/**
 * `node dist/bench/scale.js`: one daemon with many VMs and many idle TCP streams.
 *
 *   node dist/bench/scale.js [--vms 1000] [--taps 200] [--tap-ns 20] [--streams 10000]
 *                            [--clients 20] [--idle 10] [--status-runs 10] [--attach many,rpc]
 *                            [--settle 2] [--prof DIR] [--tree DIR]
 *
 * Topology (unique names; every namespace, TAP and process is removed at the end, on error and
 * on signals through bench/util.ts's teardown registry):
 *
 *   upstream ns  UP_IP (10.89.0.1)  a server that accepts and holds connections (this file, --role hold)
 *        | veth
 *   router ns    R_IP (10.89.0.2), default via UP_IP; the mvnet daemon, fd limit raised;
 *                network "scale" 10.70.0.0/16
 *          - --vms VMs on unix datagram sockets (nothing behind them: idle VMs);
 *          - --taps TAPs moved into --tap-ns namespaces (round robin); in each of the first
 *            --clients namespaces the first TAP has 10.70.1.K/16, default via 10.70.0.1, route
 *            --direct, and a client (this file, --role client) opens streams/clients connections
 *            to the upstream server and holds them open.
 *
 * Figures (goals from issue 13 in brackets):
 *   - attach time of the --vms datagram VMs over ONE control connection [< 30 s for 1,000]:
 *     `many` = vm.attachMany (one call, one state write), `rpc` = vm.attach pipelined
 *     (window 32, one state write each); every mode in --attach is run, in order, detaching
 *     everything in between (the last mode's VMs stay for the rest of the bench);
 *   - daemon RSS per idle VM [<= 100 KB]: (RSS with the VMs - RSS before) / --vms;
 *   - daemon CPU while idle over --idle s, everything attached, nothing sent (and again with the
 *     streams open);
 *   - `mvnet status` latency with everything attached: median of --status-runs CLI runs (wall,
 *     process start included) [< 200 ms], and of daemon.status over an open connection;
 *   - daemon RSS per idle stream [<= 32 KB]: (RSS with the streams - RSS before) / --streams;
 *   - the daemon's fds after every stream is closed and every VM detached, against before the
 *     first attach [0 leaked].
 * RSS is read from /proc after a settle (--settle s). Results go to bench/out/scale-*.json.
 * --prof DIR runs the daemon with `node --cpu-prof` (the profile is written when it stops).
 * --tree DIR runs DIR's daemon and CLI (DIR/dist/cli/main.js, a built tree) with this bench: for
 * A/B runs against another build.
 * Needs root, `ip`, and a built tree (`npm run build:ts`).
 */
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { background, cpuSeconds, createNs, fmt, median, nsx, onUndo, run, table, undoAll, waitFor } from './util.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url)); // dist/bench/scale.js → repo root
/** The daemon and CLI under test: this tree's, or --tree DIR's (an A/B against another build). */
let CLI = join(ROOT, 'dist', 'cli', 'main.js');
const SELF = fileURLToPath(import.meta.url);

const UP_IP = '10.89.0.1';
const R_IP = '10.89.0.2';
const SUBNET = '10.70.0.0/16';
const GW_IP = '10.70.0.1';
const HOLD_PORT = 7100;
/** The fd limit for the daemon, server and clients: the hard limit (raising it needs CAP_SYS_RESOURCE). */
const NOFILE = hardNofile();

function hardNofile(): number {
  const m = /^Max open files\s+\S+\s+(\S+)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
  return m === null || m[1] === 'unlimited' ? 1 << 20 : Number(m[1]);
}
const CLIENT_SYSCTLS = ['net.ipv4.ip_local_port_range=1024 65535'];
/** Requests in flight on the one control connection (the server closes a client with more than 64 pending). */
const WINDOW = 32;

type AttachMode = 'many' | 'rpc';

interface Opts {
  vms: number;
  taps: number;
  tapNs: number;
  streams: number;
  clients: number;
  idleSec: number;
  statusRuns: number;
  settleSec: number;
  attach: AttachMode[];
  profDir?: string;
}

// ---------------------------------------------------------------------------------------------
// Helper roles (run inside the bench's namespaces)

/** Accepts and holds connections; ends its side when the client ends. Prints "listening". */
function holdServer(host: string, port: number): void {
  let open = 0;
  const srv = net.createServer((s) => {
    open++;
    s.on('end', () => s.end());
    s.on('error', () => s.destroy());
    s.on('close', () => open--);
  });
  srv.listen({ host, port, backlog: 65535 }, () => console.log('listening'));
  process.stdin.resume();
  process.stdin.on('data', () => console.log(`open ${open}`));
  for (const sig of ['SIGTERM', 'SIGINT'] as const) process.once(sig, () => process.exit(0));
}

/**
 * Opens `n` connections (at most 64 connecting at once), prints "open N" once all are
 * established, holds them; on SIGTERM ends them all and prints "closed N" when all are closed.
 */
function holdClient(host: string, port: number, n: number): void {
  const socks = new Set<net.Socket>();
  let started = 0;
  let established = 0;
  let failed = 0;
  let stopping = false;
  const next = (): void => {
    if (stopping || started >= n) return;
    started++;
    const s = net.connect({ host, port });
    socks.add(s);
    s.once('connect', () => {
      established++;
      if (established + failed === n) console.log(`open ${established} failed ${failed}`);
      next();
    });
    s.on('error', () => {
      failed++;
      s.destroy();
      if (established + failed === n) console.log(`open ${established} failed ${failed}`);
      next();
    });
    s.on('close', () => {
      socks.delete(s);
      if (stopping && socks.size === 0) {
        console.log('closed');
        process.exit(0);
      }
    });
  };
  // Alive until SIGTERM even with nothing open.
  setInterval(() => {}, 1 << 30);
  if (n === 0) console.log('open 0 failed 0');
  for (let i = 0; i < Math.min(64, n); i++) next();
  process.once('SIGTERM', () => {
    stopping = true;
    if (socks.size === 0) {
      console.log('closed');
      process.exit(0);
    }
    for (const s of socks) s.end();
  });
}

// ---------------------------------------------------------------------------------------------
// Control connection: JSON-RPC lines, pipelined

class Rpc {
  private buf = '';
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();

  private constructor(private readonly sock: net.Socket) {
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => {
      this.buf += d;
      let i: number;
      while ((i = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, i);
        this.buf = this.buf.slice(i + 1);
        const r = JSON.parse(line) as { id: number; result?: unknown; error?: { message: string } };
        const w = this.waiting.get(r.id);
        if (w === undefined) continue;
        this.waiting.delete(r.id);
        if (r.error !== undefined) w.reject(new Error(r.error.message));
        else w.resolve(r.result);
      }
    });
    const fail = (): void => {
      for (const w of this.waiting.values()) w.reject(new Error('control connection closed'));
      this.waiting.clear();
    };
    sock.on('close', fail);
    sock.on('error', fail);
  }

  static connect(path: string): Promise<Rpc> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ path });
      s.once('error', reject);
      s.once('connect', () => {
        s.off('error', reject);
        resolve(new Rpc(s));
      });
    });
  }

  call<T>(method: string, params: unknown): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.waiting.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.sock.write(JSON.stringify({ jsonrpc: '2.0', id, method, params }) + '\n');
    });
  }

  /** `calls` pipelined with at most WINDOW in flight; results in order. */
  async pipeline<T>(method: string, params: unknown[]): Promise<T[]> {
    const out: T[] = new Array<T>(params.length);
    let next = 0;
    const lane = async (): Promise<void> => {
      while (next < params.length) {
        const i = next++;
        out[i] = await this.call<T>(method, params[i]);
      }
    };
    await Promise.all(Array.from({ length: Math.min(WINDOW, params.length) }, lane));
    return out;
  }

  close(): void {
    this.sock.destroy();
  }
}

// ---------------------------------------------------------------------------------------------
// /proc readings

function rssKb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (m === null) throw new Error(`no VmRSS for ${pid}`);
  return Number(m[1]);
}

/** The process's open fds, each as its target (socket:[…], anon_inode:[eventpoll], a path). */
function fds(pid: number): string[] {
  const dir = `/proc/${pid}/fd`;
  const out: string[] = [];
  for (const f of readdirSync(dir)) {
    try {
      out.push(readlinkSync(join(dir, f)));
    } catch {
      // closed meanwhile
    }
  }
  return out;
}

/** What `after` has more of than `before`, by kind (socket, anon_inode:[eventfd], /dev/net/tun…). */
function fdDiff(before: string[], after: string[]): Record<string, number> {
  const kind = (t: string): string => t.replace(/:\[\d+\]$/, '');
  const count = (xs: string[]): Map<string, number> => {
    const m = new Map<string, number>();
    for (const x of xs) m.set(kind(x), (m.get(kind(x)) ?? 0) + 1);
    return m;
  };
  const a = count(before);
  const b = count(after);
  const d: Record<string, number> = {};
  for (const k of new Set([...a.keys(), ...b.keys()])) {
    const n = (b.get(k) ?? 0) - (a.get(k) ?? 0);
    if (n !== 0) d[k] = n;
  }
  return d;
}

/** Leaked sockets as `ss` in the daemon's namespace shows them (matched by inode), other fds as their target. */
async function describeFds(ns: string, targets: string[]): Promise<string[]> {
  const ss = (await run(nsx(ns, ['ss', '-a', '-e', '-n', '-p', '-A', 'all']), { check: false })).stdout.split('\n');
  return targets.map((t) => {
    const ino = /^socket:\[(\d+)\]$/.exec(t)?.[1];
    const line = ino !== undefined ? ss.find((l) => new RegExp(`\\bino:${ino}\\b`).test(l)) : undefined;
    return line !== undefined ? `${t}: ${line.replace(/\s+/g, ' ').trim()}` : t;
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// The bench

interface VmView {
  name: string;
  port: { state: string };
  flows: { tcp: number; udp: number } | null;
}

async function attachDgram(rpc: Rpc, mode: AttachMode, names: string[], sockDir: string): Promise<number> {
  const specs = names.map((name) => ({ name, net: 'scale', port: { kind: 'dgram', path: join(sockDir, `${name}.sock`) } }));
  const t0 = performance.now();
  if (mode === 'many') {
    const r = await rpc.call<{ attached: unknown[]; failed: { name: string; error: string }[] }>('vm.attachMany', { vms: specs });
    if (r.failed.length > 0) throw new Error(`vm.attachMany: ${r.failed.length} failed, first: ${r.failed[0]!.name}: ${r.failed[0]!.error}`);
  } else {
    await rpc.pipeline('vm.attach', specs);
  }
  return (performance.now() - t0) / 1000;
}

async function detachAll(rpc: Rpc, names: string[]): Promise<number> {
  const t0 = performance.now();
  await rpc.pipeline('vm.detach', names.map((name) => ({ name })));
  return (performance.now() - t0) / 1000;
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  if (process.getuid?.() !== 0) throw new Error('needs root (namespaces, TAPs)');
  const id = randomBytes(3).toString('hex');
  const work = mkdtempSync(join(tmpdir(), 'mvnet-scale-'));
  onUndo(
    async () => rmSync(work, { recursive: true, force: true }),
    () => rmSync(work, { recursive: true, force: true }),
  );
  const load: number[][] = [loadavg()];
  const up = `mvsc${id}u`;
  const r = `mvsc${id}r`;
  console.log(`scale bench ${id}: ${o.vms} datagram VMs, ${o.taps} TAPs in ${o.tapNs} namespaces, ${o.streams} streams from ${o.clients} clients; load ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);

  // Upstream and router namespaces, the hold server, the daemon.
  await createNs(up);
  await createNs(r, CLIENT_SYSCTLS);
  const vr = `mvsc${id}r`;
  const vu = `mvsc${id}u`;
  await run(['ip', 'link', 'add', vr, 'netns', r, 'type', 'veth', 'peer', 'name', vu, 'netns', up]);
  await run(nsx(up, ['ip', 'addr', 'add', `${UP_IP}/24`, 'dev', vu]));
  await run(nsx(up, ['ip', 'link', 'set', 'dev', vu, 'up']));
  await run(nsx(r, ['ip', 'addr', 'add', `${R_IP}/24`, 'dev', vr]));
  await run(nsx(r, ['ip', 'link', 'set', 'dev', vr, 'up']));
  await run(nsx(r, ['ip', 'route', 'add', 'default', 'via', UP_IP]));
  const hold = background(nsx(up, ['prlimit', `--nofile=${NOFILE}`, 'node', SELF, '--role', 'hold', UP_IP, String(HOLD_PORT)]), 'hold server');
  await hold.waitLine((l) => l === 'listening', 15_000);

  const stateDir = join(work, 'state');
  const sockDir = join(work, 'vms');
  mkdirSync(stateDir);
  mkdirSync(sockDir);
  const socket = join(stateDir, 'mvnet.sock');
  const node = o.profDir !== undefined ? ['node', '--cpu-prof', '--cpu-prof-dir', o.profDir, '--cpu-prof-name', `mvnet-daemon-scale-${id}.cpuprofile`] : ['node'];
  const daemon = background(nsx(r, ['prlimit', `--nofile=${NOFILE}`, ...node, CLI, 'daemon', '--state-dir', stateDir, '--socket', socket]), 'mvnet daemon');
  await daemon.waitLine((l) => l.includes('"msg":"ready"'), 30_000);
  const pid = daemon.child.pid!;
  // prlimit execs node: the daemon is the process we started.
  const rpc = await Rpc.connect(socket);
  onUndo(
    async () => rpc.close(),
    () => rpc.close(),
  );
  await rpc.call('net.create', { name: 'scale', subnet: SUBNET, mtu: 1500 });
  const tapNs = Array.from({ length: o.tapNs }, (_, i) => `mvsc${id}t${i}`);
  const t0ns = performance.now();
  for (const ns of tapNs) await createNs(ns, CLIENT_SYSCTLS);
  const nsSec = (performance.now() - t0ns) / 1000;

  // Warm-up: one TAP VM with one stream, closed and detached, so what the daemon opens once for
  // the whole process (the netlink watch of the host's addresses at the first egress decision)
  // is open before the baseline and not counted as a leak.
  const fdsStart = fds(pid);
  if (o.streams > 0) {
    const ns = tapNs[0]!;
    const ifname = `mvsc${id}w`;
    await rpc.call('vm.attach', { name: 'warm', net: 'scale', port: { kind: 'tap', ifname, netns: `/run/netns/${ns}` } });
    await rpc.call('route.set', { vm: 'warm', route: { kind: 'direct' } });
    await run(nsx(ns, ['ip', 'addr', 'add', '10.70.0.250/16', 'dev', ifname]));
    await run(nsx(ns, ['ip', 'link', 'set', 'dev', ifname, 'up']));
    await run(nsx(ns, ['ip', 'route', 'add', 'default', 'via', GW_IP]));
    const c = background(nsx(ns, ['node', SELF, '--role', 'client', UP_IP, String(HOLD_PORT), '1']), 'warm-up client');
    const l = await c.waitLine((x) => x.startsWith('open '), 60_000);
    if (!l.startsWith('open 1 ')) throw new Error(`warm-up stream: ${l}`);
    c.child.kill('SIGTERM');
    await c.waitLine((x) => x === 'closed', 60_000);
    await c.stop();
    await waitFor(async () => (await rpc.call<VmView[]>('vm.list', {})).every((v) => (v.flows?.tcp ?? 0) === 0), 'the warm-up stream to close', 60_000);
    await rpc.call('vm.detach', { name: 'warm' });
    await rpc.call('route.clear', { vm: 'warm' });
  }
  await sleep(o.settleSec * 1000);
  const fds0 = fds(pid);
  const warmupFds = fdDiff(fdsStart, fds0);
  const rss0 = rssKb(pid);

  // Datagram VMs: each attach mode in turn.
  const names = Array.from({ length: o.vms }, (_, i) => `d${i}`);
  // RSS per VM from the first attach: a detach and re-attach leaves the heap larger than one attach does.
  const attach: Record<string, { attachSec: number; detachSec?: number; rssKb: number }> = {};
  let rss1 = 0;
  for (let m = 0; m < o.attach.length; m++) {
    const mode = o.attach[m]!;
    const attachSec = await attachDgram(rpc, mode, names, sockDir);
    await sleep(o.settleSec * 1000);
    attach[mode] = { attachSec, rssKb: rssKb(pid) };
    if (m === 0) rss1 = attach[mode]!.rssKb;
    console.log(`attach ${o.vms} datagram VMs (${mode}): ${attachSec.toFixed(2)} s; RSS ${attach[mode]!.rssKb} kB`);
    if (m < o.attach.length - 1) {
      attach[mode]!.detachSec = await detachAll(rpc, names);
      console.log(`  detach them: ${attach[mode]!.detachSec!.toFixed(2)} s`);
    }
  }
  const perVmKb = (rss1 - rss0) / Math.max(1, o.vms);
  console.log(`RSS ${rss0} kB → ${rss1} kB (first attach): ${perVmKb.toFixed(1)} kB per idle datagram VM`);

  // TAPs in namespaces (made before the warm-up); the first TAP of each of the first --clients namespaces carries streams.
  const taps = Array.from({ length: o.taps }, (_, i) => ({ name: `t${i}`, ifname: `mvsc${id}t${i}`, ns: tapNs[i % o.tapNs]! }));
  const tTap = performance.now();
  if (o.taps > 0) {
    const specs = taps.map((t) => ({ name: t.name, net: 'scale', port: { kind: 'tap', ifname: t.ifname, netns: `/run/netns/${t.ns}` } }));
    if (o.attach.at(-1) === 'many') {
      const res = await rpc.call<{ failed: { name: string; error: string }[] }>('vm.attachMany', { vms: specs });
      if (res.failed.length > 0) throw new Error(`TAP attach: ${res.failed.length} failed, first: ${res.failed[0]!.name}: ${res.failed[0]!.error}`);
    } else {
      await rpc.pipeline('vm.attach', specs);
    }
  }
  const tapSec = (performance.now() - tTap) / 1000;
  console.log(`${o.tapNs} namespaces: ${nsSec.toFixed(2)} s; attach ${o.taps} TAPs into them: ${tapSec.toFixed(2)} s`);
  const streamVms = taps.slice(0, Math.min(o.clients, o.tapNs, o.taps));
  await rpc.pipeline('route.set', streamVms.map((t) => ({ vm: t.name, route: { kind: 'direct' } })));
  for (let i = 0; i < taps.length; i++) {
    const t = taps[i]!;
    const cmds: string[][] = [];
    if (i < streamVms.length) {
      cmds.push(['ip', 'addr', 'add', `10.70.1.${i + 2}/16`, 'dev', t.ifname]);
      cmds.push(['ip', 'link', 'set', 'dev', t.ifname, 'up']);
      cmds.push(['ip', 'route', 'add', 'default', 'via', GW_IP]);
    } else {
      cmds.push(['ip', 'link', 'set', 'dev', t.ifname, 'up']);
    }
    for (const c of cmds) await run(nsx(t.ns, c));
  }

  // Idle: everything attached, nothing sent.
  await sleep(o.settleSec * 1000);
  const idleCpu = await cpuOver(pid, o.idleSec);
  console.log(`idle CPU with ${o.vms + o.taps} VMs: ${idleCpu.toFixed(2)}% of a core over ${o.idleSec} s`);

  // Status latency.
  // `mvnet --version` interleaved: the CLI's own start, so the status figure splits into start and the rest.
  const cliMs: number[] = [];
  const versionMs: number[] = [];
  const rpcMs: number[] = [];
  let statusBytes = 0;
  for (let i = 0; i < o.statusRuns; i++) {
    const tv = performance.now();
    await run(['node', CLI, '--version']);
    versionMs.push(performance.now() - tv);
    const t0 = performance.now();
    const s = await run(['node', CLI, '--socket', socket, 'status']);
    cliMs.push(performance.now() - t0);
    if (i === 0 && !s.stdout.includes('scale')) throw new Error(`mvnet status printed no network: ${s.stdout.slice(0, 200)}`);
    const t1 = performance.now();
    const st = await rpc.call<unknown>('daemon.status', {});
    rpcMs.push(performance.now() - t1);
    statusBytes = JSON.stringify(st).length;
  }
  console.log(`mvnet status: median ${fmt(median(cliMs), 0)} ms (CLI, wall; mvnet --version ${fmt(median(versionMs), 0)} ms), daemon.status ${fmt(median(rpcMs), 1)} ms (${(statusBytes / 1024).toFixed(0)} KiB)`);

  // Streams.
  const rss2 = rssKb(pid);
  const per = Math.floor(o.streams / Math.max(1, streamVms.length));
  const clients = streamVms.map((t, i) => {
    const n = i < o.streams - per * streamVms.length ? per + 1 : per;
    return background(nsx(t.ns, ['prlimit', `--nofile=${NOFILE}`, 'node', SELF, '--role', 'client', UP_IP, String(HOLD_PORT), String(n)]), `client ${t.ns}`);
  });
  const tStreams = performance.now();
  let opened = 0;
  let failed = 0;
  for (const c of clients) {
    const l = await c.waitLine((x) => x.startsWith('open '), 300_000);
    const m = /^open (\d+) failed (\d+)/.exec(l)!;
    opened += Number(m[1]);
    failed += Number(m[2]);
  }
  const streamsSec = (performance.now() - tStreams) / 1000;
  console.log(`${opened} streams open (${failed} failed) in ${streamsSec.toFixed(1)} s`);
  await sleep(o.settleSec * 1000);
  const vmsNow = await rpc.call<VmView[]>('vm.list', {});
  const daemonFlows = vmsNow.reduce((a, v) => a + (v.flows?.tcp ?? 0), 0);
  const rss3 = rssKb(pid);
  const perStreamKb = opened > 0 ? (rss3 - rss2) / opened : NaN;
  console.log(`RSS ${rss2} kB → ${rss3} kB with ${daemonFlows} TCP flows: ${fmt(perStreamKb, 1)} kB per idle stream`);
  const idleCpuStreams = await cpuOver(pid, o.idleSec);
  console.log(`idle CPU with the streams open: ${idleCpuStreams.toFixed(2)}% of a core over ${o.idleSec} s`);
  const fdsStreams = fds(pid).length;

  // Close everything: streams first (clients end them), then every VM.
  const tClose = performance.now();
  for (const c of clients) c.child.kill('SIGTERM');
  for (const c of clients) await c.waitLine((x) => x === 'closed', 120_000);
  await waitFor(
    async () => (await rpc.call<VmView[]>('vm.list', {})).every((v) => (v.flows?.tcp ?? 0) === 0),
    'the daemon to close every stream',
    120_000,
  );
  const closeSec = (performance.now() - tClose) / 1000;
  for (const c of clients) await c.stop();
  const detachSec = await detachAll(rpc, [...names, ...taps.map((t) => t.name)]);
  console.log(`streams closed in ${closeSec.toFixed(1)} s; ${o.vms + o.taps} VMs detached in ${detachSec.toFixed(2)} s`);
  // Closing is asynchronous in places (libuv handles): poll, bounded, for the count to come back.
  let fds1 = fds(pid);
  const deadline = Date.now() + 10_000;
  while (fds1.length > fds0.length && Date.now() < deadline) {
    await sleep(200);
    fds1 = fds(pid);
  }
  const leaked = fdDiff(fds0, fds1);
  const leakedDetail = fds1.length > fds0.length ? await describeFds(r, fds1.filter((x) => !fds0.includes(x))) : [];
  for (const l of leakedDetail) console.log(`  leaked: ${l}`);
  console.log(`fds: ${fdsStart.length} at start, ${fds0.length} after the warm-up (${JSON.stringify(warmupFds)}), ${fdsStreams} with streams, ${fds1.length} after (${Object.keys(leaked).length === 0 ? 'none leaked' : JSON.stringify(leaked)})`);
  load.push(loadavg());

  // The goal row: vm.attachMany when it ran (the path for many VMs), else the pipelined vm.attach.
  const lastMode: AttachMode = o.attach.includes('many') ? 'many' : 'rpc';
  const result = {
    id,
    date: new Date().toISOString(),
    opts: o,
    cli: CLI,
    load,
    attach,
    tapAttachSec: tapSec,
    rssKb: { base: rss0, vms: rss1, beforeStreams: rss2, streams: rss3 },
    perVmKb,
    perStreamKb: opened > 0 ? perStreamKb : null,
    streams: { opened, failed, daemonFlows, openSec: streamsSec, closeSec },
    idleCpuPct: idleCpu,
    idleCpuStreamsPct: idleCpuStreams,
    status: { cliMs, versionMs, rpcMs, bytes: statusBytes },
    fds: { warmup: warmupFds, before: fds0.length, streams: fdsStreams, after: fds1.length, leaked, leakedDetail },
    detachSec,
  };
  const leakedN = fds1.length - fds0.length;
  const rows = [
    ['attach (' + lastMode + ')', `${o.vms} VMs`, `${attach[lastMode]!.attachSec.toFixed(2)} s`, o.vms >= 1000 ? '< 30 s' : `< ${((30 * o.vms) / 1000).toFixed(1)} s`, ok(attach[lastMode]!.attachSec * (1000 / o.vms) < 30)],
    ...o.attach.filter((m) => m !== lastMode).map((m) => [`attach (${m})`, `${o.vms} VMs`, `${attach[m]!.attachSec.toFixed(2)} s`, '', '']),
    ['RSS per idle VM', `${o.vms} datagram`, `${perVmKb.toFixed(1)} KB`, '<= 100 KB', ok(perVmKb <= 100)],
    ['RSS per idle stream', `${opened} open`, `${fmt(perStreamKb, 1)} KB`, '<= 32 KB', opened > 0 ? ok(perStreamKb <= 32) : ''],
    ['CPU idle', `${o.vms + o.taps} VMs`, `${idleCpu.toFixed(2)} %`, '', ''],
    ['CPU idle + streams', `${opened} streams`, `${idleCpuStreams.toFixed(2)} %`, '', ''],
    ['mvnet status (CLI)', `median of ${o.statusRuns}`, `${fmt(median(cliMs), 0)} ms`, '< 200 ms', ok((median(cliMs) ?? Infinity) < 200)],
    ['mvnet --version (CLI)', `median of ${o.statusRuns}`, `${fmt(median(versionMs), 0)} ms`, '', ''],
    ['daemon.status (RPC)', `median of ${o.statusRuns}`, `${fmt(median(rpcMs), 1)} ms`, '', ''],
    ['fds leaked', `${fds0.length} → ${fds1.length}`, String(leakedN), '0', ok(leakedN <= 0)],
  ];
  console.log('\n' + table(['figure', 'with', 'value', 'goal', ''], rows, 2));
  console.log(`load ${load.map((l) => l.map((x) => x.toFixed(2)).join(' ')).join(' → ')}`);
  const outDir = join(ROOT, 'bench', 'out');
  mkdirSync(outDir, { recursive: true });
  const file = join(outDir, `scale-${result.date.replace(/[:.]/g, '-')}.json`);
  writeFileSync(file, JSON.stringify(result, null, 2) + '\n');
  console.log(`wrote ${file}`);
}

function ok(b: boolean): string {
  return b ? 'ok' : 'MISSED';
}

async function cpuOver(pid: number, sec: number): Promise<number> {
  const c0 = cpuSeconds(pid) ?? 0;
  const t0 = performance.now();
  await sleep(sec * 1000);
  return (((cpuSeconds(pid) ?? 0) - c0) / ((performance.now() - t0) / 1000)) * 100;
}

function parseArgs(argv: string[]): Opts {
  const o: Opts = { vms: 1000, taps: 200, tapNs: 20, streams: 10_000, clients: 20, idleSec: 10, statusRuns: 10, settleSec: 2, attach: ['many'] };
  const num = (v: string | undefined, what: string, min: number): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new Error(`${what} wants an integer >= ${min}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const v = argv[i + 1];
    switch (a) {
      case '--vms': o.vms = num(v, a, 1); i++; break;
      case '--taps': o.taps = num(v, a, 0); i++; break;
      case '--tap-ns': o.tapNs = num(v, a, 1); i++; break;
      case '--streams': o.streams = num(v, a, 0); i++; break;
      case '--clients': o.clients = num(v, a, 1); i++; break;
      case '--idle': o.idleSec = num(v, a, 1); i++; break;
      case '--status-runs': o.statusRuns = num(v, a, 1); i++; break;
      case '--settle': o.settleSec = num(v, a, 0); i++; break;
      case '--attach': {
        const modes = (v ?? '').split(',');
        if (modes.length === 0 || modes.some((m) => m !== 'many' && m !== 'rpc')) throw new Error('--attach wants many, rpc or both (comma-separated, in order)');
        o.attach = modes as AttachMode[];
        i++;
        break;
      }
      case '--prof': o.profDir = v; i++; break;
      case '--tree': CLI = join(v ?? '.', 'dist', 'cli', 'main.js'); i++; break;
      case '-h':
      case '--help':
        console.log('node dist/bench/scale.js [--vms 1000] [--taps 200] [--tap-ns 20] [--streams 10000] [--clients 20] [--idle 10] [--status-runs 10] [--settle 2] [--attach many,rpc] [--prof DIR] [--tree DIR]');
        process.exit(0);
        break;
      default:
        throw new Error(`unknown option ${a}`);
    }
  }
  if (o.taps > 0 && o.tapNs > o.taps) o.tapNs = o.taps;
  if (o.streams > 0 && (o.taps === 0 || o.clients === 0)) throw new Error('--streams needs --taps and --clients');
  if (o.taps > 0 && o.taps > 60_000) throw new Error('--taps: at most 60000');
  return o;
}

const argv = process.argv.slice(2);
if (argv[0] === '--role') {
  const [, role, host, port, n] = argv;
  if (role === 'hold') holdServer(host!, Number(port));
  else if (role === 'client') holdClient(host!, Number(port), Number(n));
  else throw new Error(`unknown role ${role}`);
} else {
  main()
    .then(() => undoAll())
    .catch(async (e: unknown) => {
      console.error(`scale bench failed: ${(e as Error).stack ?? String(e)}`);
      await undoAll();
      process.exitCode = 1;
    });
}
