/**
 * The `mvnet` hook adapter, `mvnet hook [ADD|DEL|CHECK|VERSION]`: wires a VM to an mvnet network in the manner of a CNI
 * plugin, for image builders and runtimes. The command comes from the argument or
 * MVNET_COMMAND, the config (JSON) from stdin, the VM's id from MVNET_VM_ID or the JSON; the
 * result (or an error `{code, msg}`, with a non-zero exit) is JSON on stdout. An OCI runtime
 * state (createRuntime / poststop hooks) is accepted as the config: its `id` is the VM's id and
 * its `mvnet.*` annotations are the keys below.
 *
 * Config keys: vm, network, route ("none" | "direct" | "all-tor" | "via:VM" | a route object),
 * allow, torPorts, mac, ip, device ("qemu-stream" default | "qemu-dgram" | "vhost-user" | "tap"),
 * path (the QEMU socket; vhost-user: the one mvnet listens on), ifname and netns (tap), netdevId,
 * model, memory and accel (vhost-user: the VM's -m, and "tcg" or "kvm"), socket (the control socket).
 */
import { existsSync } from 'node:fs';
import type { HookAdapter, HookIo } from '../../../plugins/types.js';
import type { StatusInfo, VmInfo } from '../../../daemon/control/api.js';
import { packageVersion } from '../../../daemon/version.js';
import {
  CODES,
  Daemon,
  HookError,
  gateway6,
  ifnameFor,
  isObject,
  optString,
  parseJson,
  place,
  remove,
  removeStaleSocket,
  routeMatches,
  runProgram,
  slaacAddress,
  stableMac,
  vmNameFor,
  wishesFrom,
  type Placed,
  type Wishes,
} from '../core.js';
import { configureIface, netnsPath } from '../netns.js';
import { ACCELS, vhostMemory, vhostQemuArgs, type Accel } from './vhost-args.js';

const COMMANDS = ['ADD', 'DEL', 'CHECK', 'VERSION'] as const;
type HookCommand = (typeof COMMANDS)[number];
const DEVICES = ['qemu-stream', 'qemu-dgram', 'tap', 'vhost-user'] as const;
type DeviceKind = (typeof DEVICES)[number];
const KEYS = ['vm', 'network', 'route', 'allow', 'torPorts', 'mac', 'ip', 'device', 'path', 'ifname', 'netns', 'netdevId', 'model', 'memory', 'accel', 'socket'];
/** The alias a TAP the hook created carries, so DEL deletes only its own. */
const TAP_ALIAS = 'mvnet-hook:';

interface HookConfig {
  id: string;
  command: HookCommand;
  wishes: Wishes | null;
  device: DeviceKind;
  path?: string;
  ifname?: string;
  netns?: string;
  netdevId: string;
  model: string;
  /** vhost-user: the VM's memory as a memory-backend size ("512M"); ADD needs it. */
  memory?: string;
  accel?: Accel;
  socket?: string;
}

type Obj = Record<string, unknown>;
type Env = HookIo['env'];

function parseCommand(arg: string | undefined, environ: Env): HookCommand | undefined {
  const env = environ.MVNET_COMMAND;
  const a = arg?.toUpperCase();
  const e = env !== undefined && env !== '' ? env.toUpperCase() : undefined;
  if (a !== undefined && e !== undefined && a !== e) throw new HookError(CODES.invalidEnv, `the command is ${a} by argument and ${e} by MVNET_COMMAND`);
  const c = a ?? e;
  if (c === undefined) return undefined;
  if (!(COMMANDS as readonly string[]).includes(c)) throw new HookError(CODES.invalidEnv, `unknown command ${JSON.stringify(arg ?? env)}: ADD, DEL, CHECK or VERSION`);
  return c as HookCommand;
}

/**
 * Keys that say where on the host the hook acts (a namespace, a socket, a path, an interface
 * name): an OCI state's annotations come from the container's author, so they may not set them.
 */
const HOST_KEYS: ReadonlySet<string> = new Set(['netns', 'socket', 'path', 'ifname']);

