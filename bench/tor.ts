/**
 * Tor benchmark: an all-tor VM behind the mvnet daemon (external Tor mode) versus curl straight
 * to the same Tor SOCKS socket WITH THE SAME SOCKS CREDENTIALS as the VM's streams (so Tor's
 * IsolateSOCKSAuth puts both on the same circuit), against the private Tor network fixture
 * (test/tor/private-network.ts) and its upstream site (test/tor/test-servers.ts), started the
 * way test/tor/global-setup.ts starts them.
 *
 *   node dist/bench/tor.js [--mb 10] [--reps 20] [--quick] [--baseline TREE] [--cpu-prof DIR] [--vnet-hdr] [--nice N]
 *
 * Per rep, rotating which goes first: (vm) curl in the VM namespace (TAP → mvnet daemon →
 * `route --all-tor` → Tor SOCKS), (curl) curl --proxy socks5h://localhost/<socks path>
 * --proxy-user <the VM's SOCKS user:password> from the router namespace, and with --baseline
 * (another checkout with a built dist/, e.g. /work/main) (base) a VM behind that tree's daemon,
 * its own namespaces, the same Tor client (its own credentials: a second daemon has its own
 * secret) and (curlb) curl with the baseline VM's credentials, its yardstick on its circuit.
 * Each is one fresh connection and GET /bytes/N (N = mb MiB) of the upstream by IP; curl
 * reports time_starttransfer (TTFB) and speed_download. The VM's credentials are read from Tor
 * itself (STREAM/CIRC control events carry SOCKS_USERNAME/SOCKS_PASSWORD), and every
 * stream's circuit is recorded, so the table says whether both paths rode the same circuits.
 * Per VM run also: the daemon's CPU time (/proc/PID/stat) per MiB and the frames the VM's TAP
 * received (bytes per frame); Tor's client CPU per MiB, and that of all the private network's
 * tors, for every path. Medians with min–max and quartiles; "after 1st byte" is
 * bytes / (total − TTFB), the transfer without its setup.
 * JSON to bench/out/tor-<timestamp>.json. --cpu-prof profiles this tree's daemon (node
 * --cpu-prof, written at its exit). --vnet-hdr attaches the VMs' TAPs with `--vnet-hdr` (as
 * QEMU's would be), so a daemon that sends TCP super-frames to such VMs is measured with them.
 * --nice N renices every daemon (a diagnosis: how much of the gap is the daemon waiting for a
 * CPU on a loaded machine).
 *
 * HARD NETWORK RULE: every namespace is created here and deleted at the end / on error / on
 * SIGINT (test/support/netns.ts cleanup registry + onExitSync); the only Tor network is the
 * private one. Nothing touches the public Tor network.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { cleanupAll, createNetns, makeTempDir, run, uniqueName, waitFor, type ManagedProcess, type Netns } from '../test/support/netns.js';
import { writePrograms } from '../test/support/stack-programs.js';
import { TorControl, type ControlEvent } from '../test/support/tor-control.js';
import { UPSTREAM_ADDRESS, deleteNetnsSync, onExitSync, startPrivateTor, startTestServers, type PrivateTor } from '../test/tor/private-network.js';
import { BenchDaemon, REPO, cpuMs, curlStat, quotedField, spread, type CurlStat, type Spread } from './tor-util.js';

const UPSTREAM_HELLO = 'hello from upstream';
const UPSTREAM_NAME = 'upstream.test';

function arg(name: string, def: number): number {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) return def;
  const v = Number(process.argv[i + 1]);
  if (!Number.isFinite(v) || v <= 0) throw new Error(`bad --${name} ${process.argv[i + 1]}`);
  return v;
}

function strArg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) return undefined;
  const v = process.argv[i + 1];
  if (v === undefined || v.startsWith('--')) throw new Error(`--${name} needs a value`);
  return v;
}

type PathName = 'vm' | 'base' | 'curl' | 'curlb';

interface Sample extends CurlStat {
  path: PathName;
  rep: number;
  order: number;
  /** Tor client CPU during the transfer, ms. */
  torCpuMs: number;
  /** CPU of every process of the private Tor network (authorities, relays, exit, client), ms. */
  torNetCpuMs: number;
  /** The daemon's CPU during the transfer, ms (VM paths). */
  daemonCpuMs?: number;
  /** Frames the VM's TAP received during the transfer (VM paths). */
  vmFrames?: number;
  vmBytes?: number;
}

