/**
 * `node dist/bench/lossy.js`: a 50 MB download over an impaired link — 5% loss, 5 ms delay,
 * 25% of frames (correlation 50%) sent without the delay so they overtake the others (netem's
 * `loss 5% delay 5ms reorder 25% 50%`, both directions) — by the same VM kernel, from mvnet's
 * direct route (mvnet's userland TCP is the sender on the impaired link) and from a Linux sender
 * across an identical relay (Linux's TCP is the sender), interleaved, per congestion control.
 *
 * The kernel here has no sch_netem, so the impairment is a userland relay with netem's
 * semantics, the one test/integration/stack-netem.test.ts uses (test/support/stack-impair.ts;
 * its program is repeated below because bench/ is built without test/). Topology (unique names,
 * all removed at the end, on error and on signals; no address outside these namespaces):
 *
 *   UP  10.89.0.1  HTTP server ─veth─ R 10.89.0.2: mvnet daemon, net 10.67.0.0/24, VM "vm" on a
 *   TAP in O, route --direct ── O: relay(TAP ⇄ veth) ── VM 10.67.0.2 (veth pinned by --mac)
 *   LS  10.68.0.1  HTTP server ─veth─ O2: relay(veth ⇄ veth) ── VM 10.68.0.2 (second veth)
 *
 * Rows: mvnet with tcp.congestion cubic and newreno (switched by SIGHUP reload: new connections
 * only); Linux with cubic, reno and bbr (the route's congctl in LS: a namespace's default may
 * only be an allowed algorithm, and this machine's default is bbr). Goal: mvnet within 1.5× of
 * Linux's time with the same algorithm. Offloads are off on every relay leg (plain wire
 * frames, real checksums), for both senders.
 *
 *   node dist/bench/lossy.js [--quick] [--reps 3] [--mb 50] [--cc cubic,newreno] [--paths mvnet,linux]
 *
 * --quick: one run of each. Results also go to bench/out/lossy-*.json. Needs root, curl, ethtool
 * and a built tree (`npm run build:ts`, the native addon built).
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { findAddon } from '../plugins/native/index.js';
import { RELAY_JS } from './impair-relay.js';
import { background, createNs, fmt, median, nsx, run, table, undoAll, waitFor, linkExists, onUndo, type Bg, type RunResult } from './util.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url)); // dist/bench/lossy.js → repo root
const CLI = join(ROOT, 'dist', 'cli', 'main.js');

type Cc = 'cubic' | 'newreno' | 'bbr';
/** The Linux algorithm compared with each of mvnet's (bbr: Linux only, for reference). */
const LINUX_CC: Record<Cc, string> = { cubic: 'cubic', newreno: 'reno', bbr: 'bbr' };
type PathId = 'mvnet' | 'linux';

interface Opts {
  reps: number;
  mb: number;
  cc: Cc[];
  paths: PathId[];
}

const UP_IP = '10.89.0.1';
const R_IP = '10.89.0.2';
const NET_SUBNET = '10.67.0.0/24';
const VM_IP = '10.67.0.2';
const GW_IP = '10.67.0.1';
const LS_IP = '10.68.0.1';
const VM_IP2 = '10.68.0.2';
const HTTP_PORT = 8080;
const IMPAIRMENT = { loss: 0.05, delayMs: 5, reorder: 0.25, correlation: 0.5 };

/** GET /bytes/N: N bytes (a random 64 KiB block repeated), as fast as the socket takes them. */
const SERVER_JS = String.raw`
'use strict';
const http = require('node:http');
const block = require('node:crypto').randomBytes(65536);
const [host, port] = process.argv.slice(2);
http.createServer((req, res) => {
  const m = /^\/bytes\/(\d+)$/.exec(req.url);
  if (!m) { res.writeHead(404); res.end(); return; }
  let left = Number(m[1]);
  res.writeHead(200, { 'content-length': String(left), 'content-type': 'application/octet-stream' });
  const more = () => {
    while (left > 0) {
      const n = Math.min(left, block.length);
      left -= n;
      if (!res.write(n === block.length ? block : block.subarray(0, n))) { res.once('drain', more); return; }
    }
    res.end();
  };
  more();
}).listen(Number(port), host, () => process.stdout.write('listening\n'));
`;


