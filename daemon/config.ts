/**
 * `mvnet daemon --config FILE`: a JSON file. Command-line flags win over the file, the file over
 * the defaults. Unknown keys are an error, so a typo does not silently weaken a setting.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { UserError } from './errors.js';
import { checkTorConfig, type TorConfig } from './tor/config.js';
import { NPM_NAME_RE } from '../plugins/registry.js';
import { parseMetricsListen } from './metrics/listen.js';
import { busAddressProblem } from './events/bus-address.js';
import { CONGESTION_ALGORITHMS, type CongestionAlgorithm } from './endpoint/tcp/index.js';

export interface DaemonConfig {
  stateDir: string;
  socket: string;
  /** pino level. */
  logLevel: string;
  /** Keep every capability after start (as root the daemon otherwise keeps only those it needs; `--keep-caps`). */
  keepCaps: boolean;
  /** Group allowed to use the control socket (its mode is 0660) and the VM sockets. */
  socketGroup?: string;
  /** Where `--unix-listen`/`--dgram` sockets given as a bare name (or none) are made; default `vms/` next to the control socket. */
  vmSocketDir: string;
  /** Where tees write their files (`tee add --to NAME`); default `<stateDir>/captures`, made 0700. Nothing outside it is written. */
  captureDir: string;
  dns: {
    /** Upstream resolver for direct routes, "HOST:PORT" or "HOST"; default the first nameserver in /etc/resolv.conf. */
    upstream?: string;
  };
  direct: {
    /** Host addresses outbound sockets bind to. */
    bind4?: string;
    bind6?: string;
    /** Map the gateway address to the host's loopback for direct-routed VMs (as passt does)... */
    hostLoopback: boolean;
    /** ...on these ports only, inclusive ranges (the file says `[8080, "9000-9010"]`). */
    hostLoopbackPorts: readonly PortRange[];
    connectTimeoutMs: number;
  };
  limits: {
    tcpPerVm: number;
    udpPerVm: number;
    udpIdleMs: number;
    /** How long a descriptor passed for `vm attach --fd` waits to be claimed before it is closed. */
    fdTokenMs: number;
  };
  /** Tor; `torConfigured` says whether the file had a tor section (then Tor starts with the daemon). */
  tor: TorConfig;
  torConfigured: boolean;
  /**
   * npm packages (names, or absolute paths to package directories) the daemon loads at start,
   * each registering port drivers or hook adapters (plugins/registry.ts). A package that cannot
   * be loaded stops the start.
   */
  plugins: readonly string[];
  /** Prometheus endpoint (daemon/metrics): off unless `listen` is set (unix:/PATH, 127.0.0.1:PORT, [::1]:PORT). */
  metrics: { listen?: string };
  /** Desktop notices through D-Bus (daemon/events/notify.ts): `dbus` ADDRESS, else DBUS_SESSION_BUS_ADDRESS; `enabled` default: when an address is known. */
  notify: { enabled?: boolean; dbus?: string };
  /** The userland TCP of direct routes: `congestion` for connections opened from then on. */
  tcp: { congestion: CongestionAlgorithm };
}

/** An inclusive port range. */
export type PortRange = readonly [number, number];

export const DEFAULTS: DaemonConfig = {
  stateDir: '/var/lib/mvnet',
  socket: '/run/mvnet/mvnet.sock',
  vmSocketDir: '/run/mvnet/vms',
  captureDir: '/var/lib/mvnet/captures',
  logLevel: 'info',
  keepCaps: false,
  dns: {},
  direct: { hostLoopback: false, hostLoopbackPorts: [], connectTimeoutMs: 60_000 },
  limits: { tcpPerVm: 1024, udpPerVm: 256, udpIdleMs: 60_000, fdTokenMs: 10_000 },
  tor: checkTorConfig(undefined),
  torConfigured: false,
  plugins: [],
  metrics: {},
  notify: {},
  tcp: { congestion: 'cubic' },
};

