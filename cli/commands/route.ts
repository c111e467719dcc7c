import { Command } from 'commander';
import type { Ctx } from '../context.js';
import { print, table } from '../output.js';
import { CliError } from '../client.js';

interface RouteView {
  vm: string;
  attached: boolean;
  route: { kind: string };
  description: string;
}

function collect(v: string, prev: string[] = []): string[] {
  return [...prev, v];
}

export function routeCommand(ctx: Ctx): Command {
  const route = new Command('route')
    .description("set a VM's route (live; returns once it is in force)")
    .argument('[vm]', 'the VM whose route to set')
    .option('--none', 'gateway services only: nothing leaves (the default)')
    .option('--direct', 'userland NAT through host sockets')
    .option('--allow <cidr[:ports]>', 'with --direct: allow only these destinations (repeatable)', collect)
    .option('--via <vm2>', 'VM2 on the same network becomes the gateway (a firewall/VPN VM)')
    .action(async (vm: string | undefined, o: { none?: boolean; direct?: boolean; allow?: string[]; via?: string }) => {
      if (vm === undefined) throw new CliError("missing VM: mvnet route (--none | --direct [--allow RULE] | --via VM2) VM, or 'mvnet route show [VM]'");
      const kinds = [o.none, o.direct, o.via !== undefined].filter(Boolean).length;
      if (kinds !== 1) throw new CliError('give exactly one of --none, --direct, --via');
      if (o.allow !== undefined && o.direct !== true) throw new CliError('--allow goes with --direct');
      const r = o.none ? { kind: 'none' } : o.direct ? { kind: 'direct', ...(o.allow ? { allow: o.allow } : {}) } : { kind: 'via', vm: o.via };
      const res = await ctx.call<RouteView>('route.set', { vm, route: r });
      print(ctx.json(), res, () => `${res.vm}: ${res.description}${res.attached ? '' : ' (VM not attached yet)'}`);
    });
  route
    .command('show [vm]')
    .description('show routes (every VM, or one)')
    .action(async (vm: string | undefined) => {
      const rs = await ctx.call<RouteView[]>('route.show', vm !== undefined ? { vm } : {});
      print(ctx.json(), rs, () => (rs.length === 0 ? 'no VMs' : table(['VM', 'ROUTE', 'ATTACHED'], rs.map((r) => [r.vm, r.description, r.attached ? 'yes' : 'no']))));
    });
  return route;
}
