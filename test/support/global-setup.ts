/**
 * vitest globalSetup: build once, then make sure the machine can run the privileged suite.
 *
 * - Compiles `dist/` with `tsc -p tsconfig.build.json` when any source is newer than
 *   `dist/cli/main.js` (so `npm test`, which has just built, does not pay twice).
 * - Builds the native addon (`npm run install`, i.e. `node-gyp rebuild`) only when
 *   `build/Release/mvnet_native.node` is missing.
 * - Unless MVNET_SKIP_PRIVILEGED=1, checks root, /dev/net/tun and `ip netns`, and throws — fails
 *   the whole run — with one clear paragraph when something is missing. Never a silent skip.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const BUILD_DIRS = ['daemon', 'cli', 'plugins', 'bench', 'scripts'];
const ADDON = join(ROOT, 'build', 'Release', 'mvnet_native.node');

function sh(cmd: string, args: string[], what: string): void {
  const r = spawnSync(cmd, args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  if (r.status !== 0) {
    throw new Error(`global setup: ${what} failed (${cmd} ${args.join(' ')}, exit ${r.status ?? r.signal}):\n${r.stdout}${r.stderr}`);
  }
}

function newestSourceMtime(dir: string): number {
  let newest = 0;
  if (!existsSync(dir)) return 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, entry.name);
    if (entry.isDirectory()) {
      if (entry.name !== 'node_modules') newest = Math.max(newest, newestSourceMtime(p));
    } else if (entry.name.endsWith('.ts')) {
      newest = Math.max(newest, statSync(p).mtimeMs);
    }
  }
  return newest;
}

function build(): void {
  const main = join(ROOT, 'dist', 'cli', 'main.js');
  const srcNewest = Math.max(
    ...BUILD_DIRS.map((d) => newestSourceMtime(join(ROOT, d))),
    statSync(join(ROOT, 'tsconfig.json')).mtimeMs,
    statSync(join(ROOT, 'tsconfig.build.json')).mtimeMs,
  );
  if (!existsSync(main) || statSync(main).mtimeMs < srcNewest) {
    sh(join(ROOT, 'node_modules', '.bin', 'tsc'), ['-p', 'tsconfig.build.json'], 'TypeScript build');
    // As `npm run prepare` does: the package's bins run as programs (tsc makes new files 0644).
    for (const bin of ['main.js', 'cni.js']) chmodSync(join(ROOT, 'dist', 'cli', bin), 0o755);
  }
  if (!existsSync(ADDON)) {
    // The root package's own `install` script is `node-gyp rebuild`; `npm run` puts npm's bundled
    // node-gyp on PATH (node-gyp is not a devDependency, so a bare `npx node-gyp` would download it).
    sh('npm', ['run', '--silent', 'install'], 'native addon build (npm run install → node-gyp rebuild)');
    if (!existsSync(ADDON)) throw new Error(`global setup: node-gyp rebuild succeeded but ${ADDON} does not exist`);
  }
}

/** Returns what is missing for the privileged suite (empty when all is well). */
export function privilegeProblems(): string[] {
  const problems: string[] = [];
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) {
    problems.push(`the tests are not running as root (uid ${process.getuid?.() ?? '?'})`);
  }
  if (!existsSync('/dev/net/tun')) problems.push('/dev/net/tun does not exist (no tun module, or not exposed to this container)');
  if (problems.length === 0) {
    const name = `mvt-probe-${process.pid}`;
    const add = spawnSync('ip', ['netns', 'add', name], { encoding: 'utf8' });
    if (add.error) {
      problems.push(`\`ip\` could not be run (${add.error.message}); install iproute2`);
    } else if (add.status !== 0) {
      problems.push(`\`ip netns add\` failed: ${add.stderr.trim()}`);
    } else {
      const ex = spawnSync('ip', ['netns', 'exec', name, 'ip', 'link', 'set', 'lo', 'up'], { encoding: 'utf8' });
      if (ex.status !== 0) problems.push(`\`ip netns exec\` failed: ${(ex.stderr ?? '').trim()}`);
      spawnSync('ip', ['netns', 'del', name]);
    }
  }
  return problems;
}

export default function setup(): void {
  build();
  if (process.env.MVNET_SKIP_PRIVILEGED === '1') return;
  const problems = privilegeProblems();
  if (problems.length > 0) {
    throw new Error(
      `mvnet's integration tests need root, /dev/net/tun and working network namespaces, because ` +
        `they create TAP devices and namespaces that play the VMs; on this machine ${problems.join('; and ')}. ` +
        `Run the suite as root on a Linux host or a privileged container (e.g. \`sudo npm test\`, or ` +
        `\`docker run --privileged\`/--cap-add NET_ADMIN,SYS_ADMIN with --device /dev/net/tun), or set ` +
        `MVNET_SKIP_PRIVILEGED=1 to run only the unit tests (test/unit) deliberately.`,
    );
  }
}
