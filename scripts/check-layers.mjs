#!/usr/bin/env node
// Checks that the modules under daemon/, plugins/ and cli/ depend on each other in one direction.
// Plain Node, no dependencies: reads the .ts files, finds `import … from '…'`, `export … from '…'`,
// `import '…'` and `import('…')` with a regular expression (type-only imports count too), resolves
// relative specifiers to files, and fails (exit 1, one line per violation) on
//   (a) an import cycle among these modules, and
//   (b) an import that goes against the layering below.
//
// daemon/ layers, lowest first; a module may import only from its own layer or a lower one:
//   0 daemon/wire, and daemon/errors.ts (UserError: imports nothing, thrown by the checks of
//     user input in any layer; checked below to stay without imports)
//   1 daemon/switch, daemon/capture (pcapng encoding and capture filters: imports only daemon/wire,
//     so every layer above, switch to router, can tee packets into it), daemon/links (the encrypted
//     link protocol, pure: may import only daemon/links and daemon/wire, and of node's modules only
//     node:crypto, and node:fs in keys.ts, which the CLI imports and so imports nothing of ours)
//   2 daemon/gateway, daemon/endpoint, daemon/routes
//   3 daemon/egress, daemon/tor, daemon/carriers (how link messages travel: UDP, streams, Tor)
//   4 daemon/router
//   5 everything else in daemon/ (daemon.ts, control/, config, state, main, …)
// plugins/** may import only plugins/** and daemon/wire/**; so plugins sit between layers 0 and
// 1: daemon/wire may not import them, every other daemon layer may (the Port contract).
// cli/** may import only cli/** and these modules:
//   daemon/control/api.ts  the control API's answer types, with `import type` only;
//   daemon/version.ts      the package version (imports nothing but node:fs);
//   daemon/main.ts         runDaemon: `mvnet daemon` is the daemon, the CLI binary its entry point;
//   daemon/agent.ts        runAgent: `mvnet agent`, the small mode that carries a device to a router;
//   plugins/fd/pass.ts     passFd: `vm attach --fd N` sends the CLI's own fd N with SCM_RIGHTS;
//   plugins/native/index.ts loadNative: `mvnet doctor` checks that the addon loads and looks for
//                          VM devices (ifIndex); pass.ts above reaches it already (imports
//                          only node: and its own types).
//   plugins/types.ts       the plugin contract (HookAdapter, HookIo), with `import type` only;
//   plugins/registry.ts    Registry and loadPlugins: `mvnet hook --adapter/--plugin` (imports
//                          only plugins/types.ts and node:, never a driver);
//   daemon/capture/pcapng.ts  pcapng block constants: `mvnet capture` reads the daemon's stream
//                          (imports nothing; checked below to stay so).
//   daemon/wire/ip-text.ts IP address text in and out (RFC 5952): `mvnet hook` states the
//                          addresses a VM will have exactly as the daemon prints them.
//   daemon/links/keys.ts   X25519 keys and key files: `mvnet key generate/show` (imports only
//                          node:crypto and node:fs, checked below).
// daemon/** must not import cli/**.
//
// Usage: node scripts/check-layers.mjs [--graph]   (--graph also prints every edge)
/* global process, console */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const TREES = ['daemon', 'plugins', 'cli'];

const DAEMON_LAYERS = [
  ['daemon/wire/', 'daemon/errors.ts'],
  ['daemon/switch/', 'daemon/capture/', 'daemon/links/'],
  ['daemon/gateway/', 'daemon/endpoint/', 'daemon/routes/'],
  ['daemon/egress/', 'daemon/tor/', 'daemon/carriers/'],
  ['daemon/router/'],
];
const TOP_LAYER = DAEMON_LAYERS.length;
/** Modules placed in a layer below their directory's: they must import nothing of ours. */
const LEAVES = new Set(['daemon/errors.ts', 'daemon/links/keys.ts']);
/** Directories whose modules may import only these packages (node: built-ins included); per file where it differs. */
const BARE_ALLOWED = [
  { prefix: 'daemon/links/keys.ts', allowed: new Set(['node:crypto', 'node:fs']) },
  { prefix: 'daemon/links/', allowed: new Set(['node:crypto']) },
];
/** Modules outside cli/ that cli/ may import, and whether only with `import type`. */
const CLI_MAY_IMPORT = new Map([
  ['daemon/control/api.ts', { typeOnly: true }],
  ['daemon/version.ts', { typeOnly: false }],
  ['daemon/main.ts', { typeOnly: false }],
  ['daemon/agent.ts', { typeOnly: false }],
  ['plugins/fd/pass.ts', { typeOnly: false }],
  ['plugins/native/index.ts', { typeOnly: false }],
  ['plugins/types.ts', { typeOnly: true }],
  ['plugins/registry.ts', { typeOnly: false }],
  ['daemon/capture/pcapng.ts', { typeOnly: false }],
  ['daemon/wire/ip-text.ts', { typeOnly: false }],
  ['daemon/links/keys.ts', { typeOnly: false }],
]);
/** Of those, the ones that must import nothing of ours (so the CLI pulls in no daemon code through them). */
const CLI_LEAVES = new Set(['daemon/capture/pcapng.ts']);

