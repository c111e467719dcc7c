/**
 * The topology as one self-contained HTML page: vis-network's standalone build (the npm package
 * `vis-network`) inlined, the graph's JSON embedded, nothing fetched from elsewhere, so it works
 * offline and from a file. Nodes are coloured by route, attachment edges carry the port's frame
 * and byte counters. Served by `mvnet graph --serve`, the page polls `endpoint` for a fresh graph.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { ROUTE_COLOURS, type Graph } from './model.js';

let visCache: string | undefined;

/** vis-network's standalone UMD build (defines the global `vis`). */
export function visNetworkSource(): string {
  if (visCache === undefined) {
    const require = createRequire(import.meta.url);
    const pkg = require.resolve('vis-network/package.json');
    visCache = readFileSync(join(dirname(pkg), 'standalone', 'umd', 'vis-network.min.js'), 'utf8');
  }
  return visCache;
}

/** Text safe inside a <script> element: no "</script", no "<!--". */
function scriptSafe(js: string): string {
  return js.replace(/<\/(script)/gi, '<\\/$1').replace(/<!--/g, '<\\!--');
}

/** JSON inside a <script type="application/json">: `<` escaped, so no tag can end it early. */
function jsonSafe(v: unknown): string {
  return JSON.stringify(v).replace(/</g, '\\u003c').replace(/\u2028/g, '\\u2028').replace(/\u2029/g, '\\u2029');
}

export interface PageOptions {
  /** The JSON endpoint to poll (served mode); absent: a static page. */
  endpoint?: string;
  refreshMs?: number;
}

/** The Content-Security-Policy the page needs (served with it; also in a meta tag). */
export const PAGE_CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data: blob:; connect-src 'self'";

