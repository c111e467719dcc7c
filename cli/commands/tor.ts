import { Command } from 'commander';
import type { Ctx } from '../context.js';
import { print, table } from '../output.js';
import { safeText } from '../text.js';
import { CliError, UsageError } from '../client.js';
import { parseIntArg } from './net.js';
import { torPhaseText, torReason } from './tor-text.js';
import { commandProgress, pollUntil } from '../progress.js';
import type {
  OnionAliasInfo,
  OnionAliasRemoved,
  OnionDiscovery,
  OnionEndpoint,
  OnionExposeInfo,
  OnionUnexposeResult,
  RouteSetInfo,
  TorNewnymResult,
  TorStatus,
} from '../../daemon/control/api.js';

export { torPhaseText, torReason, torStatusLine } from './tor-text.js';

/** The human line of a route reply: with a Tor route while Tor is not ready, why the VM fails closed. */
export function routeReplyLine(res: RouteSetInfo, waited: boolean): string {
  const base = `${res.vm}: ${res.routeText}${res.attached ? '' : ' (VM not attached yet)'}`;
  if (waited) return `${base}; Tor is ready`;
  if (res.tor === null) return base;
  const why = torReason(res.tor);
  return `${base}\nTor is ${torPhaseText(res.tor)}: ${res.vm} fails closed until Tor is ready${why !== undefined ? `; tor says: ${why}` : ''} (mvnet tor status; route --wait waits for it)`;
}

/**
 * Polls `tor.status` (short calls, not one long one) until Tor is ready, showing the bootstrap
 * as it goes; throws after `timeoutMs` with tor's reason.
 */
export async function waitTorReady(ctx: Ctx, timeoutMs: number): Promise<TorStatus> {
  const progress = commandProgress(ctx.json());
  let last: TorStatus | undefined;
  const ready = await pollUntil(
    async () => {
      last = await ctx.call<TorStatus>('tor.status');
      const why = torReason(last);
      progress.update(`Tor ${torPhaseText(last)}${last.phase !== 'ready' && why !== undefined ? ` — ${why}` : ''}`, last.progress / 100);
      return last.phase === 'ready' ? last : undefined;
    },
    { intervalMs: 250, timeoutMs },
  );
  if (ready !== undefined) {
    progress.done();
    return ready;
  }
  progress.done();
  const why = last !== undefined ? torReason(last) : undefined;
  throw new CliError(`Tor did not become ready within ${Math.round(timeoutMs / 1000)} s: ${last !== undefined ? torPhaseText(last) : 'no status'}${why !== undefined ? `; tor says: ${why}` : ''}`);
}

export function torCommand(ctx: Ctx): Command {
  const tor = new Command('tor').description('the Tor that Tor-routed VMs use');
  tor
    .command('status')
    .description("bootstrap progress, tor's warnings, version, circuits, and which VMs use Tor")
    .action(async () => {
      const s = await ctx.call<TorStatus>('tor.status');
      print(ctx.json(), s, () => {
        const p = s.bootstrapProblem;
        const lines = [
          safeText(`Tor (${s.mode})${s.version ? ` ${s.version}` : ''}: ${s.phase}, bootstrap ${s.progress}%${s.summary ? ` (${s.summary})` : ''}`),
          ...(p !== null ? [`bootstrap problem at ${p.progress}% (${p.summary}): ${p.warning}${p.reason !== null ? ` [${p.reason}]` : ''}${p.count !== null ? `, ${p.count} times` : ''}`] : []),
          `circuits built: ${s.circuits ?? '-'}; restarts: ${s.restarts}${s.lastError ? `; last error: ${safeText(s.lastError)}` : ''}`,
          ...(s.privileges !== null ? [`runs as ${s.privileges.user}${s.pid !== null ? ` (pid ${s.pid})` : ''}, sandbox ${s.privileges.sandbox ? 'on' : 'off'}${s.privileges.note !== null ? ` (${s.privileges.note})` : ''}`] : []),
          `VMs routed through Tor: ${s.vms.length > 0 ? s.vms.join(', ') : 'none'}`,
          `onion services published: ${s.published}; named onions: ${s.aliases}`,
        ];
        // Tor's own log lines: one line each, whatever they hold.
        if (s.warnings.length > 0) lines.push("tor's recent warnings (oldest first):", ...s.warnings.map((w) => `  ${safeText(w)}`));
        return lines.join('\n');
      });
    });
  tor
    .command('newnym [vm]')
    .description("new circuits for the VM's next streams (by new isolation credentials), or --all")
    .option('--all', 'every Tor-routed VM (and SIGNAL NEWNYM)')
    .action(async (vm: string | undefined, o: { all?: boolean }) => {
      if ((vm === undefined) === (o.all !== true)) throw new UsageError('give a VM or --all');
      const r = await ctx.call<TorNewnymResult>('tor.newnym', o.all ? { all: true } : { vm });
      print(ctx.json(), r, () => (r.vms.length > 0 ? `new circuits for ${r.vms.join(', ')}` : 'no Tor-routed VMs'));
    });
  return tor;
}

