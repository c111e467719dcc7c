import { Command } from 'commander';
import type { Ctx } from '../context.js';
import { confirm, print, table } from '../output.js';
import { CliError, UsageError } from '../client.js';
import type { RouteInfo, RouteSetInfo } from '../../daemon/control/api.js';
import { parseIntArg } from './net.js';
import { routeReplyLine, waitTorReady } from './tor.js';

/** Words that are commands here, never VM names (the daemon refuses them as VM names too). */
const RESERVED = new Set(['show', 'help', 'list', 'clear', 'create', 'delete', 'remove', 'add', 'set', 'all', 'none']);

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
    .option('--create', 'set the route of a VM that is not attached yet (kept for when it is)')
    .option('--clear', "forget the VM's route (back to the default, none)")
    .option('--wait', 'with a route through Tor: return once Tor is bootstrapped (progress while waiting)')
    .option('--wait-timeout <s>', 'with --wait: give up after S seconds (default 300)', parseIntArg('--wait-timeout', 1, 86_400))
    .action(async (vm: string | undefined, o: { none?: boolean; direct?: boolean; allow?: string[]; via?: string; allTor?: boolean; torPorts?: string; create?: boolean; clear?: boolean; wait?: boolean; waitTimeout?: number }) => {
      if (vm === undefined) throw new UsageError("missing VM: mvnet route (--none | --direct [--allow RULE] | --via VM2 | --all-tor) [--tor-ports P,..] [--create] VM, 'mvnet route --clear VM' or 'mvnet route show [VM]'");
      // `route --direct show` must not set the route of a VM named "show".
      if (RESERVED.has(vm.toLowerCase())) throw new UsageError(`${JSON.stringify(vm)} is a command word, not a VM name; use 'mvnet route show [VM]' or 'mvnet route --help'`);
      const kinds = [o.none, o.direct, o.via !== undefined, o.allTor].filter(Boolean).length;
      if (o.waitTimeout !== undefined && o.wait !== true) throw new UsageError('--wait-timeout goes with --wait');
      /** Prints the reply; with --wait and a route through Tor, first waits for Tor (the reply then says it is ready). */
      const reply = async (res: RouteSetInfo): Promise<void> => {
        let waited = false;
        if (o.wait === true && res.tor !== null) {
          await waitTorReady(ctx, (o.waitTimeout ?? 300) * 1000);
          res.tor = null;
          waited = true;
        }
        confirm(ctx, res, () => routeReplyLine(res, waited));
      };
      if (o.clear === true) {
        if (kinds > 0 || o.torPorts !== undefined || o.allow !== undefined || o.create === true || o.wait === true) throw new UsageError('--clear takes no other route option: mvnet route --clear VM');
        const res = await ctx.call<RouteInfo>('route.clear', { vm });
        confirm(ctx, res, () => `${res.vm}: route cleared; ${res.routeText}`);
        return;
      }
      const create = o.create === true ? { create: true } : {};
      if (kinds > 1 || (kinds === 0 && o.torPorts === undefined)) throw new UsageError('give exactly one of --none, --direct, --via, --all-tor (or --tor-ports alone)');
      if (o.allow !== undefined && o.direct !== true) throw new UsageError('--allow goes with --direct');
      if (o.torPorts !== undefined && (o.via !== undefined || o.allTor)) throw new UsageError('--tor-ports goes with --none or --direct');
      let torPorts: number[] | undefined;
      if (o.torPorts !== undefined) {
        const parts = o.torPorts.split(',');
        if (!parts.every((p) => /^\d{1,5}$/.test(p) && Number(p) >= 1 && Number(p) <= 65535)) throw new UsageError(`invalid --tor-ports ${JSON.stringify(o.torPorts)}: a comma list of ports such as 80,443`);
        torPorts = parts.map(Number);
      }
      const tp = torPorts !== undefined ? { torPorts } : {};
      if (kinds === 0) {
        // --tor-ports alone: those ports through Tor, the rest by the VM's current route.
        const [cur] = await ctx.call<RouteInfo[]>('route.show', { vm }).catch(() => [{ route: { kind: 'none', torPorts: null } } as RouteInfo]);
        const base = cur!.route;
        if (base.kind !== 'none' && base.kind !== 'direct') throw new CliError(`--tor-ports goes with --none or --direct; ${vm}'s route is ${base.kind}`);
        await reply(await ctx.call<RouteSetInfo>('route.set', { vm, route: { ...base, torPorts }, ...create }));
        return;
      }
      const r = o.allTor
        ? { kind: 'tor' }
        : o.via !== undefined
          ? { kind: 'via', vm: o.via }
          : o.direct
            ? { kind: 'direct', ...(o.allow ? { allow: o.allow } : {}), ...tp }
            : { kind: 'none', ...tp };
      await reply(await ctx.call<RouteSetInfo>('route.set', { vm, route: r, ...create }));
    });
  route
    .command('show [vm]')
    .description('show routes (every VM, or one)')
    .action(async (vm: string | undefined) => {
      // `route --direct show` reads as "set show's route" to some and "show" to others: neither.
      const given = Object.entries(route.opts()).filter(([, v]) => v !== undefined).map(([k]) => k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`));
      if (given.length > 0) throw new UsageError(`'route show' takes no route options (got --${given.join(', --')}); to set a route: mvnet route --direct VM`);
      const rs = await ctx.call<RouteInfo[]>('route.show', vm !== undefined ? { vm } : {});
      print(ctx.json(), rs, () => (rs.length === 0 ? 'no VMs' : table(['VM', 'ROUTE', 'ATTACHED'], rs.map((r) => [r.vm, r.routeText, r.attached ? 'yes' : 'no']))));
    });
  return route;
}
