/**
 * Checks control-API parameters and the state file. Every rejection is a UserError whose message
 * says what is wrong in one line; accepted values come back normalised.
 */
import { isDnsDomain } from '../gateway/types.js';
import { dhcpRangeText } from '../gateway/dhcp.js';
import type { NetworkSpec, VmSpec } from './model.js';
import type { AgentPortSpec, DeviceRecord, JsonObject, JsonValue, PortSpec } from '../../plugins/types.js';
import { keyFromBase64, keyToBase64 } from '../links/keys.js';
import { listenText, parseListen } from '../carriers/endpoint.js';
import { UserError, NotFoundError, ConflictError } from '../errors.js';
import { isUnicastMac, parseMacString } from '../wire/mac.js';
import { formatIpv4, formatIpv6, ipv4Mask, parseIpv4CidrText, parseIpv4Text, parseIpv6CidrText, parseIpv6Text, type Ipv4Cidr } from '../wire/ip-text.js';
import { formatAllowRule, type AllowRule, type Route } from '../routes/route.js';
import { FD_TOKEN_RE } from '../../plugins/fd/pass.js';
import { UNIX_PREFIX, type TeeSpec } from '../capture/tees.js';
import { checkFilterText, checkSnaplen, checkSource } from '../capture/params.js';
import { checkFilter } from '../capture/session.js';
import { captureRelPath } from '../capture/sink-file.js';

export const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;
const IFNAME_RE = /^[A-Za-z0-9_.-]{1,15}$/;
export const MIN_MTU = 576;
export const MAX_MTU = 65520;

type Obj = Record<string, unknown>;

export function asObject(v: unknown, what: string): Obj {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new UserError(`${what} must be an object`);
  return v as Obj;
}

function str(o: Obj, key: string, required: true): string;
function str(o: Obj, key: string, required: false): string | undefined;
function str(o: Obj, key: string, required: boolean): string | undefined {
  const v = o[key];
  if (v === undefined || v === null) {
    if (required) throw new UserError(`missing ${key}`);
    return undefined;
  }
  if (typeof v !== 'string' || v.length === 0) throw new UserError(`${key} must be a non-empty string`);
  return v;
}

export function checkName(v: unknown, what: string): string {
  if (typeof v !== 'string' || !NAME_RE.test(v)) {
    throw new UserError(`invalid ${what} name ${JSON.stringify(v)}: use letters, digits, '.', '_' or '-' (at most 63, starting with a letter or digit)`);
  }
  return v;
}

/**
 * Words the CLI reads as commands (`route show`, `route --direct help`) and capture point names
 * (`mvnet capture --point drops`): a VM with such a name could not be told apart from them, so
 * no VM may have one.
 */
const RESERVED_VM_NAMES = new Set(['show', 'help', 'list', 'clear', 'create', 'delete', 'remove', 'add', 'set', 'all', 'none', 'drops']);

/** A VM name: a name that is not a reserved word. */
export function checkVmName(v: unknown, what = 'VM'): string {
  const name = checkName(v, what);
  if (RESERVED_VM_NAMES.has(name.toLowerCase())) throw new UserError(`${what} name ${JSON.stringify(name)} is reserved (a CLI word: ${[...RESERVED_VM_NAMES].join(', ')}); choose another`);
  return name;
}

function checkIfname(v: string, what: string): string {
  // IFNAMSIZ: the kernel's limit, said as such (the pattern alone reads as a character problem).
  if (v.length > 15) throw new UserError(`${what} interface name ${JSON.stringify(v)} is ${v.length} characters long; Linux allows at most 15`);
  if (!IFNAME_RE.test(v)) throw new UserError(`invalid ${what} interface name ${JSON.stringify(v)}: 1-15 letters, digits, '.', '_' or '-'`);
  return v;
}

function checkPath(v: string, what: string): string {
  if (!v.startsWith('/')) throw new UserError(`${what} must be an absolute path, got ${JSON.stringify(v)}`);
  if (Buffer.byteLength(v) > 107) throw new UserError(`${what} is longer than a unix socket path can be (107 bytes)`);
  return v;
}

const SOCKET_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

/**
 * A socket mvnet creates (`--unix-listen`, `--dgram`, `--vhost-user`): an absolute path, or a bare
 * file name (or nothing: `VM.sock`, `VM.vhost.sock`) placed in the VM socket directory `dir`.
 */
