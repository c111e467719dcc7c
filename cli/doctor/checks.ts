/**
 * `mvnet doctor`'s checks, as goss checks a server: each says ok, FAIL (with the fix), warn (works,
 * but something that may be wanted is missing) or skip (cannot be checked, and why). The host
 * checks read /dev, /proc and run `tor` and `qemu-system-x86_64`; the rest ask the daemon over
 * its control socket, and are skipped when it is not reachable (itself one FAIL).
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { loadNative, netnsPath } from '../../plugins/native/index.js';
import type { StatusInfo, TorStatus, VmInfo } from '../../daemon/control/api.js';

export type CheckStatus = 'ok' | 'fail' | 'warn' | 'skip';

export interface CheckResult {
  /** Stable identifier (`tun`, `daemon`, `vm-device`, …); several results may share one. */
  id: string;
  status: CheckStatus;
  /** What was found, one line. */
  detail: string;
  /** What to do about a fail or warn. */
  fix?: string;
  /** The VM a per-VM check is about. */
  vm?: string;
}

export interface DoctorInput {
  socket: string;
  /** Where the state dir is when the daemon cannot say (`--state-dir`, default /var/lib/mvnet). */
  stateDir: string;
  /** The daemon's status, or why it could not be had. */
  status: StatusInfo | { error: string };
  /** `tor.status` (asked only when a VM is Tor-routed), or why not. */
  tor?: TorStatus | { error: string };
}

const ok = (id: string, detail: string): CheckResult => ({ id, status: 'ok', detail });
const fail = (id: string, detail: string, fix: string): CheckResult => ({ id, status: 'fail', detail, fix });
const warn = (id: string, detail: string, fix: string): CheckResult => ({ id, status: 'warn', detail, fix });
const skip = (id: string, detail: string): CheckResult => ({ id, status: 'skip', detail });

function errText(e: unknown): string {
  const code = (e as NodeJS.ErrnoException).code;
  return code ?? (e as Error).message.split('\n')[0]!;
}

/** Runs a program; its output, or null when it is not installed (ENOENT). */
function output(file: string, args: string[], timeoutMs = 10_000): Promise<{ code: number; text: string } | null> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: timeoutMs, maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      if (err && (err as NodeJS.ErrnoException).code === 'ENOENT') resolve(null);
      else resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, text: `${stdout}${stderr}` });
    });
  });
}

export function checkTun(): CheckResult {
  const dev = '/dev/net/tun';
  let st: fs.Stats;
  try {
    st = fs.statSync(dev);
  } catch {
    return fail('tun', `${dev} is missing`, 'load the tun module (modprobe tun); in a container, pass the device in (--device /dev/net/tun)');
  }
  if (!st.isCharacterDevice()) return fail('tun', `${dev} is not a character device`, `remove it and recreate it: mknod ${dev} c 10 200`);
  try {
    fs.closeSync(fs.openSync(dev, 'r+'));
  } catch (e) {
    return fail('tun', `${dev} does not open read-write (${errText(e)})`, 'run as root, or allow the device (a systemd DeviceAllow=, a container device cgroup rule)');
  }
  return ok('tun', `${dev} present and openable`);
}

/** The capability sets of `pid` from /proc (hex masks). */
function capSets(pid: number | 'self'): { eff: bigint; bnd: bigint } {
  const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const hex = (k: string): bigint => BigInt('0x' + (new RegExp(`^${k}:\\s*([0-9a-f]+)`, 'm').exec(s)?.[1] ?? '0'));
  return { eff: hex('CapEff'), bnd: hex('CapBnd') };
}

const CAP_NET_ADMIN = 12n;

