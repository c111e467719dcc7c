/**
 * The plugin registry: port drivers (kinds of VM device) and hook adapters (builder
 * integrations) register here, built-in and from npm packages alike. The daemon makes one with
 * the built-in drivers (plugins/builtin.ts) and loads the packages its config lists under
 * `plugins` (`loadPlugins`); the CLI makes one with its built-in hook adapters (cli/hook/) for
 * `mvnet hook --adapter`. A plugin can add a kind or an adapter, never replace one.
 */
import { existsSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type {
  BuiltinPortKind,
  BuiltinPortSpec,
  HookAdapter,
  JsonObject,
  PluginApi,
  PluginPortDriver,
  Port,
  PortContext,
  PortDriver,
  PortSpec,
  RegisterFn,
} from './types.js';
import { BUILTIN_PORT_KINDS } from './types.js';

/** Each built-in kind's spec, by kind. */
type SpecOf = { [S in BuiltinPortSpec as S['kind']]: S };
/** One driver per built-in kind, each getting the spec of its own kind. */
export type BuiltinDrivers = { [K in BuiltinPortKind]: PortDriver<SpecOf[K]> };

/** A plugin driver as the registry keeps it: its options type erased to JSON, checked on every use. */
export interface RegisteredDriver {
  readonly kind: string;
  readonly description: string;
  /** The package (or path) that registered it; "builtin" for mvnet's own. */
  readonly source: string;
  validate(options: JsonObject): JsonObject;
  /** The device's identity for clash checks, or undefined (no clash possible). */
  key(options: JsonObject): string | undefined;
  open(options: JsonObject, ctx: PortContext): Promise<Port>;
}

export interface RegisteredAdapter {
  readonly adapter: HookAdapter;
  readonly source: string;
}

/** What a loaded plugin added, for `daemon.status`. */
export interface PluginInfo {
  source: string;
  portDrivers: string[];
  hookAdapters: string[];
}

/** Plugin kind and adapter names. */
export const PLUGIN_NAME_RE = /^[a-z][a-z0-9-]{0,31}$/;
/** npm package names (scoped or not), as `plugins` in the config lists them. */
export const NPM_NAME_RE = /^(?:@[a-z0-9][a-z0-9._~-]*\/)?[a-z0-9][a-z0-9._~-]*$/;

function checkName(what: string, name: unknown): string {
  if (typeof name !== 'string' || !PLUGIN_NAME_RE.test(name)) {
    throw new Error(`${what} name ${JSON.stringify(name)} is invalid: lowercase letters, digits and '-', 1-32, starting with a letter`);
  }
  return name;
}

function isBuiltinKind(kind: string): kind is BuiltinPortKind {
  return BUILTIN_PORT_KINDS.some((k) => k === kind);
}

/** Keeps a driver's own options type inside: the registry sees only JSON in and out. */
function erase<O extends JsonObject>(d: PluginPortDriver<O>, source: string): RegisteredDriver {
  const key = d.key;
  return {
    kind: d.kind,
    description: d.description ?? '',
    source,
    validate: (options) => d.validate(options),
    key: (options) => (key !== undefined ? key.call(d, d.validate(options)) : undefined),
    open: async (options, ctx) => d.open(d.validate(options), ctx),
  };
}

export class Registry {
  private readonly drivers = new Map<string, RegisteredDriver>();
  private readonly adapters = new Map<string, RegisteredAdapter>();
  private readonly loaded: PluginInfo[] = [];

  /** `builtins`: the built-in port drivers (the daemon's); the CLI's registry has none. */
  constructor(private readonly builtins?: BuiltinDrivers) {}

  /** Adds a plugin port driver; refuses a built-in kind, `plugin`, or a kind already registered. */
  registerPortDriver<O extends JsonObject>(d: PluginPortDriver<O>, source: string): void {
    const kind = checkName('port driver', d.kind);
    if (isBuiltinKind(kind) || kind === 'plugin') throw new Error(`port driver ${kind} would replace a built-in kind (${BUILTIN_PORT_KINDS.join(', ')})`);
    const had = this.drivers.get(kind);
    if (had !== undefined) throw new Error(`port driver ${kind} is already registered by ${had.source}`);
    if (typeof d.validate !== 'function' || typeof d.open !== 'function') throw new Error(`port driver ${kind} must have validate() and open()`);
    this.drivers.set(kind, erase(d, source));
  }

  /** Adds a hook adapter; refuses a name already registered (built-in adapters register first). */
  registerHookAdapter(a: HookAdapter, source: string): void {
    const name = checkName('hook adapter', a.name);
    const had = this.adapters.get(name);
    if (had !== undefined) throw new Error(`hook adapter ${name} is already registered by ${had.source}`);
    if (typeof a.run !== 'function') throw new Error(`hook adapter ${name} must have run()`);
    this.adapters.set(name, { adapter: a, source });
  }

  pluginDriver(kind: string): RegisteredDriver | undefined {
    return this.drivers.get(kind);
  }

  pluginKinds(): string[] {
    return [...this.drivers.keys()].sort();
  }

  hookAdapter(name: string): RegisteredAdapter | undefined {
    return this.adapters.get(name);
  }

  hookAdapterNames(): string[] {
    return [...this.adapters.keys()].sort();
  }

  /** The packages loaded into this registry and what each added. */
  plugins(): PluginInfo[] {
    return this.loaded.map((p) => ({ ...p, portDrivers: [...p.portDrivers], hookAdapters: [...p.hookAdapters] }));
  }

  /** Opens the port `spec` describes with the driver of its kind. */
  openPort(spec: PortSpec, ctx: PortContext): Promise<Port> {
    if (spec.kind === 'plugin') {
      const d = this.drivers.get(spec.driver);
      if (d === undefined) return Promise.reject(new Error(`no port driver ${spec.driver} is loaded`));
      return d.open(spec.options, ctx);
    }
    if (spec.kind === 'agent') return Promise.reject(new Error('agent ports are opened by the daemon (daemon/mesh), not by a driver'));
    if (this.builtins === undefined) return Promise.reject(new Error('this registry has no built-in port drivers'));
    return openWith(this.builtins, spec.kind, spec, ctx);
  }

  /** Runs one plugin's `register` with an API that records what it adds; on a throw nothing it added stays. */
  async register(source: string, fn: RegisterFn): Promise<PluginInfo> {
    const info: PluginInfo = { source, portDrivers: [], hookAdapters: [] };
    const api: PluginApi = {
      apiVersion: 1,
      source,
      portDriver: (d) => {
        this.registerPortDriver(d, source);
        info.portDrivers.push(d.kind);
      },
      hookAdapter: (a) => {
        this.registerHookAdapter(a, source);
        info.hookAdapters.push(a.name);
      },
    };
    try {
      await fn(api);
    } catch (e) {
      for (const k of info.portDrivers) this.drivers.delete(k);
      for (const n of info.hookAdapters) this.adapters.delete(n);
      throw e;
    }
    if (info.portDrivers.length === 0 && info.hookAdapters.length === 0) throw new Error('it registered nothing (no portDriver or hookAdapter call)');
    this.loaded.push(info);
    return info;
  }
}

/** `kind` picks the driver and types `spec` for it: the driver gets the spec of its own kind. */
function openWith<K extends BuiltinPortKind>(drivers: BuiltinDrivers, kind: K, spec: SpecOf[K], ctx: PortContext): Promise<Port> {
  const d: PortDriver<SpecOf[K]> = drivers[kind];
  return d.open(spec, ctx);
}

// ---------------------------------------------------------------------------------------------
// Loading npm packages

/** The directory of mvnet's own package (its node_modules are searched last). */
function mvnetRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    const up = dirname(dir);
    if (up === dir) return dirname(fileURLToPath(import.meta.url));
    dir = up;
  }
}