interface RelayDir {
  frames: number;
  dropped: number;
  immediate: number;
  delayed: number;
  writeRejected: number;
}

interface Sample {
  path: PathId;
  cc: Cc;
  rep: number;
  seconds: number;
  bytes: number;
  ok: boolean;
  error?: string;
  /** Relay counters over the transfer, data direction. */
  toVm?: RelayDir;
  fromVm?: RelayDir;
  /** `ss -tin` of the Linux sender's socket, once a second. */
  linuxSs?: string[];
}

function parseArgs(argv: string[]): Opts {
  const o: Opts = { reps: 3, mb: 50, cc: ['cubic', 'newreno', 'bbr'], paths: ['mvnet', 'linux'] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const next = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === '--quick') o.reps = 1;
    else if (a === '--reps') o.reps = Math.max(1, Number(next()));
    else if (a === '--mb') o.mb = Math.max(1, Number(next()));
    else if (a === '--cc') o.cc = next().split(',').map((c) => (c === 'cubic' || c === 'newreno' || c === 'bbr' ? c : usage(`unknown --cc ${c}`)));
    else if (a === '--paths') o.paths = next().split(',').map((p) => (p === 'mvnet' || p === 'linux' ? p : usage(`unknown --paths ${p}`)));
    else if (a === '--help' || a === '-h') usage();
    else usage(`unknown argument ${a}`);
  }
  return o;
}

function usage(err?: string): never {
  if (err) console.error(err);
  console.error('usage: node dist/bench/lossy.js [--quick] [--reps N] [--mb N] [--cc cubic,newreno,bbr] [--paths mvnet,linux]');
  process.exit(err ? 2 : 0);
}

/** Offloads off, so every frame the relay sees is a plain wire frame with a real checksum. */
async function noOffloads(ns: string, ifname: string): Promise<void> {
  await run(nsx(ns, ['ethtool', '-K', ifname, 'tx', 'off', 'rx', 'off', 'tso', 'off', 'gso', 'off', 'gro', 'off']), { check: false });
  const k = await run(nsx(ns, ['ethtool', '-k', ifname]));
  if (!/^generic-segmentation-offload: off/m.test(k.stdout)) throw new Error(`could not turn offloads off on ${ifname}`);
}

async function startRelay(ns: string, script: string, a: string, b: string, label: string): Promise<Bg> {
  const addon = findAddon();
  if (addon === undefined) throw new Error('native addon not built (build/Release/mvnet_native.node)');
  const relay = background(nsx(ns, ['node', script, addon, a, b, JSON.stringify(IMPAIRMENT)]), label);
  await relay.waitLine((l) => l.includes('"ev":"ready"'), 10_000);
  return relay;
}

async function relayStats(relay: Bg): Promise<{ toVm: RelayDir; fromVm: RelayDir }> {
  const from = relay.lines.length;
  relay.child.kill('SIGUSR2');
  await waitFor(async () => relay.lines.slice(from).some((l) => l.includes('"ev":"stats"')), 'relay stats', 5_000);
  return JSON.parse(relay.lines.slice(from).find((l) => l.includes('"ev":"stats"'))!) as { toVm: RelayDir; fromVm: RelayDir };
}

function diff(a: RelayDir, b: RelayDir): RelayDir {
  return { frames: b.frames - a.frames, dropped: b.dropped - a.dropped, immediate: b.immediate - a.immediate, delayed: b.delayed - a.delayed, writeRejected: b.writeRejected - a.writeRejected };
}

interface Env {
  id: string;
  up: string;
  r: string;
  o: string;
  vm: string;
  ls: string;
  o2: string;
  daemon: Bg;
  socket: string;
  configFile: string;
  relay: Bg;
  relay2: Bg;
  /** LS's interface towards the VM (its route carries the congestion control). */
  lsIf: string;
}

