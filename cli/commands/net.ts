import { Command, InvalidArgumentError } from 'commander';
import type { Ctx } from '../context.js';
import { confirm, print, table, drops } from '../output.js';
import type { NetDeleteResult, NetInfo } from '../../daemon/control/api.js';

export function parseIntArg(what: string, min: number, max: number) {
  return (v: string): number => {
    if (!/^\d+$/.test(v)) throw new InvalidArgumentError(`${what} must be an integer from ${min} to ${max}`);
    const n = Number(v);
    if (n < min || n > max) throw new InvalidArgumentError(`${what} must be an integer from ${min} to ${max}`);
    return n;
  };
}

export function netCommand(ctx: Ctx): Command {
  const net = new Command('net').description('isolated networks');
  net
    .command('create <name>')
    .description('create an isolated network')
    .requiredOption('--subnet <cidr>', 'IPv4 subnet, e.g. 10.10.0.0/24')
    .option('--gateway <ip>', "gateway address (default: the subnet's first host)")
    .option('--ipv6 <prefix>', 'IPv6 prefix, e.g. fd00:10::/64')
    .option('--mtu <n>', 'MTU (576-65520, default 1500)', parseIntArg('--mtu', 576, 65520))
    .option('--dhcp-range <first-last>', 'addresses DHCP hands out, e.g. 10.10.0.100-10.10.0.149 (default: the whole subnet)')
    .action(async (name: string, o: { subnet: string; gateway?: string; ipv6?: string; mtu?: number; dhcpRange?: string }) => {
      const n = await ctx.call<NetInfo>('net.create', { name, ...o });
      confirm(ctx, n, () => `created network ${n.name}: ${n.subnet} gateway ${n.gateway}${n.ipv6 ? ` ipv6 ${n.ipv6}` : ''} mtu ${n.mtu}${n.dhcpRange ? ` dhcp ${n.dhcpRange}` : ''}`);
    });
  net
    .command('list')
    .description('list networks')
    .action(async () => {
      const nets = await ctx.call<NetInfo[]>('net.list');
      print(ctx.json(), nets, () =>
        nets.length === 0
          ? 'no networks'
          : table(
              ['NAME', 'SUBNET', 'GATEWAY', 'DHCP', 'IPV6', 'MTU', 'VMS', 'DROPS'],
              nets.map((n) => [n.name, n.subnet, n.gateway, n.dhcpRange ?? '-', n.ipv6 ?? '-', n.mtu, n.vms.join(',') || '-', drops(n.stats.drops)]),
            ),
      );
    });
  net
    .command('delete <name>')
    .description('delete a network (refuses while VMs are attached unless --force)')
    .option('--force', 'detach its VMs first')
    .action(async (name: string, o: { force?: boolean }) => {
      const r = await ctx.call<NetDeleteResult>('net.delete', { name, force: o.force === true });
      confirm(ctx, r, () => `deleted network ${r.deleted}${r.detached.length > 0 ? ` (detached ${r.detached.join(', ')})` : ''}`);
    });
  return net;
}