function checkOwnSocketPath(v: string | undefined, dir: string | undefined, vm: string | undefined, suffix = '.sock'): string {
  if (v !== undefined && v.startsWith('/')) return checkPath(v, 'socket path');
  const name = v ?? (vm !== undefined ? `${vm}${suffix}` : undefined);
  if (name === undefined) throw new UserError('missing path');
  if (!SOCKET_NAME_RE.test(name)) throw new UserError(`socket name ${JSON.stringify(name)} must be an absolute path or a plain file name (letters, digits, '.', '_', '-') for the VM socket directory`);
  if (dir === undefined) throw new UserError(`socket path must be an absolute path, got ${JSON.stringify(name)}`);
  return checkPath(`${dir}/${name}`, 'socket path');
}

function checkNetns(v: string | undefined): string | undefined {
  if (v === undefined) return undefined;
  if (v.startsWith('/')) return v;
  if (!NAME_RE.test(v)) throw new UserError(`invalid netns ${JSON.stringify(v)}: a name from 'ip netns' or an absolute path`);
  return v;
}

/**
 * IPv4 blocks a VM network must not overlap: the host would route them elsewhere (loopback,
 * link-local), they are not unicast (multicast, reserved, "this network"), or a VM holding
 * them would look like the host itself to programs that trust them.
 */
const FORBIDDEN_V4: readonly { network: number; prefix: number; why: string }[] = [
  { network: 0x00000000, prefix: 8, why: '"this network" (0.0.0.0/8)' },
  { network: 0x7f000000, prefix: 8, why: 'loopback (127.0.0.0/8)' },
  { network: 0xa9fe0000, prefix: 16, why: 'link-local (169.254.0.0/16)' },
  { network: 0xe0000000, prefix: 4, why: 'multicast (224.0.0.0/4)' },
  { network: 0xf0000000, prefix: 4, why: 'reserved (240.0.0.0/4)' },
];

/** Two CIDR blocks overlap when the shorter one contains the other's network address. */
function overlaps(a: { network: number; prefix: number }, b: { network: number; prefix: number }): boolean {
  const p = Math.min(a.prefix, b.prefix);
  return ((a.network ^ b.network) & ipv4Mask(p)) >>> 0 === 0;
}

/**
 * A network's IPv4 subnet: CIDR text with a prefix of 8 to 30 bits, written as its network
 * address (host bits set are refused, not cleared: 10.0.0.5/24 is more likely a typo for an
 * address than a request for 10.0.0.0/24), and outside the blocks above. `strict: false` (a
 * network saved before these refusals, or one already checked) checks the form only.
 */
export function checkSubnet(s: string, strict = true): Ipv4Cidr {
  const r = parseIpv4CidrText(s);
  if (!r.ok) throw new UserError(`invalid subnet ${JSON.stringify(s)}: expected IPv4 CIDR like 10.0.0.0/24`);
  if (r.value.prefix < 8 || r.value.prefix > 30) throw new UserError(`subnet ${s}: prefix length must be between 8 and 30`);
  if (!strict) return r.value;
  const norm = `${formatIpv4(r.value.network)}/${r.value.prefix}`;
  if (r.value.addr !== r.value.network) throw new UserError(`subnet ${s} has host bits set; the network is ${norm}`);
  for (const f of FORBIDDEN_V4) if (overlaps(r.value, f)) throw new UserError(`subnet ${s} overlaps ${f.why}, which cannot be a VM network`);
  return r.value;
}

/**
 * A network's IPv6 prefix: exactly /64 (SLAAC forms addresses from a 64-bit interface id, so
 * any other length leaves the VMs without an address), written as its network, and a global or
 * unique-local unicast prefix (not ::/8 with loopback and mapped addresses, link-local fe80::/10,
 * multicast ff00::/8). `strict: false`: any prefix of 8 to 64 bits, normalised (as saved before).
 */