/** The hook's keys from an OCI state's annotations (`mvnet.network` …). */
function fromOci(state: Obj): { id: string; keys: Obj; status: string; pid?: number } {
  if (typeof state.id !== 'string' || state.id === '') throw new HookError(CODES.invalidConfig, 'the OCI state has no id');
  const ann = state.annotations ?? {};
  if (!isObject(ann)) throw new HookError(CODES.invalidConfig, 'the OCI state annotations must be an object');
  const keys: Obj = {};
  for (const [k, v] of Object.entries(ann)) {
    if (!k.startsWith('mvnet.')) continue;
    const key = k.slice('mvnet.'.length);
    if (!KEYS.includes(key) || key === 'vm') throw new HookError(CODES.unsupportedField, `unknown annotation ${k}: mvnet.${KEYS.filter((x) => x !== 'vm' && !HOST_KEYS.has(x)).join(', mvnet.')}`);
    // Annotations are the container author's; where the hook (root) acts on the host is not.
    if (HOST_KEYS.has(key)) throw new HookError(CODES.unsupportedField, `annotation ${k} is refused: a container cannot choose ${key} (the hook uses the container's own namespace and the daemon's socket)`);
    keys[key] = v;
  }
  const out: { id: string; keys: Obj; status: string; pid?: number } = { id: state.id, keys, status: typeof state.status === 'string' ? state.status : '' };
  if (typeof state.pid === 'number' && Number.isInteger(state.pid) && state.pid > 0) out.pid = state.pid;
  return out;
}

function parseConfig(text: string, arg: string | undefined, env: Env): HookConfig {
  let command = parseCommand(arg, env);
  const doc = text.trim() === '' ? {} : parseJson(text, 'the config on stdin');
  if (!isObject(doc)) throw new HookError(CODES.invalidConfig, 'the config on stdin must be a JSON object');
  let keys: Obj;
  let id: string | undefined;
  let ociPid: number | undefined;
  if (doc.ociVersion !== undefined) {
    const oci = fromOci(doc);
    keys = oci.keys;
    id = oci.id;
    ociPid = oci.pid;
    // Without a command, the container's status says which hook this is.
    if (command === undefined) {
      if (oci.status === 'creating' || oci.status === 'created') command = 'ADD';
      else if (oci.status === 'stopped') command = 'DEL';
    }
  } else {
    for (const k of Object.keys(doc)) if (!KEYS.includes(k)) throw new HookError(CODES.unsupportedField, `unknown key ${JSON.stringify(k)}: ${KEYS.join(', ')}`);
    keys = doc;
    id = optString(doc, 'vm');
  }
  if (command === undefined) throw new HookError(CODES.invalidEnv, 'no command: give ADD, DEL, CHECK or VERSION as the first argument or in MVNET_COMMAND');
  const envId = env.MVNET_VM_ID;
  if (envId !== undefined && envId !== '') {
    if (id !== undefined && id !== envId) throw new HookError(CODES.invalidConfig, `the VM id is ${JSON.stringify(envId)} in MVNET_VM_ID and ${JSON.stringify(id)} in the config`);
    id = envId;
  }
  if (id === undefined) throw new HookError(CODES.invalidEnv, 'no VM id: set MVNET_VM_ID or give "vm" in the config');
  const device = optString(keys, 'device') ?? 'qemu-stream';
  if (!(DEVICES as readonly string[]).includes(device)) throw new HookError(CODES.invalidConfig, `unknown device ${JSON.stringify(device)}: ${DEVICES.join(', ')}`);
  const cfg: HookConfig = {
    id,
    command,
    // DEL needs only the id; ADD and CHECK need the network.
    wishes: command === 'DEL' && keys.network === undefined ? null : wishesFrom(keys, ''),
    device: device as DeviceKind,
    netdevId: optString(keys, 'netdevId') ?? 'net0',
    model: optString(keys, 'model') ?? 'virtio-net-pci',
  };
  for (const k of ['path', 'ifname', 'netns', 'socket'] as const) {
    const v = optString(keys, k);
    if (v !== undefined) cfg[k] = v;
  }
  if (keys.memory !== undefined || keys.accel !== undefined) {
    if (cfg.device !== 'vhost-user') throw new HookError(CODES.invalidConfig, 'memory and accel go with device "vhost-user"');
    if (keys.memory !== undefined) {
      const m = vhostMemory(keys.memory);
      if ('error' in m) throw new HookError(CODES.invalidConfig, m.error);
      cfg.memory = m.size;
    }
    const accel = optString(keys, 'accel');
    if (accel !== undefined) {
      if (!(ACCELS as readonly string[]).includes(accel)) throw new HookError(CODES.invalidConfig, `unknown accel ${JSON.stringify(accel)}: ${ACCELS.join(', ')}`);
      cfg.accel = accel as Accel;
    }
  }
  if (cfg.device === 'vhost-user' && command === 'ADD' && cfg.memory === undefined) {
    throw new HookError(CODES.invalidConfig, 'device "vhost-user" needs memory: the VM\'s memory (its -m, e.g. "512M"), which must be a shared memory backend for mvnet to map, or "existing" when another NIC\'s answer already gives it');
  }
  if (cfg.device === 'vhost-user' && !cfg.model.startsWith('virtio-net')) throw new HookError(CODES.invalidConfig, `device "vhost-user" needs a virtio-net model, not ${JSON.stringify(cfg.model)}`);
  if (cfg.path !== undefined && !cfg.path.startsWith('/')) throw new HookError(CODES.invalidConfig, `path must be absolute, got ${JSON.stringify(cfg.path)}`);
  if (cfg.device !== 'tap' && (cfg.ifname !== undefined || cfg.netns !== undefined)) throw new HookError(CODES.invalidConfig, 'ifname and netns go with device "tap"');
  if (cfg.device === 'tap' && cfg.path !== undefined) throw new HookError(CODES.invalidConfig, 'path goes with device "qemu-stream", "qemu-dgram" or "vhost-user"');
  // A container's hook: its TAP goes into the container's namespace.
  if (cfg.device === 'tap' && cfg.netns === undefined && ociPid !== undefined) cfg.netns = `/proc/${ociPid}/ns/net`;
  if (!/^[A-Za-z][A-Za-z0-9_.-]{0,31}$/.test(cfg.netdevId)) throw new HookError(CODES.invalidConfig, `invalid netdevId ${JSON.stringify(cfg.netdevId)}`);
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(cfg.model)) throw new HookError(CODES.invalidConfig, `invalid model ${JSON.stringify(cfg.model)}`);
  return cfg;
}

