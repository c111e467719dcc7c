/**
 * The `tor` section of the daemon's configuration, and the torrc the embedded tor runs with.
 * Every rejection is an Error whose message says what is wrong in one line.
 */
import net from 'node:net';
import { isAbsolute, join } from 'node:path';
import { parseTorAddress } from './control.js';
import { formatIpv4, ipv4Mask, parseIpv4Text } from '../wire/ip-text.js';

export type TorMode = 'embedded' | 'external';

export interface TorConfig {
  /** embedded (default): mvnet runs its own tor; external: mvnet uses a tor someone else runs. */
  mode: TorMode;
  /**
   * external: tor's SocksPort, "HOST:PORT" or "unix:PATH" (required).
   * embedded: unset for a unix socket in the state directory, or "127.0.0.1:PORT" /
   * "127.0.0.1:auto" (any loopback address) for a TCP SocksPort.
   */
  socks?: string;
  /** external only: tor's ControlPort, "HOST:PORT" or "unix:PATH" (required). */
  control?: string;
  /** external only: the password behind tor's HashedControlPassword. A secret: never logged. */
  controlPassword?: string;
  /** external only: the control cookie file (default: the one tor names in PROTOCOLINFO). */
  cookieFile?: string;
  /** embedded only: extra torrc lines, appended after mvnet's own. */
  torrc: string[];
  /** IPv4 CIDR of tor's automapped virtual addresses (VirtualAddrNetworkIPv4), at most a /16. */
  automap: string;
  /** Directories (absolute) that may hold persistent onion service keys, in tor's HiddenServiceDir layout. */
  hiddenServiceDirs: string[];
  /** embedded: the tor executable (default "tor", found on PATH). */
  binary: string;
  /**
   * embedded: the user tor drops to after binding (torrc `User`), when the daemon runs as root.
   * Unset: "debian-tor" if that user exists, else "nobody"; "root" keeps tor as root (warned).
   */
  user?: string;
  /** embedded: tor's seccomp sandbox (`Sandbox 1`); a tor that cannot start with it runs without, and says so. */
  sandbox: boolean;
  /** Stop tor when nothing needs it (no Tor route, published onion, onion name or onion link) for idleStopSec. */
  stopWhenUnused: boolean;
  /** Grace period, seconds, before an unused tor is stopped. */
  idleStopSec: number;
}

export const TOR_CONFIG_DEFAULTS: TorConfig = {
  mode: 'embedded',
  torrc: [],
  automap: '10.192.0.0/10',
  hiddenServiceDirs: [],
  binary: 'tor',
  sandbox: true,
  stopWhenUnused: true,
  idleStopSec: 60,
};

const KEYS = ['mode', 'socks', 'control', 'controlPassword', 'cookieFile', 'torrc', 'automap', 'hiddenServiceDirs', 'binary', 'user', 'sandbox', 'stopWhenUnused', 'idleStopSec'] as const;

/** torrc options mvnet sets itself in embedded mode (lower case): user lines may not touch them. */
const RESERVED_OPTIONS = new Set([
  'socksport',
  'controlport',
  'controlsocket',
  'datadirectory',
  'cookieauthentication',
  'cookieauthfile',
  '__owningcontrollerprocess',
  '__controlport',
  '__socksport',
  'runasdaemon',
  'user',
  'sandbox',
]);

function fail(msg: string): never {
  throw new Error(`tor: ${msg}`);
}

function optString(o: Record<string, unknown>, key: string): string | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string' || v.length === 0) fail(`${key} must be a non-empty string`);
  return v;
}

function optBool(o: Record<string, unknown>, key: string): boolean | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') fail(`${key} must be true or false`);
  return v;
}

function stringArray(o: Record<string, unknown>, key: string): string[] {
  const v = o[key];
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v) || !v.every((x): x is string => typeof x === 'string')) fail(`${key} must be an array of strings`);
  return [...v];
}

/** Checks tor.torrc lines: single lines, no continuation, no %include, none of mvnet's own options. */
export function checkTorrcLines(lines: readonly string[]): void {
  lines.forEach((line, i) => {
    const where = `torrc line ${i + 1}`;
    if (/[\r\n\0]/.test(line)) fail(`${where} contains a line break or NUL: give one torrc line per array element`);
    const t = line.trim();
    if (t.length === 0 || t.startsWith('#')) return;
    if (t.endsWith('\\')) fail(`${where} ends with a backslash, which would continue it onto mvnet's next line`);
    const word = t.split(/\s+/, 1)[0]!;
    if (word.startsWith('%')) fail(`${where}: ${word} is not allowed (write the lines themselves)`);
    const option = word.replace(/^[+/]/, '').toLowerCase();
    if (RESERVED_OPTIONS.has(option)) {
      fail(`${where} sets ${word}, which mvnet manages itself in embedded mode (SocksPort, ControlPort, DataDirectory, cookie authentication, User, Sandbox); use tor.socks, tor.user, tor.sandbox or mode "external" instead`);
    }
  });
}