export function checkIpv6Prefix(s: string, strict = true): string {
  const slash = s.indexOf('/');
  const a = slash > 0 ? parseIpv6Text(s.slice(0, slash)) : null;
  if (a === null || !a.ok || !/^\d{1,3}$/.test(s.slice(slash + 1)) || !parseIpv6CidrText(s).ok) {
    throw new UserError(`invalid ipv6 prefix ${JSON.stringify(s)}: expected CIDR like fd00:1::/64`);
  }
  const prefix = Number(s.slice(slash + 1));
  if (!strict) {
    const c = parseIpv6CidrText(s);
    if (!c.ok || prefix < 8 || prefix > 64) throw new UserError(`ipv6 prefix ${s}: prefix length must be between 8 and 64`);
    return `${c.value.network}/${c.value.prefix}`;
  }
  const b = a.value;
  if (prefix !== 64) throw new UserError(`ipv6 prefix ${s}: must be a /64 (SLAAC gives VMs addresses only in a /64)`);
  const norm = `${formatIpv6(Buffer.concat([b.subarray(0, 8), Buffer.alloc(8)]))}/64`;
  if (!b.subarray(8).equals(Buffer.alloc(8))) throw new UserError(`ipv6 prefix ${s} has host bits set; the prefix is ${norm}`);
  if (b[0] === 0) throw new UserError(`ipv6 prefix ${s} is in ::/8 (loopback, unspecified, IPv4-mapped); use a global or fd00::/8 prefix`);
  if (b[0] === 0xfe && (b[1]! & 0xc0) === 0x80) throw new UserError(`ipv6 prefix ${s} is link-local (fe80::/10); use a global or fd00::/8 prefix`);
  if (b[0] === 0xff) throw new UserError(`ipv6 prefix ${s} is multicast (ff00::/8); use a global or fd00::/8 prefix`);
  return norm;
}

/** An IPv4 address given as text, as an unsigned 32-bit number. */
export function checkIpv4(s: string, what: string): number {
  const r = parseIpv4Text(s);
  if (!r.ok) throw new UserError(`invalid ${what} ${JSON.stringify(s)}: expected an IPv4 address`);
  return r.value;
}

function hostsOf(net: Ipv4Cidr): { first: number; last: number } {
  return { first: net.network + 1, last: ((net.network | ~ipv4Mask(net.prefix)) >>> 0) - 1 };
}

/**
 * A network. `fromState`: a saved network is taken as long as its form is right, so that one
 * created before today's refusals (a non-/64 IPv6 prefix…) is not dropped with its VMs.
 */
export function checkNetworkSpec(p: unknown, fromState = false): NetworkSpec {
  const o = asObject(p, 'params');
  const name = checkName(o.name, 'network');
  // The network's DNS domain is <name>.mvnet: a name that cannot be one would fail in the router.
  if (!isDnsDomain(`${name.toLowerCase()}.mvnet`)) throw new UserError(`invalid network name ${JSON.stringify(name)}: it names the DNS domain ${name.toLowerCase()}.mvnet, so use letters, digits and '-' (labels separated by '.', none starting or ending with '-')`);
  const subnetStr = str(o, 'subnet', true);
  const net = checkSubnet(subnetStr, !fromState);
  const subnet = `${formatIpv4(net.network)}/${net.prefix}`;
  const range = hostsOf(net);
  let gateway: string;
  let gwIp = range.first;
  const gw = str(o, 'gateway', false);
  if (gw === undefined) gateway = formatIpv4(range.first);
  else {
    const g = checkIpv4(gw, 'gateway');
    if (g < range.first || g > range.last) throw new UserError(`gateway ${gw} is not a host address of ${subnet}`);
    gateway = formatIpv4(g);
    gwIp = g;
  }
  const dr = str(o, 'dhcpRange', false);
  const dhcpRange = dr !== undefined ? checkDhcpRange(dr, subnet, range, gwIp) : undefined;
  const v6 = str(o, 'ipv6', false);
  const ipv6 = v6 !== undefined ? checkIpv6Prefix(v6, !fromState) : undefined;
  let mtu = 1500;
  if (o.mtu !== undefined) {
    if (typeof o.mtu !== 'number' || !Number.isInteger(o.mtu) || o.mtu < MIN_MTU || o.mtu > MAX_MTU) {
      throw new UserError(`invalid mtu ${JSON.stringify(o.mtu)}: an integer from ${MIN_MTU} to ${MAX_MTU}`);
    }
    mtu = o.mtu;
  }
  if (ipv6 !== undefined && mtu < 1280) throw new UserError(`mtu ${mtu} is below IPv6's minimum of 1280`);
  const spec: NetworkSpec = { name, subnet, gateway, mtu };
  if (ipv6 !== undefined) spec.ipv6 = ipv6;
  if (dhcpRange !== undefined) spec.dhcpRange = dhcpRange;
  return spec;
}

