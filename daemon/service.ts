/**
 * The daemon as a service: systemd's readiness protocol (sd_notify, for `Type=notify`) and the
 * capabilities it keeps after start. Both through the addon (plugins/native/src/process.cc):
 * Node has no unix datagram sockets and no capset.
 */
import { native } from '../plugins/native/index.js';
import type { Logger } from './log.js';

/**
 * Sends state lines to $NOTIFY_SOCKET when systemd (or a test) set it; a no-op otherwise. The
 * variable is taken out of the environment so that children (tor) do not talk to systemd as us.
 */
export class SdNotifier {
  private readonly socket: string | undefined;

  constructor(
    private readonly log: Logger,
    env: NodeJS.ProcessEnv = process.env,
  ) {
    const s = env.NOTIFY_SOCKET;
    this.socket = s !== undefined && s !== '' ? s : undefined;
    delete env.NOTIFY_SOCKET;
  }

  get enabled(): boolean {
    return this.socket !== undefined;
  }

  /** One notification: `{ READY: '1', STATUS: '…' }` becomes "READY=1\nSTATUS=…". Failures are logged, never thrown: systemd going away must not stop routing. */
  notify(fields: Record<string, string>): void {
    if (this.socket === undefined) return;
    const msg = Object.entries(fields)
      .map(([k, v]) => `${k}=${v.replace(/\n/g, ' ')}`)
      .join('\n');
    try {
      if (!native.sdNotify(this.socket, msg)) this.log.warn({ socket: this.socket, message: msg }, 'sd_notify dropped: the service manager\'s queue is full');
    } catch (e) {
      this.log.warn({ err: (e as Error).message, socket: this.socket }, 'sd_notify failed');
    }
  }

  /** RELOADING=1 with the CLOCK_MONOTONIC time systemd 253+ requires (uv_hrtime reads that clock); older versions ignore the field. */
  reloading(status: string): void {
    this.notify({ RELOADING: '1', MONOTONIC_USEC: String(process.hrtime.bigint() / 1000n), STATUS: status });
  }
}

/**
 * The capabilities the daemon keeps (and the systemd unit's CapabilityBoundingSet lists): TAP
 * and AF_PACKET, raw ICMP, setns into VM namespaces, low ports, others' root-owned sockets, and
 * running tor as its own user (setuid/setgid, its data dir's owner, signalling it).
 * CAP_SYS_PTRACE: opening /proc/PID/ns/net of another user's process (QEMU as libvirt-qemu, a
 * rootless container in the OCI hook, `--netns /proc/PID/ns/net`) passes the kernel's ptrace
 * access check only with it; without it root gets EACCES there.
 */
export const KEPT_CAPS: Readonly<Record<string, number>> = {
  CAP_CHOWN: 0,
  CAP_DAC_OVERRIDE: 1,
  CAP_FOWNER: 3,
  CAP_KILL: 5,
  CAP_SETGID: 6,
  CAP_SETUID: 7,
  CAP_NET_BIND_SERVICE: 10,
  CAP_NET_ADMIN: 12,
  CAP_NET_RAW: 13,
  CAP_SYS_PTRACE: 19,
  CAP_SYS_ADMIN: 21,
};

/** Capability names by number (capability.h), for the log. */
const CAP_NAMES = [
  'chown', 'dac_override', 'dac_read_search', 'fowner', 'fsetid', 'kill', 'setgid', 'setuid', 'setpcap', 'linux_immutable',
  'net_bind_service', 'net_broadcast', 'net_admin', 'net_raw', 'ipc_lock', 'ipc_owner', 'sys_module', 'sys_rawio', 'sys_chroot',
  'sys_ptrace', 'sys_pacct', 'sys_admin', 'sys_boot', 'sys_nice', 'sys_resource', 'sys_time', 'sys_tty_config', 'mknod', 'lease',
  'audit_write', 'audit_control', 'setfcap', 'mac_override', 'mac_admin', 'syslog', 'wake_alarm', 'block_suspend', 'audit_read',
  'perfmon', 'bpf', 'checkpoint_restore',
];

export function capName(n: number): string {
  return `CAP_${(CAP_NAMES[n] ?? String(n)).toUpperCase()}`;
}

/**
 * As root, keeps only KEPT_CAPS (bounding, effective, permitted, inheritable, in every thread)
 * and logs what went. Not root: nothing to do (the service manager or file capabilities gave
 * what it has). A failure is logged: the daemon still works with what it had.
 */
export function dropCapabilities(log: Logger): void {
  if (process.geteuid?.() !== 0) {
    log.debug('not root: capabilities left as the service manager gave them');
    return;
  }
  try {
    const r = native.dropCaps(Object.values(KEPT_CAPS));
    // `unchanged`: threads that block every signal (Node 20's SIGUSR1 watcher), expected; see README, Security model.
    const info = { dropped: r.dropped.map(capName), kept: Object.keys(KEPT_CAPS), boundingSet: r.bounding, threads: r.threads, unchanged: r.blocked };
    if (r.failed > 0) log.warn({ ...info, failed: r.failed }, 'capabilities dropped, but not in every thread');
    else log.info(info, 'capabilities dropped');
  } catch (e) {
    log.warn({ err: (e as Error).message }, 'capabilities not dropped');
  }
}
