/**
 * Plugins: the daemon loads an npm package listed under `plugins` in its config (a real package
 * directory in a temporary node_modules, with package.json and an ESM index.js), and the port
 * kind it registers attaches through the control API and the CLI like a built-in one: its own
 * validate() checks the options, frames flow both ways (an ARP request in, the gateway's reply
 * out), a restart re-opens it from the state. A package that cannot be loaded, or that would
 * replace a built-in kind, stops the start with one line. The hook adapter it registers runs
 * with `mvnet hook --plugin PATH --adapter echo`.
 */
import { cpSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI_JS, Daemon, REPO_ROOT, rawRpc, runCli, startDaemon } from '../support/daemon.js';
import { cleanupAll, makeTempDir, run } from '../support/netns.js';
import type { StatusInfo, VmInfo } from '../../daemon/control/api.js';

afterAll(cleanupAll);

const FIXTURE = join(REPO_ROOT, 'test', 'fixtures', 'plugin-null');

/** A config directory with node_modules/<name> copied from the fixture (with the package name changed). */
function configDir(name: string, patch: (src: string) => string = (s) => s): { dir: string; pkgDir: string } {
  const dir = makeTempDir('plug');
  const pkgDir = join(dir, 'node_modules', ...name.split('/'));
  mkdirSync(pkgDir, { recursive: true });
  cpSync(join(FIXTURE, 'package.json'), join(pkgDir, 'package.json'));
  writeFileSync(join(pkgDir, 'index.js'), patch(readFileSync(join(FIXTURE, 'index.js'), 'utf8')));
  const pkg = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8')) as { name: string };
  pkg.name = name;
  writeFileSync(join(pkgDir, 'package.json'), JSON.stringify(pkg));
  return { dir, pkgDir };
}

function writeConfig(dir: string, cfg: unknown): string {
  const file = join(dir, 'mvnet.json');
  writeFileSync(file, JSON.stringify(cfg));
  return file;
}

/** `mvnet daemon` that must refuse to start: its exit code and stderr. */
async function startRefused(config: string): Promise<{ code: number; stderr: string; stdout: string }> {
  const state = makeTempDir('plugst');
  const r = await run(['node', CLI_JS, 'daemon', '--state-dir', state, '--socket', join(state, 'mvnet.sock'), '--config', config], { check: false, timeoutMs: 20_000 });
  return { code: r.code, stderr: r.stderr, stdout: r.stdout };
}

