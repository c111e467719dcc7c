import { Command } from 'commander';
import type { Ctx } from '../context.js';
import { print, table, drops } from '../output.js';
import type { StatusInfo } from '../../daemon/control/api.js';
import { describePort } from './vm.js';
import { torStatusLine } from './tor.js';

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
                v.port.state,
                v.ip ?? '-',
                v.route.split(' ')[0]!,
                v.flows ? `${v.flows.tcp}/${v.flows.udp}` : '-',
                v.port.stats.rxFrames,
                v.port.stats.rxBytes,
                v.port.stats.txFrames,
                v.port.stats.txBytes,
                drops({ ...v.port.stats.drops, ...(v.flows ? { 'tcp-limit': v.flows.tcpLimit, 'udp-limit': v.flows.udpLimit, refused: v.flows.tcpRefused + v.flows.udpDropped } : {}) }),
              ]),
            ),
      );
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
