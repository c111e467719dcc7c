import { Command } from 'commander';
import type { Ctx } from '../context.js';
import { confirm, print, table } from '../output.js';
import { UsageError } from '../client.js';
import { parseIntArg } from './net.js';
import type { CaptureSourceView, TeeInfo, TeeRemoved } from '../../daemon/control/api.js';
import { captureSource, ringArg } from '../capture/args.js';

function collect(v: string, prev: string[]): string[] {
  return [...prev, v];
}

export function describeSource(f: CaptureSourceView): string {
  if (f.vm !== null) return f.vm;
  if (f.net !== null) return `net:${f.net}`;
  return (f.point ?? []).join(',');
}

interface AddOpts {
  from?: string;
  fromNet?: string;
  fromPoint: string[];
  to: string;
  snaplen?: number;
  ring?: number;
  size?: number;
}

export function teeCommand(ctx: Ctx): Command {
  const tee = new Command('tee').description('persistent mirrors of a VM, a network or a capture point, to a pcapng file or a unix socket');
  tee
    .command('add <name> [filter...]')
    .description('mirror packets continuously (kept across restarts)')
    .option('--from <vm>', 'a VM')
    .option('--from-net <name>', 'a network')
    .option('--from-point <name>', 'a capture point (see capture --list); repeat for several', collect, [])
    .requiredOption('--to <file|unix:path>', "a file under the daemon's capture directory, or unix:PATH: a socket an analysis VM connects to (QEMU stream framing)")
    .option('--snaplen <n>', 'bytes kept of each packet (0: all)', parseIntArg('--snaplen', 0, 262_144))
    .option('--ring <n>', 'a file tee: keep N files', parseIntArg('--ring', 1, 100_000))
    .option('--size <mb>', 'with --ring: begin the next file at MB (2^20 bytes)', parseIntArg('--size', 1, 1_048_576))
    .action(async (name: string, filterWords: string[], o: AddOpts) => {
      const from = captureSource({ vm: o.from, net: o.fromNet, point: o.fromPoint }, { vm: '--from VM', net: '--from-net NAME', point: '--from-point NAME' });
      const ring = ringArg(o.ring, o.size);
      if (o.to === '' || o.to === 'unix:') throw new UsageError('--to needs a file name or unix:PATH');
      if (ring && o.to.startsWith('unix:')) throw new UsageError('--ring applies to a file tee, not to unix:PATH');
      const filter = filterWords.join(' ').trim();
      const params = {
        name,
        from,
        to: o.to,
        ...(filter !== '' ? { filter } : {}),
        ...(o.snaplen !== undefined ? { snaplen: o.snaplen } : {}),
        ...(ring ? { ring } : {}),
      };
      const t = await ctx.call<TeeInfo>('tee.add', params);
      confirm(ctx, t, () => `added tee ${t.name}: ${describeSource(t.from)} to ${t.to}${t.filter ? ` (filter: ${t.filter})` : ''}: ${t.state}${t.detail ? ` (${t.detail})` : ''}`);
    });
  tee
    .command('list')
    .description('list tees with their counters')
    .action(async () => {
      const tees = await ctx.call<TeeInfo[]>('tee.list');
      print(ctx.json(), tees, () =>
        tees.length === 0
          ? 'no tees'
          : table(
              ['TEE', 'FROM', 'TO', 'FILTER', 'CAPTURED', 'FILTERED OUT', 'DROPPED', 'STATE'],
              tees.map((t) => [
                t.name,
                describeSource(t.from),
                t.to + (t.ring ? ` (ring ${t.ring.files} x ${t.ring.sizeMb} MB)` : ''),
                t.filter || '-',
                t.counters.captured,
                t.counters.filteredOut,
                t.counters.dropped,
                `${t.state}${t.detail ? `: ${t.detail}` : ''}`,
              ]),
            ),
      );
    });
  tee
    .command('remove <name>')
    .description('stop a tee and forget it')
    .action(async (name: string) => {
      const r = await ctx.call<TeeRemoved>('tee.remove', { name });
      confirm(ctx, r, () => `removed tee ${r.removed}`);
    });
  return tee;
}