/** QEMU's option syntax doubles a comma inside a value. */
function q(v: string): string {
  return v.replace(/,/g, ',,');
}

interface DeviceParts {
  port: Obj;
  qemuNetdev: string | null;
  result: Obj;
  /** The whole QEMU arguments when they are more than -netdev and -device (vhost-user). */
  qemuArgs?: (mac: string, mtu: number) => string[];
}

/** Paths and names the device uses; the same for ADD, CHECK and DEL of one config. */
function deviceParts(cfg: HookConfig, vm: string, status: StatusInfo): DeviceParts {
  const dir = status.daemon.vmSocketDir;
  switch (cfg.device) {
    case 'qemu-stream': {
      const path = cfg.path ?? `${dir}/${vm}.qemu.sock`;
      return {
        port: { kind: 'unix', path },
        qemuNetdev: `stream,id=${cfg.netdevId},server=on,addr.type=unix,addr.path=${q(path)}`,
        result: { kind: 'qemu-stream', socket: path },
      };
    }
    case 'qemu-dgram': {
      const path = cfg.path ?? `${dir}/${vm}.qemu.sock`;
      const own = `${dir}/${vm}.sock`;
      return {
        port: { kind: 'dgram', path: own, peer: path },
        qemuNetdev: `dgram,id=${cfg.netdevId},local.type=unix,local.path=${q(path)},remote.type=unix,remote.path=${q(own)}`,
        result: { kind: 'qemu-dgram', socket: path, mvnetSocket: own },
      };
    }
    case 'vhost-user': {
      // mvnet listens here (the daemon makes the socket, replacing a stale one); QEMU connects.
      const path = cfg.path ?? `${dir}/${vm}.vhost.sock`;
      return {
        port: { kind: 'vhost-user', path },
        qemuNetdev: null,
        result: { kind: 'vhost-user', socket: path },
        qemuArgs: (mac, mtu) =>
          vhostQemuArgs({ path, netdevId: cfg.netdevId, model: cfg.model, mac, memory: cfg.memory ?? '', mtu, ...(cfg.accel !== undefined ? { accel: cfg.accel } : {}) }),
      };
    }
    case 'tap': {
      const ifname = cfg.ifname ?? ifnameFor('mvh', vm);
      if (cfg.netns !== undefined) {
        // A container or namespace: the TAP is made inside it, the namespace's kernel is the VM.
        return { port: { kind: 'tap', ifname, netns: cfg.netns }, qemuNetdev: null, result: { kind: 'tap', ifname, netns: cfg.netns } };
      }
      // For QEMU's -netdev tap: the hook makes the TAP, QEMU holds it, mvnet reads its other side.
      return { port: { kind: 'iface', ifname }, qemuNetdev: `tap,id=${cfg.netdevId},ifname=${ifname},script=no,downscript=no`, result: { kind: 'tap', ifname } };
    }
  }
}