/** "FIRST-LAST": host addresses of the subnet, first <= last, the gateway outside; canonical text. */
function checkDhcpRange(text: string, subnet: string, hosts: { first: number; last: number }, gateway: number): string {
  const parts = text.split('-');
  if (parts.length !== 2) throw new UserError(`invalid DHCP range ${JSON.stringify(text)}: expected FIRST-LAST, e.g. ${formatIpv4(hosts.first + 1)}-${formatIpv4(hosts.last)}`);
  const first = checkIpv4(parts[0]!, 'DHCP range start');
  const last = checkIpv4(parts[1]!, 'DHCP range end');
  if (first > last) throw new UserError(`DHCP range ${text}: its first address comes after its last`);
  if (first < hosts.first || last > hosts.last) throw new UserError(`DHCP range ${text} is not inside the host addresses of ${subnet} (${formatIpv4(hosts.first)} to ${formatIpv4(hosts.last)})`);
  if (gateway >= first && gateway <= last) throw new UserError(`DHCP range ${text} contains the gateway ${formatIpv4(gateway)}`);
  return dhcpRangeText({ first, last });
}

function checkMac(v: string): string {
  const r = parseMacString(v);
  if (!r.ok) throw new UserError(`invalid MAC ${JSON.stringify(v)}: expected six hex pairs like 52:54:00:12:34:56`);
  const m = r.value;
  if (!isUnicastMac(m) || m === 0) throw new UserError(`MAC ${v} is not a unicast address`);
  return v.toLowerCase();
}

export interface PortSpecOptions {
  /** Where relative or omitted `--unix-listen`/`--dgram` sockets go (config `vmSocketDir`). */
  vmSocketDir?: string;
  /** The VM's name, for the default socket name. */
  vm?: string;
  /** The plugin port drivers loaded (the daemon's Registry); without it `kind: "plugin"` is refused. */
  plugins?: PluginDrivers;
  /**
   * Read from the state file: an attachment of a plugin kind that is not loaded (the package was
   * taken out of `plugins`) is kept as it was saved, so it is listed down with the reason and can
   * be detached, instead of being forgotten.
   */
  fromState?: boolean;
}

/** What validation needs of the registry: a plugin kind's own validate(). */
export interface PluginDrivers {
  pluginDriver(kind: string): { validate(options: JsonObject): JsonObject } | undefined;
  pluginKinds(): string[];
}

const JSON_MAX_DEPTH = 8;
const JSON_MAX_BYTES = 16 * 1024;

/** Copies an untrusted value into plain JSON (no prototypes, bounded depth), or throws. */
function toJson(v: unknown, where: string, depth: number): JsonValue {
  if (v === null || typeof v === 'string' || typeof v === 'boolean') return v;
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) throw new UserError(`${where} is not a finite number`);
    return v;
  }
  if (depth >= JSON_MAX_DEPTH) throw new UserError(`${where} is nested deeper than ${JSON_MAX_DEPTH}`);
  if (Array.isArray(v)) return v.map((x: unknown, i) => toJson(x, `${where}[${i}]`, depth + 1));
  if (typeof v === 'object') return toJsonObject(v, where, depth);
  throw new UserError(`${where} is not JSON`);
}

function toJsonObject(v: object, where: string, depth: number): JsonObject {
  const out: JsonObject = {};
  for (const [k, x] of Object.entries(v)) {
    if (k === '__proto__' || k === 'constructor' || k === 'prototype') throw new UserError(`${where}.${k} is not allowed`);
    out[k] = toJson(x, `${where}.${k}`, depth + 1);
  }
  return out;
}

/** `{kind: "plugin", driver, options}`: the driver must be loaded; its own validate() checks the options. */
function checkPluginPort(o: Record<string, unknown>, plugins: PluginDrivers | undefined, fromState: boolean): PortSpec {
  for (const k of Object.keys(o)) if (k !== 'kind' && k !== 'driver' && k !== 'options') throw new UserError(`port.${k} does not apply to kind plugin (driver, options)`);
  const driver = str(o, 'driver', true);
  const d = plugins?.pluginDriver(driver);
  if (d === undefined && fromState && typeof o.options === 'object' && o.options !== null && !Array.isArray(o.options)) {
    return { kind: 'plugin', driver, options: toJsonObject(o.options, 'port.options', 0) };
  }
  if (d === undefined) {
    const loaded = plugins?.pluginKinds() ?? [];
    throw new UserError(`no port driver ${JSON.stringify(driver)} is loaded (${loaded.length > 0 ? `plugin kinds: ${loaded.join(', ')}` : 'no plugin kinds loaded; see the config key plugins'})`);
  }
  const raw = o.options ?? {};
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new UserError('port.options must be a JSON object');
  const options = toJsonObject(raw, 'port.options', 0);
  if (JSON.stringify(options).length > JSON_MAX_BYTES) throw new UserError(`port.options is longer than ${JSON_MAX_BYTES} bytes`);
  let checked: JsonObject;
  try {
    checked = toJsonObject(d.validate(options), 'options', 0);
  } catch (e) {
    throw new UserError(`${driver}: ${(e instanceof Error ? e.message : String(e)).split('\n')[0]}`);
  }
  return { kind: 'plugin', driver, options: checked };
}

