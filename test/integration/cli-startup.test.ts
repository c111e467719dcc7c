/**
 * The CLI starts fast because it loads only what the command needs: `mvnet status` (and the
 * other everyday commands) must never load the daemon's modules, pino or the plugins. A module
 * hook (`node --import`) writes down every module the CLI process resolves, with the daemon
 * running and answering, so the command really ran to its end.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI_JS, REPO_ROOT, startDaemon, type Daemon } from '../support/daemon.js';
import { cleanupAll, makeTempDir, run } from '../support/netns.js';

/**
 * Registered with `--import`: a resolve hook (it runs on the loader's thread) appends each
 * resolved URL to $MVNET_LOADED_OUT at once, so nothing is lost however the process ends;
 * CommonJS `require` calls inside packages (commander's own files) are recorded too.
 */
const RECORDER = `
import Module, { register } from 'node:module';
import { appendFileSync } from 'node:fs';
const out = process.env.MVNET_LOADED_OUT;
const hook = 'import { appendFileSync } from "node:fs";' +
  'let out; export function initialize(d) { out = d.out; }' +
  'export async function resolve(s, c, next) { const r = await next(s, c); appendFileSync(out, r.url + "\\\\n"); return r; }';
register('data:text/javascript,' + encodeURIComponent(hook), import.meta.url, { data: { out } });
const require0 = Module.prototype.require;
Module.prototype.require = function (id) {
  const m = require0.call(this, id);
  try { appendFileSync(out, 'file://' + Module._resolveFilename(id, this) + '\\n'); } catch {}
  return m;
};
`;

const DIST = pathToFileURL(join(REPO_ROOT, 'dist')).href + '/';
const MODULES = pathToFileURL(join(REPO_ROOT, 'node_modules')).href + '/';

describe('CLI start-up: only the command its own modules', () => {
  let d: Daemon;
  let dir: string;
  let recorder: string;

  beforeAll(async () => {
    d = await startDaemon();
    dir = makeTempDir('cli-startup');
    recorder = join(dir, 'recorder.mjs');
    writeFileSync(recorder, RECORDER);
    // Something to show: a network and a VM on it, so status prints its tables.
    await d.cliOk(['net', 'create', 'su0', '--subnet', '10.77.41.0/24']);
    await d.cliOk(['vm', 'attach', 'su-vm', '--net', 'su0', '--dgram']);
  });

  afterAll(cleanupAll);

  /** Runs the CLI with the recorder; returns stdout and the loaded modules (dist/… and npm package names). */
  async function loaded(args: string[], tag: string): Promise<{ stdout: string; dist: string[]; packages: string[]; all: string[] }> {
    const out = join(dir, `${tag}.txt`);
    writeFileSync(out, '');
    const r = await run(['node', '--import', recorder, CLI_JS, '--socket', d.socket, ...args], { check: false, env: { ...process.env, MVNET_LOADED_OUT: out } });
    expect(r.code, r.stderr).toBe(0);
    const all = [...new Set(readFileSync(out, 'utf8').split('\n').filter((u) => u !== ''))];
    const dist = all.filter((u) => u.startsWith(DIST)).map((u) => u.slice(DIST.length));
    const packages = [...new Set(all.filter((u) => u.startsWith(MODULES)).map((u) => u.slice(MODULES.length).split('/').slice(0, u.slice(MODULES.length).startsWith('@') ? 2 : 1).join('/')))];
    return { stdout: r.stdout, dist, packages, all };
  }

  for (const [tag, args] of [
    ['status', ['status']],
    ['status-json', ['--json', 'status']],
    ['status-timeout', ['--timeout', '5', 'status']],
    ['vm-list', ['vm', 'list']],
    ['net-list', ['--json', 'net', 'list']],
  ] as const) {
    it(`${args.join(' ')}: no daemon module but version.js, no plugin, no package but commander`, async () => {
      const r = await loaded([...args], tag);
      // The recorder saw the command run (else an empty list would pass).
      expect(r.dist).toContain('cli/main.js');
      expect(r.stdout).toContain(tag === 'net-list' ? 'su0' : 'su-vm');
      expect(r.dist.filter((f) => f.startsWith('daemon/'))).toEqual(['daemon/version.js']);
      expect(r.dist.filter((f) => f.startsWith('plugins/'))).toEqual([]);
      expect(r.packages).toEqual(['commander']);
      expect(r.all.filter((u) => /pino|prom-client|dbus-next|vis-network|socks/.test(u))).toEqual([]);
      // Other commands' modules stay unloaded too (capture's decoders, graph's page, doctor's checks).
      expect(r.dist.filter((f) => /^cli\/(capture|graph|doctor|hook)\/|commands\/(capture|graph|doctor|hook|daemon|agent|link|key|completion|man)\.js$/.test(f))).toEqual([]);
    });
  }

  it('--version loads no command module at all', async () => {
    const r = await loaded(['--version'], 'version');
    expect(r.stdout).toMatch(/^\d+\.\d+\.\d+/);
    expect(r.dist.filter((f) => f.startsWith('cli/commands/'))).toEqual([]);
  });

  it('help still lists every command (all modules loaded for it), and a misspelt command is still suggested', async () => {
    const r = await loaded(['--help'], 'help');
    for (const c of ['daemon', 'net', 'vm', 'route', 'capture', 'status', 'graph', 'doctor', 'completion', 'man', 'version']) expect(r.stdout).toMatch(new RegExp(`^  ${c}\\b`, 'm'));
    // Help never runs an action: the daemon itself still does not load (capture's definitions
    // bring the pcapng constants, daemon/capture/pcapng.ts, which imports nothing).
    expect(r.dist.filter((f) => f.startsWith('daemon/') && f !== 'daemon/capture/pcapng.js')).toEqual(['daemon/version.js']);
    expect(r.packages).toEqual(['commander']);
    const typo = await d.cli(['statuss']);
    expect(typo.code).toBe(2);
    expect(typo.stderr).toContain('Did you mean status?');
  });
});
