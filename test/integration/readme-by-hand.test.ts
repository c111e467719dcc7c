/**
 * The README's "By hand" steps, run as written in a clean `git clone` of this repository (the
 * committed HEAD): the block between `<!-- by-hand:start -->` and `<!-- by-hand:end -->` of the
 * clone's README.md, as one bash script with `set -euo pipefail`.
 *
 * What the test changes around the text, and why:
 * - the namespace, TAP and VM names (`vm1`, `vm2`, `tap1`, `tap2`) get a unique suffix, so runs
 *   side by side never meet;
 * - npm's global prefix is a temp dir first on PATH (`npm link` writes there, not to /usr), and
 *   npm runs offline: `npm ci` really installs and builds in the clone (~30 s), from the npm cache
 *   that this tree's own `npm ci` filled;
 * - the script runs in a private mount namespace (`unshare --mount`) with tmpfs over /var/lib and
 *   /run, so the daemon's default state dir and socket (/var/lib/mvnet, /run/mvnet/mvnet.sock)
 *   are the steps' own and vanish with it; `ip netns` mounts live there too, so the VMs'
 *   namespaces go when the last process in them does. An EXIT trap kills the background daemon
 *   if a step fails.
 */
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { REPO_ROOT } from '../support/daemon.js';
import { makeTempDir, randomSuffix, run } from '../support/netns.js';

let tmp: string | undefined;
afterAll(() => {
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

/** The shell lines between the by-hand markers (without the code fence). */
function byHandBlock(readme: string): string {
  const m = /<!-- by-hand:start -->\s*```sh\n([\s\S]*?)```\s*<!-- by-hand:end -->/.exec(readme);
  if (!m?.[1]) throw new Error('README.md has no ```sh block between <!-- by-hand:start --> and <!-- by-hand:end -->');
  return m[1];
}

it('the README by-hand steps work as written in a clean clone', async () => {
  tmp = makeTempDir('byhand');
  const clone = join(tmp, 'clone');
  await run(['git', 'clone', '--quiet', REPO_ROOT, clone], { timeoutMs: 60_000 });
  const block = byHandBlock(readFileSync(join(clone, 'README.md'), 'utf8'));

  const id = randomSuffix(5);
  const names: Record<string, string> = { vm1: `mvbh${id}a`, vm2: `mvbh${id}b`, tap1: `tbh${id}a`, tap2: `tbh${id}b` };
  const steps = block.replace(/\b(vm1|vm2|tap1|tap2)\b/g, (w) => names[w] ?? w);
  const script = join(tmp, 'by-hand.sh');
  writeFileSync(
    script,
    [
      'set -euo pipefail',
      "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT",
      steps,
      'echo "mvnet is $(command -v mvnet)"',
      '',
    ].join('\n'),
  );
  const prefix = join(tmp, 'prefix');
  const inner = `mount -t tmpfs tmpfs /var/lib && mount -t tmpfs tmpfs /run && exec timeout -s TERM 170 bash ${script}`;
  const r = await run(['unshare', '--mount', '--propagation', 'private', 'bash', '-c', inner], {
    cwd: clone,
    check: false,
    timeoutMs: 180_000,
    env: {
      ...process.env,
      PATH: `${join(prefix, 'bin')}:${process.env.PATH ?? ''}`,
      npm_config_prefix: prefix,
      npm_config_offline: 'true',
      npm_config_audit: 'false',
      npm_config_fund: 'false',
      npm_config_update_notifier: 'false',
    },
  });
  const out = `${r.stdout}\n${r.stderr}`;
  expect(r.code, out).toBe(0);
  // What the README's comments promise.
  expect(r.stdout).toMatch(/1 packets transmitted, 1 received/);
  for (const vm of [names.vm1, names.vm2]) expect(r.stdout).toMatch(new RegExp(`^${vm}\\s+A\\s+.*\\bup\\b`, 'm'));
  expect(r.stdout).toContain(`mvnet is ${join(prefix, 'bin', 'mvnet')}`);
  // The namespaces were the script's own and are gone with it.
  const left = (await run(['ip', 'netns', 'list'])).stdout;
  expect(left).not.toContain(`mvbh${id}`);
}, 200_000);
