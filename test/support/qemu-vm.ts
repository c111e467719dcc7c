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
 * and powers off. Everything the VM prints is a stdout line of the QEMU process, so a test
 * waits for lines (events), never for time.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { REPO_ROOT } from './daemon.js';
import { spawnProcess, type ManagedProcess } from './netns.js';

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

/**
 * Writes `<dir>/initrd.gz`: busybox, the virtio-net modules, and an /init that brings up eth0
 * by DHCP and then runs `commands`. Lines it prints: `MVT-INIT`, `MVT-LEASE ip=… mask=…
 * router=… dns=… domain=…` (or `MVT-NOLEASE`), the commands' output between their markers,
 * `MVT-DONE`.
 */
export function buildInitramfs(dir: string, assets: VmAssets, commands: VmCommand[]): string {
  const udhcpc = [
    '#!/bin/sh',
    'case "$1" in',
    '  bound|renew)',
    '    ip addr flush dev "$interface"',
    '    ip addr add "$ip/$mask" dev "$interface"',
    '    [ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu"',
    '    [ -n "$router" ] && ip route add default via "${router%% *}" dev "$interface"',
    '    echo "nameserver ${dns%% *}" > /etc/resolv.conf',
    '    echo "MVT-LEASE ip=$ip mask=$mask router=$router dns=$dns domain=$domain mtu=$mtu"',
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
    // The kernel probes the PCI device after insmod returns: wait for eth0 inside the VM.
    'i=0; while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done',
    'ip link set eth0 up',
    'echo "MVT-MAC $(cat /sys/class/net/eth0/address)"',
    'udhcpc -i eth0 -s /etc/udhcpc.sh -n -q -t 20 -T 1 -A 1 2>&1 || echo MVT-NOLEASE',
    body,
    'echo MVT-DONE',
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

/** Boots the VM with QEMU's network arguments; the serial console is the process's stdout. */
export function bootVm(assets: VmAssets, initrd: string, netArgs: readonly string[], label: string, netns?: string): ManagedProcess {
  if (!existsSync('/usr/bin/qemu-system-x86_64')) throw new Error('qemu-system-x86_64 is missing: install qemu-system-x86 (scripts/deps.sh)');
  return spawnProcess(
    [
      'qemu-system-x86_64',
      '-accel', 'tcg',
      '-m', '256',
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
    { label, ...(netns !== undefined ? { netns } : {}) },
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
