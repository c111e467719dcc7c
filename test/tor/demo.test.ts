/**
 * scripts/demo.sh in its short form, as CI runs it: `MVNET_DEMO_SKIP_INSTALL=1 bash
 * scripts/demo.sh --short` against this run's private Tor network (MVNET_DEMO_TOR_SHARED: the
 * demo links its router namespace into the network the global setup started instead of starting
 * another). Asserts each step's "ok:" line, exit 0, and that none of the demo's namespaces
 * (mvdemo-<its pid>-*), /etc/netns entries or temp dirs are left.
 */
import { existsSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { REPO_ROOT } from '../support/daemon.js';
import { makeTempDir, run, spawnProcess } from '../support/netns.js';
import { privateTor, torUpstream } from './context.js';

let tmp: string | undefined;
afterAll(() => {
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

it('scripts/demo.sh --short shows every step working and leaves nothing behind', async () => {
  if (!existsSync(join(REPO_ROOT, 'dist', 'scripts', 'demo-tor.js'))) throw new Error('dist/ is not built: npm run build:ts');
  tmp = makeTempDir('demo');
  const shared = join(tmp, 'tor.json');
  writeFileSync(shared, JSON.stringify({ privateTor: privateTor().info(), torUpstream: torUpstream() }));
  const t0 = Date.now();
  const demo = spawnProcess(['bash', join(REPO_ROOT, 'scripts', 'demo.sh'), '--short'], {
    cwd: REPO_ROOT,
    env: { ...process.env, MVNET_DEMO_SKIP_INSTALL: '1', MVNET_DEMO_TOR_SHARED: shared },
    label: 'scripts/demo.sh --short',
  });
  const exit = await demo.exited;
  const out = `${demo.lines.join('\n')}\n--- stderr ---\n${demo.stderr}`;
  expect(exit.code, out).toBe(0);
  // "Under a minute" once installed (a loaded CI machine gets some slack).
  expect(Date.now() - t0, out).toBeLessThan(90_000);

  const ok = demo.lines.filter((l) => l.startsWith('ok: '));
  expect(demo.lines.join('\n')).toContain('Tor: the private Tor network of this test run');
  for (const vm of ['web', 'anon']) expect(ok.some((l) => l.startsWith(`ok: DHCP lease got: ${vm} `) && / lease 10\.77\.\d+\.\d+\/24 /.test(l)), out).toBe(true);
  const has = (re: RegExp): void => void expect(ok.some((l) => re.test(l)), `${re}\n${out}`).toBe(true);
  has(/^ok: isolation: /);
  has(/^ok: direct fetch: web got http:\/\/192\.0\.2\.80\//);
  has(/^ok: onion fetch: anon got http:\/\/demo\.onion\.mvnet\//);
  has(new RegExp(`^ok: exit fetch: .*the site saw the exit relay ${torUpstream().exitAddress.replace(/\./g, '\\.')}$`));
  // The leak check counted Tor packets and found nothing else.
  const leak = ok.find((l) => l.startsWith('ok: leak check: '));
  expect(leak, out).toMatch(/all ([1-9]\d*) to or from Tor relays; 0 others$/);
  const tshark = /^ok: tshark counted (\d+) packets/.exec(ok.find((l) => l.startsWith('ok: tshark')) ?? '');
  expect(Number(tshark?.[1] ?? 0), out).toBeGreaterThan(0);
  has(/^ok: graph printed \(\d+ lines of DOT/);
  expect(demo.lines).toContain('demo: cleaned up');

  const prefix = `mvdemo-${demo.pid}-`;
  const left = (await run(['ip', 'netns', 'list'])).stdout;
  expect(left).not.toContain(prefix);
  if (existsSync('/etc/netns')) expect(readdirSync('/etc/netns').filter((n) => n.startsWith(prefix))).toEqual([]);
  expect(readdirSync('/tmp').filter((n) => n.startsWith(prefix))).toEqual([]);
}, 150_000);
