/**
 * The Tor side of scripts/demo.sh when there is no internet: the private Tor network the tests
 * use (test/tor/with-upstream.ts: authority, relays, an exit, an onion service, and a web site
 * with its own DNS behind the exit), linked into the demo's router namespace so the daemon's
 * embedded Tor joins it. Compiled with the rest (tsconfig.build.json) to dist/scripts/demo-tor.js:
 *
 *   node dist/scripts/demo-tor.js --router-ns NS --out DIR --parent PID
 *
 * Writes DIR/tor.json (the daemon config's `tor` section) and DIR/tor.env (shell variables the
 * demo sources: the onion, the exit site, the relays' subnet) once everything works, then prints
 * `ready` and runs until SIGTERM/SIGINT or until PID (the demo's shell) is gone, and then stops
 * the network and deletes its namespaces.
 *
 * With MVNET_DEMO_TOR_SHARED=FILE (JSON `{"privateTor": PrivateTorInfo, "torUpstream":
 * TorUpstreamInfo}`, as test/tor/global-setup.ts provides them) it starts nothing and uses that
 * network (the demo's CI test shares its run's network); only the link into NS is made.
 */
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cleanupAll } from '../test/support/netns.js';
import { ONION_HELLO, RELAY_NET, attachPrivateTor, type PrivateTorInfo } from '../test/tor/private-network.js';
import { startTorWithUpstream, type TorUpstreamInfo } from '../test/tor/with-upstream.js';

function option(name: string): string {
  const i = process.argv.indexOf(`--${name}`);
  const v = i < 0 ? undefined : process.argv[i + 1];
  if (v === undefined || v.startsWith('--')) {
    process.stderr.write(`demo-tor: --${name} is required (usage: demo-tor --router-ns NS --out DIR --parent PID)\n`);
    process.exit(2);
  }
  return v;
}

/** Single-quoted for sh. */
function shq(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** Written aside and renamed, so the demo never reads half a file. */
function writeAtomic(path: string, text: string): void {
  writeFileSync(`${path}.tmp`, text);
  renameSync(`${path}.tmp`, path);
}

/** Stops the network this process started (nothing when it uses a shared one). */
let stop = async (): Promise<void> => {};

async function main(): Promise<void> {
  const routerNs = option('router-ns');
  const out = option('out');
  const parent = Number(option('parent'));
  let info: PrivateTorInfo;
  let upstream: TorUpstreamInfo;
  const shared = process.env.MVNET_DEMO_TOR_SHARED;
  if (shared) {
    ({ privateTor: info, torUpstream: upstream } = JSON.parse(readFileSync(shared, 'utf8')) as { privateTor: PrivateTorInfo; torUpstream: TorUpstreamInfo });
  } else {
    const started = await startTorWithUpstream({ largeBytes: 1024 * 1024 });
    info = started.tor.info();
    upstream = started.upstream;
    stop = started.stop;
  }
  let stopping = false;
  const finish = async (code: number): Promise<never> => {
    if (!stopping) {
      stopping = true;
      await stop().catch(() => {});
      await cleanupAll().catch(() => {});
    }
    process.exit(code);
  };
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(sig, () => void finish(0));
  // The demo's shell killed hard (SIGKILL): nobody would stop us.
  setInterval(() => {
    try {
      process.kill(parent, 0);
    } catch {
      void finish(1);
    }
  }, 1000);

  const tor = attachPrivateTor(info);
  const link = await tor.routerLink(routerNs);
  writeAtomic(join(out, 'tor.json'), `${JSON.stringify({ mode: 'embedded', torrc: tor.torrcForClient() })}\n`);
  const vars: Record<string, string> = {
    MVD_TOR_NS: info.ns,
    MVD_UP_NS: upstream.ns,
    MVD_SHARED: shared ? '1' : '0',
    MVD_RELAY_NET: RELAY_NET,
    MVD_ROUTER_IF: link.routerIf,
    MVD_ONION: info.onion.hostname,
    MVD_ONION_PORT: String(info.onion.port),
    MVD_ONION_HELLO: ONION_HELLO,
    MVD_EXIT_URL: upstream.nameUrl,
    MVD_EXIT_HELLO: upstream.hello,
    MVD_EXIT_ADDRESS: upstream.exitAddress,
  };
  writeAtomic(
    join(out, 'tor.env'),
    Object.entries(vars)
      .map(([k, v]) => `${k}=${shq(v)}\n`)
      .join(''),
  );
  process.stdout.write('ready\n');
}

main().catch(async (err: unknown) => {
  process.stderr.write(`demo-tor: ${(err as Error).message}\n`);
  await stop().catch(() => {});
  await cleanupAll().catch(() => {});
  process.exit(1);
});
