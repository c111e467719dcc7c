/**
 * Installing mvnet as a user does, with the real npm: `npm pack` of this tree, then
 * `npm install -g --prefix TMP ./mvnet-0.1.0.tgz --offline` (and `npm link`, `npm install -g .`
 * of a copy of the tree), then the installed `mvnet`/`mvnet-cni` from TMP/bin: `--version`, a
 * daemon started by the systemd unit's own ExecStart command line (with its state dir and
 * socket moved to TMP) answering `mvnet status --json` and making a TAP in a namespace (the
 * native addon loaded from the installed package), `mvnet-cni` answering VERSION.
 *
 * Offline on purpose: the tarball bundles its dependencies (package.json `bundleDependencies`),
 * so the install fetches nothing (npm's --offline makes any fetch an error); the native addon is
 * compiled by the package's `install` script (node-gyp rebuild, headers from npm's `nodedir`, as
 * `npm ci` compiled it here). The tarball is packed once per file run; every temp dir is removed.
 */
import { chmodSync, cpSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../support/daemon.js';
import { cleanupAll, createNetns, makeTempDir, run, spawnProcess, uniqueName, type ManagedProcess } from '../support/netns.js';

/** systemd's fixed search path for a bare ExecStart name (and the PATH its services get). */
const SYSTEMD_PATH = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];

const VERSION = (JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string }).version;

let work: string;
let tarball: string;
let prefix: string;

/** npm with a private global prefix; `offline` so nothing is fetched. */
function npmEnv(globalPrefix: string): NodeJS.ProcessEnv {
  return { ...process.env, npm_config_prefix: globalPrefix, npm_config_offline: 'true', npm_config_audit: 'false', npm_config_fund: 'false', npm_config_update_notifier: 'false' };
}

function isExecutable(path: string): boolean {
  return existsSync(path) && (statSync(path).mode & 0o111) !== 0;
}

/** The unit's ExecStart as argv (no quoting in our unit; the leading `-@:+!` prefixes dropped). */
function execStart(unitText: string): string[] {
  const line = unitText.split('\n').find((l) => /^ExecStart=/.test(l));
  if (!line) throw new Error('systemd/mvnet.service has no ExecStart');
  return line.replace(/^ExecStart=[-@:+!]*/, '').trim().split(/\s+/);
}

/**
 * What systemd would run for `argv` if this package had been installed with npm's real global
 * prefix (its bin dir must be in systemd's search path), mapped onto TMP's bin: the executable
 * and its arguments. `/usr/bin/env NAME` looks NAME up in the service's PATH, a bare NAME in
 * systemd's search path, an absolute path is taken as it is.
 */
function resolveForPrefix(argv: string[], realBin: string, tmpBin: string): { exe: string; args: string[] } {
  const mapDir = (dir: string): string => (dir === realBin ? tmpBin : dir);
  const lookup = (name: string): string => {
    for (const dir of SYSTEMD_PATH) {
      const p = join(mapDir(dir), name);
      if (isExecutable(p)) return p;
    }
    throw new Error(`${name} is not in systemd's search path (${SYSTEMD_PATH.join(':')}) after an install to ${realBin}`);
  };
  const [first, ...rest] = argv;
  if (first === undefined) throw new Error('empty ExecStart');
  if (first === '/usr/bin/env') {
    const [name, ...args] = rest;
    if (name === undefined) throw new Error('ExecStart=/usr/bin/env without a command');
    return { exe: lookup(name), args };
  }
  if (first.startsWith('/')) {
    const slash = first.lastIndexOf('/');
    return { exe: join(mapDir(first.slice(0, slash)), first.slice(slash + 1)), args: rest };
  }
  return { exe: lookup(first), args: rest };
}