function listTs(dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    if (name === 'node_modules') continue;
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...listTs(p));
    else if (name.endsWith('.ts') && !name.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

/** Strips comments (keeping string literals intact) so commented-out imports do not count. */
function stripComments(src) {
  return src.replace(/\/\*[\s\S]*?\*\/|\/\/[^\n]*|'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*"|`(?:\\.|[^`\\])*`/g, (m) =>
    m.startsWith('/') ? '' : m,
  );
}

const SPECIFIER_RES = [
  // import x from '…'; import { a } from '…'; import type { a } from '…'; export { a } from '…'; export * from '…'
  /(?:^|[;\s}])(?:import|export)\s+(type\s+)?[^;'"`]*?\sfrom\s*['"]([^'"]+)['"]/g,
  // import '…' (side effect)
  /(?:^|[;\s}])import()\s*['"]([^'"]+)['"]/g,
  // import('…') expressions and import('…').T type queries
  /\bimport()\s*\(\s*['"]([^'"]+)['"]\s*\)/g,
];

/** Specifier -> true when every import of it in the file is `import type`/`export type`. */
function specifiers(src) {
  const code = stripComments(src);
  const found = new Map();
  for (const re of SPECIFIER_RES) {
    for (const m of code.matchAll(re)) found.set(m[2], (found.get(m[2]) ?? true) && m[1] !== undefined && m[1] !== '');
  }
  return found;
}

/** './x.js' from daemon/a.ts -> 'daemon/x.ts' (repo-relative, '/' separators), or null if not a file. */
function resolveRelative(fromRel, spec) {
  const base = resolve(root, dirname(fromRel), spec);
  const candidates = [base.replace(/\.js$/, '.ts'), base, `${base}.ts`, join(base, 'index.ts')];
  for (const c of candidates) if (existsSync(c) && statSync(c).isFile()) return relative(root, c).split('\\').join('/');
  return null;
}

function daemonLayer(mod) {
  for (let i = 0; i < DAEMON_LAYERS.length; i++) if (DAEMON_LAYERS[i].some((p) => mod.startsWith(p))) return i;
  return TOP_LAYER;
}

function layerName(mod) {
  if (mod.startsWith('plugins/')) return 'plugins';
  if (mod.startsWith('cli/')) return 'cli';
  const l = daemonLayer(mod);
  return `daemon layer ${l}`;
}

/** Why `from` may not import `to` (`typeOnly`: by `import type` only), or null when it may. */
function violation(from, to, typeOnly) {
  if (from === 'plugins/registry.ts' && to !== 'plugins/types.ts') return 'plugins/registry.ts may import only plugins/types.ts (the CLI loads it: no driver, no native addon)';
  if (from.startsWith('plugins/')) {
    if (to.startsWith('plugins/') || to.startsWith('daemon/wire/')) return null;
    return 'plugins/ may import only plugins/ and daemon/wire/';
  }
  if (from.startsWith('cli/')) {
    if (to.startsWith('cli/')) return null;
    const allowed = CLI_MAY_IMPORT.get(to);
    if (allowed === undefined) return `cli/ may import only cli/ and ${[...CLI_MAY_IMPORT.keys()].join(', ')}`;
    if (allowed.typeOnly && !typeOnly) return `cli/ may import ${to} with \`import type\` only`;
    return null;
  }
  if (from.startsWith('daemon/')) {
    if (to.startsWith('cli/')) return 'daemon/ must not import cli/';
    if (CLI_LEAVES.has(from)) return `${from} is imported by cli/: it may import nothing of ours`;
    if (LEAVES.has(from)) return `${from} is placed in daemon layer ${daemonLayer(from)} as a leaf: it may import nothing of ours`;
    if (from.startsWith('daemon/links/') && !to.startsWith('daemon/links/') && !to.startsWith('daemon/wire/')) return 'daemon/links/ may import only daemon/links/ and daemon/wire/';
    if (to.startsWith('plugins/')) return daemonLayer(from) === 0 ? 'daemon layer 0 (wire) may not import plugins/' : null;
    const lf = daemonLayer(from);
    const lt = daemonLayer(to);
    if (lt > lf) return `${layerName(from)} may not import ${layerName(to)}`;
  }
  return null;
}