/** `node_modules/NAME` in `from` or a directory above it, as Node resolves a bare specifier. */
function findPackageDir(name: string, from: string): string | undefined {
  let dir = resolve(from);
  for (;;) {
    const p = join(dir, 'node_modules', ...name.split('/'));
    if (existsSync(join(p, 'package.json'))) return p;
    const up = dirname(dir);
    if (up === dir) return undefined;
    dir = up;
  }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The ESM entry of a package: exports["."] (import/default), exports (a string), main, or index.js. */
function entryOf(pkgDir: string): string {
  let pkg: unknown;
  try {
    pkg = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8'));
  } catch (e) {
    throw new Error(`cannot read ${join(pkgDir, 'package.json')}: ${e instanceof Error ? e.message : String(e)}`);
  }
  if (!isRecord(pkg)) throw new Error(`${join(pkgDir, 'package.json')} is not a JSON object`);
  const pick = (v: unknown): string | undefined => {
    if (typeof v === 'string') return v;
    if (isRecord(v)) return pick(v['.'] ?? v.import ?? v.default);
    return undefined;
  };
  const rel = pick(pkg.exports) ?? (typeof pkg.main === 'string' ? pkg.main : undefined) ?? 'index.js';
  const real = realpathSync(pkgDir);
  const entry = resolve(real, rel);
  if (relative(real, entry).startsWith('..') || !entry.startsWith(real + sep)) throw new Error(`its entry ${JSON.stringify(rel)} is outside the package`);
  if (!existsSync(entry) || !statSync(entry).isFile()) throw new Error(`its entry ${entry} does not exist`);
  return entry;
}

function isRegisterFn(v: unknown): v is RegisterFn {
  return typeof v === 'function';
}

/** `register` from a module: a named export, or a property (or the whole) of the default export. */
function registerOf(mod: unknown): RegisterFn | undefined {
  if (!isRecord(mod)) return undefined;
  const def = mod.default;
  for (const c of [mod.register, isRecord(def) ? def.register : undefined, def]) if (isRegisterFn(c)) return c;
  return undefined;
}

export interface LoadOptions {
  /** Directories whose node_modules (and their parents') are searched for package names, in order; mvnet's own last. */
  searchFrom?: readonly string[];
}

/**
 * Loads each package (an npm name, or an absolute path to a package directory) into `registry`.
 * Throws at the first failure with one line naming the package: the daemon refuses to start.
 */
export async function loadPlugins(registry: Registry, packages: readonly string[], opts: LoadOptions = {}): Promise<PluginInfo[]> {
  const out: PluginInfo[] = [];
  for (const name of packages) {
    try {
      let dir: string | undefined;
      if (isAbsolute(name)) {
        if (!existsSync(join(name, 'package.json'))) throw new Error(`no package.json in ${name}`);
        dir = name;
      } else {
        if (!NPM_NAME_RE.test(name)) throw new Error('not an npm package name or an absolute path');
        for (const from of [...(opts.searchFrom ?? []), mvnetRoot()]) {
          dir = findPackageDir(name, from);
          if (dir !== undefined) break;
        }
        if (dir === undefined) throw new Error(`not installed (no node_modules/${name} above ${[...(opts.searchFrom ?? []), mvnetRoot()].join(' or ')})`);
      }
      const mod: unknown = await import(pathToFileURL(entryOf(dir)).href);
      const fn = registerOf(mod);
      if (fn === undefined) throw new Error('its entry exports no register(api) function');
      out.push(await registry.register(name, fn));
    } catch (e) {
      const msg = (e instanceof Error ? e.message : String(e)).split('\n')[0] ?? '';
      throw new Error(`plugin ${name}: ${msg}`);
    }
  }
  return out;
}