async function setup(workDir: string): Promise<Env> {
  const id = randomBytes(3).toString('hex');
  const n = (s: string): string => `mvl${id}${s}`;
  const e = { id, up: n('up'), r: n('r'), o: n('o'), vm: n('vm'), ls: n('ls'), o2: n('o2') };
  for (const ns of [e.up, e.r, e.o, e.vm, e.ls, e.o2]) await createNs(ns);
  const serverJs = join(workDir, 'server.cjs');
  const relayJs = join(workDir, 'relay.cjs');
  writeFileSync(serverJs, SERVER_JS);
  writeFileSync(relayJs, RELAY_JS);

  // Upstream ↔ router (plain veth, offloads as the kernel has them: not the impaired leg).
  await run(['ip', 'link', 'add', n('ru'), 'netns', e.r, 'type', 'veth', 'peer', 'name', n('ur'), 'netns', e.up]);
  await run(nsx(e.up, ['ip', 'addr', 'add', `${UP_IP}/24`, 'dev', n('ur')]));
  await run(nsx(e.up, ['ip', 'link', 'set', n('ur'), 'up']));
  await run(nsx(e.r, ['ip', 'addr', 'add', `${R_IP}/24`, 'dev', n('ru')]));
  await run(nsx(e.r, ['ip', 'link', 'set', n('ru'), 'up']));
  await run(nsx(e.r, ['ip', 'route', 'add', 'default', 'via', UP_IP]));
  const up = background(nsx(e.up, ['node', serverJs, UP_IP, String(HTTP_PORT)]), 'upstream http');
  await up.waitLine((l) => l === 'listening', 10_000);

  // The daemon, its TAP in O, the relay to the VM's first veth.
  const stateDir = join(workDir, 'state');
  mkdirSync(stateDir);
  const socket = join(stateDir, 'mvnet.sock');
  const configFile = join(workDir, 'config.json');
  writeFileSync(configFile, JSON.stringify({ tcp: { congestion: 'cubic' } }));
  const daemon = background(nsx(e.r, ['node', CLI, 'daemon', '--state-dir', stateDir, '--socket', socket, '--config', configFile]), 'mvnet daemon');
  await daemon.waitLine((l) => l.includes('"msg":"ready"'), 20_000);
  const cli = (args: string[]): Promise<RunResult> => run(['node', CLI, '--socket', socket, ...args]);
  await run(['ip', 'link', 'add', n('vi'), 'netns', e.vm, 'type', 'veth', 'peer', 'name', n('vo'), 'netns', e.o]);
  await noOffloads(e.vm, n('vi'));
  await noOffloads(e.o, n('vo'));
  const mac = (await run(nsx(e.vm, ['cat', `/sys/class/net/${n('vi')}/address`]))).stdout.trim();
  const tap = n('t');
  await cli(['net', 'create', 'lossy', '--subnet', NET_SUBNET]);
  await cli(['vm', 'attach', 'vm', '--net', 'lossy', '--tap', tap, '--netns', e.o, '--mac', mac]);
  await waitFor(() => linkExists(e.o, tap), `${tap} in ${e.o}`, 30_000);
  await cli(['route', '--direct', 'vm']);
  await run(nsx(e.o, ['ethtool', '-K', tap, 'gso', 'off', 'gro', 'off', 'tso', 'off']), { check: false });
  await run(nsx(e.o, ['ip', 'link', 'set', tap, 'up']));
  await run(nsx(e.o, ['ip', 'link', 'set', n('vo'), 'up']));
  const relay = await startRelay(e.o, relayJs, tap, n('vo'), 'relay (mvnet)');
  await run(nsx(e.vm, ['ip', 'link', 'set', n('vi'), 'up']));
  await run(nsx(e.vm, ['ip', 'addr', 'add', `${VM_IP}/24`, 'dev', n('vi')]));
  await run(nsx(e.vm, ['ip', 'route', 'add', 'default', 'via', GW_IP]));

  // The Linux sender LS, across an identical relay in O2, to the VM's second veth.
  await run(['ip', 'link', 'add', n('l'), 'netns', e.ls, 'type', 'veth', 'peer', 'name', n('lo'), 'netns', e.o2]);
  await run(['ip', 'link', 'add', n('v2'), 'netns', e.vm, 'type', 'veth', 'peer', 'name', n('vo2'), 'netns', e.o2]);
  for (const [ns, ifn] of [
    [e.ls, n('l')],
    [e.o2, n('lo')],
    [e.vm, n('v2')],
    [e.o2, n('vo2')],
  ] as const) {
    await noOffloads(ns, ifn);
    await run(nsx(ns, ['ip', 'link', 'set', ifn, 'up']));
  }
  await run(nsx(e.ls, ['ip', 'addr', 'add', `${LS_IP}/24`, 'dev', n('l')]));
  await run(nsx(e.vm, ['ip', 'addr', 'add', `${VM_IP2}/24`, 'dev', n('v2')]));
  const relay2 = await startRelay(e.o2, relayJs, n('lo'), n('vo2'), 'relay (linux)');
  const ls = background(nsx(e.ls, ['node', serverJs, LS_IP, String(HTTP_PORT)]), 'linux http');
  await ls.waitLine((l) => l === 'listening', 10_000);

  // Both paths answer before anything is measured (ARP, the daemon's route).
  for (const ip of [UP_IP, LS_IP]) {
    await waitFor(async () => (await run(nsx(e.vm, ['curl', '-q', '-sS', '-o', '/dev/null', '--max-time', '5', `http://${ip}:${HTTP_PORT}/bytes/1`]), { check: false })).code === 0, `http to ${ip}`, 30_000);
  }
  return { ...e, daemon, socket, configFile, relay, relay2, lsIf: n('l') };
}