export function checkNetAdmin(daemonPid: number | undefined): CheckResult {
  // The daemon's own sets when it runs (it is the one that needs them), else this process's.
  const whose = daemonPid !== undefined ? `the daemon (pid ${daemonPid})` : 'this process';
  let eff: bigint;
  try {
    eff = capSets(daemonPid ?? 'self').eff;
  } catch (e) {
    return skip('cap-net-admin', `cannot read the capabilities of ${whose} (${errText(e)})`);
  }
  if (((eff >> CAP_NET_ADMIN) & 1n) === 1n) return ok('cap-net-admin', `${whose} has CAP_NET_ADMIN`);
  return fail('cap-net-admin', `${whose} lacks CAP_NET_ADMIN (CapEff ${eff.toString(16)})`, 'run the daemon as root, or with AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW CAP_SYS_ADMIN (systemd/mvnet.service)');
}

export function checkAddon(): CheckResult {
  try {
    const n = loadNative();
    return ok('addon', `native addon loads (${Object.keys(n).length} exports)`);
  } catch (e) {
    return fail('addon', (e as Error).message.split('. ')[0]!, 'rebuild it: npm rebuild mvnet (or npx node-gyp rebuild in a clone); needs g++, make, python3');
  }
}

export async function checkTor(): Promise<CheckResult> {
  const r = await output('tor', ['--version']);
  if (r === null) return warn('tor', 'tor is not installed: Tor routing (route --all-tor, onion) is unavailable', 'apt-get install tor (the daemon starts its own; disable the distribution service: systemctl disable --now tor)');
  const v = /Tor version (\S+?)\.?$/m.exec(r.text)?.[1];
  if (r.code !== 0 || v === undefined) return fail('tor', `tor --version failed: ${r.text.trim().split('\n')[0] ?? ''}`, 'reinstall tor');
  return ok('tor', `tor ${v}`);
}

export async function checkQemu(): Promise<CheckResult> {
  const r = await output('qemu-system-x86_64', ['-netdev', 'help']);
  if (r === null) return skip('qemu', 'qemu-system-x86_64 is not installed (needed only to run QEMU VMs here)');
  const kinds = new Set(r.text.split(/\s+/));
  const want = ['stream', 'dgram', 'vhost-user'];
  const missing = want.filter((k) => !kinds.has(k));
  if (missing.length === 0) return ok('qemu', `qemu-system-x86_64 -netdev supports ${want.join(', ')}`);
  if (missing.includes('stream') || missing.includes('dgram')) {
    return fail('qemu', `qemu-system-x86_64 -netdev lacks ${missing.join(', ')} (QEMU before 7.2)`, 'upgrade QEMU to 7.2 or later for --unix/--unix-listen/--dgram, or attach VMs with --tap');
  }
  return warn('qemu', `qemu-system-x86_64 -netdev lacks ${missing.join(', ')}`, 'a QEMU built with vhost-user support, if VMs use it');
}

const octal = (m: number): string => (m & 0o7777).toString(8).padStart(4, '0');

export function checkStateDir(dir: string): CheckResult {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return warn('state-dir', `${dir} does not exist yet`, 'the daemon creates it (0700) on its first start');
    return fail('state-dir', `${dir} cannot be read (${errText(e)})`, 'run mvnet doctor as root');
  }
  if (!st.isDirectory()) return fail('state-dir', `${dir} is not a directory`, `move it away, or start the daemon with another --state-dir`);
  // Read or write for group/others exposes the state; search (x) alone does not: the embedded
  // Tor's user must traverse to its own directory below (the daemon sets that itself).
  if ((st.mode & 0o066) !== 0) return fail('state-dir', `${dir} has mode ${octal(st.mode)}: others can list or change the state (keys, captures)`, `chmod go-rw ${dir}`);
  if (st.uid !== 0 && st.uid !== process.geteuid?.()) return fail('state-dir', `${dir} is owned by uid ${st.uid}`, `chown root ${dir}`);
  return ok('state-dir', `${dir} mode ${octal(st.mode)}, owner uid ${st.uid}`);
}