describe('a plugin package', () => {
  let d: Daemon;
  let cfg: { dir: string; pkgDir: string };

  beforeAll(async () => {
    cfg = configDir('mvnet-plugin-null');
    d = await startDaemon({ config: writeConfig(cfg.dir, { plugins: ['mvnet-plugin-null'] }) });
    await d.cliOk(['net', 'create', 'A', '--subnet', '10.77.90.0/24']);
  });

  it('is loaded at start and listed in status', async () => {
    const s = await d.cliJson<StatusInfo>(['status']);
    expect(s.daemon.plugins).toEqual([{ source: 'mvnet-plugin-null', portDrivers: ['null'], hookAdapters: ['echo'] }]);
    const ready = d.logs.find((l) => l.msg === 'ready');
    expect(ready?.plugins).toEqual(s.daemon.plugins);
    expect(await d.cliOk(['status'])).toContain('plugin mvnet-plugin-null: port kinds null; hook adapters echo');
  });

  it('attaches a VM with its kind (CLI --kind), frames flow both ways, detach closes it', async () => {
    const gotReply = d.waitForLog((l) => l.msg === 'null port got a frame' && l.label === 'p1' && l.arpReply === true);
    const v = await d.cliJson<VmInfo>([
      'vm', 'attach', 'p1', '--net', 'A', '--kind', 'null',
      '--options', JSON.stringify({ label: 'p1', mac: '02:00:00:00:90:01', ip: '10.77.90.5', probe: '10.77.90.1' }),
    ]);
    expect(v.port).toMatchObject({ kind: 'plugin', driver: 'null', options: { label: 'p1', probe: '10.77.90.1' }, state: 'up' });
    // The ARP request the port sent reached the gateway, whose reply came back through send().
    const reply = await gotReply;
    expect(reply.from).toBe('10.77.90.1');
    const after = await d.vm('p1');
    expect(after.port.stats.rxFrames).toBe(1);
    expect(after.port.stats.txFrames).toBeGreaterThanOrEqual(1);
    expect(after.mac).toBe('02:00:00:00:90:01');
    expect((await d.cliOk(['vm', 'list']))).toContain('null {"label":"p1"');
    const closed = d.waitForLog((l) => l.msg === 'null port closed' && l.label === 'p1');
    await d.cliOk(['vm', 'detach', 'p1']);
    expect((await closed).remove).toBe(true);
  });

  it("validates options with the plugin's own validate(), over the CLI and raw JSON-RPC", async () => {
    const r = await d.cli(['vm', 'attach', 'p2', '--net', 'A', '--kind', 'null', '--options', '{"label":"p2","colour":"red"}']);
    expect(r.code).not.toBe(0);
    expect(r.stderr.trim()).toMatch(/^mvnet: null: unknown option colour$/);
    const raw = await rawRpc(d.socket, 'vm.attach', { name: 'p2', net: 'A', port: { kind: 'plugin', driver: 'null', options: { label: 'BAD LABEL' } } });
    expect(raw.error?.message).toBe('null: label must be 1-16 of a-z, 0-9, -');
    const proto = await rawRpc(d.socket, 'vm.attach', { name: 'p2', net: 'A', port: { kind: 'plugin', driver: 'null', options: JSON.parse('{"__proto__":{"label":"x"}}') as unknown } });
    expect(proto.error?.message).toContain('__proto__ is not allowed');
    const extra = await rawRpc(d.socket, 'vm.attach', { name: 'p2', net: 'A', port: { kind: 'plugin', driver: 'null', options: { label: 'p2' }, path: '/tmp/x' } });
    expect(extra.error?.message).toContain('port.path does not apply to kind plugin');
    const unknown = await rawRpc(d.socket, 'vm.attach', { name: 'p2', net: 'A', port: { kind: 'plugin', driver: 'nope', options: {} } });
    expect(unknown.error?.message).toBe('no port driver "nope" is loaded (plugin kinds: null)');
    // A plugin kind is named only through kind "plugin": built-in kinds keep their strict checks.
    const bare = await rawRpc(d.socket, 'vm.attach', { name: 'p2', net: 'A', port: { kind: 'null', label: 'p2' } });
    expect(bare.error?.message).toContain('unknown port kind "null"');
    const tap = await rawRpc(d.socket, 'vm.attach', { name: 'p2', net: 'A', port: { kind: 'tap', options: {} } });
    expect(tap.error?.message).toBeDefined();
    expect((await d.status()).vms.map((v) => v.name)).not.toContain('p2');
  });

  it("refuses a second attachment of the same device (the driver's key)", async () => {
    await d.cliOk(['vm', 'attach', 'k1', '--net', 'A', '--kind', 'null', '--options', '{"label":"same"}']);
    const r = await d.cli(['vm', 'attach', 'k2', '--net', 'A', '--kind', 'null', '--options', '{"label":"same"}']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('already used by VM k1');
    await d.cliOk(['vm', 'detach', 'k1']);
  });

  it('re-opens a plugin device from the state after a restart', async () => {
    await d.cliOk(['vm', 'attach', 'r1', '--net', 'A', '--kind', 'null', '--options', '{"label":"r1"}']);
    await d.restart();
    const v = await d.vm('r1');
    expect(v.port).toMatchObject({ kind: 'plugin', driver: 'null', options: { label: 'r1' }, state: 'up' });
    await d.cliOk(['vm', 'detach', 'r1']);
  });

  it('a restart without the package keeps its attachment, listed down with the reason, and detach works', async () => {
    await d.cliOk(['vm', 'attach', 'r2', '--net', 'A', '--kind', 'null', '--options', '{"label":"r2"}']);
    await d.stop();
    const bare = new Daemon({ stateDir: d.stateDir, socket: d.socket });
    await bare.start();
    try {
      const v = await bare.vm('r2');
      expect(v.port).toMatchObject({ kind: 'plugin', driver: 'null', options: { label: 'r2' }, state: 'down' });
      expect(v.port.detail).toContain('no port driver null is loaded');
      // Nothing else can take its place: a plugin kind that is not loaded cannot be attached.
      const r = await bare.cli(['vm', 'attach', 'r3', '--net', 'A', '--kind', 'null', '--options', '{"label":"r3"}']);
      expect(r.stderr.trim()).toBe('mvnet: no port driver "null" is loaded (no plugin kinds loaded; see the config key plugins)');
      await bare.cliOk(['vm', 'detach', 'r2']);
    } finally {
      await bare.stop();
    }
    await d.start();
    expect((await d.status()).vms.map((v) => v.name)).not.toContain('r2');
  });

  it('registers a hook adapter: mvnet hook --plugin PATH --adapter echo', async () => {
    const r = await run(['node', CLI_JS, '--socket', '/nonexistent/x.sock', 'hook', '--plugin', cfg.pkgDir, '--adapter', 'echo', 'ADD', 'fail'], {
      check: false,
      input: 'hello',
      env: { ...process.env, ECHO_VAR: 'v1' },
    });
    expect(r.code).toBe(3);
    expect(JSON.parse(r.stdout)).toEqual({ args: ['ADD', 'fail'], socket: '/nonexistent/x.sock', env: 'v1', stdin: 'hello' });
    // Without the package the adapter is unknown; the built-in adapters cannot be replaced.
    const none = await runCli('/nonexistent/x.sock', ['hook', '--adapter', 'echo', 'ADD']);
    expect(none.code).toBe(1);
    expect(JSON.parse(none.stdout)).toEqual({ code: 4, msg: 'no hook adapter "echo": cni, mvnet' });
  });
});

describe('a plugin that cannot be loaded stops the start (fail closed)', () => {
  it('a package that is not installed', async () => {
    const dir = makeTempDir('plugcfg');
    const r = await startRefused(writeConfig(dir, { plugins: ['mvnet-plugin-missing'] }));
    expect(r.code).not.toBe(0);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^mvnet: plugin mvnet-plugin-missing: not installed \(no node_modules\/mvnet-plugin-missing above /);
    expect(r.stdout).not.toContain('"msg":"ready"');
  });

  it('a package that would replace a built-in kind', async () => {
    const c = configDir('mvnet-plugin-tap', (src) => src.replace("kind: 'null'", "kind: 'tap'"));
    const r = await startRefused(writeConfig(c.dir, { plugins: ['mvnet-plugin-tap'] }));
    expect(r.code).not.toBe(0);
    expect(r.stderr.trim()).toMatch(/^mvnet: plugin mvnet-plugin-tap: port driver tap would replace a built-in kind \(tap, tun, unix, unix-listen, dgram, fd, iface, vhost-user\)$/);
  });

  it('two packages registering the same kind', async () => {
    const a = configDir('mvnet-plugin-a');
    const bDir = join(a.dir, 'node_modules', 'mvnet-plugin-b');
    cpSync(a.pkgDir, bDir, { recursive: true });
    const r = await startRefused(writeConfig(a.dir, { plugins: ['mvnet-plugin-a', bDir] }));
    expect(r.stderr.trim()).toBe(`mvnet: plugin ${bDir}: port driver null is already registered by mvnet-plugin-a`);
  });

  it('a package whose register() throws, or that exports none', async () => {
    const t = configDir('mvnet-plugin-throws', (src) => src.replace('export function register(api) {', "export function register(api) {\n  throw new Error('no licence');"));
    expect((await startRefused(writeConfig(t.dir, { plugins: ['mvnet-plugin-throws'] }))).stderr.trim()).toBe('mvnet: plugin mvnet-plugin-throws: no licence');
    const n = configDir('mvnet-plugin-none', (src) => src.replace('export function register(api) {', 'export function notRegister(api) {'));
    expect((await startRefused(writeConfig(n.dir, { plugins: ['mvnet-plugin-none'] }))).stderr.trim()).toBe('mvnet: plugin mvnet-plugin-none: its entry exports no register(api) function');
  });

  it('a config whose plugins are not package names', async () => {
    for (const [plugins, reason] of [
      ['mvnet-plugin-null', 'must be a list of npm package names'],
      [['../evil'], '"../evil" is not an npm package name or an absolute path'],
      [[42], '42 is not an npm package name or an absolute path'],
      [['a', 'a'], 'a is listed twice'],
    ] as const) {
      const dir = makeTempDir('plugcfg');
      const r = await startRefused(writeConfig(dir, { plugins }));
      expect(r.code).not.toBe(0);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toContain(reason);
    }
  });
});
