import { Command } from 'commander';
import type { Ctx } from '../context.js';
import { confirm, print, table } from '../output.js';
import { safeText } from '../text.js';
import { UsageError } from '../client.js';
import { parseIntArg } from './net.js';
import type { LinkInfo, LinkKeyInfo, LinkRemoved, LinksInfo } from '../../daemon/control/api.js';

interface AddOpts {
  net: string;
  peer: string;
  endpoint?: string;
  onion?: string;
  unix?: string;
  listen?: string;
  keepalive?: number;
}

function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const u = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < u.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(1)} ${u[i]}`;
}

function ago(iso: string | null): string {
  if (iso === null) return 'never';
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  return s < 120 ? `${s} s ago` : s < 7200 ? `${Math.round(s / 60)} min ago` : `${Math.round(s / 3600)} h ago`;
}

function dropsText(d: Record<string, number>): string {
  const e = Object.entries(d);
  return e.length === 0 ? '-' : e.map(([k, v]) => `${k} ${v}`).join(', ');
}

/** `mvnet link`: encrypted links that extend a network to another router. */
export function linkCommand(ctx: Ctx): Command {
  const link = new Command('link').description('encrypted links between routers: a network extended over UDP, TCP, a unix socket or a Tor onion service');
  link
    .command('key')
    .description("print this daemon's link public key (give it to peers; made on first use, the private key stays in the state directory)")
    .action(async () => {
      const r = await ctx.call<LinkKeyInfo>('link.key');
      print(ctx.json(), r, () => r.publicKey);
    });
  link
    .command('add <name>')
    .description('extend a network to a peer router over an encrypted link')
    .requiredOption('--net <name>', 'the network the link extends (its VMs and the peer’s share one segment)')
    .requiredOption('--peer <pubkey>', "the peer's link public key (its `mvnet link key`)")
    .option('--endpoint <addr>', 'where the peer listens: HOST:PORT (UDP), udp:HOST:PORT, tcp:HOST:PORT, or a multiaddr (/ip4/A/udp/P)')
    .option('--onion <addr.onion:port>', 'the peer listens on this onion service (dialled through Tor)')
    .option('--unix <path>', 'the peer listens on this unix socket')
    .option('--listen <spec>', 'where the peer reaches us: udp:PORT, tcp:PORT, unix:PATH, onion[:PORT] (our own onion service)')
    .option('--keepalive <seconds>', 'send a keepalive after this long without traffic (0: none; default 25 when dialling)', parseIntArg('--keepalive', 0, 3600))
    .action(async (name: string, o: AddOpts) => {
      const given = [o.endpoint, o.onion, o.unix].filter((v) => v !== undefined);
      if (given.length > 1) throw new UsageError('give at most one of --endpoint, --onion, --unix');
      if (given.length === 0 && o.listen === undefined) throw new UsageError('give --endpoint, --onion or --unix (where the peer is), --listen (where it reaches us), or both');
      let endpoint: string | undefined = o.endpoint;
      if (o.onion !== undefined) endpoint = o.onion.startsWith('/') ? o.onion : `onion:${o.onion}`;
      if (o.unix !== undefined) endpoint = `unix:${o.unix.startsWith('/') ? o.unix : `${process.cwd()}/${o.unix}`}`;
      const params = {
        name,
        net: o.net,
        peer: o.peer,
        ...(endpoint !== undefined ? { endpoint } : {}),
        ...(o.listen !== undefined ? { listen: o.listen } : {}),
        ...(o.keepalive !== undefined ? { keepalive: o.keepalive } : {}),
      };
      const l = await ctx.call<LinkInfo>('link.add', params);
      confirm(ctx, l, () => `added link ${l.name} on ${l.net} to ${l.peer}: ${l.state}${l.listen !== null ? `, listening on ${l.listen}` : ''}`);
    });
  link
    .command('list')
    .description('links and agents: state, last handshake, traffic, drops by reason')
    .action(async () => {
      const r = await ctx.call<LinksInfo>('link.list');
      print(ctx.json(), r, () => {
        const lines: string[] = [];
        lines.push(`public key: ${r.publicKey ?? '(none yet: made by the first link or `mvnet link key`)'}`);
        for (const l of r.listeners) lines.push(`listening: ${l.text}${l.onion !== null ? ` = ${l.onion}` : ''} (${l.status})${l.error !== null ? `: ${safeText(l.error)}` : ''}`);
        if (r.links.length === 0) lines.push('no links');
        else {
          lines.push(
            table(
              ['LINK', 'NET', 'STATE', 'ENDPOINT', 'HANDSHAKE', 'RX', 'TX', 'MACS', 'DROPS'],
              r.links.map((l) => [
                l.kind === 'agent' ? `${l.name} (agent)` : l.name,
                l.net || '-',
                l.state,
                l.endpoint ?? l.listen ?? '-',
                ago(l.lastHandshake),
                `${l.rx.packets} (${bytes(l.rx.bytes)})`,
                `${l.tx.packets} (${bytes(l.tx.bytes)})`,
                l.kind === 'agent' ? '-' : l.macs,
                dropsText(l.drops),
              ]),
            ),
          );
        }
        for (const l of r.links) if (l.state === 'failed') lines.push(`link ${l.name} failed: ${safeText(l.error ?? 'not running')} (fix the cause and restart the daemon, or \`mvnet link remove ${l.name}\`)`);
        if (Object.keys(r.drops).length > 0 || r.cookieReplies > 0) lines.push(`dropped before any link: ${dropsText(r.drops)}; cookie replies sent: ${r.cookieReplies}${r.underLoad ? ' (under load now)' : ''}`);
        return lines.join('\n');
      });
    });
  link
    .command('remove <name>')
    .description('remove a link (its listener closes when nothing else uses it)')
    .action(async (name: string) => {
      const r = await ctx.call<LinkRemoved>('link.remove', { name });
      confirm(ctx, r, () => `removed link ${r.removed}`);
    });
  return link;
}