async function setCc(e: Env, path: PathId, cc: Cc, current: Map<PathId, Cc>): Promise<void> {
  if (current.get(path) === cc) return;
  if (path === 'linux') {
    // Per route: a namespace's default may only be an "allowed" algorithm (here reno and bbr,
    // the machine's default), while a route's congctl may name any available one.
    await run(nsx(e.ls, ['ip', 'route', 'replace', '10.68.0.0/24', 'dev', e.lsIf, 'congctl', LINUX_CC[cc]]));
  } else {
    writeFileSync(e.configFile, JSON.stringify({ tcp: { congestion: cc } }));
    const from = e.daemon.lines.length;
    process.kill(e.daemon.child.pid!, 'SIGHUP');
    await waitFor(async () => e.daemon.lines.slice(from).some((l) => l.includes('config reloaded')), 'config reload', 10_000);
  }
  current.set(path, cc);
}

async function download(e: Env, path: PathId, cc: Cc, rep: number, bytes: number): Promise<Sample> {
  const ip = path === 'mvnet' ? UP_IP : LS_IP;
  const relay = path === 'mvnet' ? e.relay : e.relay2;
  const s0 = await relayStats(relay);
  // Linux's view of its own sender (cwnd, ssthresh, rtt, reordering), sampled once a second.
  const ssLines: string[] = [];
  let sampling = path === 'linux';
  const sampler = (async (): Promise<void> => {
    while (sampling) {
      await new Promise((res) => setTimeout(res, 1000));
      const r = await run(nsx(e.ls, ['ss', '-tinH', 'dst', VM_IP2]), { check: false });
      const line = r.stdout.replace(/\s+/g, ' ').trim();
      if (line.includes('cwnd:')) ssLines.push(line);
    }
  })();
  const r = await run(nsx(e.vm, ['curl', '-q', '-sS', '-o', '/dev/null', '--max-time', '600', '-w', '%{size_download} %{time_total}', `http://${ip}:${HTTP_PORT}/bytes/${bytes}`]), {
    check: false,
    timeoutMs: 620_000,
  });
  sampling = false;
  await sampler;
  const s1 = await relayStats(relay);
  const [got, secs] = r.stdout.trim().split(' ').map(Number);
  const ok = r.code === 0 && got === bytes;
  return {
    path,
    cc,
    rep,
    seconds: secs ?? NaN,
    bytes: got ?? 0,
    ok,
    ...(ok ? {} : { error: `curl exit ${r.code}: ${r.stderr.trim()} (${got} bytes)` }),
    toVm: diff(s0.toVm, s1.toVm),
    fromVm: diff(s0.fromVm, s1.fromVm),
    ...(ssLines.length > 0 ? { linuxSs: ssLines } : {}),
  };
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  if (process.getuid?.() !== 0) throw new Error('needs root (network namespaces)');
  const bytes = o.mb * 1024 * 1024;
  const workDir = mkdtempSync(join(tmpdir(), 'mvnet-lossy-'));
  onUndo(
    async () => rmSync(workDir, { recursive: true, force: true }),
    () => rmSync(workDir, { recursive: true, force: true }),
  );
  const load0 = loadavg();
  const started = Date.now();
  console.log(`lossy link: loss ${IMPAIRMENT.loss * 100}%, delay ${IMPAIRMENT.delayMs} ms, reorder ${IMPAIRMENT.reorder * 100}% corr ${IMPAIRMENT.correlation * 100}%; ${o.mb} MB download, ${o.reps} run(s) each, interleaved`);
  const e = await setup(workDir);
  const samples: Sample[] = [];
  const current = new Map<PathId, Cc>([['mvnet', 'cubic']]);
  for (let rep = 1; rep <= o.reps; rep++) {
    for (const cc of o.cc) {
      for (const path of o.paths) {
        if (path === 'mvnet' && cc === 'bbr') continue; // mvnet has no BBR
        await setCc(e, path, cc, current);
        const s = await download(e, path, cc, rep, bytes);
        samples.push(s);
        const drop = s.toVm !== undefined && s.toVm.frames > 0 ? ((100 * s.toVm.dropped) / s.toVm.frames).toFixed(1) : '-';
        console.log(`  run ${rep} ${path.padEnd(5)} ${cc.padEnd(7)} ${s.ok ? `${s.seconds.toFixed(2)} s` : `FAILED ${s.error}`} (data-direction frames ${s.toVm?.frames}, dropped ${drop}%)`);
        const mid = s.linuxSs?.[Math.floor(s.linuxSs.length / 2)];
        if (mid !== undefined) console.log(`    linux ss: ${/\b(?:cubic|reno|bbr)\b|cwnd:\d+|ssthresh:\d+|rtt:[\d./]+|reordering:\d+|retrans:[\d/]+/g[Symbol.match](mid)?.join(' ') ?? mid}`);
      }
    }
  }
  const rows: string[][] = [];
  const results: Record<string, unknown>[] = [];
  for (const cc of o.cc) {
    const med = (p: PathId): number | undefined => median(samples.filter((s) => s.path === p && s.cc === cc && s.ok).map((s) => s.seconds));
    const lin = med('linux');
    for (const path of o.paths) {
      if (path === 'mvnet' && cc === 'bbr') continue;
      const xs = samples.filter((s) => s.path === path && s.cc === cc && s.ok).map((s) => s.seconds);
      const m = med(path);
      const ratio = path === 'mvnet' && m !== undefined && lin !== undefined ? m / lin : undefined;
      const failed = samples.filter((s) => s.path === path && s.cc === cc && !s.ok).length;
      rows.push([
        path === 'mvnet' ? 'mvnet direct route' : 'Linux sender',
        path === 'linux' ? LINUX_CC[cc] : cc,
        fmt(m, 2),
        xs.length > 0 ? `${Math.min(...xs).toFixed(2)}–${Math.max(...xs).toFixed(2)}` : '-',
        m !== undefined ? fmt(bytes / m / 1e6, 2) : '-',
        ratio !== undefined ? `${ratio.toFixed(2)}×` : '',
        ratio !== undefined ? (ratio <= 1.5 ? 'met' : 'MISSED') : '',
        failed > 0 ? `${failed} failed` : '',
      ]);
      results.push({ path, cc, medianSeconds: m ?? null, minSeconds: xs.length ? Math.min(...xs) : null, maxSeconds: xs.length ? Math.max(...xs) : null, runs: xs, failed, ratioToLinux: ratio ?? null });
    }
  }
  console.log('');
  console.log(table(['sender', 'cc', 'median s', 'min–max s', 'MB/s', '× Linux', 'goal ≤1.5×', ''], rows));
  const load1 = loadavg();
  console.log(`load average before/after: ${load0.map((x) => x.toFixed(2)).join(' ')} / ${load1.map((x) => x.toFixed(2)).join(' ')}; ${((Date.now() - started) / 1000).toFixed(0)} s`);
  const outDir = join(ROOT, 'bench', 'out');
  mkdirSync(outDir, { recursive: true });
  const file = join(outDir, `lossy-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(file, JSON.stringify({ impairment: IMPAIRMENT, mb: o.mb, reps: o.reps, load: { before: load0, after: load1 }, results, samples }, null, 2) + '\n');
  console.log(`results: ${file}`);
}

main()
  .catch((err: unknown) => {
    console.error(`lossy bench failed: ${(err as Error).message}`);
    process.exitCode = 1;
  })
  .finally(() => undoAll());
