import { Command } from 'commander';
import { runDaemon } from '../../daemon/main.js';

export function daemonCommand(): Command {
  return new Command('daemon')
    .description('run the daemon in the foreground (JSON logs on stdout)')
    .option('--state-dir <dir>', 'state directory (default /var/lib/mvnet)')
    .option('--socket <path>', 'control socket (default /run/mvnet/mvnet.sock)')
    .option('--config <file>', 'JSON config file')
    .option('--log-level <level>', 'fatal, error, warn, info, debug or trace')
    .option('--host-loopback <ports>', "map the gateway address to the host's loopback for direct-routed VMs, on these ports only (e.g. 8080,9000-9010)")
    .action(async (o: { stateDir?: string; socket?: string; config?: string; logLevel?: string; hostLoopback?: string }, cmd: Command) => {
      // The global --socket (before the subcommand) counts too.
      const parent = cmd.parent?.opts<{ socket?: string }>() ?? {};
      await runDaemon({ ...o, socket: o.socket ?? parent.socket ?? process.env.MVNET_SOCKET });
    });
}
