/**
 * A real, small QEMU VM for end-to-end tests: Debian's cloud kernel and a busybox initramfs
 * built here, booted with `qemu-system-x86_64 -accel tcg` (KVM does not work on the test
 * machines) and the network arguments `mvnet hook ADD` gives.
 *
 * The kernel and a static busybox come from scripts/vm-assets.sh (apt-get download + dpkg -x
 * into a cache directory, done once: deps.sh runs it; here it is a no-op when cached). The
 * initramfs is written as a newc cpio (gzip) by this file: /init mounts the pseudo file
 * systems, loads the virtio-net modules in dependency order, runs `udhcpc` (its script prints
 * the lease), then the test's commands, each framed by marker lines on the serial console,
 * and powers off — or, interactive, runs the commands the test types on the console
 * (`VmConsole`) until QEMU is stopped. Everything the VM prints is a stdout line of the QEMU
 * process, so a test waits for lines (events), never for time.
 *
 * Also here: QEMU's arguments for a vhost-user NIC (its memory as a shared memfd) and a stream
 * NIC, and a small TCP sink/source (`writeTransferProgram`) for transfers with a VM.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { spawnProcess, type ManagedProcess } from './netns.js';

/**
 * The repository root, from test/support/ or (compiled for a bench) dist/test/support/. Not
 * daemon.ts's REPO_ROOT: importing daemon.ts pulls in vitest, which a bench runs without.
 */
function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json')) && dirname(dir) !== dir) dir = dirname(dir);
  return dir;
}
const REPO_ROOT = repoRoot();

export interface VmAssets {
  kernel: string;
  modules: string;
  busybox: string;
}

/** The cached kernel, modules and busybox (fetched by scripts/vm-assets.sh if missing). */
export function vmAssets(): VmAssets {
  const r = spawnSync('bash', [join(REPO_ROOT, 'scripts', 'vm-assets.sh')], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`scripts/vm-assets.sh failed (exit ${r.status}): the QEMU tests need Debian's cloud kernel and busybox-static (run scripts/deps.sh as root)\n${r.stderr}`);
  const dir = r.stdout.trim().split('\n').pop()!;
  return { kernel: join(dir, 'vmlinuz'), modules: join(dir, 'modules'), busybox: join(dir, 'busybox') };
}

/** virtio-net and what it needs, in load order (the cloud kernel builds them as modules). */
const MODULES = [
  'drivers/virtio/virtio_ring.ko',
  'drivers/virtio/virtio.ko',
  'drivers/virtio/virtio_pci_legacy_dev.ko',
  'drivers/virtio/virtio_pci_modern_dev.ko',
  'drivers/virtio/virtio_pci.ko',
  'net/core/failover.ko',
  'drivers/net/net_failover.ko',
  'drivers/net/virtio_net.ko',
];

interface CpioEntry {
  name: string;
  mode: number;
  data?: Buffer;
  /** Device number for character devices. */
  rdev?: [number, number];
}

/** A newc ("070701") cpio archive, as the kernel unpacks an initramfs. */
function cpio(entries: CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  const pad4 = (n: number): Buffer => Buffer.alloc((4 - (n % 4)) % 4);
  let ino = 1;
  const one = (e: CpioEntry): void => {
    const data = e.data ?? Buffer.alloc(0);
    const name = Buffer.from(`${e.name}\0`);
    const f = (n: number): string => n.toString(16).padStart(8, '0');
    const header = `070701${f(ino++)}${f(e.mode)}${f(0)}${f(0)}${f(1)}${f(0)}${f(data.length)}${f(0)}${f(0)}${f(e.rdev?.[0] ?? 0)}${f(e.rdev?.[1] ?? 0)}${f(name.length)}${f(0)}`;
    parts.push(Buffer.from(header), name, pad4(110 + name.length), data, pad4(data.length));
  };
  for (const e of entries) one(e);
  one({ name: 'TRAILER!!!', mode: 0 });
  return Buffer.concat(parts);
}

const DIR = 0o040755;
const FILE = 0o100755;
const CHR = 0o020600;

export interface VmCommand {
  /** A word: the markers are `MVT-BEGIN name` and `MVT-END name rc=N`. */
  name: string;
  /** busybox sh. */
  sh: string;
}

