#!/usr/bin/env node
/**
 * `mvnet`: the daemon and its CLI. People get text, programs get `--json`; every error is one
 * line on stderr and a non-zero exit.
 */
import { Command, CommanderError } from 'commander';
import { makeCtx } from './context.js';
import { netCommand } from './commands/net.js';
import { vmCommand } from './commands/vm.js';
import { statusCommand } from './commands/status.js';
import { daemonCommand } from './commands/daemon.js';
import { routeCommand } from './commands/route.js';
import { forwardCommand } from './commands/forward.js';
import { torCommand, onionCommand } from './commands/tor.js';
import { captureCommand } from './commands/capture.js';
import { teeCommand } from './commands/tee.js';
import { hookCommand } from './commands/hook.js';
import { graphCommand } from './commands/graph.js';
import { keyCommand } from './commands/key.js';
import { linkCommand } from './commands/link.js';
import { agentCommand } from './commands/agent.js';
import { doctorCommand } from './commands/doctor.js';
import { completionCommand } from './commands/completion.js';
import { manCommand } from './commands/man.js';
import { packageVersion } from '../daemon/version.js';

const program = new Command('mvnet')
  .description('userspace VM router: isolated networks, userland TCP/IP, Tor routing')
  .version(packageVersion())
  .option('--socket <path>', 'control socket (env MVNET_SOCKET, default /run/mvnet/mvnet.sock)')
  .option('--json', 'machine-readable output')
  .showHelpAfterError(false)
  .exitOverride();

const ctx = makeCtx(program);
for (const c of [daemonCommand(), netCommand(ctx), vmCommand(ctx), routeCommand(ctx), forwardCommand(ctx), torCommand(ctx), onionCommand(ctx), captureCommand(ctx), teeCommand(ctx), statusCommand(ctx), graphCommand(ctx), hookCommand(ctx), keyCommand(ctx), linkCommand(ctx), agentCommand(), doctorCommand(ctx), completionCommand(program), manCommand(program)]) program.addCommand(c);

// Subcommands inherit the exit override and the one-line error style.
function quiet(cmd: Command): void {
  cmd.exitOverride();
  cmd.configureOutput({ outputError: (s, write) => write(s.split('\n')[0]!.replace(/^error: /, 'mvnet: ') + '\n') });
  for (const c of cmd.commands) quiet(c);
}
quiet(program);

try {
  await program.parseAsync(process.argv);
} catch (e) {
  if (e instanceof CommanderError) {
    // Help and version exit 0; usage errors were already printed as one line.
    process.exit(e.exitCode);
  }
  process.stderr.write(`mvnet: ${(e as Error).message.split('\n')[0]}\n`);
  process.exit(1);
}