/** One VM behind one daemon. */
interface VmPath {
  daemon: BenchDaemon;
  routerNs: Netns;
  vmNs: Netns;
  ifname: string;
  user: string;
}

/** The all-tor VM's SOCKS credentials and every stream's circuit, as Tor's control port reports them. */
class TorWatch {
  readonly creds = new Map<string, string>();
  /** Circuit ids of SUCCEEDED streams, per SOCKS username ('' for none). */
  readonly circs = new Map<string, string[]>();
  constructor(private readonly ctl: TorControl) {
    ctl.onEvent((e) => this.on(e));
  }

  static async open(controlPath: string, cookiePath: string): Promise<TorWatch> {
    const ctl = await TorControl.open(controlPath, cookiePath);
    const w = new TorWatch(ctl);
    await ctl.setEvents(['STREAM', 'CIRC']);
    return w;
  }

  private on(e: ControlEvent): void {
    const line = e.lines[0] ?? '';
    const user = quotedField(line, 'SOCKS_USERNAME');
    const pass = quotedField(line, 'SOCKS_PASSWORD');
    if (user !== undefined && pass !== undefined) this.creds.set(user, pass);
    if (e.type === 'STREAM' && e.words[1] === 'SUCCEEDED') {
      const list = this.circs.get(user ?? '') ?? [];
      list.push(e.words[2] ?? '?');
      this.circs.set(user ?? '', list);
    }
  }

  close(): void {
    this.ctl.close();
  }
}