const LEVELS = new Set(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']);

type Kind = 'string' | 'boolean' | 'int' | 'hostport' | 'ip' | 'ports' | 'packages' | 'listen' | 'dbus' | 'congestion';
/** Every key the file may hold, with its type: one table, one checker. */
const SCHEMA: Record<string, Kind | Record<string, Kind>> = {
  stateDir: 'string',
  socket: 'string',
  logLevel: 'string',
  keepCaps: 'boolean',
  socketGroup: 'string',
  vmSocketDir: 'string',
  captureDir: 'string',
  plugins: 'packages',
  dns: { upstream: 'hostport' },
  direct: { bind4: 'ip', bind6: 'ip', hostLoopback: 'boolean', hostLoopbackPorts: 'ports', connectTimeoutMs: 'int' },
  limits: { tcpPerVm: 'int', udpPerVm: 'int', udpIdleMs: 'int', fdTokenMs: 'int' },
  metrics: { listen: 'listen' },
  notify: { enabled: 'boolean', dbus: 'dbus' },
  tcp: { congestion: 'congestion' },
};

function checkValue(where: string, kind: Kind, v: unknown): void {
  const bad = (what: string): never => {
    throw new UserError(`${where} must be ${what}, got ${JSON.stringify(v)}`);
  };
  switch (kind) {
    case 'string':
      if (typeof v !== 'string' || v.length === 0) bad('a non-empty string');
      break;
    case 'boolean':
      if (typeof v !== 'boolean') bad('true or false');
      break;
    case 'int':
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) bad('a positive integer');
      break;
    case 'ip':
      if (typeof v !== 'string' || net.isIP(v) === 0) bad('an IP address');
      break;
    case 'ports':
      if (!Array.isArray(v)) bad('a list of ports and "LOW-HIGH" ranges, e.g. [8080, "9000-9010"]');
      for (const p of v as unknown[]) {
        const r = parsePortItem(p);
        if (typeof r === 'string') throw new UserError(`${where}: ${r}`);
      }
      break;
    case 'packages': {
      const list: unknown[] = Array.isArray(v) ? v : bad('a list of npm package names or absolute paths to package directories');
      const seen = new Set<string>();
      for (const p of list) {
        if (typeof p !== 'string' || !(NPM_NAME_RE.test(p) || (path.isAbsolute(p) && !p.includes('\0')))) {
          throw new UserError(`${where}: ${JSON.stringify(p)} is not an npm package name or an absolute path`);
        }
        if (seen.has(p)) throw new UserError(`${where}: ${p} is listed twice`);
        seen.add(p);
      }
      break;
    }
    case 'listen':
      if (typeof v !== 'string') bad('unix:/PATH, 127.0.0.1:PORT or [::1]:PORT');
      try {
        parseMetricsListen(v as string);
      } catch (e) {
        throw new UserError(`${where}: ${(e as Error).message}`);
      }
      break;
    case 'dbus': {
      if (typeof v !== 'string') bad('unix:path=/PATH or unix:abstract=NAME');
      const problem = busAddressProblem(v as string);
      if (problem !== null) throw new UserError(`${where}: ${problem}`);
      break;
    }
    case 'hostport':
      if (typeof v !== 'string' || parseHostPort(v, 53) === null) bad('HOST or HOST:PORT (IPv6 as [ADDR]:PORT)');
      break;
    case 'congestion':
      if (!(CONGESTION_ALGORITHMS as readonly unknown[]).includes(v)) bad(CONGESTION_ALGORITHMS.map((a) => JSON.stringify(a)).join(' or '));
      break;
  }
}

/** One item of a port list: a port number or "LOW-HIGH"; the range, or what is wrong with it. */
export function parsePortItem(p: unknown): PortRange | string {
  if (typeof p === 'number') return Number.isInteger(p) && p >= 1 && p <= 65535 ? [p, p] : `${JSON.stringify(p)} is not a port (1-65535)`;
  if (typeof p !== 'string') return `${JSON.stringify(p)} is not a port or a "LOW-HIGH" range`;
  const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(p);
  const lo = m ? Number(m[1]) : 0;
  const hi = m?.[2] !== undefined ? Number(m[2]) : lo;
  if (!m || lo < 1 || hi > 65535 || lo > hi) return `${JSON.stringify(p)} is not a port or a "LOW-HIGH" range (1-65535, LOW <= HIGH)`;
  return [lo, hi];
}

/** A port list as `--host-loopback` takes it: "8080,9000-9010". */
export function parsePortList(text: string): PortRange[] {
  const out: PortRange[] = [];
  for (const item of text.split(',')) {
    const r = parsePortItem(/^\d+$/.test(item) ? Number(item) : item);
    if (typeof r === 'string') throw new UserError(`--host-loopback: ${r}`);
    out.push(r);
  }
  return out;
}

export function inPortRanges(ranges: readonly PortRange[], port: number): boolean {
  return ranges.some(([lo, hi]) => port >= lo && port <= hi);
}

/** Tor's well-known SOCKS and control ports (a system tor, Tor Browser): never host-loopback ports. */
const TOR_WELL_KNOWN = [9050, 9051, 9150, 9151];

/** The kernel's ephemeral port range, where a "127.0.0.1:auto" SOCKS port lands. */
function ephemeralRange(): PortRange {
  try {
    const [lo, hi] = fs.readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    if (lo !== undefined && hi !== undefined && lo >= 1 && hi <= 65535 && lo <= hi) return [lo, hi];
  } catch {
    // not Linux's /proc: assume the default
  }
  return [32768, 60999];
}

