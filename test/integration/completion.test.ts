/**
 * Shell completion and the man page, generated from the CLI definition: bash completes
 * commands, subcommands, options and (from a running daemon) VM and network names; zsh parses
 * and completes the same; the man page renders with groff and man without a warning, lists
 * every command, and the committed man/mvnet.1 is what `mvnet man` prints now.
 */
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI_JS, REPO_ROOT, runCli, startDaemon, type Daemon } from '../support/daemon.js';
import { cleanupAll, makeTempDir, run } from '../support/netns.js';

afterAll(cleanupAll);

/** A PATH with `mvnet` (the built CLI) first, as after `npm install -g`. */
function pathWithMvnet(): string {
  const bin = join(makeTempDir('bin'), 'bin');
  mkdirSync(bin);
  symlinkSync(CLI_JS, join(bin, 'mvnet'));
  return `${bin}:${process.env.PATH ?? ''}`;
}

/** Every command path of the CLI, from its own help (`mvnet help`, `mvnet vm --help`, …). */
async function commandPaths(): Promise<string[]> {
  const out: string[] = [];
  const walk = async (prefix: string[]): Promise<void> => {
    const r = await runCli(undefined, [...prefix, '--help']);
    const section = r.stdout.split(/^Commands:$/m)[1];
    if (section === undefined) return;
    for (const m of section.matchAll(/^ {2}(\S+)/gm)) {
      if (m[1] === 'help') continue;
      out.push([...prefix, m[1]!].join(' '));
      await walk([...prefix, m[1]!]);
    }
  };
  await walk([]);
  return out;
}

describe('bash completion', () => {
  let d: Daemon;
  let PATH: string;

  beforeAll(async () => {
    PATH = pathWithMvnet();
    d = await startDaemon();
    await d.cliOk(['net', 'create', 'compnet', '--subnet', '10.77.96.0/24']);
    await d.cliOk(['vm', 'attach', 'compvm1', '--net', 'compnet', '--unix-listen']);
  });

  /** COMPREPLY for the command line `line` (the cursor at its end). */
  async function complete(line: string): Promise<string[]> {
    const script = `source <(mvnet completion bash)
read -ra COMP_WORDS <<< "$LINE"
[[ $LINE == *' ' ]] && COMP_WORDS+=('')
COMP_CWORD=$((\${#COMP_WORDS[@]} - 1))
_mvnet
printf '%s\\n' "\${COMPREPLY[@]}"`;
    const r = await run(['bash', '-c', script], { env: { ...process.env, PATH, LINE: line } });
    return r.stdout.split('\n').filter(Boolean);
  }

  it('commands, subcommands and options', async () => {
    expect(await complete('mvnet ro')).toEqual(['route']);
    expect(await complete('mvnet d')).toEqual(['daemon', 'doctor']);
    expect(await complete('mvnet vm ')).toEqual(['attach', 'detach', 'list']);
    expect(await complete('mvnet --json vm at')).toEqual(['attach']);
    expect(await complete('mvnet vm attach v1 --n')).toEqual(['--net', '--netns']);
    expect(await complete('mvnet daemon --log-')).toEqual(['--log-level', '--log-format']);
    expect(await complete('mvnet completion ')).toEqual(['bash', 'zsh']);
  });

  it('VM and network names from the running daemon (the --socket on the line is used)', async () => {
    expect(await complete(`mvnet --socket ${d.socket} vm detach comp`)).toEqual(['compvm1']);
    expect(await complete(`mvnet --socket ${d.socket} vm attach v2 --net comp`)).toEqual(['compnet']);
    // No daemon there: nothing, and no error on the terminal.
    const r = await run(['bash', '-c', 'source <(mvnet completion bash); COMP_WORDS=(mvnet --socket /nonexistent.sock vm detach ""); COMP_CWORD=5; _mvnet; echo "n=${#COMPREPLY[@]}"'], { env: { ...process.env, PATH } });
    expect(r.stdout.trim()).toBe('n=0');
    expect(r.stderr).toBe('');
  });
});

describe('zsh completion', () => {
  it('parses (zsh -n) and completes subcommands and options in a real zsh', async () => {
    const file = join(makeTempDir('zsh'), '_mvnet');
    const gen = await runCli(undefined, ['completion', 'zsh']);
    expect(gen.code).toBe(0);
    writeFileSync(file, gen.stdout);
    const parse = await run(['zsh', '-n', file], { check: false });
    expect(parse.code, parse.stderr).toBe(0);
    // compadd replaced by a printer: what zsh would offer (it filters by the typed prefix itself).
    const script = `autoload -U compinit && compinit -u -d "$TMPDIR/zcomp"
source "$FILE"
compadd() { shift; print -l -- "$@"; }
words=(mvnet vm at); CURRENT=3; _mvnet; print -- ---
words=(mvnet vm attach v1 --ne); CURRENT=5; _mvnet`;
    const r = await run(['zsh', '-c', script], { env: { ...process.env, FILE: file, TMPDIR: makeTempDir('zc') } });
    const [subs, opts] = r.stdout.split('---\n');
    expect(subs!.trim().split('\n')).toEqual(['attach', 'detach', 'list']);
    expect(opts!.trim().split('\n')).toEqual(expect.arrayContaining(['--net', '--netns', '--tap', '--help']));
  });
});

describe('man page', () => {
  it('renders with groff and man without a warning, and lists every command', async () => {
    const page = (await runCli(undefined, ['man'])).stdout;
    const file = join(makeTempDir('man'), 'mvnet.1');
    writeFileSync(file, page);
    const groff = await run(['groff', '-man', '-Tutf8', '-ww', '-z', file], { check: false });
    expect(groff.code).toBe(0);
    expect(groff.stderr).toBe('');
    const man = await run(['man', '--warnings', '-l', file], { check: false, env: { ...process.env, MANWIDTH: '200', MANPAGER: 'cat', PAGER: 'cat' } });
    expect(man.code).toBe(0);
    expect(man.stderr).toBe('');
    const text = man.stdout;
    const paths = await commandPaths();
    expect(paths.length).toBeGreaterThan(30);
    for (const p of paths) expect(text, `man page lacks "mvnet ${p}"`).toContain(`mvnet ${p}`);
    for (const opt of ['--log-format', '--keep-caps', '--unix-listen', '--vhost-user', '--state-dir']) expect(text).toContain(opt);
  });

  it('man/mvnet.1 in the repository is what `mvnet man` prints (regenerate with npm run man)', async () => {
    const page = (await runCli(undefined, ['man'])).stdout;
    expect(readFileSync(join(REPO_ROOT, 'man', 'mvnet.1'), 'utf8')).toBe(page);
    const pkg = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { man?: string[] };
    expect(pkg.man).toEqual(['man/mvnet.1']);
  });
});
