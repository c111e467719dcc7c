#!/usr/bin/env node
/**
 * `mvnet`: the daemon and its CLI. People get text, programs get `--json`; every error is one
 * line on stderr (one JSON object under --json) and an exit code from cli/exit-codes.ts.
 */
import type { EventEmitter } from 'node:events';
import { Command, CommanderError } from 'commander';
import { makeCtx, parseTimeout } from './context.js';
import { safeText } from './text.js';
import { CliError } from './client.js';
import { EXIT, EXIT_NAMES, type ExitCode } from './exit-codes.js';
import type { CliErrorJson, VersionInfo } from '../daemon/control/api.js';
import { packageVersion } from '../daemon/version.js';

const program = new Command('mvnet')
  .description('userspace VM router: isolated networks, userland TCP/IP, Tor routing')
  .version(packageVersion(), '-v, --version', 'print the version')
  .option('--socket <path>', 'control socket (env MVNET_SOCKET, default /run/mvnet/mvnet.sock)')
  .option('--json', 'machine-readable output (errors: one JSON object on stderr)')
  .option('--timeout <sec>', "seconds to wait for the daemon's answer (env MVNET_TIMEOUT, default 10; 0: for ever)", (v: string) => parseTimeout(v))
  .option('-q, --quiet', 'no confirmation lines on stdout (errors still go to stderr; --json unchanged)')
  .showHelpAfterError(false)
  .exitOverride();

const ctx = makeCtx(program);
/** `mvnet version` and `-v`/`--version`: the same output, JSON under --json. */
function printVersion(json: boolean): void {
  const v: VersionInfo = { version: packageVersion() };
  process.stdout.write(json ? JSON.stringify(v) + '\n' : `${v.version}\n`);
}
const version = new Command('version').description('print the version').action(() => printVersion(ctx.json()));
// Commander's own -v handler prints the bare version the moment it meets the flag (before a
// later --json is even parsed): replaced by one that honours --json wherever it stands.
// (Command is an EventEmitter at run time; its typings only declare on().)
(program as unknown as EventEmitter).removeAllListeners('option:version');
program.on('option:version', () => {
  printVersion(jsonWanted());
  throw new CommanderError(0, 'commander.version', packageVersion());
});

/**
 * Each command's module, loaded only when needed: start-up time is mostly module loading, and
 * `mvnet status` in a script loop should not pay for `capture`'s decoders or `graph`'s page. In
 * help order.
 */
const COMMANDS: readonly (readonly [string, () => Promise<Command>])[] = [
  ['daemon', async () => (await import('./commands/daemon.js')).daemonCommand()],
  ['net', async () => (await import('./commands/net.js')).netCommand(ctx)],
  ['vm', async () => (await import('./commands/vm.js')).vmCommand(ctx)],
  ['route', async () => (await import('./commands/route.js')).routeCommand(ctx)],
  ['forward', async () => (await import('./commands/forward.js')).forwardCommand(ctx)],
  ['tor', async () => (await import('./commands/tor.js')).torCommand(ctx)],
  ['onion', async () => (await import('./commands/tor.js')).onionCommand(ctx)],
  ['capture', async () => (await import('./commands/capture.js')).captureCommand(ctx)],
  ['tee', async () => (await import('./commands/tee.js')).teeCommand(ctx)],
  ['status', async () => (await import('./commands/status.js')).statusCommand(ctx)],
  ['graph', async () => (await import('./commands/graph.js')).graphCommand(ctx)],
  ['hook', async () => (await import('./commands/hook.js')).hookCommand(ctx)],
  ['key', async () => (await import('./commands/key.js')).keyCommand(ctx)],
  ['link', async () => (await import('./commands/link.js')).linkCommand(ctx)],
  ['agent', async () => (await import('./commands/agent.js')).agentCommand()],
  ['events', async () => (await import('./commands/events.js')).eventsCommand(ctx)],
  ['doctor', async () => (await import('./commands/doctor.js')).doctorCommand(ctx)],
  // These two read the whole tree: they are only ever loaded with every other command.
  ['completion', async () => (await import('./commands/completion.js')).completionCommand(program)],
  ['man', async () => (await import('./commands/man.js')).manCommand(program)],
  ['version', () => Promise.resolve(version)],
];
/** Global options that take a value: the word after them is not the command. */
const GLOBAL_VALUE_OPTIONS = new Set(['--socket', '--timeout']);

/**
 * Which command modules to load: the one the arguments name; none for a bare `-v`/`--version`
 * (answered while the options are parsed); all for help, an unknown or missing command
 * (commander lists or suggests every command), completion and man.
 */
function commandsToLoad(args: readonly string[]): string | 'all' | 'none' {
  let version = false;
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--') return 'all';
    if (a === '-h' || a === '--help') return 'all';
    if (a.startsWith('-')) {
      if (a === '-v' || a === '--version') version = true;
      if (GLOBAL_VALUE_OPTIONS.has(a)) i++;
      continue;
    }
    if (version) return 'none';
    return a === 'completion' || a === 'man' || !COMMANDS.some(([n]) => n === a) ? 'all' : a;
  }
  return version ? 'none' : 'all';
}

const wanted = commandsToLoad(process.argv.slice(2));
const toLoad = wanted === 'none' ? [] : COMMANDS.filter(([n]) => wanted === 'all' || n === wanted);
for (const c of await Promise.all(toLoad.map(([, load]) => load()))) program.addCommand(c);

// Subcommands inherit the exit override; commander's own error lines are not written here but
// by fail() below, so that every error (commander's, a parser's, the daemon's) is one line, or
// one JSON object under --json.
function quiet(cmd: Command): void {
  cmd.exitOverride();
  cmd.configureOutput({ outputError: () => {} });
  // Each command's --help lists the global options too (--json, --socket, --timeout, --quiet).
  cmd.configureHelp({ showGlobalOptions: true });
  for (const c of cmd.commands) quiet(c);
}
quiet(program);

/** --json, also when parsing failed before commander stored it. */
function jsonWanted(): boolean {
  return program.opts().json === true || process.argv.slice(2).includes('--json');
}

function fail(message: string, exitCode: ExitCode, code: string = EXIT_NAMES[exitCode], rpcCode: number | null = null): never {
  const line = message.replace(/\s*\n\s*/g, ' ').trim();
  if (jsonWanted()) {
    const e: CliErrorJson = { error: { code, exitCode, message: line, rpcCode } };
    process.stderr.write(JSON.stringify(e) + '\n');
  } else {
    // The daemon's messages may quote Tor or a peer: no control characters reach the terminal.
    process.stderr.write(`mvnet: ${safeText(line)}\n`);
  }
  process.exit(exitCode);
}

try {
  await program.parseAsync(process.argv);
} catch (e) {
  if (e instanceof CliError) fail(e.message, e.exitCode, e.code, e.rpcCode);
  if (e instanceof CommanderError) {
    // Help and version: exit 0. Help shown for a missing subcommand was already written (to stderr).
    if (e.exitCode === 0) process.exit(0);
    if (e.code === 'commander.help') process.exit(EXIT.USAGE);
    // A usage error found by commander, or an InvalidArgumentError a parser threw (in an option or in an action).
    fail(e.message.replace(/^error: /, ''), EXIT.USAGE);
  }
  fail((e as Error).message, EXIT.ERROR);
}