/** `{kind: "agent", peer, listen, layer?}`: a VM's device behind `mvnet agent` (daemon/mesh). */
function checkAgentPort(o: Record<string, unknown>): AgentPortSpec {
  for (const k of Object.keys(o)) if (!['kind', 'peer', 'listen', 'layer'].includes(k)) throw new UserError(`port.${k} does not apply to kind agent (peer, listen, layer)`);
  const key = typeof o.peer === 'string' ? keyFromBase64(o.peer) : null;
  if (key === null) throw new UserError(`invalid agent key ${JSON.stringify(o.peer)}: a base64 X25519 public key (44 characters, as \`mvnet key show\` prints)`);
  if (typeof o.listen !== 'string') throw new UserError('an agent port needs --listen (where the agent connects), e.g. udp:51820');
  const spec: AgentPortSpec = { kind: 'agent', peer: keyToBase64(key), listen: listenText(parseListen(o.listen)) };
  if (o.layer !== undefined) {
    if (o.layer !== 3) throw new UserError('port.layer must be 3 (a TUN agent) or absent (Ethernet)');
    spec.layer = 3;
  }
  return spec;
}

export function checkPortSpec(p: unknown, opts: PortSpecOptions = {}): PortSpec {
  const o = asObject(p, 'port');
  const kind = o.kind;
  if (kind === 'plugin') return checkPluginPort(o, opts.plugins, opts.fromState === true);
  if (kind === 'agent') return checkAgentPort(o);
  const netns = checkNetns(str(o, 'netns', false));
  const withNs = <T extends object>(s: T): T => (netns !== undefined ? { ...s, netns } : s);
  switch (kind) {
    case 'tap': {
      const spec: PortSpec = withNs({ kind: 'tap' as const, ifname: checkIfname(str(o, 'ifname', true), 'tap') });
      if (o.vnetHdr === true) spec.vnetHdr = true;
      if (o.multiQueue === true) spec.multiQueue = true;
      return spec;
    }
    case 'tun':
      return withNs({ kind: 'tun' as const, ifname: checkIfname(str(o, 'ifname', true), 'tun') });
    case 'iface': {
      const ifname = checkIfname(str(o, 'ifname', true), 'iface');
      // The driver also refuses any interface flagged IFF_LOOPBACK, whatever its name.
      if (ifname === 'lo') throw new UserError('--iface lo is the loopback interface: it carries the host\'s own traffic and cannot be a VM');
      return withNs({ kind: 'iface' as const, ifname });
    }
    case 'unix':
      if (netns !== undefined) throw new UserError('--netns applies to --tap, --tun and --iface only');
      return { kind, path: checkPath(str(o, 'path', true), 'socket path') };
    case 'unix-listen':
      if (netns !== undefined) throw new UserError('--netns applies to --tap, --tun and --iface only');
      return { kind, path: checkOwnSocketPath(str(o, 'path', false), opts.vmSocketDir, opts.vm) };
    case 'vhost-user':
      if (netns !== undefined) throw new UserError('--netns applies to --tap, --tun and --iface only');
      return { kind, path: checkOwnSocketPath(str(o, 'path', false), opts.vmSocketDir, opts.vm, '.vhost.sock') };
    case 'dgram': {
      if (netns !== undefined) throw new UserError('--netns applies to --tap, --tun and --iface only');
      const spec: PortSpec = { kind: 'dgram', path: checkOwnSocketPath(str(o, 'path', false), opts.vmSocketDir, opts.vm) };
      const peer = str(o, 'peer', false);
      if (peer !== undefined) spec.peer = checkPath(peer, 'dgram peer path');
      return spec;
    }
    case 'fd': {
      if (netns !== undefined) throw new UserError('--netns applies to --tap, --tun and --iface only');
      // A descriptor number would name one of the daemon's own fds: only passed ones are used.
      if (o.fd !== undefined) throw new UserError('port.fd is not accepted: pass the descriptor itself (mvnet vm attach --fd N sends the caller\'s fd N) and give its port.token');
      if (o.token !== undefined) {
        if (typeof o.token !== 'string' || !FD_TOKEN_RE.test(o.token)) throw new UserError('invalid port.token: 32 lowercase hex digits, as sent with the descriptor');
        return { kind: 'fd', token: o.token };
      }
      return { kind: 'fd', rx: checkPath(str(o, 'rx', true), 'FIFO path'), tx: checkPath(str(o, 'tx', true), 'FIFO path') };
    }
    case 'fifo':
      // As answers name it (api.ts PortView); kept as the fd port it always was (state files too).
      if (netns !== undefined) throw new UserError('--netns applies to --tap, --tun and --iface only');
      return { kind: 'fd', rx: checkPath(str(o, 'rx', true), 'FIFO path'), tx: checkPath(str(o, 'tx', true), 'FIFO path') };
    default:
      throw new UserError(`unknown port kind ${JSON.stringify(kind)}: one of tap, tun, unix, unix-listen, dgram, fd, fifo, iface, vhost-user, or plugin (a kind a plugin registered)`);
  }
}

