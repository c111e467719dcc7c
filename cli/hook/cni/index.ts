/**
 * The `cni` hook adapter, run by the `mvnet-cni` bin (cli/cni.ts): a CNI plugin (spec 1.0.0) that attaches a network namespace (a container) to an
 * mvnet network. ADD creates a TAP named CNI_IFNAME inside CNI_NETNS (the daemon makes it there
 * and holds its other side), gives it the address mvnet assigns (the config's `mvnet.ip`, or
 * one the daemon picks), the network's MTU, brings it up with a default route through the
 * gateway, and sets the VM's route from the config's `mvnet` section, failing closed. DEL
 * undoes all of it and succeeds when it is already gone. CHECK verifies the attachment, the
 * route and the address. VERSION lists the spec versions.
 *
 * Network config (stdin):
 *   { "cniVersion": "1.0.0", "name": "lan", "type": "mvnet-cni",
 *     "mvnet": { "network": "lan", "route": "direct", "allow": ["203.0.113.0/24:443"],
 *                "ip": "10.10.0.20", "socket": "/run/mvnet/mvnet.sock" } }
 * `mvnet.network` defaults to the config's `name`. CNI_ARGS may carry IP=ADDR (with
 * IgnoreUnknown=1 other keys are ignored, as the spec's conventions say).
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import {
  CODES,
  Daemon,
  HookError,
  gateway6,
  isObject,
  parseJson,
  place,
  remove,
  routeMatches,
  slaacAddress,
  stableMac,
  wishesFrom,
  type Placed,
  type Wishes,
} from '../core.js';
import type { HookAdapter, HookIo } from '../../../plugins/types.js';
import { addressesIn, configureIface } from '../netns.js';
import type { RouteInfo, StatusInfo } from '../../../daemon/control/api.js';

const SUPPORTED = ['0.4.0', '1.0.0'];
const IFNAME_RE = /^[A-Za-z0-9_.-]{1,15}$/;

type Obj = Record<string, unknown>;

interface Invocation {
  command: 'ADD' | 'DEL' | 'CHECK' | 'VERSION';
  containerId: string;
  netns: string;
  ifname: string;
  cniVersion: string;
  netName: string;
  wishes: Wishes;
  prevResult?: Obj;
}

type Env = HookIo['env'];

function env(environ: Env, name: string, required: boolean): string {
  const v = environ[name];
  if ((v === undefined || v === '') && required) throw new HookError(CODES.invalidEnv, `${name} is not set`);
  return v ?? '';
}

/** CNI_ARGS: "IgnoreUnknown=1;IP=10.0.0.5". */
function cniArgs(s: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const part of s.split(';')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    if (eq <= 0) throw new HookError(CODES.invalidEnv, `CNI_ARGS: ${JSON.stringify(part)} is not KEY=VALUE`);
    m.set(part.slice(0, eq), part.slice(eq + 1));
  }
  const ignoreUnknown = /^(1|true)$/i.test(m.get('IgnoreUnknown') ?? '');
  for (const k of m.keys()) {
    if (k !== 'IgnoreUnknown' && k !== 'IP' && !ignoreUnknown) throw new HookError(CODES.invalidEnv, `CNI_ARGS: unknown key ${k} (mvnet-cni knows IP; set IgnoreUnknown=1 to pass others)`);
  }
  return m;
}

/**
 * The mvnet VM name of an attachment. CNI identifies one by container id, network name and
 * interface name; a container id is often 64 hex digits, too long for a VM name, so the name is
 * `cni-` and 24 hex digits of their hash: the same for ADD, CHECK and DEL.
 */
function cniVmName(containerId: string, netName: string, ifname: string): string {
  return `cni-${createHash('sha256').update(`${containerId}\0${netName}\0${ifname}`).digest('hex').slice(0, 24)}`;
}