/** Starts `exe args` with the unit's state dir and socket moved under `dir`; resolves at "ready". */
async function startInstalledDaemon(exe: string, args: string[], dir: string, env: NodeJS.ProcessEnv): Promise<{ proc: ManagedProcess; socket: string }> {
  const state = join(dir, 'state');
  const run_ = join(dir, 'run');
  mkdirSync(state, { recursive: true });
  mkdirSync(run_, { recursive: true });
  const moved = args.map((a) =>
    a
      .replace(/^\/var\/lib\/mvnet$/, state)
      .replace(/^\/run\/mvnet\//, `${run_}/`)
      .replace(/^%S\/mvnet$/, state)
      .replace(/^%t\/mvnet\//, `${run_}/`),
  );
  // Without --socket/--state-dir the daemon would use its defaults (/run/mvnet/mvnet.sock,
  // /var/lib/mvnet): give it ours instead.
  if (!moved.includes('--socket')) moved.push('--socket', join(run_, 'mvnet.sock'));
  if (!moved.includes('--state-dir')) moved.push('--state-dir', state);
  const socket = moved[moved.indexOf('--socket') + 1];
  if (socket === undefined || !socket.startsWith(run_)) throw new Error(`ExecStart's --socket is not under /run/mvnet (got: ${args.join(' ')})`);
  if (moved[moved.indexOf('--state-dir') + 1] !== state) throw new Error(`ExecStart's --state-dir is not /var/lib/mvnet (got: ${args.join(' ')})`);
  const proc = spawnProcess([exe, ...moved], { env, label: `installed mvnet daemon (${dir})` });
  await proc.waitForLine((l) => l.includes('"msg":"ready"'), { timeoutMs: 20_000 });
  return { proc, socket };
}

beforeAll(async () => {
  work = makeTempDir('inst');
  // The tree is built (the global setup compiled dist/); pack it as it is, without running
  // `prepare` again in a tree other test files are reading.
  const packed = await run(['npm', 'pack', '--ignore-scripts', '--silent', '--pack-destination', work], { cwd: REPO_ROOT, timeoutMs: 90_000 });
  tarball = join(work, packed.stdout.trim().split('\n').pop() ?? '');
  expect(tarball).toBe(join(work, `mvnet-${VERSION}.tgz`));
  prefix = join(work, 'prefix');
  await run(['npm', 'install', '-g', tarball], { cwd: work, env: npmEnv(prefix), timeoutMs: 120_000 });
}, 240_000);

afterAll(async () => {
  await cleanupAll();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('npm install -g of the npm pack tarball (offline)', () => {
  it('ships dist, the native sources with binding.gyp, the unit and bundled dependencies, and no tests', async () => {
    const list = (await run(['tar', 'tzf', tarball])).stdout.split('\n');
    for (const f of ['package/dist/cli/main.js', 'package/dist/cli/cni.js', 'package/binding.gyp', 'package/plugins/native/src/addon.cc', 'package/systemd/mvnet.service', 'package/node_modules/commander/package.json']) {
      expect(list).toContain(f);
    }
    expect(list.filter((f) => /^package\/(test|dist\/test|dist\/bench|build)\//.test(f))).toEqual([]);
  });

  it('puts mvnet and mvnet-cni on PATH as executables, with the addon built next to the installed package', () => {
    const pkg = join(prefix, 'lib', 'node_modules', 'mvnet');
    expect(isExecutable(join(prefix, 'bin', 'mvnet'))).toBe(true);
    expect(isExecutable(join(prefix, 'bin', 'mvnet-cni'))).toBe(true);
    // plugins/native/index.ts looks for build/Release above dist/plugins/native/.
    expect(existsSync(join(pkg, 'build', 'Release', 'mvnet_native.node'))).toBe(true);
  });

  it('mvnet --version prints the package version', async () => {
    const r = await run([join(prefix, 'bin', 'mvnet'), '--version']);
    expect(r.stdout.trim()).toBe(VERSION);
  });

  it('mvnet-cni answers VERSION', async () => {
    const r = await run([join(prefix, 'bin', 'mvnet-cni')], { env: { ...process.env, CNI_COMMAND: 'VERSION' }, input: '{"cniVersion":"1.0.0"}' });
    const v = JSON.parse(r.stdout) as { cniVersion: string; supportedVersions: string[] };
    expect(v.supportedVersions).toContain('1.0.0');
  });

  it("the systemd unit's ExecStart resolves to the installed mvnet and starts a daemon that answers status --json", async () => {
    const pkg = join(prefix, 'lib', 'node_modules', 'mvnet');
    const unit = readFileSync(join(pkg, 'systemd', 'mvnet.service'), 'utf8');
    // Where a real `npm install -g` puts the bins: npm's global prefix (without our override).
    const plainEnv = { ...process.env };
    delete plainEnv.npm_config_prefix;
    const realPrefix = (await run(['npm', 'prefix', '-g'], { env: plainEnv })).stdout.trim();
    const realBin = join(realPrefix, 'bin');
    expect(SYSTEMD_PATH, `npm's global bin ${realBin} must be in systemd's search path for the unit to find mvnet`).toContain(realBin);
    const { exe, args } = resolveForPrefix(execStart(unit), realBin, join(prefix, 'bin'));
    expect(exe).toBe(join(prefix, 'bin', 'mvnet'));
    expect(isExecutable(exe)).toBe(true);

    const dir = join(work, 'unit-daemon');
    // As systemd runs it: PATH as systemd sets it for services, with TMP/bin standing in for npm's.
    const env = { ...process.env, PATH: SYSTEMD_PATH.map((d) => (d === realBin ? join(prefix, 'bin') : d)).join(':') };
    const { proc, socket } = await startInstalledDaemon(exe, args, dir, env);
    try {
      const r = await run([exe, '--socket', socket, 'status', '--json'], { env });
      const status = JSON.parse(r.stdout) as { daemon: { version: string; pid: number } };
      expect(status.daemon.version).toBe(VERSION);
      expect(status.daemon.pid).toBe(proc.pid);
      // A TAP inside a namespace: the native addon, found from the installed package, at work.
      const ns = await createNetns('inst');
      const tap = uniqueName('mvti');
      await run([exe, '--socket', socket, 'net', 'create', 'A', '--subnet', '10.66.0.0/24'], { env });
      await run([exe, '--socket', socket, 'vm', 'attach', 'vm1', '--net', 'A', '--tap', tap, '--netns', ns.name], { env });
      const vms = JSON.parse((await run([exe, '--socket', socket, 'status', '--json'], { env })).stdout) as { vms: { name: string; port: { state: string } }[] };
      expect(vms.vms.find((v) => v.name === 'vm1')?.port.state).toBe('up');
      await ns.waitForLink(tap);
    } finally {
      await proc.stop();
    }
  });
});

describe('npm link / npm install -g . of a clone', () => {
  // A copy of the built tree (as a clone after `npm ci`): its node_modules are linked, not
  // copied, to keep this fast; `--ignore-scripts` because the copy is already built.
  let tree: string;
  beforeAll(async () => {
    tree = join(work, 'tree');
    mkdirSync(tree);
    for (const entry of readdirSync(REPO_ROOT)) {
      if (['node_modules', '.git'].includes(entry)) continue;
      cpSync(join(REPO_ROOT, entry), join(tree, entry), { recursive: true, verbatimSymlinks: true });
    }
    await run(['ln', '-s', join(REPO_ROOT, 'node_modules'), join(tree, 'node_modules')]);
  });

  for (const variant of [['link'], ['install', '-g', '.']]) {
    it(`npm ${variant.join(' ')} puts mvnet and mvnet-cni in the global bin as executables that run`, async () => {
      // As plain `tsc` leaves them: npm must make the bins executable itself.
      for (const bin of ['main.js', 'cni.js']) chmodSync(join(tree, 'dist', 'cli', bin), 0o644);
      const globalPrefix = join(work, `prefix-${variant[0]}`);
      await run(['npm', ...variant, '--ignore-scripts'], { cwd: tree, env: npmEnv(globalPrefix), timeoutMs: 60_000 });
      const mvnet = join(globalPrefix, 'bin', 'mvnet');
      expect(isExecutable(mvnet)).toBe(true);
      expect(isExecutable(join(globalPrefix, 'bin', 'mvnet-cni'))).toBe(true);
      expect((await run([mvnet, '--version'])).stdout.trim()).toBe(VERSION);
    });
  }
});
