/**
 * `mvnet graph [--format dot|json|html] [--serve ADDR:PORT]`: the topology (networks, VMs,
 * routes, links, Tor) from `daemon.status`, `route.show` and `tor.status`, as Graphviz DOT, JSON,
 * or a self-contained HTML page; with `--serve`, the page on a loopback HTTP server, refreshed
 * from the daemon.
 */
import { Command, Option } from 'commander';
import type { Ctx } from '../context.js';
import type { LinksInfo, RouteInfo, StatusInfo, TorStatus } from '../../daemon/control/api.js';
import { UsageError } from '../client.js';
import type { Graph } from '../graph/model.js';

/** Reads what the graph needs from the daemon (read-only methods). */
export async function loadGraph(ctx: Ctx): Promise<Graph> {
  const [status, routes] = await Promise.all([ctx.call<StatusInfo>('daemon.status'), ctx.call<RouteInfo[]>('route.show', {})]);
  const usesTor = routes.some((r) => r.route.kind === 'tor' || ('torPorts' in r.route && r.route.torPorts !== null));
  const tor = status.daemon.torConfigured || usesTor ? await ctx.call<TorStatus>('tor.status') : null;
  const links = await ctx.call<LinksInfo>('link.list');
  const { buildGraph } = await import('../graph/model.js');
  return buildGraph({ status, routes, tor, links });
}

interface GraphOpts {
  format?: 'dot' | 'json' | 'html';
  serve?: string;
  refresh: number;
}

export function graphCommand(ctx: Ctx): Command {
  return new Command('graph')
    .description('the topology as a graph: Graphviz DOT (default), JSON, or an HTML page (vis-network); --serve serves the page, refreshed from the daemon')
    .addOption(new Option('--format <format>', 'dot, json or html').choices(['dot', 'json', 'html']))
    .option('--serve <addr:port>', 'serve the HTML page and /graph.json on this loopback address (127.0.0.1:PORT or [::1]:PORT)')
    .option('--refresh <ms>', 'with --serve: how often the page asks for a fresh graph', (v: string) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 200 || n > 3_600_000) throw new UsageError('--refresh takes milliseconds, 200-3600000');
      return n;
    }, 2000)
    .action(async (o: GraphOpts) => {
      // Loaded here, not at start-up (node:http, the page's template).
      const [{ toDot }, { toHtml }, { parseServeAddress, serveGraph }] = await Promise.all([import('../graph/model.js'), import('../graph/html.js'), import('../graph/serve.js')]);
      if (o.serve !== undefined) {
        if (o.format !== undefined && o.format !== 'html') throw new UsageError('--serve serves the HTML page and its JSON: --format does not apply');
        const addr = parseServeAddress(o.serve);
        // Fail early when the daemon is not there, rather than serve an error page.
        await loadGraph(ctx);
        const s = await serveGraph(addr, () => loadGraph(ctx), { refreshMs: o.refresh });
        process.stdout.write(ctx.json() ? JSON.stringify({ url: s.url, json: `${s.url}graph.json` }) + '\n' : `serving the topology on ${s.url} (JSON: ${s.url}graph.json); Ctrl-C stops\n`);
        await new Promise<void>((resolve) => {
          const stop = (): void => {
            void s.close().then(resolve);
          };
          process.once('SIGINT', stop);
          process.once('SIGTERM', stop);
        });
        return;
      }
      const g = await loadGraph(ctx);
      const format = o.format ?? (ctx.json() ? 'json' : 'dot');
      process.stdout.write(format === 'json' ? JSON.stringify(g, null, 2) + '\n' : format === 'html' ? toHtml(g) : toDot(g));
    });
}