export interface InitramfsOptions {
  /**
   * After `commands`, print `MVT-READY` and run the commands the test types on the serial
   * console (`VmConsole`) instead of powering off: one VM boot serves a whole scenario, and the
   * test decides when each step runs (after a daemon restart, say).
   */
  interactive?: boolean;
  /** The NICs brought up by DHCP, in order (default `['eth0']`). */
  interfaces?: string[];
}

/**
 * Writes `<dir>/initrd.gz`: busybox, the virtio-net modules, and an /init that brings up eth0
 * (or `opts.interfaces`) by DHCP and then runs `commands`. Lines it prints: `MVT-INIT`,
 * `MVT-LEASE ip=… mask=… router=… dns=… domain=… mtu=… iface=…` (or `MVT-NOLEASE` / `MVT-NOLEASE
 * ethN`), the commands' output between their markers, `MVT-DONE`; with `interactive`, then
 * `MVT-READY` and the typed commands' output between their markers.
 */
export function buildInitramfs(dir: string, assets: VmAssets, commands: VmCommand[], opts: InitramfsOptions = {}): string {
  const ifaces = opts.interfaces ?? ['eth0'];
  const udhcpc = [
    '#!/bin/sh',
    'case "$1" in',
    '  bound|renew)',
    '    ip addr flush dev "$interface"',
    '    ip addr add "$ip/$mask" dev "$interface"',
    '    [ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu"',
    // The first NIC's lease sets the default route and resolver (a second one's would fail: exists).
    '    if [ ! -e /tmp/mvt-default ]; then',
    '      [ -n "$router" ] && ip route add default via "${router%% *}" dev "$interface"',
    '      echo "nameserver ${dns%% *}" > /etc/resolv.conf',
    '      touch /tmp/mvt-default',
    '    fi',
    '    echo "MVT-LEASE ip=$ip mask=$mask router=$router dns=$dns domain=$domain mtu=$mtu iface=$interface"',
    '    ;;',
    'esac',
    '',
  ].join('\n');
  const body = commands.map((c) => `echo "MVT-BEGIN ${c.name}"\n( ${c.sh} ) 2>&1\necho "MVT-END ${c.name} rc=$?"`).join('\n');
  const init = [
    '#!/bin/busybox sh',
    '/bin/busybox --install -s /bin',
    'export PATH=/bin',
    'mount -t proc proc /proc',
    'mount -t sysfs sys /sys',
    'mount -t devtmpfs dev /dev',
    'echo MVT-INIT',
    ...MODULES.map((m) => `insmod /lib/mvt/${m.split('/').pop()!} || echo "MVT-INSMOD-FAILED ${m}"`),
    'ip link set lo up',
    // The kernel probes the PCI devices after insmod returns: wait for them inside the VM.
    ...ifaces.flatMap((ifc, i) => [
      `i=0; while [ ! -e /sys/class/net/${ifc} ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done`,
      `ip link set ${ifc} up`,
      // eth0's line keeps its old form (the hook tests look for `MVT-MAC <mac>`).
      i === 0 ? `echo "MVT-MAC $(cat /sys/class/net/${ifc}/address)"` : `echo "MVT-MAC-${ifc} $(cat /sys/class/net/${ifc}/address)"`,
      `udhcpc -i ${ifc} -s /etc/udhcpc.sh -n -q -t 20 -T 1 -A 1 2>&1 || echo ${i === 0 ? 'MVT-NOLEASE' : `"MVT-NOLEASE ${ifc}"`}`,
    ]),
    body,
    'echo MVT-DONE',
    ...(opts.interactive
      ? [
          // The console would echo what the test types into the output it reads.
          'stty -echo 2>/dev/null',
          'echo MVT-READY',
          'while read -r word name cmd; do',
          '  [ "$word" = MVT-RUN ] || continue',
          '  echo "MVT-BEGIN $name"',
          // Not the console as stdin: a command that reads it would eat the next commands.
          '  ( eval "$cmd" ) </dev/null 2>&1',
          '  echo "MVT-END $name rc=$?"',
          'done',
        ]
      : []),
    'poweroff -f',
    '',
  ].join('\n');
  const entries: CpioEntry[] = [
    ...['bin', 'dev', 'proc', 'sys', 'etc', 'tmp', 'lib', 'lib/mvt', 'root'].map((name) => ({ name, mode: DIR })),
    { name: 'dev/console', mode: CHR, rdev: [5, 1] },
    { name: 'bin/busybox', mode: FILE, data: readFileSync(assets.busybox) },
    { name: 'init', mode: FILE, data: Buffer.from(init) },
    { name: 'etc/udhcpc.sh', mode: FILE, data: Buffer.from(udhcpc) },
    ...MODULES.map((m) => ({ name: `lib/mvt/${m.split('/').pop()!}`, mode: 0o100644, data: readFileSync(join(assets.modules, 'kernel', m)) })),
  ];
  const out = join(dir, 'initrd.gz');
  writeFileSync(out, gzipSync(cpio(entries), { level: 1 }));
  return out;
}

