/**
 * A VM's device: `vm attach` options to the `vm.attach` port parameters, and a port for people.
 * Shared by `vm attach`, its --batch form and `status`, without the commands' definitions.
 */
import fs from 'node:fs';
import type { VmInfo } from '../../daemon/control/api.js';
import { safeText } from '../text.js';
import { CliError, UsageError } from '../client.js';

export interface AttachOpts {
  /** Required, but checked in the action: `--batch` takes it from each entry instead. */
  net?: string;
  tap?: string;
  tun?: string;
  unix?: string;
  /** true: the option without a path (the daemon names the socket after the VM). */
  unixListen?: string | true;
  dgram?: string | true;
  /** A vhost-user socket mvnet listens on (true: named after the VM in the VM socket directory). */
  vhostUser?: string | true;
  dgramPeer?: string;
  fd?: number;
  fifo?: string;
  iface?: string;
  netns?: string;
  mac?: string;
  ip?: string;
  vnetHdr?: boolean;
  multiQueue?: boolean;
  /** A kind a plugin registered, and its options (JSON). */
  kind?: string;
  options?: string;
  /** A device behind `mvnet agent`: the agent's public key, where it connects, and whether it carries a TUN. */
  agent?: string;
  listen?: string;
  agentTun?: boolean;
  /** Return once the device is up (e.g. QEMU connected), within waitTimeout seconds. */
  wait?: boolean;
  waitTimeout?: number;
}

/** Absolute paths: the daemon resolves nothing relative to the CLI's directory. */
function abs(p: string): string {
  return p.startsWith('/') ? p : `${process.cwd()}/${p}`;
}

/** A socket the daemon makes: a bare name (or none) goes to the daemon's VM socket directory. */
function ownSocket(p: string | true): { path?: string } {
  return p === true ? {} : { path: p };
}

export async function portParams(o: AttachOpts, socket: string): Promise<Record<string, unknown>> {
  const chosen = (['tap', 'tun', 'unix', 'unixListen', 'dgram', 'vhostUser', 'fd', 'fifo', 'iface', 'kind', 'agent'] as const).filter((k) => o[k] !== undefined);
  if (chosen.length !== 1) {
    throw new UsageError('give exactly one of --tap, --tun, --unix, --unix-listen, --dgram, --vhost-user, --fd, --fifo, --iface, --kind, --agent');
  }
  if ((o.listen !== undefined || o.agentTun === true) && o.agent === undefined) throw new UsageError('--listen and --agent-tun go with --agent');
  if (o.options !== undefined && o.kind === undefined) throw new UsageError('--options goes with --kind');
  const ns = o.netns !== undefined ? { netns: o.netns } : {};
  if (o.dgramPeer !== undefined && o.dgram === undefined) throw new UsageError('--dgram-peer needs --dgram');
  if (o.vnetHdr === true && o.tap === undefined) throw new UsageError('--vnet-hdr applies to --tap only');
  switch (chosen[0]) {
    case 'tap':
      return { kind: 'tap', ifname: o.tap, ...ns, ...(o.vnetHdr ? { vnetHdr: true } : {}), ...(o.multiQueue ? { multiQueue: true } : {}) };
    case 'tun':
      return { kind: 'tun', ifname: o.tun, ...ns };
    case 'iface':
      return { kind: 'iface', ifname: o.iface, ...ns };
    case 'unix':
      return { kind: 'unix', path: abs(o.unix!), ...ns };
    case 'unixListen':
      return { kind: 'unix-listen', ...ownSocket(o.unixListen!), ...ns };
    case 'vhostUser':
      return { kind: 'vhost-user', ...ownSocket(o.vhostUser!), ...ns };
    case 'dgram':
      return { kind: 'dgram', ...ownSocket(o.dgram!), ...(o.dgramPeer !== undefined ? { peer: abs(o.dgramPeer) } : {}), ...ns };
    case 'fd': {
      // The daemon never takes a descriptor number: this process sends its own fd N (SCM_RIGHTS).
      // A descriptor this process does not have is a bad argument (exit 2), found before the daemon is asked.
      try {
        fs.fstatSync(o.fd!);
      } catch {
        throw new UsageError(`--fd ${o.fd}: fd ${o.fd} is not open in this process`);
      }
      // Loaded only for --fd: it loads the native addon.
      const { passFd } = await import('../../plugins/fd/pass.js');
      try {
        return { kind: 'fd', token: passFd(socket, o.fd!), ...ns };
      } catch (e) {
        throw new CliError(`--fd ${o.fd}: ${(e as Error).message}`);
      }
    }
    case 'fifo': {
      const parts = o.fifo!.split(':');
      if (parts.length !== 2 || parts[0] === '' || parts[1] === '') throw new UsageError('--fifo takes RX_PATH:TX_PATH');
      return { kind: 'fifo', rx: abs(parts[0]!), tx: abs(parts[1]!), ...ns };
    }
    case 'kind': {
      if (o.netns !== undefined) throw new UsageError('--netns applies to --tap, --tun and --iface only');
      let options: unknown = {};
      if (o.options !== undefined) {
        try {
          options = JSON.parse(o.options);
        } catch (e) {
          throw new UsageError(`--options is not JSON: ${e instanceof Error ? e.message : String(e)}`);
        }
      }
      return { kind: 'plugin', driver: o.kind, options };
    }
    case 'agent':
      if (o.netns !== undefined) throw new UsageError('--netns does not apply to --agent (the device is where the agent runs)');
      if (o.listen === undefined) throw new UsageError('--agent needs --listen: where the agent connects (udp:PORT, tcp:PORT, unix:PATH, onion)');
      return { kind: 'agent', peer: o.agent, listen: o.listen, ...(o.agentTun === true ? { layer: 3 } : {}) };
    default:
      throw new UsageError('no device given');
  }
}

export function describePort(p: VmInfo['port']): string {
  if (p.kind === 'plugin') return `${p.driver} ${JSON.stringify(p.options)}`;
  if (p.kind === 'agent') return `agent ${p.peer} on ${p.listen ?? '?'}${p.layer === 3 ? ' (TUN)' : ''}`;
  const where = 'ifname' in p ? p.ifname : 'path' in p ? p.path : p.kind === 'fd' ? '(passed)' : `${p.rx}:${p.tx}`;
  const netns = 'netns' in p ? p.netns : null;
  return `${p.kind} ${where}${netns !== null ? ` (netns ${netns})` : ''}`;
}

/** A port's state for people: degraded with why. */
export function portState(p: VmInfo['port']): string {
  return p.state === 'degraded' && p.lastError !== null ? `degraded (${safeText(p.lastError)})` : p.state;
}
