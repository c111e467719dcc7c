/**
 * What `mvnet hook` and `mvnet-cni` share: reading the caller's JSON, the VM name and MAC derived
 * from the caller's id, the route wished for, and the one way to put a VM on a network that fails
 * closed (route first, then the attachment; anything that fails undoes what was done).
 *
 * Errors are `HookError`s with a CNI error code (CNI spec 1.0, "Error"): 1-99 are the spec's, 100
 * and up are mvnet's own (below).
 */
import { createHash } from 'node:crypto';
import { spawn } from 'node:child_process';
import { lstatSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import { call, CliError } from '../client.js';
import type { NetInfo, RouteInfo, StatusInfo, VmInfo } from '../../daemon/control/api.js';
import { formatIpv6, parseIpv6Text } from '../../daemon/wire/ip-text.js';

export const CODES = {
  /** Incompatible CNI version. */
  incompatibleVersion: 1,
  /** Unsupported field in the network configuration. */
  unsupportedField: 2,
  /** Container unknown or does not exist. */
  unknownContainer: 3,
  /** Invalid necessary environment variables. */
  invalidEnv: 4,
  /** I/O failure. */
  io: 5,
  /** Failed to decode content. */
  decode: 6,
  /** Invalid network config. */
  invalidConfig: 7,
  /** Try again later (the daemon is not running). */
  tryAgain: 11,
  /** The daemon refused the request (its message says why). */
  refused: 100,
  /** The route asked for cannot be put in place: nothing was left attached (fail closed). */
  routeUnavailable: 101,
  /** CHECK: something is not as ADD left it. */
  checkFailed: 102,
  /** Configuring the interface inside the namespace failed. */
  interfaceSetup: 103,
} as const;

export class HookError extends Error {
  constructor(
    readonly code: number,
    message: string,
    readonly details?: string,
  ) {
    super(message);
  }
}

/** A route as the hook wishes it (route.set params) or reads it back (RouteView): unset fields absent or null. */
export type Route =
  | { kind: 'none'; torPorts?: number[] | null }
  | { kind: 'direct'; allow?: NonNullable<Extract<RouteInfo['route'], { kind: 'direct' }>['allow']> | null; torPorts?: number[] | null }
  | { kind: 'via'; vm: string }
  | { kind: 'tor' };

/** The route's Tor ports, or null (none, or a kind without them). */
function torPortsOf(r: Route): number[] | null {
  return 'torPorts' in r ? (r.torPorts ?? null) : null;
}
type Obj = Record<string, unknown>;

export function isObject(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export async function readStdin(): Promise<string> {
  // A caller that gives no stdin at all (a terminal) gets no wait: VERSION needs none.
  if (process.stdin.isTTY === true) return '';
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

export function parseJson(text: string, what: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw new HookError(CODES.decode, `${what} is not JSON: ${(e as Error).message}`);
  }
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;
const RESERVED = new Set(['show', 'help', 'list', 'clear', 'create', 'delete', 'remove', 'add', 'set', 'all', 'none']);

function sha256(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

/**
 * The mvnet VM name for a caller's id: the id itself when it is a valid VM name, else
 * `h-` and 24 hex digits of its SHA-256 (a 64-digit container id does not fit in 63 characters).
 * The same id always gives the same name, so DEL and CHECK find what ADD made.
 */
export function vmNameFor(id: string): string {
  if (NAME_RE.test(id) && !RESERVED.has(id.toLowerCase())) return id;
  return `h-${sha256(id).toString('hex').slice(0, 24)}`;
}

/** A stable, locally administered unicast MAC for a VM name (02:xx:xx:xx:xx:xx). */
export function stableMac(vm: string): string {
  const h = sha256(`mvnet-mac/${vm}`);
  return ['02', ...Array.from(h.subarray(0, 5), (b) => b.toString(16).padStart(2, '0'))].join(':');
}

/** A short interface name derived from a VM name (15 bytes at most). */
export function ifnameFor(prefix: string, vm: string): string {
  return `${prefix}${sha256(`mvnet-if/${vm}`).toString('hex').slice(0, 15 - prefix.length)}`;
}

/** The /64 network part of `prefix` ("fd00:1::/64", as the daemon reports it), as 16 bytes. */
function prefix64(prefix: string): Buffer {
  const r = parseIpv6Text(prefix.split('/')[0]!);
  if (!r.ok) throw new Error(`not an IPv6 prefix: ${JSON.stringify(prefix)}`);
  r.value.fill(0, 8);
  return r.value;
}

/** The SLAAC (EUI-64) address a VM with `mac` forms in the /64 `prefix` ("fd00:1::/64"). */
export function slaacAddress(prefix: string, mac: string): string {
  const a = prefix64(prefix);
  const m = mac.split(':').map((b) => parseInt(b, 16));
  a.set([m[0]! ^ 0x02, m[1]!, m[2]!, 0xff, 0xfe, m[3]!, m[4]!, m[5]!], 8);
  return formatIpv6(a);
}

/** The gateway's global IPv6 address, prefix::1 (the DNS server it advertises). */
export function gateway6(prefix: string): string {
  const a = prefix64(prefix);
  a[15] = 1;
  return formatIpv6(a);
}

/** What the caller wants, from the hook's JSON, an OCI state's annotations or a CNI config's `mvnet` section. */
export interface Wishes {
  network: string;
  route: Route;
  mac?: string;
  /** A static IPv4 address, or absent: the daemon picks a free one (`ip: "auto"`). */
  ip?: string;
  /** The control socket (else --socket, MVNET_SOCKET or the default). */
  socket?: string;
}

function stringList(v: unknown, what: string): string[] {
  if (typeof v === 'string') return v.split(/[\s,]+/).filter((s) => s !== '');
  if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return v;
  throw new HookError(CODES.invalidConfig, `${what} must be a list of strings`);
}

function portList(v: unknown, what: string): number[] {
  const parts = typeof v === 'string' ? v.split(',').filter((s) => s !== '').map(Number) : v;
  if (!Array.isArray(parts) || !parts.every((p) => typeof p === 'number' && Number.isInteger(p) && p >= 1 && p <= 65535)) {
    throw new HookError(CODES.invalidConfig, `${what} must be a list of ports (1-65535)`);
  }
  return parts as number[];
}

/**
 * The route: `"none"` (default), `"direct"`, `"all-tor"` (or `"tor"`), `"via:VM"`, or the
 * control API's route object as is; `allow` (CIDR[:PORTS] rules, with direct) and `torPorts`
 * (with none or direct) beside it. The daemon checks the result like any `route.set`.
 */
export function parseRoute(route: unknown, allow: unknown, torPorts: unknown): Route {
  let r: Route;
  if (route === undefined || route === null) r = { kind: 'none' };
  else if (isObject(route)) r = route as unknown as Route;
  else if (typeof route !== 'string') throw new HookError(CODES.invalidConfig, 'route must be a string ("none", "direct", "all-tor", "via:VM") or a route object');
  else if (route === 'none') r = { kind: 'none' };
  else if (route === 'direct') r = { kind: 'direct' };
  else if (route === 'all-tor' || route === 'tor') r = { kind: 'tor' };
  else if (route.startsWith('via:') && route.length > 4) r = { kind: 'via', vm: route.slice(4) };
  else throw new HookError(CODES.invalidConfig, `unknown route ${JSON.stringify(route)}: "none", "direct", "all-tor" or "via:VM"`);
  if (allow !== undefined) {
    if (r.kind !== 'direct') throw new HookError(CODES.invalidConfig, 'allow goes with route "direct"');
    (r as Obj).allow = stringList(allow, 'allow');
  }
  if (torPorts !== undefined) {
    if (r.kind !== 'direct' && r.kind !== 'none') throw new HookError(CODES.invalidConfig, 'torPorts goes with route "none" or "direct"');
    (r as Obj).torPorts = portList(torPorts, 'torPorts');
  }
  return r;
}

export function optString(o: Obj, key: string, what = key): string | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string' || v === '') throw new HookError(CODES.invalidConfig, `${what} must be a non-empty string`);
  return v;
}

/** Wishes from an object with keys network, route, allow, torPorts, mac, ip, socket. */
export function wishesFrom(o: Obj, where: string): Wishes {
  const network = optString(o, 'network', `${where}network`);
  if (network === undefined) throw new HookError(CODES.invalidConfig, `missing ${where}network: the mvnet network to attach to`);
  const w: Wishes = { network, route: parseRoute(o.route, o.allow, o.torPorts) };
  const mac = optString(o, 'mac', `${where}mac`);
  if (mac !== undefined) w.mac = mac;
  const ip = optString(o, 'ip', `${where}ip`);
  if (ip !== undefined && ip !== 'auto') w.ip = ip;
  const socket = optString(o, 'socket', `${where}socket`);
  if (socket !== undefined) w.socket = socket;
  return w;
}

/** The control API, with its failures turned into hook errors. */
export class Daemon {
  constructor(readonly socket: string) {}

  async call<T>(method: string, params: unknown = {}): Promise<T> {
    try {
      return await call<T>(this.socket, method, params);
    } catch (e) {
      if (!(e instanceof CliError)) throw e;
      // Not running, or not answering: the caller may try again later.
      if (/not running|cannot reach|closed the connection|not JSON/.test(e.message)) throw new HookError(CODES.tryAgain, e.message);
      if (/permission denied/.test(e.message)) throw new HookError(CODES.io, e.message);
      throw new HookError(CODES.refused, e.message);
    }
  }

  /** Like call, but a "no VM named" refusal is no error: it means there is nothing to undo. */
  async callIfKnown<T>(method: string, params: unknown): Promise<T | null> {
    try {
      return await this.call<T>(method, params);
    } catch (e) {
      if (e instanceof HookError && e.code === CODES.refused && /^no VM named /.test(e.message)) return null;
      throw e;
    }
  }
}

export interface Placed {
  status: StatusInfo;
  net: NetInfo;
  vm: VmInfo;
  route: RouteInfo;
}

/**
 * Puts VM `name` on the wished network with the wished route, failing closed: the daemon must
 * run, the network must exist, a Tor route needs a daemon configured for Tor (one without a `tor`
 * section would start an unconfigured Tor on demand); the route is set before the device is
 * attached, and if the attach or `ready` fails, both are undone.
 */
export async function place(d: Daemon, name: string, w: Wishes, port: Obj, mac: string, ready?: (p: Placed) => Promise<void>): Promise<Placed> {
  const status = await d.call<StatusInfo>('daemon.status');
  const net = status.networks.find((n) => n.name === w.network);
  if (net === undefined) throw new HookError(CODES.routeUnavailable, `no mvnet network named ${w.network}; nothing was attached`);
  if ((w.route.kind === 'tor' || torPortsOf(w.route) !== null) && !status.daemon.torConfigured) {
    throw new HookError(CODES.routeUnavailable, `route ${w.route.kind === 'tor' ? 'all-tor' : 'with Tor ports'} needs Tor, and the daemon's config has no tor section; nothing was attached`);
  }
  if (status.vms.some((v) => v.name === name)) throw new HookError(CODES.refused, `VM ${name} is already attached; DEL it first`);
  try {
    await d.call<RouteInfo>('route.set', { vm: name, route: w.route, create: true });
  } catch (e) {
    if (e instanceof HookError && e.code === CODES.refused) throw new HookError(CODES.routeUnavailable, `route refused: ${e.message}; nothing was attached`);
    throw e;
  }
  let attached = false;
  try {
    const vm = await d.call<VmInfo>('vm.attach', { name, net: w.network, port, mac, ip: w.ip ?? 'auto' });
    attached = true;
    const [route] = await d.call<RouteInfo[]>('route.show', { vm: name });
    const placed = { status, net, vm, route: route! };
    await ready?.(placed);
    return placed;
  } catch (e) {
    await undo(d, name, attached);
    throw e;
  }
}

async function undo(d: Daemon, name: string, attached: boolean): Promise<void> {
  try {
    if (attached) await d.callIfKnown('vm.detach', { name });
    await d.callIfKnown('route.clear', { vm: name });
  } catch {
    // The original error is the one to report; the daemon keeps nothing half-made for long
    // (a detach failure here is already the daemon's own).
  }
}

/** Detaches the VM and forgets its route; succeeds when either is already gone. */
export async function remove(d: Daemon, name: string): Promise<{ detached: boolean; routeCleared: boolean }> {
  const detached = (await d.callIfKnown('vm.detach', { name })) !== null;
  const routeCleared = (await d.callIfKnown('route.clear', { vm: name })) !== null;
  return { detached, routeCleared };
}

/** The route as the daemon holds it matches the wished one (kind, via target, Tor ports, allow-list destinations). */
export function routeMatches(have: Route, want: Route): string | null {
  if (have.kind !== want.kind) return `route is ${have.kind}, not ${want.kind}`;
  if (have.kind === 'via' && want.kind === 'via' && have.vm !== want.vm) return `route is via ${have.vm}, not via ${want.vm}`;
  const tp = (r: Route): string => [...(torPortsOf(r) ?? [])].sort((a, b) => a - b).join(',');
  if (tp(have) !== tp(want)) return `Tor ports are ${tp(have) || 'none'}, not ${tp(want) || 'none'}`;
  if (have.kind === 'direct' && want.kind === 'direct') {
    const h = have.allow ?? [];
    const wa = (want.allow ?? []) as unknown[];
    if (h.length !== wa.length) return `allow-list has ${h.length} rules, not ${wa.length}`;
    for (const rule of h) {
      if (!wa.some((x) => (typeof x === 'string' ? x.replace(/^\[/, '').startsWith(rule.cidr.split('/')[0]!) : JSON.stringify(x) === JSON.stringify(rule.ports === null || rule.ports === undefined ? { cidr: rule.cidr } : rule)))) return `allow-list rule ${rule.cidr} was not asked for`;
    }
  }
  return null;
}

/** Runs a program; resolves with its output, rejects with its stderr's first line. */
export function runProgram(cmd: string, args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
    p.stderr.setEncoding('utf8').on('data', (s: string) => (err += s));
    p.on('error', (e) => reject(new Error(`${cmd}: ${e.message}`)));
    p.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`${cmd} ${args.join(' ')}: ${err.trim().split('\n')[0] ?? `exit ${code}`}`))));
  });
}

/**
 * Removes a stale unix socket at `path` (a socket nobody is bound to: a QEMU killed without
 * cleaning up leaves its socket behind, and a new QEMU cannot bind over it). Anything else is
 * left, a live socket of any type included.
 */
export async function removeStaleSocket(path: string): Promise<boolean> {
  let st;
  try {
    st = lstatSync(path);
  } catch {
    return false;
  }
  if (!st.isSocket()) return false;
  const live = await new Promise<boolean>((resolve) => {
    const c = net.createConnection({ path });
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    // Only "refused" means nobody is bound; EPROTOTYPE is a live socket of another type (QEMU's datagram one).
    c.once('error', (e: NodeJS.ErrnoException) => resolve(e.code !== 'ECONNREFUSED'));
  });
  if (live) return false;
  try {
    unlinkSync(path);
    return true;
  } catch {
    return false;
  }
}
