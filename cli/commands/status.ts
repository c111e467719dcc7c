import { Command } from 'commander';
import type { Ctx } from '../context.js';
import { print, table, drops } from '../output.js';
import type { RouteView, StatusInfo } from '../../daemon/control/api.js';
import { describePort, portState } from './vm-port.js';
import { torStatusLine } from './tor-text.js';

/**
 * The ROUTE column: the route's kind with counts, never a cut text (an allow-list of any length
 * is "direct, allow N rules"); the whole route follows the table when the column abbreviates it.
 */
export function routeSummary(r: RouteView): string {
  const tor = 'torPorts' in r && r.torPorts !== null ? ` +tor ${r.torPorts.join(',')}` : '';
  switch (r.kind) {
    case 'none':
      return `none${tor}`;
    case 'direct':
      return (r.allow === null ? 'direct' : `direct, allow ${r.allow.length} rule${r.allow.length === 1 ? '' : 's'}`) + tor;
    case 'via':
      return `via ${r.vm}`;
    case 'tor':
      return 'all-tor';
  }
}

export function statusCommand(ctx: Ctx): Command {
  return new Command('status').description('daemon, networks and ports with counters').action(async () => {
    const s = await ctx.call<StatusInfo>('daemon.status');
    print(ctx.json(), s, () => {
      const lines = [`mvnet ${s.daemon.version}, pid ${s.daemon.pid}, up ${s.daemon.uptimeSec}s, socket ${s.daemon.socket}, state ${s.daemon.stateDir}`];
      const e = s.daemon.errors;
      // Every caught exception is a bug: say so where an admin looks.
      if (e.dataPath + e.native + e.uncaught > 0) lines.push(`caught exceptions (bugs, see the log): data path ${e.dataPath}, native callbacks ${e.native}, uncaught ${e.uncaught}`);
      for (const p of s.daemon.plugins) {
        lines.push(`plugin ${p.source}: port kinds ${p.portDrivers.join(', ') || '-'}; hook adapters ${p.hookAdapters.join(', ') || '-'}`);
      }
      if (s.tor) lines.push(torStatusLine(s.tor));
      lines.push('');
      lines.push(
        s.networks.length === 0
          ? 'no networks'
          : table(
              ['NETWORK', 'SUBNET', 'GATEWAY', 'MTU', 'VMS', 'FORWARDED', 'FLOODED', 'DROPS'],
              s.networks.map((n) => [n.name, n.subnet, n.gateway, n.mtu, n.vms.length, n.stats.forwarded, n.stats.flooded, drops(n.stats.drops)]),
            ),
      );
      lines.push('');
      lines.push(
        s.vms.length === 0
          ? 'no VMs attached'
          : table(
              ['VM', 'NET', 'DEVICE', 'STATE', 'IP', 'ROUTE', 'TCP/UDP', 'RX FRAMES', 'RX BYTES', 'TX FRAMES', 'TX BYTES', 'DROPS'],
              s.vms.map((v) => [
                v.name,
                v.net,
                describePort(v.port),
                portState(v.port),
                v.ip ?? '-',
                routeSummary(v.route),
                v.flows ? `${v.flows.tcp}/${v.flows.udp}` : '-',
                v.port.stats.rxFrames,
                v.port.stats.rxBytes,
                v.port.stats.txFrames,
                v.port.stats.txBytes,
                drops({ ...v.port.stats.drops, ...(v.flows ? { 'tcp-limit': v.flows.tcpLimit, 'udp-limit': v.flows.udpLimit, refused: v.flows.tcpRefused + v.flows.udpDropped } : {}) }),
              ]),
            ),
      );
      // Routes the ROUTE column abbreviated (allow-lists), in full.
      for (const v of s.vms) if (v.route.kind === 'direct' && v.route.allow !== null) lines.push(`route of ${v.name}: ${v.routeText}`);
      const links = s.links ?? [];
      if (links.length > 0) {
        lines.push('');
        lines.push(
          table(
            ['LINK', 'NET', 'STATE', 'ENDPOINT', 'RX PACKETS', 'TX PACKETS', 'DROPS'],
            links.map((l) => [l.kind === 'agent' ? `${l.name} (agent)` : l.name, l.net || '-', l.state, l.endpoint ?? l.listen ?? '-', l.rx.packets, l.tx.packets, drops(l.drops)]),
          ),
        );
      }
      const caps = s.captures ?? [];
      if (caps.length > 0) {
        lines.push('');
        lines.push(
          table(
            ['CAPTURE', 'KIND', 'POINTS', 'FILTER', 'SEEN', 'CAPTURED', 'FILTERED OUT', 'DROPPED'],
            caps.map((c) => [c.name ?? c.id, c.kind, c.points.join(','), c.filter || '-', c.counters.seen, c.counters.captured, c.counters.filteredOut, c.counters.dropped]),
          ),
        );
      }
      return lines.join('\n');
    });
  });
}