const files = TREES.flatMap((t) => (existsSync(join(root, t)) ? listTs(join(root, t)) : [])).map((f) =>
  relative(root, f).split('\\').join('/'),
);
files.sort();
const graph = new Map();
/** from -> (to -> imported with `import type`/`export type` only). */
const typeOnlyEdges = new Map();
const problems = [];
for (const f of files) {
  const deps = new Map();
  const bare = BARE_ALLOWED.find((b) => f.startsWith(b.prefix));
  for (const [spec, typeOnly] of specifiers(readFileSync(join(root, f), 'utf8'))) {
    if (!spec.startsWith('.')) {
      if (bare !== undefined && !bare.allowed.has(spec)) problems.push(`layer: ${f} imports '${spec}' (${bare.prefix} may import only ${[...bare.allowed].join(', ')} outside the repository)`);
      continue;
    }
    const to = resolveRelative(f, spec);
    if (to === null) {
      problems.push(`unresolved: ${f} imports '${spec}'`);
      continue;
    }
    deps.set(to, (deps.get(to) ?? true) && typeOnly);
  }
  graph.set(f, [...deps.keys()].sort());
  typeOnlyEdges.set(f, deps);
}

for (const [from, deps] of graph) {
  for (const to of deps) {
    const why = violation(from, to, typeOnlyEdges.get(from).get(to));
    if (why !== null) problems.push(`layer: ${from} -> ${to} (${why})`);
  }
}

// Cycles: strongly connected components (Tarjan), then one shortest cycle through each component's first module.
function sccs() {
  let index = 0;
  const idx = new Map();
  const low = new Map();
  const stack = [];
  const on = new Set();
  const out = [];
  const visit = (v) => {
    idx.set(v, index);
    low.set(v, index);
    index++;
    stack.push(v);
    on.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!graph.has(w)) continue;
      if (!idx.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v), low.get(w)));
      } else if (on.has(w)) low.set(v, Math.min(low.get(v), idx.get(w)));
    }
    if (low.get(v) === idx.get(v)) {
      const comp = [];
      let w;
      do {
        w = stack.pop();
        on.delete(w);
        comp.push(w);
      } while (w !== v);
      if (comp.length > 1 || (graph.get(v) ?? []).includes(v)) out.push(comp.sort());
    }
  };
  for (const v of graph.keys()) if (!idx.has(v)) visit(v);
  return out;
}

function shortestCycle(start, members) {
  const prev = new Map([[start, null]]);
  const queue = [start];
  while (queue.length > 0) {
    const v = queue.shift();
    for (const w of graph.get(v) ?? []) {
      if (!members.has(w)) continue;
      if (w === start) {
        const path = [v];
        for (let p = prev.get(v); p !== null; p = prev.get(p)) path.push(p);
        return [...path.reverse(), start];
      }
      if (!prev.has(w)) {
        prev.set(w, v);
        queue.push(w);
      }
    }
  }
  return [start, start];
}

for (const comp of sccs()) {
  const cycle = shortestCycle(comp[0], new Set(comp));
  const more = comp.length > cycle.length - 1 ? ` (${comp.length} modules in this cycle group: ${comp.join(', ')})` : '';
  problems.push(`cycle: ${cycle.join(' -> ')}${more}`);
}

if (process.argv.includes('--graph')) for (const [from, deps] of graph) for (const to of deps) console.log(`${from} -> ${to}`);

if (problems.length > 0) {
  for (const p of problems) console.log(p);
  console.error(`check-layers: ${problems.length} problem(s) in ${files.length} modules`);
  process.exit(1);
}
console.log(`check-layers: ${files.length} modules, no cycles, no layer violations`);
