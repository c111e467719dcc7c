import { Command, Option } from 'commander';
import type { DaemonFlags } from '../../daemon/main.js';

export function daemonCommand(): Command {
  return new Command('daemon')
    .description('run the daemon in the foreground (logs on stdout: readable on a terminal, JSON otherwise)')
    .option('--state-dir <dir>', 'state directory (default /var/lib/mvnet)')
    .option('--socket <path>', 'control socket (default /run/mvnet/mvnet.sock)')
    .option('--config <file>', 'JSON config file')
    // Choices: a misspelt level or format is a usage error (exit 2) that names the flag.
    .addOption(new Option('--log-level <level>', 'log level').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace']))
    .addOption(new Option('--log-format <format>', 'pretty when stdout is a terminal, JSON otherwise').choices(['json', 'pretty']))
    .option('--keep-caps', 'keep every capability (as root the daemon otherwise keeps only those it needs after start)')
    .option('--host-loopback <ports>', "map the gateway address to the host's loopback for direct-routed VMs, on these ports only (e.g. 8080,9000-9010)")
    .action(async (o: DaemonFlags, cmd: Command) => {
      // The global --socket (before the subcommand) counts too.
      const parent = cmd.parent?.opts<{ socket?: string }>() ?? {};
      // Loaded here: the daemon's modules (pino, the router…) cost every other command ~0.3 s of start-up.
      const { runDaemon } = await import('../../daemon/main.js');
      await runDaemon({ ...o, socket: o.socket ?? parent.socket ?? process.env.MVNET_SOCKET });
    });
}