export function checkSocket(socket: string): CheckResult {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(socket);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return skip('socket', `${socket} does not exist (daemon not running)`);
    return fail('socket', `${socket} cannot be read (${errText(e)})`, `check the permissions of ${path.dirname(socket)}`);
  }
  if (!st.isSocket()) return fail('socket', `${socket} is not a socket`, `remove it (rm ${socket}) and restart the daemon`);
  if ((st.mode & 0o007) !== 0) return fail('socket', `${socket} has mode ${octal(st.mode)}: everyone may control the daemon`, `chmod 0660 ${socket} (the daemon makes it so at start)`);
  const group = st.gid === 0 ? 'root' : `gid ${st.gid}`;
  return ok('socket', `${socket} mode ${octal(st.mode)}, group ${group} (config socketGroup lets a group use it)`);
}

/** Whether a VM's device is where its port says: interfaces in their namespace, socket paths on disk. */
export function checkVmDevice(vm: VmInfo): CheckResult {
  const p = vm.port;
  const res = (status: CheckStatus, detail: string, fix?: string): CheckResult => ({ id: 'vm-device', status, detail: `VM ${vm.name}: ${detail}`, vm: vm.name, ...(fix !== undefined ? { fix } : {}) });
  if (p.kind === 'tap' || p.kind === 'tun' || p.kind === 'iface') {
    const netns = p.netns ?? undefined;
    const where = netns !== undefined ? ` in namespace ${netns}` : '';
    const what = `${p.kind === 'iface' ? 'interface' : p.kind.toUpperCase()} ${p.ifname}${where}`;
    let idx: number;
    try {
      idx = loadNative().ifIndex(p.ifname, netns !== undefined ? netnsPath(netns) : undefined);
    } catch (e) {
      return res('skip', `cannot look for ${what} (${(e as Error).message.split('\n')[0]})`);
    }
    if (idx === 0) {
      return res('fail', `${what} is missing`, `mvnet vm detach ${vm.name}, then attach it again (or restart the daemon, which re-creates the devices it made)`);
    }
    return res(p.state === 'up' ? 'ok' : 'warn', `${what} present (port ${p.state}${p.detail ? `: ${p.detail}` : ''})`, p.state === 'up' ? undefined : 'see mvnet status and the daemon log');
  }
  if (p.kind === 'vhost-user') {
    const what = `vhost-user ${p.path} (${p.detail})`;
    if (!fs.existsSync(p.path)) return res('fail', `socket ${p.path} is missing`, `mvnet vm detach ${vm.name}, then attach it again`);
    if (p.state === 'down') return res('fail', what, 'the guest or its QEMU broke the vhost-user protocol or its rings (the daemon log says how): restart the VM; QEMU connecting again starts the device afresh');
    if (p.state === 'waiting') {
      return res('warn', what, `start its QEMU with -chardev socket,id=c0,path=${p.path},reconnect=1 -netdev vhost-user,chardev=c0,... and its memory shared (-object memory-backend-memfd,share=on,... -numa node,memdev=...); mvnet hook with device vhost-user prints them`);
    }
    return res('ok', what);
  }
  if ('path' in p && typeof p.path === 'string') {
    if (!fs.existsSync(p.path) && p.kind !== 'unix') return res('fail', `socket ${p.path} is missing`, `mvnet vm detach ${vm.name}, then attach it again`);
    return res(p.state === 'up' ? 'ok' : 'warn', `${p.kind} ${p.path} (port ${p.state}${p.detail ? `: ${p.detail}` : ''})`, p.state === 'up' ? undefined : 'start the VM (QEMU) that uses it');
  }
  return res(p.state === 'up' ? 'ok' : 'warn', `${p.kind} port ${p.state}${p.detail ? `: ${p.detail}` : ''}`, p.state === 'up' ? undefined : 'see mvnet status and the daemon log');
}

/** The VM's route sends something through Tor (all-tor, or Tor ports). */
export const torRouted = (v: VmInfo): boolean => v.route.kind === 'tor' || ('torPorts' in v.route && v.route.torPorts !== null && v.route.torPorts.length > 0);