export function onionCommand(ctx: Ctx): Command {
  const onion = new Command('onion').description('onion endpoints: discover, name, publish');
  const show = (list: OnionEndpoint[]): string =>
    list.length === 0 ? 'no onion endpoints' : table(['ADDRESS', 'SOURCE', 'DETAIL', 'WHEN'], list.map((e) => [e.address, e.source, e.detail, e.at ?? '-']));
  onion
    .command('list')
    .description("onion endpoints available: Tor's services, HiddenServiceDirs, named, published, resolved by VMs")
    .action(async () => {
      const list = await ctx.call<OnionEndpoint[]>('onion.list');
      print(ctx.json(), list, () => show(list));
    });
  onion
    .command('discover')
    .description('refresh every source now and report what changed')
    .action(async () => {
      const r = await ctx.call<OnionDiscovery>('onion.discover');
      print(ctx.json(), r, () => [`${r.total} endpoints; ${r.added.length} new, ${r.removed.length} gone`, ...(r.added.length ? ['new:', show(r.added)] : []), ...(r.removed.length ? ['gone:', show(r.removed)] : [])].join('\n'));
    });
  onion
    .command('add <name> <address>')
    .description('name an onion: Tor-routed VMs reach it as NAME.onion.mvnet')
    .action(async (name: string, address: string) => {
      const r = await ctx.call<OnionAliasInfo>('onion.add', { name, address });
      print(ctx.json(), r, () => `${r.resolvesAs} -> ${r.address}`);
    });
  onion
    .command('remove <name>')
    .description('forget a named onion')
    .action(async (name: string) => {
      const r = await ctx.call<OnionAliasRemoved>('onion.remove', { name });
      print(ctx.json(), r, () => `removed ${r.name}`);
    });
  onion
    .command('expose <vm> <port>')
    .description("publish the VM's TCP port as an onion service")
    .option('--onion-port <n>', 'port on the onion side (default: the same)', parseIntArg('--onion-port', 1, 65535))
    .option('--persist', 'keep the key in the state so the address survives restarts')
    .action(async (vm: string, port: string, o: { onionPort?: number; persist?: boolean }) => {
      const p = parseIntArg('port', 1, 65535)(port);
      const r = await ctx.call<OnionExposeInfo>('onion.expose', { vm, port: p, ...(o.onionPort !== undefined ? { onionPort: o.onionPort } : {}), persist: o.persist === true });
      print(ctx.json(), r, () => `${vm}:${p} is published as ${r.address}:${r.onionPort}`);
    });
  onion
    .command('unexpose <vm> [port]')
    .description("stop publishing the VM's onion service(s)")
    .action(async (vm: string, port: string | undefined) => {
      const r = await ctx.call<OnionUnexposeResult>('onion.unexpose', { vm, ...(port !== undefined ? { port: parseIntArg('port', 1, 65535)(port) } : {}) });
      print(ctx.json(), r, () => `removed ${r.removed.join(', ')}`);
    });
  return onion;
}