/** The state file's record of what mvnet did to a TAP/TUN (see VmSpec.device). */
function checkDeviceRecord(v: unknown): DeviceRecord {
  const o = asObject(v, 'device');
  if (typeof o.created !== 'boolean') throw new UserError('device.created must be true or false');
  if (o.created || o.was === undefined) return { created: o.created };
  const w = asObject(o.was, 'device.was');
  const was: NonNullable<DeviceRecord['was']> = {};
  if (w.mtu !== undefined) {
    if (typeof w.mtu !== 'number' || !Number.isInteger(w.mtu) || w.mtu < 68 || w.mtu > 65536) throw new UserError(`invalid device.was.mtu ${JSON.stringify(w.mtu)}`);
    was.mtu = w.mtu;
  }
  if (w.mac !== undefined) {
    if (typeof w.mac !== 'string' || !parseMacString(w.mac).ok) throw new UserError(`invalid device.was.mac ${JSON.stringify(w.mac)}`);
    was.mac = w.mac.toLowerCase();
  }
  for (const k of ['up', 'persistent'] as const) {
    if (w[k] === undefined) continue;
    if (typeof w[k] !== 'boolean') throw new UserError(`device.was.${k} must be true or false`);
    was[k] = w[k];
  }
  return { created: false, was };
}

/**
 * Chooses a free host address of `net` in [first, last] for `ip: "auto"`, or undefined when none
 * is left (the daemon knows which addresses VMs and DHCP leases hold).
 */
export type FreeIp = (net: NetworkSpec, first: number, last: number) => number | undefined;

/**
 * An attachment. `fromState`: read from the state file, whose `device` record says whether
 * mvnet created the device; from a control caller that field is ignored (else a caller could
 * have the admin's TAP deleted at detach). `vmSocketDir`: where relative or omitted socket
 * paths go (absent: they are refused, as in the state file). `ip: "auto"` (from a control caller)
 * asks `freeIp` for the address.
 */
