import { Command } from 'commander';
import type { Ctx } from '../context.js';
import { print, table } from '../output.js';
import { CliError } from '../client.js';
import type { RouteInfo } from '../../daemon/control/api.js';

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
    .option('--all-tor', 'every TCP stream and DNS query through Tor, per-VM circuits; nothing else leaves')
    .option('--tor-ports <ports>', 'these TCP destination ports through Tor (with --none, the default, or --direct)')
    .action(async (vm: string | undefined, o: { none?: boolean; direct?: boolean; allow?: string[]; via?: string; allTor?: boolean; torPorts?: string }) => {
      if (vm === undefined) throw new CliError("missing VM: mvnet route (--none | --direct [--allow RULE] | --via VM2 | --all-tor) [--tor-ports P,..] VM, or 'mvnet route show [VM]'");
      const kinds = [o.none, o.direct, o.via !== undefined, o.allTor].filter(Boolean).length;
      if (kinds > 1 || (kinds === 0 && o.torPorts === undefined)) throw new CliError('give exactly one of --none, --direct, --via, --all-tor (or --tor-ports alone)');
      if (o.allow !== undefined && o.direct !== true) throw new CliError('--allow goes with --direct');
      if (o.torPorts !== undefined && (o.via !== undefined || o.allTor)) throw new CliError('--tor-ports goes with --none or --direct');
      let torPorts: number[] | undefined;
      if (o.torPorts !== undefined) {
        const parts = o.torPorts.split(',');
        if (!parts.every((p) => /^\d{1,5}$/.test(p) && Number(p) >= 1 && Number(p) <= 65535)) throw new CliError(`invalid --tor-ports ${JSON.stringify(o.torPorts)}: a comma list of ports such as 80,443`);
        torPorts = parts.map(Number);
      }
      const tp = torPorts !== undefined ? { torPorts } : {};
      if (kinds === 0) {
        // --tor-ports alone: those ports through Tor, the rest by the VM's current route.
        const [cur] = await ctx.call<RouteInfo[]>('route.show', { vm }).catch(() => [{ route: { kind: 'none' } } as RouteInfo]);
        const base = cur!.route as { kind: string; allow?: unknown };
        if (base.kind !== 'none' && base.kind !== 'direct') throw new CliError(`--tor-ports goes with --none or --direct; ${vm}'s route is ${base.kind}`);
        const res = await ctx.call<RouteInfo>('route.set', { vm, route: { ...base, torPorts } });
        print(ctx.json(), res, () => `${res.vm}: ${res.description}${res.attached ? '' : ' (VM not attached yet)'}`);
        return;
      }
      const r = o.allTor
        ? { kind: 'tor' }
        : o.via !== undefined
          ? { kind: 'via', vm: o.via }
          : o.direct
            ? { kind: 'direct', ...(o.allow ? { allow: o.allow } : {}), ...tp }
            : { kind: 'none', ...tp };
      const res = await ctx.call<RouteInfo>('route.set', { vm, route: r });
      print(ctx.json(), res, () => `${res.vm}: ${res.description}${res.attached ? '' : ' (VM not attached yet)'}`);
    });
  route
    .command('show [vm]')
    .description('show routes (every VM, or one)')
    .action(async (vm: string | undefined) => {
      const rs = await ctx.call<RouteInfo[]>('route.show', vm !== undefined ? { vm } : {});
      print(ctx.json(), rs, () => (rs.length === 0 ? 'no VMs' : table(['VM', 'ROUTE', 'ATTACHED'], rs.map((r) => [r.vm, r.description, r.attached ? 'yes' : 'no']))));
    });
  return route;
}
