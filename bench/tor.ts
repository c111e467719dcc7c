/**
 * Tor benchmark: an all-tor VM behind the mvnet daemon (external Tor mode) versus curl straight
 * to the same Tor SOCKS socket, both against the private Tor network fixture
 * (test/tor/private-network.ts) and its upstream site (test/tor/test-servers.ts), started the
 * way test/tor/global-setup.ts starts them.
 *
 *   node dist/bench/tor.js [--mb 20] [--reps 3]
 *
 * Per rep, alternating which goes first: (a) curl in the VM namespace (TAP → mvnet daemon →
 * `route --all-tor` → Tor SOCKS), (b) curl --proxy socks5h://localhost/<socks path> from the
 * router namespace. Each is one GET /bytes/N (N = mb MiB) of the upstream by IP; curl reports
 * time_starttransfer (TTFB) and speed_download. Medians, ratio a/b, TTFB a−b; JSON to
 * bench/out/tor-<timestamp>.json.
 *
 * HARD NETWORK RULE: every namespace is created here and deleted at the end / on error / on
 * SIGINT (test/support/netns.ts cleanup registry + onExitSync); the only Tor network is the
 * private one. Nothing touches the public Tor network.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { cleanupAll, createNetns, makeTempDir, uniqueName, waitFor, type ManagedProcess, type Netns } from '../test/support/netns.js';
import { writePrograms } from '../test/support/stack-programs.js';
import { UPSTREAM_ADDRESS, deleteNetnsSync, onExitSync, startPrivateTor, startTestServers, type PrivateTor } from '../test/tor/private-network.js';
import { BenchDaemon, REPO, curlStat, median, type CurlStat } from './tor-util.js';

const UPSTREAM_HELLO = 'hello from upstream';
const UPSTREAM_NAME = 'upstream.test';

function arg(name: string, def: number): number {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) return def;
  const v = Number(process.argv[i + 1]);
  if (!Number.isFinite(v) || v <= 0) throw new Error(`bad --${name} ${process.argv[i + 1]}`);
  return v;
}

interface Sample extends CurlStat {
  path: 'a-vm' | 'b-socks';
  rep: number;
  order: number;
}

async function main(): Promise<void> {
  const mb = arg('mb', 20);
  const reps = Math.floor(arg('reps', 3));
  const bytes = Math.round(mb * 1024 * 1024);

  let upNs: Netns | undefined;
  let tor: PrivateTor | undefined;
  let servers: ManagedProcess | undefined;
  let daemon: BenchDaemon | undefined;
  let dropExitSync = (): void => {};
  const teardown = async (): Promise<void> => {
    await daemon?.stop().catch(() => {});
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
    const names = { [UPSTREAM_NAME]: UPSTREAM_ADDRESS, [`www.${UPSTREAM_NAME}`]: UPSTREAM_ADDRESS };
    servers = (
      await startTestServers(
        upNs,
        tor.dir,
        {
          http: [{ host: '0.0.0.0', port: 80, hello: UPSTREAM_HELLO, largeBytes: bytes }],
          dns: { host: '0.0.0.0', port: 53, records: names },
        },
        `${upNs.name}: upstream servers`,
      )
    ).proc;
    log(`private Tor network ${tor.ns} ready in ${Date.now() - t0} ms (client bootstrapped ${tor.timings.bootstrapMs} ms)`);

    // --- router namespace with the daemon, external Tor = the fixture's client (as mvnet-harness.ts)
    const dir = makeTempDir('tbenh');
    const programs = writePrograms(dir);
    const routerNs = await createNetns('tben-r');
    await routerNs.exec(['sysctl', '-q', '-w', 'net.ipv4.ip_forward=0']);
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
    daemon = await BenchDaemon.start(routerNs.name, configFile);
    await daemon.cliOk(['net', 'create', 'lan', '--subnet', '10.231.0.0/24']);
    const vmNs = await createNetns('tben-vm', { ipv6: false });
    const ifname = uniqueName('mvtv');
    await daemon.cliOk(['vm', 'attach', 'vm1', '--net', 'lan', '--tap', ifname, '--netns', vmNs.name]);
    await vmNs.waitForLink(ifname);
    await vmNs.exec(['ip', 'link', 'set', ifname, 'up']);
    await daemon.cliOk(['route', '--all-tor', 'vm1']);
    const udhcpc = vmNs.spawn(['udhcpc', '-f', '-i', ifname, '-s', programs.udhcpcScript, '-t', '10', '-T', '1'], { label: 'udhcpc vm1' });
    const lease = await udhcpc.waitForLine((l) => l.startsWith('UDHCPC ') && /"event":"bound"/.test(l), { timeoutMs: 20_000 });
    log(`VM configured by DHCP: ${lease.slice('UDHCPC '.length, 120)}…`);
    const d = daemon;
    await waitFor(
      async () => ((await d.cliJson<{ phase: string }>(['tor', 'status'])).phase === 'ready' ? true : undefined),
      { timeoutMs: 90_000, intervalMs: 200, what: 'mvnet tor status ready' },
    );

    const url = `http://${UPSTREAM_ADDRESS}/bytes/${bytes}`;
    const socksProxy = `socks5h://localhost${tor.client.socksPath}`;
    const runA = (): Promise<CurlStat> => curlStat((c) => vmNs.exec(c, { check: false, timeoutMs: 300_000 }), ['--noproxy', '*'], url, bytes);
    const runB = (): Promise<CurlStat> => curlStat((c) => routerNs.exec(c, { check: false, timeoutMs: 300_000 }), ['--proxy', socksProxy], url, bytes);

    // Warm-up (not counted): circuits built for both paths, a small fetch each.
    const small = `http://${UPSTREAM_ADDRESS}/`;
    await curlStat((c) => vmNs.exec(c, { check: false, timeoutMs: 120_000 }), ['--noproxy', '*'], small, UPSTREAM_HELLO.length + 1);
    await curlStat((c) => routerNs.exec(c, { check: false, timeoutMs: 120_000 }), ['--proxy', socksProxy], small, UPSTREAM_HELLO.length + 1);

    const samples: Sample[] = [];
    for (let rep = 0; rep < reps; rep++) {
      const order: ('a-vm' | 'b-socks')[] = rep % 2 === 0 ? ['a-vm', 'b-socks'] : ['b-socks', 'a-vm'];
      for (const [i, p] of order.entries()) {
        const s = p === 'a-vm' ? await runA() : await runB();
        samples.push({ ...s, path: p, rep, order: i });
        log(`rep ${rep + 1}/${reps} ${p.padEnd(7)} ${(s.bytesPerSec / 1e6).toFixed(2)} MB/s  TTFB ${s.ttfbMs.toFixed(1)} ms  total ${s.totalMs.toFixed(0)} ms`);
      }
    }

    const pick = (p: string): Sample[] => samples.filter((s) => s.path === p);
    const stat = (p: string): { mbps: number; ttfbMs: number } => ({
      mbps: median(pick(p).map((s) => s.bytesPerSec / 1e6)),
      ttfbMs: median(pick(p).map((s) => s.ttfbMs)),
    });
    const a = stat('a-vm');
    const b = stat('b-socks');
    const ratio = a.mbps / b.mbps;
    const ttfbDiff = a.ttfbMs - b.ttfbMs;
    const summary = {
      a,
      b,
      throughputRatio: ratio,
      ttfbDiffMs: ttfbDiff,
      goals: { throughputRatioMin: 0.95, ttfbDiffMaxMs: 5, throughputOk: ratio >= 0.95, ttfbOk: Math.abs(ttfbDiff) <= 5 },
    };

    const rows = [
      ['path', 'MB/s (median)', 'TTFB ms (median)'],
      ['(a) all-tor VM via mvnet', a.mbps.toFixed(2), a.ttfbMs.toFixed(1)],
      ['(b) curl → Tor SOCKS direct', b.mbps.toFixed(2), b.ttfbMs.toFixed(1)],
      ['a/b ratio | a−b TTFB', `${ratio.toFixed(3)} ${summary.goals.throughputOk ? '✓' : '✗'} (≥0.95)`, `${ttfbDiff >= 0 ? '+' : ''}${ttfbDiff.toFixed(1)} ${summary.goals.ttfbOk ? '✓' : '✗'} (±5)`],
    ];
    const w = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
    const line = (r: string[]): string => r.map((x, c) => x.padEnd(w[c]!)).join(' | ');
    console.log(`\nTor bench: ${mb} MiB GET /bytes/${bytes} from ${UPSTREAM_ADDRESS}, ${reps} reps (alternating order), private Tor network`);
    console.log(line(rows[0]!));
    console.log(w.map((n) => '-'.repeat(n)).join('-|-'));
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
          params: { mb, bytes, reps, url, socks: tor.client.socksPath, torMode: 'external' },
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