function parse(command: Invocation['command'], stdin: string, environ: Env): Invocation {
  const conf = parseJson(stdin, 'the network configuration');
  if (!isObject(conf)) throw new HookError(CODES.decode, 'the network configuration must be a JSON object');
  const cniVersion = typeof conf.cniVersion === 'string' ? conf.cniVersion : '';
  if (!SUPPORTED.includes(cniVersion)) throw new HookError(CODES.incompatibleVersion, `cniVersion ${JSON.stringify(conf.cniVersion)} is not supported: ${SUPPORTED.join(', ')}`);
  const netName = typeof conf.name === 'string' && conf.name !== '' ? conf.name : '';
  if (netName === '') throw new HookError(CODES.invalidConfig, 'the network configuration has no name');
  const section = conf.mvnet ?? {};
  if (!isObject(section)) throw new HookError(CODES.invalidConfig, 'the mvnet section must be an object');
  for (const k of Object.keys(section)) {
    if (!['network', 'route', 'allow', 'torPorts', 'ip', 'mac', 'socket'].includes(k)) throw new HookError(CODES.unsupportedField, `unknown key mvnet.${k}`);
  }
  const wishes = wishesFrom({ network: netName, ...section }, 'mvnet.');
  const args = cniArgs(env(environ, 'CNI_ARGS', false));
  const argIp = args.get('IP');
  if (argIp !== undefined) wishes.ip = argIp;
  const ifname = env(environ, 'CNI_IFNAME', true);
  if (!IFNAME_RE.test(ifname)) throw new HookError(CODES.invalidEnv, `CNI_IFNAME ${JSON.stringify(ifname)} is not an interface name (1-15 letters, digits, '.', '_', '-')`);
  const inv: Invocation = {
    command,
    containerId: env(environ, 'CNI_CONTAINERID', true),
    // DEL may come without a namespace (it is gone already); ADD and CHECK need it.
    netns: env(environ, 'CNI_NETNS', command !== 'DEL'),
    ifname,
    cniVersion,
    netName,
    wishes,
  };
  if (isObject(conf.prevResult)) inv.prevResult = conf.prevResult;
  return inv;
}

function prefixOf(p: Placed): string {
  return p.net.subnet.split('/')[1]!;
}

function cniResult(inv: Invocation, p: Placed, mac: string, v6: boolean): Obj {
  const domain = `${p.net.name.toLowerCase()}.mvnet`;
  // 0.4.0 results name each address's IP version; 1.0.0 dropped the field.
  const ver = (v: '4' | '6'): Obj => (inv.cniVersion === '0.4.0' ? { version: v } : {});
  const ips: Obj[] = [{ ...ver('4'), address: `${p.vm.ip}/${prefixOf(p)}`, gateway: p.net.gateway, interface: 0 }];
  if (v6 && p.net.ipv6 !== null) ips.push({ ...ver('6'), address: `${slaacAddress(p.net.ipv6, mac)}/64`, gateway: gateway6(p.net.ipv6), interface: 0 });
  return {
    cniVersion: inv.cniVersion,
    interfaces: [{ name: inv.ifname, mac, sandbox: inv.netns }],
    ips,
    routes: [{ dst: '0.0.0.0/0', gw: p.net.gateway }],
    dns: { nameservers: [p.net.gateway], domain, search: [domain] },
  };
}

async function add(inv: Invocation, d: Daemon): Promise<Obj> {
  if (!existsSync(inv.netns)) throw new HookError(CODES.unknownContainer, `CNI_NETNS ${inv.netns} does not exist`);
  const vm = cniVmName(inv.containerId, inv.netName, inv.ifname);
  const mac = (inv.wishes.mac ?? stableMac(vm)).toLowerCase();
  let v6 = false;
  const placed = await place(d, vm, inv.wishes, { kind: 'tap', ifname: inv.ifname, netns: inv.netns }, mac, async (p) => {
    if (p.vm.ip === null) throw new HookError(CODES.refused, `the daemon gave ${vm} no address`);
    v6 = await configureIface(inv.netns, {
      ifname: inv.ifname,
      address4: `${p.vm.ip}/${prefixOf(p)}`,
      gateway4: p.net.gateway,
      mtu: p.net.mtu,
      ...(p.net.ipv6 !== null ? { address6: `${slaacAddress(p.net.ipv6, mac)}/64` } : {}),
    });
  });
  return cniResult(inv, placed, mac, v6);
}