async function main(): Promise<void> {
  const quick = process.argv.includes('--quick');
  const mb = arg('mb', 10);
  const reps = Math.floor(arg('reps', quick ? 3 : 20));
  const baseline = strArg('baseline');
  const profDir = strArg('cpu-prof');
  const vnetHdr = process.argv.includes('--vnet-hdr');
  const niceIdx = process.argv.indexOf('--nice');
  const nice = niceIdx < 0 ? undefined : Number(process.argv[niceIdx + 1]);
  if (nice !== undefined && !Number.isInteger(nice)) throw new Error('--nice needs an integer');
  const bytes = Math.round(mb * 1024 * 1024);
  const baseCli = baseline === undefined ? undefined : resolve(baseline, 'dist', 'cli', 'main.js');
  if (baseCli !== undefined && !existsSync(baseCli)) throw new Error(`--baseline: no ${baseCli} (build that tree first)`);

  let upNs: Netns | undefined;
  let tor: PrivateTor | undefined;
  let servers: ManagedProcess | undefined;
  let watch: TorWatch | undefined;
  const daemons: BenchDaemon[] = [];
  let dropExitSync = (): void => {};
  const teardown = async (): Promise<void> => {
    watch?.close();
    for (const d of daemons) await d.stop().catch(() => {});
    await servers?.stop().catch(() => {});
    await tor?.stop().catch(() => {});
    await upNs?.delete().catch(() => {});
    dropExitSync();
    await cleanupAll();
  };

  try {
    // --- the private Tor network + upstream, exactly as test/tor/global-setup.ts
    const t0 = Date.now();
    upNs = await createNetns('torup');
    const upName = upNs.name;
    dropExitSync = onExitSync(() => deleteNetnsSync(upName));
    tor = await startPrivateTor({ upstream: { nsName: upNs.name, address: UPSTREAM_ADDRESS } });
    const dnsNames = { [UPSTREAM_NAME]: UPSTREAM_ADDRESS, [`www.${UPSTREAM_NAME}`]: UPSTREAM_ADDRESS };
    servers = (
      await startTestServers(
        upNs,
        tor.dir,
        {
          http: [{ host: '0.0.0.0', port: 80, hello: UPSTREAM_HELLO, largeBytes: bytes }],
          dns: { host: '0.0.0.0', port: 53, records: dnsNames },
        },
        `${upNs.name}: upstream servers`,
      )
    ).proc;
    log(`private Tor network ${tor.ns} ready in ${Date.now() - t0} ms (client bootstrapped ${tor.timings.bootstrapMs} ms)`);
    watch = await TorWatch.open(tor.client.controlPath, tor.client.cookiePath);
    const torPid = tor.client.pid;
    // Every tor of the private network runs in its namespace: their CPU per MiB is the pipeline's
    // cost that both paths share (on a saturated machine, the daemon's CPU competes with it).
    const torNetPids = (await run(['ip', 'netns', 'pids', tor.ns])).stdout.split(/\s+/).filter(Boolean).map(Number);
    const torNetCpu = (): number => torNetPids.reduce((sum, pid) => sum + (existsSync(`/proc/${pid}/stat`) ? cpuMs(pid) : 0), 0);

    // --- router namespace(s) with a daemon each, external Tor = the fixture's client (as mvnet-harness.ts)
    const dir = makeTempDir('tbenh');
    const programs = writePrograms(dir);
    const cfg = {
      logLevel: 'info',
      dns: { upstream: '192.0.2.53' },
      direct: { connectTimeoutMs: 5_000 },
      tor: {
        mode: 'external',
        socks: `unix:${tor.client.socksPath}`,
        control: `unix:${tor.client.controlPath}`,
        cookieFile: tor.client.cookiePath,
      },
    };
    const configFile = join(dir, 'mvnet.json');
    writeFileSync(configFile, JSON.stringify(cfg, null, 2));
    const small = `http://${UPSTREAM_ADDRESS}/`;
    const w = watch;

    const startVm = async (label: string, opts: { cliJs?: string; nodeArgs?: readonly string[] }): Promise<VmPath> => {
      const routerNs = await createNetns(`tben-${label}`);
      await routerNs.exec(['sysctl', '-q', '-w', 'net.ipv4.ip_forward=0']);
      const daemon = await BenchDaemon.start(routerNs.name, configFile, opts);
      daemons.push(daemon);
      if (nice !== undefined) await run(['renice', '-n', String(nice), '-p', String(daemon.pid)]);
      await daemon.cliOk(['net', 'create', 'lan', '--subnet', '10.231.0.0/24']);
      const vmNs = await createNetns(`tben-${label}vm`, { ipv6: false });
      const ifname = uniqueName('mvtv');
      // A VM name per daemon: Tor's events then tell the two daemons' credentials apart.
      const vmName = `vm-${label}`;
      await daemon.cliOk(['vm', 'attach', vmName, '--net', 'lan', '--tap', ifname, '--netns', vmNs.name, ...(vnetHdr ? ['--vnet-hdr'] : [])]);
      await vmNs.waitForLink(ifname);
      await vmNs.exec(['ip', 'link', 'set', ifname, 'up']);
      await daemon.cliOk(['route', '--all-tor', vmName]);
      const udhcpc = vmNs.spawn(['udhcpc', '-f', '-i', ifname, '-s', programs.udhcpcScript, '-t', '10', '-T', '1'], { label: `udhcpc ${label}` });
      await udhcpc.waitForLine((l) => l.startsWith('UDHCPC ') && /"event":"bound"/.test(l), { timeoutMs: 20_000 });
      await waitFor(async () => ((await daemon.cliJson<{ phase: string }>(['tor', 'status'])).phase === 'ready' ? true : undefined), {
        timeoutMs: 90_000,
        intervalMs: 200,
        what: `${label}: mvnet tor status ready`,
      });
      // Warm-up (not counted): the VM's circuit is built, and Tor tells us its credentials.
      const known = new Set(w.creds.keys());
      await curlStat((c) => vmNs.exec(c, { check: false, timeoutMs: 120_000 }), ['--noproxy', '*'], small, UPSTREAM_HELLO.length + 1);
      const user = await waitFor(() => [...w.creds.keys()].find((u) => !known.has(u) && u.startsWith(`mvnet-${vmName}-`)), {
        timeoutMs: 10_000,
        what: `${label}: the VM's SOCKS credentials in Tor's events`,
      });
      log(`${label}: daemon ${daemon.cli}, VM SOCKS user ${user}`);
      return { daemon, routerNs, vmNs, ifname, user };
    };

    const paths = new Map<PathName, VmPath>();
    const vm = await startVm('a', profDir === undefined ? {} : { nodeArgs: ['--cpu-prof', '--cpu-prof-dir', resolve(profDir)] });
    paths.set('vm', vm);
    if (baseCli !== undefined) paths.set('base', await startVm('b', { cliJs: baseCli }));

    const url = `http://${UPSTREAM_ADDRESS}/bytes/${bytes}`;
    const socksProxy = `socks5h://localhost${tor.client.socksPath}`;
    // The same credentials as the VM's streams: Tor's IsolateSOCKSAuth then puts curl on the VM's circuit.
    const curlArgsOf = (p: VmPath): string[] => ['--proxy', socksProxy, '--proxy-user', `${p.user}:${w.creds.get(p.user)!}`];
    const curlArgs = curlArgsOf(vm);
    await curlStat((c) => vm.routerNs.exec(c, { check: false, timeoutMs: 120_000 }), curlArgs, small, UPSTREAM_HELLO.length + 1);
    // The baseline VM has its own credentials (its daemon's secret): a curl of its own on its circuit.
    const base = paths.get('base');
    const curlbArgs = base === undefined ? [] : curlArgsOf(base);
    if (base !== undefined) await curlStat((c) => vm.routerNs.exec(c, { check: false, timeoutMs: 120_000 }), curlbArgs, small, UPSTREAM_HELLO.length + 1);

    const tapCounters = async (p: VmPath): Promise<{ packets: number; bytes: number }> => {
      const r = await p.vmNs.exec(['cat', `/sys/class/net/${p.ifname}/statistics/rx_packets`, `/sys/class/net/${p.ifname}/statistics/rx_bytes`]);
      const [packets, b] = r.stdout.trim().split(/\s+/).map(Number);
      return { packets: packets!, bytes: b! };
    };
    const runOne = async (name: PathName, rep: number, order: number): Promise<Sample> => {
      const t0tor = cpuMs(torPid);
      const t0net = torNetCpu();
      if (name === 'curl' || name === 'curlb') {
        const args = name === 'curl' ? curlArgs : curlbArgs;
        const s = await curlStat((c) => vm.routerNs.exec(c, { check: false, timeoutMs: 300_000 }), args, url, bytes);
        return { ...s, path: name, rep, order, torCpuMs: cpuMs(torPid) - t0tor, torNetCpuMs: torNetCpu() - t0net };
      }
      const p = paths.get(name)!;
      const c0 = await tapCounters(p);
      const d0 = cpuMs(p.daemon.pid);
      const s = await curlStat((c) => p.vmNs.exec(c, { check: false, timeoutMs: 300_000 }), ['--noproxy', '*'], url, bytes);
      const d1 = cpuMs(p.daemon.pid);
      const tor1 = cpuMs(torPid);
      const net1 = torNetCpu();
      const c1 = await tapCounters(p);
      return { ...s, path: name, rep, order, torCpuMs: tor1 - t0tor, torNetCpuMs: net1 - t0net, daemonCpuMs: d1 - d0, vmFrames: c1.packets - c0.packets, vmBytes: c1.bytes - c0.bytes };
    };

    const names: PathName[] = base === undefined ? ['vm', 'curl'] : ['vm', 'base', 'curl', 'curlb'];
    const samples: Sample[] = [];
    for (let rep = 0; rep < reps; rep++) {
      // Rotate the order each rep: no path always runs first (or right after another).
      const order = names.map((_, i) => names[(i + rep) % names.length]!);
      for (const [i, p] of order.entries()) {
        const s = await runOne(p, rep, i);
        samples.push(s);
        const extra = s.daemonCpuMs === undefined ? '' : `  daemon ${(s.daemonCpuMs / mb).toFixed(0)} ms/MiB  ${((s.vmBytes ?? 0) / (s.vmFrames ?? 1)).toFixed(0)} B/frame`;
        log(`rep ${rep + 1}/${reps} ${p.padEnd(4)} ${(s.bytesPerSec / 1e6).toFixed(2)} MB/s  TTFB ${s.ttfbMs.toFixed(1)} ms  tor ${(s.torCpuMs / mb).toFixed(0)} ms/MiB${extra}`);
      }
    }

    const pick = (p: PathName): Sample[] => samples.filter((s) => s.path === p);
    interface PathStat {
      mbps: Spread;
      /** bytes / (total − TTFB): the transfer without the connection setup. */
      xferMbps: Spread;
      ttfbMs: Spread;
      torCpuMsPerMiB: Spread;
      torNetCpuMsPerMiB: Spread;
      daemonCpuMsPerMiB?: Spread;
      bytesPerFrame?: Spread;
      circuits: string[];
      user: string;
    }
    const stat = (p: PathName): PathStat => {
      const xs = pick(p);
      const user = p === 'base' || p === 'curlb' ? base!.user : vm.user;
      const out: PathStat = {
        mbps: spread(xs.map((s) => s.bytesPerSec / 1e6)),
        xferMbps: spread(xs.map((s) => s.bytes / ((s.totalMs - s.ttfbMs) / 1000) / 1e6)),
        ttfbMs: spread(xs.map((s) => s.ttfbMs)),
        torCpuMsPerMiB: spread(xs.map((s) => s.torCpuMs / mb)),
        torNetCpuMsPerMiB: spread(xs.map((s) => s.torNetCpuMs / mb)),
        circuits: [...new Set(w.circs.get(user) ?? [])],
        user,
      };
      if (p === 'vm' || p === 'base') {
        out.daemonCpuMsPerMiB = spread(xs.map((s) => s.daemonCpuMs! / mb));
        out.bytesPerFrame = spread(xs.map((s) => s.vmBytes! / s.vmFrames!));
      }
      return out;
    };
    const stats = Object.fromEntries(names.map((n) => [n, stat(n)])) as Record<PathName, PathStat>;
    const c = stats.curl;
    const a = stats.vm;
    // Per-rep ratios (vm/curl of the same rep) are less exposed to the machine's load swings than a ratio of medians.
    const perRep = (p: PathName, yardstick: PathName): number[] =>
      pick(p).map((s) => s.bytesPerSec / pick(yardstick).find((x) => x.rep === s.rep)!.bytesPerSec);
    const ratio = a.mbps.median / c.mbps.median;
    const ttfbDiff = a.ttfbMs.median - c.ttfbMs.median;
    const summary = {
      stats,
      throughputRatio: ratio,
      xferRatio: a.xferMbps.median / c.xferMbps.median,
      perRepRatio: spread(perRep('vm', 'curl')),
      ttfbDiffMs: ttfbDiff,
      // The baseline against the curl on its own circuit (curlb).
      ...(base !== undefined
        ? {
            baseThroughputRatio: stats.base.mbps.median / stats.curlb.mbps.median,
            basePerRepRatio: spread(perRep('base', 'curlb')),
            baseTtfbDiffMs: stats.base.ttfbMs.median - stats.curlb.ttfbMs.median,
          }
        : {}),
      goals: { throughputRatioMin: 0.95, ttfbDiffMaxMs: 5, throughputOk: ratio >= 0.95, ttfbOk: ttfbDiff <= 5 },
    };

    const f = (x: Spread, d: number): string => `${x.median.toFixed(d)} (${x.min.toFixed(d)}–${x.max.toFixed(d)})`;
    const label: Record<PathName, string> = {
      vm: '(vm) all-tor VM via mvnet',
      base: `(base) same via ${baseline ?? ''}`,
      curl: '(curl) → Tor SOCKS, same creds',
      curlb: "(curlb) → Tor SOCKS, base's creds",
    };
    const rows = [['path', 'MB/s median (min–max)', 'after 1st byte', 'TTFB ms median (min–max)', 'daemon ms/MiB', 'B/frame', 'tor client | all tors ms/MiB', 'circuits']];
    for (const n of names) {
      const s = stats[n];
      rows.push([
        label[n],
        f(s.mbps, 2),
        s.xferMbps.median.toFixed(2),
        f(s.ttfbMs, 1),
        s.daemonCpuMsPerMiB ? s.daemonCpuMsPerMiB.median.toFixed(0) : '–',
        s.bytesPerFrame ? s.bytesPerFrame.median.toFixed(0) : '–',
        `${s.torCpuMsPerMiB.median.toFixed(0)} | ${s.torNetCpuMsPerMiB.median.toFixed(0)}`,
        s.circuits.join(','),
      ]);
    }
    const pr = summary.perRepRatio;
    rows.push([
      'vm/curl | vm−curl TTFB',
      `${ratio.toFixed(3)} ${summary.goals.throughputOk ? '✓' : '✗'} (≥0.95); per rep ${pr.median.toFixed(3)} (${pr.p25.toFixed(3)}–${pr.p75.toFixed(3)} IQR)`,
      summary.xferRatio.toFixed(3),
      `${ttfbDiff >= 0 ? '+' : ''}${ttfbDiff.toFixed(1)} ${summary.goals.ttfbOk ? '✓' : '✗'} (≤+5)`,
      '',
      '',
      '',
      '',
    ]);
    if (summary.baseThroughputRatio !== undefined) {
      const br = summary.basePerRepRatio!;
      rows.push([
        'base/curlb | base−curlb TTFB',
        `${summary.baseThroughputRatio.toFixed(3)}; per rep ${br.median.toFixed(3)} (${br.p25.toFixed(3)}–${br.p75.toFixed(3)} IQR)`,
        (stats.base.xferMbps.median / stats.curlb.xferMbps.median).toFixed(3),
        `${summary.baseTtfbDiffMs! >= 0 ? '+' : ''}${summary.baseTtfbDiffMs!.toFixed(1)}`,
        '',
        '',
        '',
        '',
      ]);
    }
    const wd = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
    const line = (r: string[]): string => r.map((x, i) => x.padEnd(wd[i]!)).join(' | ');
    const load = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
    console.log(`\nTor bench: ${mb} MiB GET /bytes/${bytes} from ${UPSTREAM_ADDRESS}, ${reps} reps (rotating order), private Tor network, load ${load}`);
    console.log(line(rows[0]!));
    console.log(wd.map((n) => '-'.repeat(n)).join('-|-'));
    for (const r of rows.slice(1)) console.log(line(r));

    const outDir = resolve(REPO, 'bench', 'out');
    mkdirSync(outDir, { recursive: true });
    const file = join(outDir, `tor-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
    writeFileSync(
      file,
      JSON.stringify(
        {
          bench: 'tor',
          at: new Date().toISOString(),
          load,
          params: { mb, bytes, reps, url, socks: tor.client.socksPath, torMode: 'external', baseline: baseline ?? null, vmUser: vm.user, vnetHdr, nice: nice ?? null },
          torTimings: tor.timings,
          samples,
          summary,
        },
        null,
        2,
      ),
    );
    console.log(`\nwrote ${file}`);
  } finally {
    await teardown();
  }
}

function log(s: string): void {
  process.stderr.write(`[tor bench] ${s}\n`);
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`tor bench failed: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
