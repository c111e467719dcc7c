import { Command } from 'commander';
import type { Ctx } from '../context.js';
import { confirm, print, table } from '../output.js';
import { parseIntArg } from './net.js';
import type { ForwardInfo, ForwardSpec } from '../../daemon/control/api.js';

const hostPort = (f: ForwardSpec): string => (f.host.includes(':') ? `[${f.host}]:${f.port}` : `${f.host}:${f.port}`);

export function forwardCommand(ctx: Ctx): Command {
  const fwd = new Command('forward').description('port forwards from a host address into a VM');
  fwd
    .command('add <vm>')
    .description('listen on a host address and open each connection into the VM')
    .requiredOption('--host <addr:port>', 'host listener, e.g. 127.0.0.1:8080')
    .requiredOption('--guest <port>', "the VM's port", parseIntArg('--guest', 1, 65535))
    .action(async (vm: string, o: { host: string; guest: number }) => {
      const f = await ctx.call<ForwardInfo>('forward.add', { vm, host: o.host, guestPort: o.guest });
      confirm(ctx, f, () => `forwarding ${hostPort(f)} to ${f.vm}:${f.guestPort}`);
    });
  fwd
    .command('list')
    .description('list port forwards')
    .action(async () => {
      const fs = await ctx.call<ForwardInfo[]>('forward.list');
      print(ctx.json(), fs, () =>
        fs.length === 0
          ? 'no forwards'
          : table(
              ['HOST', 'VM', 'GUEST PORT', 'LISTENING', 'CONNECTIONS', 'FAILED'],
              fs.map((f) => [hostPort(f), f.vm, f.guestPort, f.listening ? 'yes' : 'no', f.connections ?? 0, f.failures ?? 0]),
            ),
      );
    });
  fwd
    .command('remove <vm>')
    .description('remove a port forward')
    .requiredOption('--host <addr:port>', 'the host listener to remove')
    .action(async (vm: string, o: { host: string }) => {
      const f = await ctx.call<ForwardSpec>('forward.remove', { vm, host: o.host });
      confirm(ctx, f, () => `removed forward ${hostPort(f)} to ${f.vm}:${f.guestPort}`);
    });
  return fwd;
}
