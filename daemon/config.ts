/**
 * `mvnet daemon --config FILE`: a JSON file. Command-line flags win over the file, the file over
 * the defaults. Unknown keys are an error, so a typo does not silently weaken a setting.
 */
import fs from 'node:fs';
import net from 'node:net';
import { UserError } from './errors.js';
import { checkTorConfig, type TorConfig } from './tor/config.js';

export interface DaemonConfig {
  stateDir: string;
  socket: string;
  /** pino level. */
  logLevel: string;
  /** Group allowed to use the control socket (its mode is 0660). */
  socketGroup?: string;
  dns: {
    /** Upstream resolver for direct routes, "HOST:PORT" or "HOST"; default the first nameserver in /etc/resolv.conf. */
    upstream?: string;
  };
  direct: {
    /** Host addresses outbound sockets bind to. */
    bind4?: string;
    bind6?: string;
    /** Map the gateway address to the host's loopback for direct-routed VMs (as passt does). */
    hostLoopback: boolean;
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
}

export const DEFAULTS: DaemonConfig = {
  stateDir: '/var/lib/mvnet',
  socket: '/run/mvnet/mvnet.sock',
  logLevel: 'info',
  dns: {},
  direct: { hostLoopback: false, connectTimeoutMs: 60_000 },
  limits: { tcpPerVm: 1024, udpPerVm: 256, udpIdleMs: 60_000, fdTokenMs: 10_000 },
  tor: checkTorConfig(undefined),
  torConfigured: false,
};

const LEVELS = new Set(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']);

type Kind = 'string' | 'boolean' | 'int' | 'hostport' | 'ip';
/** Every key the file may hold, with its type: one table, one checker. */
const SCHEMA: Record<string, Kind | Record<string, Kind>> = {
  stateDir: 'string',
  socket: 'string',
  logLevel: 'string',
  socketGroup: 'string',
  dns: { upstream: 'hostport' },
  direct: { bind4: 'ip', bind6: 'ip', hostLoopback: 'boolean', connectTimeoutMs: 'int' },
  limits: { tcpPerVm: 'int', udpPerVm: 'int', udpIdleMs: 'int', fdTokenMs: 'int' },
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
    case 'hostport':
      if (typeof v !== 'string' || parseHostPort(v, 53) === null) bad('HOST or HOST:PORT (IPv6 as [ADDR]:PORT)');
      break;
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
  hostLoopback?: boolean;
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
    direct: { ...DEFAULTS.direct, ...fromFile.direct },
    limits: { ...DEFAULTS.limits, ...fromFile.limits },
    tor: checkTorConfig((fromFile as { tor?: unknown }).tor),
    torConfigured: (fromFile as { tor?: unknown }).tor !== undefined,
  };
  if (flags.stateDir !== undefined) cfg.stateDir = flags.stateDir;
  if (flags.socket !== undefined) cfg.socket = flags.socket;
  if (flags.logLevel !== undefined) cfg.logLevel = flags.logLevel;
  if (flags.hostLoopback === true) cfg.direct.hostLoopback = true;
  if (!LEVELS.has(cfg.logLevel)) throw new UserError(`logLevel must be one of ${[...LEVELS].join(', ')}`);
  if (!cfg.socket.startsWith('/')) throw new UserError(`socket must be an absolute path, got ${cfg.socket}`);
  if (!cfg.stateDir.startsWith('/')) throw new UserError(`stateDir must be an absolute path, got ${cfg.stateDir}`);
  return cfg;
}