/** The VM's memory (`-m`), which a vhost-user VM's memory backend must match (`memfdMemoryArgs`). */
export const VM_MEMORY_MB = 256;

/**
 * Boots the VM with QEMU's network arguments; the serial console is the process's stdout (and,
 * with `stdin`, its input: an interactive initramfs reads commands there, see `VmConsole`).
 */
export function bootVm(assets: VmAssets, initrd: string, netArgs: readonly string[], label: string, netns?: string, opts: { stdin?: boolean } = {}): ManagedProcess {
  if (!existsSync('/usr/bin/qemu-system-x86_64')) throw new Error('qemu-system-x86_64 is missing: install qemu-system-x86 (scripts/deps.sh)');
  return spawnProcess(
    [
      'qemu-system-x86_64',
      '-accel', 'tcg',
      '-m', String(VM_MEMORY_MB),
      '-smp', '1',
      '-nodefaults',
      '-no-reboot',
      '-display', 'none',
      '-serial', 'stdio',
      '-kernel', assets.kernel,
      '-initrd', initrd,
      '-append', 'console=ttyS0 loglevel=1 panic=-1 net.ifnames=0',
      ...netArgs,
    ],
    { label, ...(netns !== undefined ? { netns } : {}), ...(opts.stdin ? { stdin: true } : {}) },
  );
}

/** Serial lines come with CR. */
export function vmLines(p: ManagedProcess): string[] {
  return p.lines.map((l) => l.replace(/\r$/, ''));
}

/** The output of command `name` (between its markers) and its exit code. */
export function commandOutput(p: ManagedProcess, name: string): { out: string; rc: number } | null {
  const lines = vmLines(p);
  const b = lines.indexOf(`MVT-BEGIN ${name}`);
  const e = lines.findIndex((l, i) => i > b && l.startsWith(`MVT-END ${name} rc=`));
  if (b < 0 || e < 0) return null;
  return { out: lines.slice(b + 1, e).join('\n'), rc: Number(lines[e]!.split('rc=')[1]) };
}

/**
 * The commands typed into an interactive VM (`buildInitramfs(…, { interactive: true })`, booted
 * with `bootVm(…, { stdin: true })`). One command at a time, as the VM's shell runs them.
 */
export class VmConsole {
  private n = 0;

  constructor(readonly qemu: ManagedProcess) {}

  /** Resolves once the VM has run its boot commands and waits for typed ones. */
  async ready(timeoutMs: number): Promise<void> {
    await this.qemu.waitForLine((l) => l.replace(/\r$/, '') === 'MVT-READY', { timeoutMs });
  }

  /**
   * Runs `sh` (one line, busybox sh) in the VM and resolves with its output and exit code once
   * the VM prints the end marker. `name` is a word; a counter keeps repeated names apart.
   */
  async run(name: string, sh: string, timeoutMs = 60_000): Promise<{ out: string; rc: number }> {
    if (/[\r\n]/.test(sh)) throw new Error('VmConsole.run: one line of shell, please');
    if (!/^[\w.-]+$/.test(name)) throw new Error(`VmConsole.run: ${name} is not a word`);
    const tag = `${name}.${++this.n}`;
    const from = this.qemu.lines.length;
    const stdin = this.qemu.child.stdin;
    if (!stdin) throw new Error('VmConsole: QEMU was started without stdin (bootVm(…, { stdin: true }))');
    stdin.write(`MVT-RUN ${tag} ${sh}\n`);
    const end = await this.qemu.waitForLine((l) => l.startsWith(`MVT-END ${tag} rc=`), { timeoutMs, fromIndex: from });
    const lines = this.qemu.lines.slice(from).map((l) => l.replace(/\r$/, ''));
    const b = lines.indexOf(`MVT-BEGIN ${tag}`);
    const e = lines.findIndex((l) => l.startsWith(`MVT-END ${tag} rc=`));
    return { out: lines.slice(b + 1, e).join('\n'), rc: Number(end.replace(/\r$/, '').split('rc=')[1]) };
  }
}