/** An IPv4 CIDR with at most 16 prefix bits (tor's limit for VirtualAddrNetworkIPv4), normalised. */
export function checkAutomap(s: string): string {
  const m = /^([^/]*)\/(\d{1,2})$/.exec(s);
  const addr = m ? parseIpv4Text(m[1]!) : null;
  if (!m || !addr?.ok) fail(`automap ${JSON.stringify(s)} is not an IPv4 CIDR like 10.192.0.0/10`);
  const bits = Number(m[2]);
  if (bits < 1 || bits > 16) fail(`automap ${s}: the prefix must be /1 to /16 (tor needs at least 16 bits of virtual addresses)`);
  const n = addr.value;
  const base = (n & ipv4Mask(bits)) >>> 0;
  if (base !== n) fail(`automap ${s}: host bits are set (the network is ${formatIpv4(base)}/${bits})`);
  return s;
}

function isLoopback(host: string): boolean {
  return (net.isIPv4(host) && host.startsWith('127.')) || host === '::1';
}

/** Embedded-mode TCP SocksPort: "LOOPBACK:PORT" or "LOOPBACK:auto". */
export function parseEmbeddedSocks(s: string): { host: string; port: number | 'auto' } {
  const m = /^\[([0-9A-Fa-f:.]+)\]:(\d{1,5}|auto)$/.exec(s) ?? /^([^:\s[\]]+):(\d{1,5}|auto)$/.exec(s);
  if (!m) fail(`socks ${JSON.stringify(s)}: in embedded mode use 127.0.0.1:PORT or 127.0.0.1:auto (or leave it unset for a unix socket)`);
  if (!isLoopback(m[1]!)) fail(`socks ${s}: the embedded tor's SOCKS port must listen on a loopback address`);
  if (m[2] === 'auto') return { host: m[1]!, port: 'auto' };
  const port = Number(m[2]);
  if (port < 1 || port > 65535) fail(`socks ${s}: port must be 1-65535`);
  return { host: m[1]!, port };
}

export function checkTorConfig(raw: unknown): TorConfig {
  if (raw === undefined || raw === null) return { ...TOR_CONFIG_DEFAULTS, torrc: [], hiddenServiceDirs: [] };
  if (typeof raw !== 'object' || Array.isArray(raw)) fail('the tor section must be an object');
  const o = raw as Record<string, unknown>;
  for (const k of Object.keys(o)) {
    if (!(KEYS as readonly string[]).includes(k)) fail(`unknown key ${JSON.stringify(k)} (known: ${KEYS.join(', ')})`);
  }
  const mode = o.mode ?? 'embedded';
  if (mode !== 'embedded' && mode !== 'external') fail(`mode must be "embedded" or "external", got ${JSON.stringify(mode)}`);
  const cfg: TorConfig = {
    mode,
    torrc: stringArray(o, 'torrc'),
    automap: checkAutomap(optString(o, 'automap') ?? TOR_CONFIG_DEFAULTS.automap),
    hiddenServiceDirs: stringArray(o, 'hiddenServiceDirs'),
    binary: optString(o, 'binary') ?? TOR_CONFIG_DEFAULTS.binary,
    sandbox: optBool(o, 'sandbox') ?? TOR_CONFIG_DEFAULTS.sandbox,
    stopWhenUnused: optBool(o, 'stopWhenUnused') ?? TOR_CONFIG_DEFAULTS.stopWhenUnused,
    idleStopSec: TOR_CONFIG_DEFAULTS.idleStopSec,
  };
  const idle = o.idleStopSec;
  if (idle !== undefined && idle !== null) {
    if (typeof idle !== 'number' || !Number.isFinite(idle) || idle < 0 || idle > 86_400) fail('idleStopSec must be a number of seconds from 0 to 86400');
    cfg.idleStopSec = idle;
  }
  const user = optString(o, 'user');
  if (user !== undefined) {
    if (!/^[a-z_][a-z0-9_.-]*\$?$/i.test(user)) fail(`user ${JSON.stringify(user)} is not a user name`);
    if (mode !== 'embedded') fail('user is only for mode "embedded" (an external tor runs as whoever started it)');
    cfg.user = user;
  }
  const socks = optString(o, 'socks');
  const control = optString(o, 'control');
  const controlPassword = optString(o, 'controlPassword');
  const cookieFile = optString(o, 'cookieFile');
  if (/[\r\n\0]/.test(cfg.binary)) fail('binary must be a single line');
  for (const d of cfg.hiddenServiceDirs) {
    if (!isAbsolute(d) || /[\r\n\0]/.test(d)) fail(`hiddenServiceDirs: ${JSON.stringify(d)} is not an absolute path`);
  }
  if (mode === 'embedded') {
    for (const [k, v] of [['control', control], ['controlPassword', controlPassword], ['cookieFile', cookieFile]] as const) {
      if (v !== undefined) fail(`${k} is only for mode "external" (the embedded tor's control port is mvnet's own)`);
    }
    if (socks !== undefined) {
      parseEmbeddedSocks(socks);
      cfg.socks = socks;
    }
    checkTorrcLines(cfg.torrc);
    return cfg;
  }
  if (cfg.torrc.length > 0) fail('torrc lines only apply in mode "embedded" (configure the external tor in its own torrc)');
  if (socks === undefined) fail('mode "external" needs socks ("HOST:PORT" or "unix:PATH" of its SocksPort)');
  if (control === undefined) fail('mode "external" needs control ("HOST:PORT" or "unix:PATH" of its ControlPort)');
  const wrap = (f: () => void): void => {
    try {
      f();
    } catch (e) {
      fail((e as Error).message);
    }
  };
  wrap(() => parseTorAddress(socks, 'socks'));
  wrap(() => parseTorAddress(control, 'control'));
  if (cookieFile !== undefined && !isAbsolute(cookieFile)) fail(`cookieFile ${JSON.stringify(cookieFile)} is not an absolute path`);
  cfg.socks = socks;
  cfg.control = control;
  if (controlPassword !== undefined) cfg.controlPassword = controlPassword;
  if (cookieFile !== undefined) cfg.cookieFile = cookieFile;
  return cfg;
}