export function checkTorBootstrap(vms: VmInfo[], tor: DoctorInput['tor']): CheckResult {
  const names = vms.filter(torRouted).map((v) => v.name);
  if (names.length === 0) return ok('tor-bootstrap', 'no VM is routed through Tor');
  if (tor === undefined || 'error' in tor) return skip('tor-bootstrap', `tor status unavailable${tor ? ` (${tor.error})` : ''}`);
  if (tor.phase === 'ready' && tor.progress >= 100) return ok('tor-bootstrap', `Tor bootstrapped (100%) for ${names.join(', ')}`);
  return fail('tor-bootstrap', `Tor is ${tor.phase} ${tor.progress}% (${tor.summary}) and ${names.join(', ')} ${names.length === 1 ? 'routes' : 'route'} through it: its TCP fails closed`, 'mvnet tor status; check the network, the clock and the tor config (bridges)');
}

export function checkPingGroup(daemonPid: number, vms: VmInfo[]): CheckResult {
  let gid: number;
  let lo: number;
  let hi: number;
  try {
    gid = Number(/^Gid:\s*\d+\s+(\d+)/m.exec(fs.readFileSync(`/proc/${daemonPid}/status`, 'utf8'))?.[1]);
    [lo, hi] = fs.readFileSync('/proc/sys/net/ipv4/ping_group_range', 'utf8').trim().split(/\s+/).map(Number) as [number, number];
  } catch (e) {
    return skip('ping-group', `cannot read the ping group range (${errText(e)})`);
  }
  if (gid >= lo && gid <= hi) return ok('ping-group', `net.ipv4.ping_group_range ${lo} ${hi} includes the daemon's gid ${gid}`);
  const direct = vms.filter((v) => v.route.kind === 'direct').map((v) => v.name);
  const detail = `net.ipv4.ping_group_range ${lo} ${hi} excludes the daemon's gid ${gid}: pings from direct-routed VMs are not answered`;
  const fix = `sysctl -w net.ipv4.ping_group_range="${gid} ${gid}" (persist it in /etc/sysctl.d/)`;
  return direct.length > 0 ? fail('ping-group', `${detail} (${direct.join(', ')})`, fix) : warn('ping-group', `${detail} (no VM is direct-routed now)`, fix);
}

/** Every check, in the order they are printed. */
export async function runChecks(input: DoctorInput): Promise<CheckResult[]> {
  const st = 'error' in input.status ? undefined : input.status;
  const results: CheckResult[] = [checkTun(), checkNetAdmin(st?.daemon.pid), checkAddon(), await checkTor(), await checkQemu()];
  results.push(checkStateDir(st?.daemon.stateDir ?? input.stateDir));
  if (st === undefined) {
    const reason = 'error' in input.status ? input.status.error : '';
    // A daemon that accepts but does not answer is running and stuck, not stopped.
    const hung = /did not answer/.test(reason);
    const fix = hung
      ? 'the daemon is running but does not answer (stopped with SIGSTOP, or hung): kill -CONT it, or restart it (systemctl restart mvnet)'
      : 'start it: systemctl start mvnet, or mvnet daemon (set --socket/MVNET_SOCKET if it listens elsewhere)';
    results.push(fail('daemon', `not reachable on ${input.socket}: ${reason}`, fix));
    for (const id of ['socket', 'vm-device', 'tor-bootstrap', 'ping-group']) results.push(skip(id, 'daemon not reachable'));
    return results;
  }
  results.push(checkSocket(st.daemon.socket));
  results.push(ok('daemon', `mvnet ${st.daemon.version} pid ${st.daemon.pid} answers on ${st.daemon.socket}`));
  if (st.vms.length === 0) results.push(ok('vm-device', 'no VMs attached'));
  for (const vm of st.vms) results.push(checkVmDevice(vm));
  results.push(checkTorBootstrap(st.vms, input.tor));
  results.push(checkPingGroup(st.daemon.pid, st.vms));
  return results;
}