/** The browser side: builds vis DataSets from the graph JSON and keeps them in step with the endpoint. */
const PAGE_JS = `
(function () {
  'use strict';
  var cfg = JSON.parse(document.getElementById('mvnet-config').textContent);
  var initial = JSON.parse(document.getElementById('mvnet-graph').textContent);
  var colours = cfg.colours;
  var meta = document.getElementById('meta');
  var refreshes = 0;

  function visNode(n) {
    var base = { id: n.id, label: n.label, font: { multi: false, size: 12 } };
    if (n.type === 'network') {
      base.shape = 'box';
      base.color = { background: '#dbe9f6', border: '#1f4e79' };
      base.borderWidth = 2;
      base.title = 'network ' + n.name + ' ' + n.subnet + ' gw ' + n.gateway + ' MTU ' + n.mtu + '; forwarded ' + n.forwarded + ', flooded ' + n.flooded + ', drops ' + n.drops;
    } else if (n.type === 'vm') {
      var c = colours[n.route] || '#9e9e9e';
      base.shape = 'ellipse';
      base.color = { background: c, border: n.state === 'up' ? c : '#d00000' };
      base.borderWidth = n.state === 'up' ? 1 : 3;
      base.font.color = '#ffffff';
      base.shapeProperties = { borderDashes: n.attached ? false : [5, 5] };
      base.title = n.name + ': ' + n.device + ' (' + n.state + '); route ' + n.routeDescription + (n.mac ? '; MAC ' + n.mac : '');
    } else if (n.type === 'host') {
      base.shape = 'database';
      base.color = { background: '#fff3d6', border: colours.direct };
      base.title = 'host sockets: where direct routes go';
    } else if (n.type === 'peer') {
      base.shape = 'box';
      base.color = { background: '#e8f5e9', border: '#2e7d32' };
      base.title = 'peer router ' + n.publicKey + (n.endpoint ? ' at ' + n.endpoint : '');
    } else {
      base.shape = 'hexagon';
      base.color = { background: '#eadcf7', border: colours.tor };
      base.title = 'Tor: ' + n.phase + ' ' + n.progress + '%';
    }
    return base;
  }

  function visEdge(e) {
    var base = { id: e.id, from: e.from, to: e.to, label: e.label, font: { size: 10, align: 'middle' } };
    if (e.type === 'attachment') {
      base.color = { color: '#1f4e79' };
      base.dashes = e.state !== 'up';
      base.width = 2;
    } else if (e.type === 'route') {
      base.color = { color: colours[e.route] || '#9e9e9e' };
      base.arrows = 'to';
      base.width = 2;
    } else {
      base.color = { color: '#2e7d32' };
      base.width = 2;
      base.dashes = e.state !== 'established';
    }
    return base;
  }

  var nodes = new vis.DataSet();
  var edges = new vis.DataSet();

  function sync(ds, items) {
    var keep = {};
    items.forEach(function (i) { keep[i.id] = true; });
    ds.remove(ds.getIds().filter(function (id) { return !keep[id]; }));
    ds.update(items);
  }

  function apply(g) {
    sync(nodes, g.nodes.map(visNode));
    sync(edges, g.edges.map(visEdge));
    var vms = g.nodes.filter(function (n) { return n.type === 'vm'; }).length;
    var nets = g.nodes.filter(function (n) { return n.type === 'network'; }).length;
    meta.textContent = 'mvnet ' + g.daemon.version + ' (pid ' + g.daemon.pid + '): ' + nets + ' networks, ' + vms + ' VMs' +
      (cfg.endpoint ? ', updated ' + new Date().toLocaleTimeString() : '');
    document.body.setAttribute('data-nodes', String(g.nodes.length));
    document.body.setAttribute('data-edges', String(g.edges.length));
  }

  apply(initial);
  var network = new vis.Network(document.getElementById('graph'), { nodes: nodes, edges: edges }, {
    physics: { solver: 'forceAtlas2Based', stabilization: { iterations: 200 } },
    interaction: { hover: true },
    edges: { smooth: { type: 'dynamic' } }
  });
  network.once('stabilizationIterationsDone', function () { network.fit(); });
  document.body.setAttribute('data-ready', 'true');

  if (cfg.endpoint) {
    var poll = function () {
      fetch(cfg.endpoint, { cache: 'no-store' }).then(function (r) {
        if (!r.ok) return r.text().then(function (t) { throw new Error(r.status + ' ' + t); });
        return r.json();
      }).then(function (g) {
        apply(g);
        refreshes++;
        document.body.setAttribute('data-refreshes', String(refreshes));
        document.getElementById('error').textContent = '';
      }).catch(function (e) {
        document.getElementById('error').textContent = 'daemon unreachable: ' + e.message;
      }).then(function () { setTimeout(poll, cfg.refreshMs); });
    };
    setTimeout(poll, cfg.refreshMs);
  }
})();
`;

export function toHtml(g: Graph, opts: PageOptions = {}): string {
  const cfg = { colours: ROUTE_COLOURS, ...(opts.endpoint !== undefined ? { endpoint: opts.endpoint, refreshMs: opts.refreshMs ?? 2000 } : {}) };
  const legend = Object.entries(ROUTE_COLOURS)
    .map(([k, c]) => `<span class="key"><i style="background:${c}"></i>${k}</span>`)
    .join(' ');
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="${PAGE_CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mvnet topology</title>
<style>
  html, body { margin: 0; height: 100%; font-family: sans-serif; }
  header { padding: 6px 10px; background: #1f4e79; color: #fff; font-size: 13px; display: flex; gap: 16px; flex-wrap: wrap; align-items: center; }
  .key { white-space: nowrap; }
  .key i { display: inline-block; width: 10px; height: 10px; border-radius: 5px; margin-right: 4px; vertical-align: middle; }
  #error { color: #ffb4b4; }
  #graph { position: absolute; top: 34px; bottom: 0; left: 0; right: 0; }
</style>
</head>
<body>
<header><strong>mvnet topology</strong><span id="meta"></span><span>routes: ${legend}</span><span id="error"></span></header>
<div id="graph"></div>
<script id="mvnet-config" type="application/json">${jsonSafe(cfg)}</script>
<script id="mvnet-graph" type="application/json">${jsonSafe(g)}</script>
<script>${scriptSafe(visNetworkSource())}</script>
<script>${scriptSafe(PAGE_JS)}</script>
</body>
</html>
`;
}