async function tapAlias(ifname: string): Promise<string | null> {
  try {
    const out = await runProgram('ip', ['-j', '-d', 'link', 'show', 'dev', ifname]);
    const l = (JSON.parse(out) as { ifalias?: string }[])[0];
    return l?.ifalias ?? '';
  } catch {
    return null;
  }
}

async function makeQemuTap(ifname: string, vm: string): Promise<void> {
  const alias = await tapAlias(ifname);
  if (alias !== null && alias !== `${TAP_ALIAS}${vm}`) throw new HookError(CODES.refused, `interface ${ifname} already exists and is not this hook's for ${vm}`);
  try {
    if (alias === null) await runProgram('ip', ['tuntap', 'add', 'dev', ifname, 'mode', 'tap']);
    await runProgram('ip', ['link', 'set', 'dev', ifname, 'alias', `${TAP_ALIAS}${vm}`, 'up']);
  } catch (e) {
    throw new HookError(CODES.io, `creating TAP ${ifname}: ${(e as Error).message}`);
  }
}

async function deleteQemuTap(ifname: string, vm: string): Promise<boolean> {
  if ((await tapAlias(ifname)) !== `${TAP_ALIAS}${vm}`) return false;
  await runProgram('ip', ['link', 'del', 'dev', ifname]).catch(() => undefined);
  return true;
}

function result(cfg: HookConfig, vm: string, parts: DeviceParts, p: Placed, mac: string): Obj {
  const ip = p.vm.ip;
  const prefix = p.net.subnet.split('/')[1]!;
  const domain = `${p.net.name.toLowerCase()}.mvnet`;
  return {
    mvnetVersion: packageVersion(),
    vm,
    id: cfg.id,
    network: p.net.name,
    device: parts.result,
    qemuArgs: parts.qemuArgs !== undefined ? parts.qemuArgs(mac, p.net.mtu) : parts.qemuNetdev === null ? [] : ['-netdev', parts.qemuNetdev, '-device', `${cfg.model},netdev=${cfg.netdevId},mac=${mac}`],
    mac,
    mtu: p.net.mtu,
    ipv4: ip !== null ? { address: `${ip}/${prefix}`, gateway: p.net.gateway } : null,
    ipv6: p.net.ipv6 !== null ? { address: `${slaacAddress(p.net.ipv6, mac)}/64`, gateway: gateway6(p.net.ipv6) } : null,
    dns: { nameservers: [p.net.gateway, ...(p.net.ipv6 !== null ? [gateway6(p.net.ipv6)] : [])], domain, search: [domain] },
    route: p.route.route,
    routeDescription: p.route.routeText,
  };
}

async function add(cfg: HookConfig, d: Daemon): Promise<Obj> {
  const w = cfg.wishes!;
  const vm = vmNameFor(cfg.id);
  const mac = (w.mac ?? stableMac(vm)).toLowerCase();
  const status = await d.call<StatusInfo>('daemon.status');
  const parts = deviceParts(cfg, vm, status);
  if (cfg.device === 'qemu-stream' || cfg.device === 'qemu-dgram') await removeStaleSocket(parts.result.socket as string);
  const qemuTap = cfg.device === 'tap' && cfg.netns === undefined;
  if (cfg.device === 'tap' && cfg.netns !== undefined && !existsSync(netnsPath(cfg.netns))) throw new HookError(CODES.unknownContainer, `no network namespace at ${netnsPath(cfg.netns)}`);
  if (qemuTap) await makeQemuTap(parts.result.ifname as string, vm);
  // A namespace with IPv6 disabled gets no IPv6 address: the result then says none.
  let v6 = true;
  try {
    const placed = await place(d, vm, w, parts.port, mac, async (p) => {
      if (cfg.device !== 'tap' || cfg.netns === undefined || p.vm.ip === null) return;
      const prefix = p.net.subnet.split('/')[1]!;
      v6 = await configureIface(cfg.netns, {
        ifname: parts.result.ifname as string,
        address4: `${p.vm.ip}/${prefix}`,
        gateway4: p.net.gateway,
        mtu: p.net.mtu,
        ...(p.net.ipv6 !== null ? { address6: `${slaacAddress(p.net.ipv6, mac)}/64` } : {}),
      });
    });
    const out = result(cfg, vm, parts, placed, mac);
    if (!v6) out.ipv6 = null;
    return out;
  } catch (e) {
    if (qemuTap) await deleteQemuTap(parts.result.ifname as string, vm);
    throw e;
  }
}