export function checkVmSpec(p: unknown, nets: ReadonlyMap<string, NetworkSpec>, opts: { fromState?: boolean; vmSocketDir?: string; freeIp?: FreeIp; plugins?: PluginDrivers } = {}): VmSpec {
  const { fromState = false, vmSocketDir } = opts;
  const o = asObject(p, 'params');
  // A VM saved before names were reserved is kept (and can be detached), never refused at restore.
  const name = fromState ? checkName(o.name, 'VM') : checkVmName(o.name);
  const netName = checkName(o.net, 'network');
  const net = nets.get(netName);
  if (net === undefined) throw new NotFoundError(`no network named ${netName}`);
  const port = checkPortSpec(o.port, { ...(vmSocketDir !== undefined ? { vmSocketDir } : {}), vm: name, fromState, ...(opts.plugins !== undefined ? { plugins: opts.plugins } : {}) });
  const spec: VmSpec = { name, net: netName, port };
  const mac = str(o, 'mac', false);
  if (mac !== undefined) spec.mac = checkMac(mac);
  const ip = str(o, 'ip', false);
  if (ip === 'auto' && !fromState) {
    // The daemon chooses: a free host address, which becomes the VM's static address (and DHCP reservation).
    const range = hostsOf(checkSubnet(net.subnet, false));
    const a = opts.freeIp?.(net, range.first, range.last);
    if (a === undefined) throw new ConflictError(`no free address left on ${net.name} (${net.subnet})`);
    spec.ip = formatIpv4(a);
  } else if (ip !== undefined) {
    const a = checkIpv4(ip, 'ip');
    const range = hostsOf(checkSubnet(net.subnet, false));
    if (a === range.first - 1) throw new UserError(`ip ${ip} is the network address of ${net.name}'s subnet ${net.subnet}`);
    if (a === range.last + 1) throw new UserError(`ip ${ip} is the broadcast address of ${net.name}'s subnet ${net.subnet}`);
    if (a < range.first || a > range.last) throw new UserError(`ip ${ip} is not a host address of ${net.name}'s subnet ${net.subnet}`);
    if (formatIpv4(a) === net.gateway) throw new UserError(`ip ${ip} is the gateway address of ${net.name}`);
    spec.ip = formatIpv4(a);
  }
  if (port.kind === 'tun' && spec.mac !== undefined) throw new UserError('--mac does not apply to --tun (a TUN carries no Ethernet header)');
  const learned = str(o, 'learnedMac', false);
  if (learned !== undefined) spec.learnedMac = checkMac(learned);
  if (fromState && o.device !== undefined && (port.kind === 'tap' || port.kind === 'tun')) spec.device = checkDeviceRecord(o.device);
  return spec;
}

// Routes (daemon/routes/route.ts holds the data type).

function parsePorts(s: string, rule: string): [number, number][] {
  return s.split(',').map((part) => {
    const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(part);
    if (m === null) throw new UserError(`invalid ports in allow rule ${JSON.stringify(rule)}: use PORT, PORT-PORT or a comma list`);
    const lo = Number(m[1]);
    const hi = m[2] !== undefined ? Number(m[2]) : lo;
    if (lo < 1 || hi > 65535 || lo > hi) throw new UserError(`invalid port range ${part} in allow rule ${JSON.stringify(rule)}`);
    return [lo, hi];
  });
}

/** "CIDR[:PORTS]" for IPv4, "[CIDR]:PORTS" or a bare CIDR for IPv6. */
export function parseAllowRule(s: string): AllowRule {
  let cidr = s;
  let ports: string | undefined;
  const v6 = /^\[([^\]]+)\](?::(.+))?$/.exec(s);
  if (v6 !== null) {
    cidr = v6[1]!;
    ports = v6[2];
  } else if (!s.includes('::') && s.split(':').length === 2) {
    [cidr, ports] = s.split(':') as [string, string];
  }
  let norm: string;
  const bad = (): UserError => new UserError(`invalid allow rule ${JSON.stringify(s)}: expected CIDR[:PORTS], e.g. 203.0.113.0/24:80,443`);
  if (cidr.includes(':')) {
    const a = parseIpv6CidrText(cidr.includes('/') ? cidr : `${cidr}/128`);
    if (!a.ok) throw bad();
    norm = `${a.value.network}/${a.value.prefix}`;
  } else {
    const a = parseIpv4CidrText(cidr.includes('/') ? cidr : `${cidr}/32`);
    if (!a.ok) throw bad();
    norm = `${formatIpv4(a.value.network)}/${a.value.prefix}`;
  }
  const rule: AllowRule = { cidr: norm };
  if (ports !== undefined) rule.ports = parsePorts(ports, s);
  return rule;
}

function checkTorPorts(v: unknown): number[] | undefined {
  if (v === undefined) return undefined;
  if (!Array.isArray(v) || v.length === 0 || v.length > 64) throw new UserError('torPorts must be a list of 1 to 64 ports');
  const ports = v.map((p) => {
    if (typeof p !== 'number' || !Number.isInteger(p) || p < 1 || p > 65535) throw new UserError(`invalid Tor port ${JSON.stringify(p)}: a port from 1 to 65535`);
    return p;
  });
  return [...new Set(ports)].sort((a, b) => a - b);
}