/**
 * `direct.hostLoopbackPorts` may never expose Tor's SOCKS or control port: a VM would use the
 * host's Tor unisolated (or control it). Checked for the configured ports, the well-known ones,
 * and an embedded "auto" SOCKS port (any port the kernel may pick for it).
 */
function checkHostLoopbackPorts(cfg: DaemonConfig): void {
  const ports = cfg.direct.hostLoopbackPorts;
  if (!cfg.direct.hostLoopback) return;
  if (ports.length === 0) {
    throw new UserError('direct.hostLoopback exposes only the ports in direct.hostLoopbackPorts (or --host-loopback PORTS), and none are listed: list them, e.g. [8080, "9000-9010"]');
  }
  const named: [string, number][] = TOR_WELL_KNOWN.map((p) => [`Tor's well-known port ${p}`, p]);
  if (cfg.torConfigured) {
    for (const [what, addr] of [['tor.socks', cfg.tor.socks], ['tor.control', cfg.tor.control]] as const) {
      const m = addr !== undefined && !addr.startsWith('unix:') ? /:(\d{1,5}|auto)$/.exec(addr) : null;
      if (m === null) continue;
      if (m[1] === 'auto') {
        const [lo, hi] = ephemeralRange();
        if (ports.some(([a, b]) => a <= hi && b >= lo)) {
          throw new UserError(`direct.hostLoopbackPorts overlaps ${lo}-${hi}, where ${what} "${addr}" may listen: list ports outside it or give tor.socks a fixed port`);
        }
      } else named.push([`${what} (${addr})`, Number(m[1])]);
    }
  }
  for (const [what, port] of named) {
    if (inPortRanges(ports, port)) throw new UserError(`direct.hostLoopbackPorts includes ${port}, ${what}: a VM must never reach Tor's SOCKS or control port`);
  }
}

export function parseHostPort(s: string, defPort: number): { host: string; port: number } | null {
  const m = /^\[([^\]]+)\](?::(\d{1,5}))?$/.exec(s) ?? /^([^:]+)(?::(\d{1,5}))?$/.exec(s);
  if (m === null) {
    return net.isIP(s) === 6 ? { host: s, port: defPort } : null;
  }
  const port = m[2] !== undefined ? Number(m[2]) : defPort;
  if (port < 1 || port > 65535 || net.isIP(m[1]!) === 0) return null;
  return { host: m[1]!, port };
}

function checkFile(file: string, data: unknown): Partial<DaemonConfig> {
  if (typeof data !== 'object' || data === null || Array.isArray(data)) throw new UserError(`config ${file} must be a JSON object`);
  for (const [k, v] of Object.entries(data)) {
    if (k === 'tor') {
      try {
        checkTorConfig(v);
      } catch (e) {
        throw new UserError(`config ${file}: ${(e as Error).message}`);
      }
      continue;
    }
    const kind = SCHEMA[k];
    if (kind === undefined) throw new UserError(`config ${file}: unknown key ${JSON.stringify(k)} (known: ${[...Object.keys(SCHEMA), 'tor'].join(', ')})`);
    if (typeof kind === 'string') {
      checkValue(`config ${file}: ${k}`, kind, v);
      continue;
    }
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new UserError(`config ${file}: ${k} must be an object`);
    for (const [k2, v2] of Object.entries(v)) {
      const kind2 = kind[k2];
      if (kind2 === undefined) throw new UserError(`config ${file}: unknown key "${k}.${k2}" (known: ${Object.keys(kind).map((x) => `${k}.${x}`).join(', ')})`);
      checkValue(`config ${file}: ${k}.${k2}`, kind2, v2);
    }
  }
  return data as Partial<DaemonConfig>;
}

export interface ConfigFlags {
  stateDir?: string;
  socket?: string;
  logLevel?: string;
  /** `--host-loopback PORTS`: turns direct.hostLoopback on with these ports ("8080,9000-9010"). */
  hostLoopback?: string;
  /** `--keep-caps`. */
  keepCaps?: boolean;
}