/**
 * QEMU's guest memory as a shared memfd, which a vhost-user back-end maps (one per VM, before
 * any vhost-user NIC). Size = `VM_MEMORY_MB`.
 */
export function memfdMemoryArgs(): string[] {
  return ['-object', `memory-backend-memfd,id=mem,size=${VM_MEMORY_MB}M,share=on`, '-numa', 'node,memdev=mem'];
}

/**
 * A virtio-net NIC on a vhost-user back-end listening at `socket` (QEMU is the client;
 * `reconnect=1`: it comes back within a second after the back-end restarts). `vectors=0`: with
 * MSI-X, QEMU 7.2 under TCG crashes when the guest starts the device.
 */
export function vhostUserNicArgs(id: string, socket: string, mac: string): string[] {
  return [
    '-chardev', `socket,id=c${id},path=${socket},reconnect=1`,
    '-netdev', `vhost-user,id=n${id},chardev=c${id}`,
    '-device', `virtio-net-pci,netdev=n${id},mac=${mac},vectors=0`,
  ];
}

/** A virtio-net NIC on a QEMU stream socket QEMU listens on (mvnet's `--unix PATH` connects). */
export function streamNicArgs(id: string, socket: string, mac: string): string[] {
  return ['-netdev', `stream,id=n${id},server=on,addr.type=unix,addr.path=${socket}`, '-device', `virtio-net-pci,netdev=n${id},mac=${mac}`];
}

/**
 * A TCP end for transfers with a VM (run with node inside a namespace, e.g. a TAP VM's):
 *
 *   node F sink PORT [hash]   for each connection: read to EOF, answer "<sha256|-> <bytes>\n",
 *                             close, print {"bytes","sha256","ms"} (ms: first to last byte)
 *   node F source PORT BYTES  for each connection: send BYTES pseudo-random bytes, close, print
 *                             {"bytes","sha256"}; the peer may close its side first (nc does)
 *
 * It prints `listening` once bound. Hashing is optional in the sink so a benchmark's receiver
 * spends no CPU on it.
 */
const TRANSFER_JS = `
import { createServer } from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
const [mode, port, arg] = process.argv.slice(2);
const server = createServer({ allowHalfOpen: true }, (s) => {
  if (mode === 'sink') {
    const h = arg === 'hash' ? createHash('sha256') : null;
    let bytes = 0, t0 = 0, t1 = 0;
    s.on('data', (d) => { if (bytes === 0) t0 = performance.now(); bytes += d.length; t1 = performance.now(); h?.update(d); });
    s.on('end', () => {
      const sha256 = h ? h.digest('hex') : '-';
      s.end(sha256 + ' ' + bytes + '\\n');
      console.log(JSON.stringify({ bytes, sha256, ms: t1 - t0 }));
    });
  } else {
    const total = Number(arg);
    const h = createHash('sha256');
    let left = total;
    const more = () => {
      while (left > 0) {
        const chunk = randomBytes(Math.min(left, 65536));
        left -= chunk.length;
        h.update(chunk);
        if (!s.write(chunk)) return void s.once('drain', more);
      }
      s.end();
      console.log(JSON.stringify({ bytes: total, sha256: h.digest('hex') }));
    };
    more();
  }
  s.on('error', (e) => console.log(JSON.stringify({ error: e.message })));
});
server.listen(Number(port), '0.0.0.0', () => console.log('listening'));
`;

/** Writes the transfer program (see TRANSFER_JS) into `dir`; returns its path. */
export function writeTransferProgram(dir: string): string {
  const f = join(dir, 'vm-transfer.mjs');
  writeFileSync(f, TRANSFER_JS);
  return f;
}