export interface EmbeddedPaths {
  /** <stateDir>/tor: root's (0700, or 0710 root:tor's group when tor runs as another user), holds torrc. */
  dir: string;
  /** <stateDir>/tor/run: tor's own (0700): its control and SOCKS sockets and the cookie. */
  runDir: string;
  torrc: string;
  /** An empty file passed as --defaults-torrc, so no system-wide defaults leak in. */
  defaults: string;
  dataDir: string;
  controlSocket: string;
  /** Unset when tor.socks asks for a TCP SocksPort. */
  socksSocket?: string;
  cookieFile: string;
}

export function embeddedPaths(stateDir: string, cfg: TorConfig): EmbeddedPaths {
  if (!isAbsolute(stateDir)) throw new Error(`tor: the state directory ${JSON.stringify(stateDir)} is not an absolute path`);
  const dir = join(stateDir, 'tor');
  if (/[\s"\\#]/.test(dir)) throw new Error(`tor: the state directory ${JSON.stringify(stateDir)} must not contain whitespace, quotes, backslashes or '#' (tor's config syntax)`);
  const runDir = join(dir, 'run');
  const p: EmbeddedPaths = {
    dir,
    runDir,
    torrc: join(dir, 'torrc'),
    defaults: join(dir, 'torrc-defaults'),
    dataDir: join(dir, 'data'),
    controlSocket: join(runDir, 'control.sock'),
    cookieFile: join(runDir, 'control.authcookie'),
  };
  if (cfg.socks === undefined) p.socksSocket = join(runDir, 'socks.sock');
  for (const s of [p.controlSocket, p.socksSocket]) {
    if (s !== undefined && Buffer.byteLength(s) > 107) throw new Error(`tor: the socket path ${s} is longer than 107 bytes; use a shorter state directory`);
  }
  return p;
}

/** How the embedded tor drops privileges: `User` (tor switches after binding) and `Sandbox 1`. */
export interface TorPrivileges {
  user?: string;
  sandbox?: boolean;
}

/** The embedded tor's torrc: mvnet's lines, then tor.torrc's. */
export function buildTorrc(cfg: TorConfig, paths: EmbeddedPaths, ownerPid: number, priv: TorPrivileges = {}): string {
  checkTorrcLines(cfg.torrc);
  let socksLine: string;
  if (paths.socksSocket !== undefined) socksLine = `SocksPort unix:${paths.socksSocket} IsolateSOCKSAuth`;
  else {
    const s = parseEmbeddedSocks(cfg.socks!);
    socksLine = `SocksPort ${net.isIPv6(s.host) ? `[${s.host}]` : s.host}:${s.port} IsolateSOCKSAuth`;
  }
  const lines = [
    '# Written by mvnet on every start of its embedded tor; edits here are lost. Add lines with tor.torrc.',
    `DataDirectory ${paths.dataDir}`,
    socksLine,
    `ControlPort unix:${paths.controlSocket}`,
    'CookieAuthentication 1',
    `CookieAuthFile ${paths.cookieFile}`,
    `__OwningControllerProcess ${ownerPid}`,
    'Log notice stdout',
    'AvoidDiskWrites 1',
    `VirtualAddrNetworkIPv4 ${cfg.automap}`,
    'AutomapHostsOnResolve 1',
  ];
  if (priv.user !== undefined) lines.push(`User ${priv.user}`);
  if (priv.sandbox === true) lines.push('Sandbox 1');
  if (cfg.torrc.length > 0) lines.push('# tor.torrc', ...cfg.torrc);
  return `${lines.join('\n')}\n`;
}