export function loadConfig(file: string | undefined, flags: ConfigFlags): DaemonConfig {
  let fromFile: Partial<DaemonConfig> = {};
  if (file !== undefined) {
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (e) {
      throw new UserError(`cannot read config ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    let data: unknown;
    try {
      data = JSON.parse(text);
    } catch (e) {
      throw new UserError(`config ${file} is not valid JSON: ${(e as Error).message}`);
    }
    fromFile = checkFile(file, data);
  }
  const cfg: DaemonConfig = {
    ...DEFAULTS,
    ...fromFile,
    dns: { ...DEFAULTS.dns, ...fromFile.dns },
    direct: {
      ...DEFAULTS.direct,
      ...fromFile.direct,
      hostLoopbackPorts: ((fromFile.direct as { hostLoopbackPorts?: unknown[] } | undefined)?.hostLoopbackPorts ?? []).map((p) => parsePortItem(p) as PortRange),
    },
    limits: { ...DEFAULTS.limits, ...fromFile.limits },
    metrics: { ...fromFile.metrics },
    notify: { ...fromFile.notify },
    tcp: { ...DEFAULTS.tcp, ...fromFile.tcp },
    tor: checkTorConfig((fromFile as { tor?: unknown }).tor),
    torConfigured: (fromFile as { tor?: unknown }).tor !== undefined,
  };
  if (flags.stateDir !== undefined) cfg.stateDir = flags.stateDir;
  if (flags.socket !== undefined) cfg.socket = flags.socket;
  if (flags.logLevel !== undefined) cfg.logLevel = flags.logLevel;
  if (flags.keepCaps === true) cfg.keepCaps = true;
  if (flags.hostLoopback !== undefined) cfg.direct = { ...cfg.direct, hostLoopback: true, hostLoopbackPorts: parsePortList(flags.hostLoopback) };
  checkHostLoopbackPorts(cfg);
  if (!LEVELS.has(cfg.logLevel)) throw new UserError(`logLevel must be one of ${[...LEVELS].join(', ')}`);
  if (!cfg.socket.startsWith('/')) throw new UserError(`socket must be an absolute path, got ${cfg.socket}`);
  // Derived from the control socket (after --socket) unless the file names it.
  if (fromFile.vmSocketDir === undefined) cfg.vmSocketDir = path.join(path.dirname(cfg.socket), 'vms');
  if (!cfg.vmSocketDir.startsWith('/')) throw new UserError(`vmSocketDir must be an absolute path, got ${cfg.vmSocketDir}`);
  if (!cfg.stateDir.startsWith('/')) throw new UserError(`stateDir must be an absolute path, got ${cfg.stateDir}`);
  // Derived from the state directory (after --state-dir) unless the file names it.
  if (fromFile.captureDir === undefined) cfg.captureDir = path.join(cfg.stateDir, 'captures');
  if (!cfg.captureDir.startsWith('/')) throw new UserError(`captureDir must be an absolute path, got ${cfg.captureDir}`);
  cfg.captureDir = path.normalize(cfg.captureDir);
  return cfg;
}

/** The gid of config `socketGroup` (a name from /etc/group or a number), or undefined. */
export function socketGroupId(group: string | undefined): number | undefined {
  if (group === undefined) return undefined;
  if (/^\d+$/.test(group)) return Number(group);
  let text: string;
  try {
    text = fs.readFileSync('/etc/group', 'utf8');
  } catch {
    throw new UserError(`cannot read /etc/group to look up socketGroup ${group}`);
  }
  const line = text.split('\n').find((l) => l.split(':')[0] === group);
  if (line === undefined) throw new UserError(`no such group ${group} (socketGroup)`);
  return Number(line.split(':')[2]);
}

/**
 * Keys SIGHUP applies to the running daemon. Everything else (stateDir, socket, socketGroup,
 * direct.*, tor) needs a restart: they name resources already open (the state lock, the
 * listening socket, its owner, Tor's ports), or they change what open flows were allowed to do.
 */
export const RELOADABLE: ReadonlySet<string> = new Set(['logLevel', 'limits.tcpPerVm', 'limits.udpPerVm', 'limits.udpIdleMs', 'dns.upstream', 'metrics.listen', 'notify.enabled', 'notify.dbus', 'tcp.congestion']);

export interface ConfigChange {
  key: string;
  from: unknown;
  to: unknown;
}

/** What differs between two configs, as dotted keys (the tor section as one key). */
export function configChanges(a: DaemonConfig, b: DaemonConfig): ConfigChange[] {
  const out: ConfigChange[] = [];
  const flat = (c: DaemonConfig): Map<string, unknown> => {
    const m = new Map<string, unknown>();
    for (const [k, v] of Object.entries(c)) {
      if (k === 'torConfigured') continue;
      if (k !== 'tor' && typeof v === 'object' && v !== null && !Array.isArray(v)) for (const [k2, v2] of Object.entries(v)) m.set(`${k}.${k2}`, v2);
      else m.set(k, v);
    }
    return m;
  };
  const fa = flat(a);
  const fb = flat(b);
  for (const key of new Set([...fa.keys(), ...fb.keys()])) {
    const from = fa.get(key);
    const to = fb.get(key);
    if (JSON.stringify(from) !== JSON.stringify(to)) out.push({ key, from, to });
  }
  return out;
}