async function check(inv: Invocation, d: Daemon): Promise<void> {
  const vm = cniVmName(inv.containerId, inv.netName, inv.ifname);
  const fail = (msg: string): never => {
    throw new HookError(CODES.checkFailed, `${vm} (${inv.ifname} in ${inv.netns}): ${msg}`);
  };
  const status = await d.call<StatusInfo>('daemon.status');
  const v = status.vms.find((x) => x.name === vm);
  if (v === undefined) return fail('not attached');
  if (v.net !== inv.wishes.network) fail(`attached to ${v.net}, not ${inv.wishes.network}`);
  if (v.port.kind !== 'tap' || v.port.ifname !== inv.ifname) fail(`its device is not the TAP ${inv.ifname}`);
  if (v.port.state !== 'up') fail(`its TAP is ${v.port.state}: ${v.port.detail}`);
  const [route] = await d.call<RouteInfo[]>('route.show', { vm });
  const bad = routeMatches(route!.route, inv.wishes.route);
  if (bad !== null) fail(bad);
  const net = status.networks.find((n) => n.name === v.net);
  const want = v.ip !== null && net !== undefined ? `${v.ip}/${net.subnet.split('/')[1]}` : null;
  const have = await addressesIn(inv.netns, inv.ifname);
  if (have === null) fail(`no interface ${inv.ifname} in the namespace`);
  if (want === null || !have!.includes(want)) fail(`the interface has ${have!.join(', ') || 'no address'}, not ${want ?? 'an mvnet address'}`);
  // The runtime's cached result must say the same.
  const ips = inv.prevResult?.ips;
  if (Array.isArray(ips) && !ips.some((i) => isObject(i) && i.address === want)) fail(`prevResult does not list ${want}`);
}

const COMMANDS = ['ADD', 'DEL', 'CHECK'] as const;

function isCommand(c: string): c is (typeof COMMANDS)[number] {
  return COMMANDS.some((x) => x === c);
}

async function run(io: HookIo): Promise<number> {
  const command = (io.env.CNI_COMMAND ?? '').toUpperCase();
  let cniVersion = '1.0.0';
  try {
    if (command === 'VERSION') {
      io.write(JSON.stringify({ cniVersion: '1.0.0', supportedVersions: SUPPORTED }) + '\n');
      return 0;
    }
    if (!isCommand(command)) {
      throw new HookError(CODES.invalidEnv, command === '' ? 'CNI_COMMAND is not set' : `unknown CNI_COMMAND ${JSON.stringify(command)}: ADD, DEL, CHECK or VERSION`);
    }
    const stdin = await io.readStdin();
    const peek = (() => {
      try {
        return JSON.parse(stdin) as unknown;
      } catch {
        return null;
      }
    })();
    if (isObject(peek) && typeof peek.cniVersion === 'string' && SUPPORTED.includes(peek.cniVersion)) cniVersion = peek.cniVersion;
    const inv = parse(command, stdin, io.env);
    const d = new Daemon(inv.wishes.socket ?? io.socket);
    if (inv.command === 'ADD') io.write(JSON.stringify(await add(inv, d)) + '\n');
    else if (inv.command === 'DEL') await remove(d, cniVmName(inv.containerId, inv.netName, inv.ifname));
    else await check(inv, d);
    return 0;
  } catch (e) {
    const err = e instanceof HookError ? e : new HookError(CODES.io, e instanceof Error ? e.message : String(e));
    io.write(JSON.stringify({ cniVersion, code: err.code, msg: err.message, ...(err.details !== undefined ? { details: err.details } : {}) }) + '\n');
    return 1;
  }
}

/** `mvnet-cni`: a CNI 1.0 plugin (CNI_* environment, network configuration on stdin). */
export const cniAdapter: HookAdapter = {
  name: 'cni',
  description: 'a CNI 1.0 plugin: CNI_* environment, the network configuration on stdin; a TAP in CNI_NETNS',
  run,
};