async function del(cfg: HookConfig, d: Daemon): Promise<Obj> {
  const vm = vmNameFor(cfg.id);
  const status = await d.call<StatusInfo>('daemon.status');
  const parts = deviceParts(cfg, vm, status);
  const r = await remove(d, vm);
  let removed: string | null = null;
  if (cfg.device === 'qemu-stream' || cfg.device === 'qemu-dgram') {
    if (await removeStaleSocket(parts.result.socket as string)) removed = parts.result.socket as string;
  } else if (cfg.device === 'tap' && cfg.netns === undefined && (await deleteQemuTap(parts.result.ifname as string, vm))) removed = parts.result.ifname as string;
  return { vm, id: cfg.id, detached: r.detached, routeCleared: r.routeCleared, removed };
}

async function check(cfg: HookConfig, d: Daemon): Promise<Obj> {
  const w = cfg.wishes!;
  const vm = vmNameFor(cfg.id);
  const status = await d.call<StatusInfo>('daemon.status');
  const fail = (msg: string): never => {
    throw new HookError(CODES.checkFailed, `${vm}: ${msg}`);
  };
  const v: VmInfo | undefined = status.vms.find((x) => x.name === vm);
  if (v === undefined) return fail('not attached');
  if (v.net !== w.network) fail(`attached to ${v.net}, not ${w.network}`);
  const parts = deviceParts(cfg, vm, status);
  if (v.port.kind !== parts.port.kind) fail(`its device is ${v.port.kind}, not ${String(parts.port.kind)}`);
  if ('path' in v.port && v.port.path !== parts.port.path) fail(`its socket is ${v.port.path}, not ${String(parts.port.path)}`);
  if ('ifname' in v.port && v.port.ifname !== parts.port.ifname) fail(`its interface is ${v.port.ifname}, not ${String(parts.port.ifname)}`);
  if (v.port.state === 'down') fail(`its device is down: ${v.port.detail}`);
  const mac = (w.mac ?? stableMac(vm)).toLowerCase();
  if (v.mac !== null && v.mac !== mac) fail(`its MAC is ${v.mac}, not ${mac}`);
  const [route] = await d.call<{ route: Placed['route']['route'] }[]>('route.show', { vm });
  const bad = routeMatches(route!.route, w.route);
  if (bad !== null) fail(bad);
  if (w.route.kind === 'tor' && !status.daemon.torConfigured) fail('its route needs Tor and the daemon has no tor section');
  return { vm, id: cfg.id, ok: true, state: v.port.state };
}

function version(): Obj {
  return { mvnetVersion: packageVersion(), commands: [...COMMANDS], devices: [...DEVICES], ociAnnotations: KEYS.filter((k) => k !== 'vm').map((k) => `mvnet.${k}`) };
}

async function runHook(io: HookIo): Promise<number> {
  try {
    if (io.args.length > 1) throw new HookError(CODES.invalidEnv, `one command at most, got ${io.args.join(' ')}`);
    const arg = io.args[0];
    const early = parseCommand(arg, io.env);
    if (early === 'VERSION') {
      io.write(JSON.stringify(version()) + '\n');
      return 0;
    }
    const cfg = parseConfig(await io.readStdin(), arg, io.env);
    const d = new Daemon(cfg.socket ?? io.socket);
    const out = cfg.command === 'ADD' ? await add(cfg, d) : cfg.command === 'DEL' ? await del(cfg, d) : cfg.command === 'CHECK' ? await check(cfg, d) : version();
    io.write(JSON.stringify(out) + '\n');
    return 0;
  } catch (e) {
    const err = e instanceof HookError ? e : new HookError(CODES.io, e instanceof Error ? e.message : String(e));
    io.write(JSON.stringify({ code: err.code, msg: err.message, ...(err.details !== undefined ? { details: err.details } : {}) }) + '\n');
    return 1;
  }
}

/** `mvnet hook`: its own JSON config or an OCI runtime state on stdin (the default adapter). */
export const mvnetHookAdapter: HookAdapter = {
  name: 'mvnet',
  description: 'mvnet\'s own JSON config or an OCI runtime state (createRuntime/poststop) on stdin; ADD, DEL, CHECK, VERSION',
  run: runHook,
};