/** An allow rule given as an object ({cidr, ports: [[from, to], ...]}): its shape, before its values are parsed. */
function checkAllowRuleShape(x: unknown): AllowRule {
  const o = { ...asObject(x, 'allow rule') };
  // As answers carry it (api.ts RouteView): null ports = all ports.
  if (o.ports === null) delete o.ports;
  const isPair = (p: unknown): boolean => Array.isArray(p) && p.length === 2 && p.every((n) => Number.isInteger(n));
  if (typeof o.cidr !== 'string' || (o.ports !== undefined && !(Array.isArray(o.ports) && o.ports.every(isPair)))) {
    throw new UserError(`invalid allow rule ${JSON.stringify(x)}: expected {"cidr": "203.0.113.0/24", "ports": [[80, 80], [8000, 8080]]} or "CIDR[:PORTS]"`);
  }
  return o.ports === undefined ? { cidr: o.cidr } : { cidr: o.cidr, ports: o.ports as [number, number][] };
}

/** A route from the control API or the state file, normalised. */
export function checkRoute(v: unknown): Route {
  const o = { ...asObject(v, 'route') };
  // Answers carry unset fields as null (api.ts RouteView): a route read back may be sent as is.
  for (const k of ['allow', 'torPorts']) if (o[k] === null) delete o[k];
  switch (o.kind) {
    case 'none': {
      const torPorts = checkTorPorts(o.torPorts);
      return torPorts !== undefined ? { kind: 'none', torPorts } : { kind: 'none' };
    }
    case 'direct': {
      const r: Route = { kind: 'direct' };
      const torPorts = checkTorPorts(o.torPorts);
      if (torPorts !== undefined) r.torPorts = torPorts;
      if (o.allow === undefined) return r;
      if (!Array.isArray(o.allow)) throw new UserError('route.allow must be a list of CIDR[:PORTS] rules');
      const allow = o.allow.map((x) => (typeof x === 'string' ? parseAllowRule(x) : parseAllowRule(formatAllowRule(checkAllowRuleShape(x)))));
      if (allow.length > 0) r.allow = allow;
      return r;
    }
    case 'via':
      if (o.torPorts !== undefined) throw new UserError('--tor-ports does not combine with --via');
      return { kind: 'via', vm: checkName(o.vm, 'via VM') };
    case 'tor':
      return { kind: 'tor' };
    default:
      throw new UserError(`unknown route kind ${JSON.stringify(o.kind)}: one of none, direct, via, tor`);
  }
}

/**
 * `tee.add` params and the state file's tees. `to`: a file under the capture directory (stored
 * relative to it; see capture/sink-file.ts captureRelPath) or `unix:PATH` (a socket path as VM
 * sockets take it: absolute, or a bare name made in the VM socket directory).
 */
export function checkTeeSpec(p: unknown, opts: { captureDir: string; vmSocketDir?: string | undefined }): TeeSpec {
  const o = asObject(p, 'params');
  for (const k of Object.keys(o)) if (!['name', 'from', 'to', 'filter', 'snaplen', 'ring'].includes(k)) throw new UserError(`unknown tee key ${k}`);
  const name = checkName(o.name, 'tee');
  const from = checkSource(o.from);
  if (typeof o.to !== 'string' || o.to.length === 0) throw new UserError('tee needs --to FILE or --to unix:PATH');
  let to: string;
  if (o.to.startsWith(UNIX_PREFIX)) {
    const sock = o.to.slice(UNIX_PREFIX.length);
    to = UNIX_PREFIX + checkOwnSocketPath(sock.length > 0 ? sock : undefined, opts.vmSocketDir, undefined);
  } else to = captureRelPath(o.to, opts.captureDir);
  const filter = checkFilterText(o.filter);
  checkFilter(filter);
  const spec: TeeSpec = { name, from, to, filter, snaplen: checkSnaplen(o.snaplen) };
  if (o.ring !== undefined && o.ring !== null) {
    if (to.startsWith(UNIX_PREFIX)) throw new UserError('--ring applies to a tee to a file');
    const r = asObject(o.ring, 'ring');
    const files = r.files;
    const sizeMb = r.sizeMb;
    if (typeof files !== 'number' || !Number.isInteger(files) || files < 1 || files > 1000) throw new UserError(`invalid ring file count ${JSON.stringify(files)}: 1 to 1000`);
    if (typeof sizeMb !== 'number' || !Number.isInteger(sizeMb) || sizeMb < 1 || sizeMb > 1 << 20) throw new UserError(`invalid ring file size ${JSON.stringify(sizeMb)}: 1 to 1048576 MB`);
    spec.ring = { files, sizeMb };
  }
  return spec;
}
