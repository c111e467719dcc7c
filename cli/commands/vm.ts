import fs from 'node:fs';
import { Command, InvalidArgumentError } from 'commander';
import type { Ctx } from '../context.js';
import { confirm, print, table } from '../output.js';
import { safeText } from '../text.js';
import type { VmDetachResult, VmInfo } from '../../daemon/control/api.js';
import { CliError, UsageError } from '../client.js';
import { parseIntArg } from './net.js';
import { waitVmUp } from './vm-wait.js';

interface AttachOpts {
  net: string;
  tap?: string;
  tun?: string;
  unix?: string;
  /** true: the option without a path (the daemon names the socket after the VM). */
  unixListen?: string | true;
  dgram?: string | true;
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

async function portParams(o: AttachOpts, socket: string): Promise<Record<string, unknown>> {
  const chosen = (['tap', 'tun', 'unix', 'unixListen', 'dgram', 'fd', 'fifo', 'iface', 'kind', 'agent'] as const).filter((k) => o[k] !== undefined);
  if (chosen.length !== 1) {
    throw new UsageError('give exactly one of --tap, --tun, --unix, --unix-listen, --dgram, --fd, --fifo, --iface, --kind, --agent');
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

export function vmCommand(ctx: Ctx): Command {
  const vm = new Command('vm').description("VMs' devices on networks");
  vm.command('attach <vm>')
    .description('attach a VM device or socket to a network')
    .requiredOption('--net <name>', 'network to attach to')
    .option('--tap <ifname>', 'a TAP device (created if missing; removed at detach if created)')
    .option('--tun <ifname>', 'a TUN device (IP packets; mvnet answers ARP for it)')
    .option('--unix <path>', "connect to QEMU's -netdev stream server=on socket (reconnects)")
    .option('--unix-listen [path]', 'listen for QEMU -netdev stream server=off to connect (a bare name or none: in the VM socket directory)')
    .option('--dgram [path]', 'bind this unix datagram socket for QEMU -netdev dgram (a bare name or none: in the VM socket directory)')
    .option('--dgram-peer <path>', "QEMU's own datagram socket path (else learned from its first datagram)")
    .option('--fd <n>', "this command's own fd N (e.g. a socketpair end shared with QEMU), passed to the daemon; stream framing", parseIntArg('--fd', 0, 65535))
    .option('--fifo <rx:tx>', 'two FIFOs (daemon reads rx, writes tx), stream framing')
    .option('--iface <ifname>', 'an existing interface, through an AF_PACKET socket')
    .option('--kind <kind>', 'a kind of device a plugin registered (see the config key plugins)')
    .option('--options <json>', 'with --kind: its options, a JSON object the plugin checks')
    .option('--netns <name|path>', 'create/open the device inside this network namespace')
    .option('--mac <mac>', "the VM's MAC: the only source MAC it may use (else learned from its first frame)")
    .option('--ip <ip>', "the VM's IPv4 address, or 'auto' (the daemon picks a free one)")
    .option('--vnet-hdr', 'TAP with virtio-net header offloads (TSO, checksum)')
    .option('--multi-queue', 'TAP with IFF_MULTI_QUEUE')
    .option('--agent <pubkey>', 'a device behind `mvnet agent` on another host or VM: the agent key (mvnet key show), over an encrypted link')
    .option('--listen <spec>', 'with --agent: where the agent connects: udp:PORT, tcp:PORT, unix:PATH, onion[:PORT] (shared with links that name it)')
    .option('--agent-tun', 'with --agent: the agent carries a TUN (IP packets) rather than Ethernet frames; give --ip')
    .option('--wait', 'return once the device is up (e.g. QEMU connected to a listening socket)')
    .option('--wait-timeout <s>', 'with --wait: give up after S seconds (default 60)', parseIntArg('--wait-timeout', 1, 86_400))
    .action(async (name: string, o: AttachOpts) => {
      if (o.waitTimeout !== undefined && o.wait !== true) throw new CliError('--wait-timeout goes with --wait');
      const params: Record<string, unknown> = { name, net: o.net, port: await portParams(o, ctx.socket()) };
      if (o.mac !== undefined) params.mac = o.mac;
      if (o.ip !== undefined) params.ip = o.ip;
      let v = await ctx.call<VmInfo>('vm.attach', params);
      if (o.wait === true && v.port.state !== 'up') v = await waitVmUp(ctx, name, (o.waitTimeout ?? 60) * 1000);
      confirm(ctx, v, () => `attached ${v.name} to ${v.net} by ${describePort(v.port)}: ${v.port.state} (${v.port.detail})`);
    });
  vm.command('detach <vm>')
    .description('detach a VM (removes devices and sockets mvnet created for it)')
    .action(async (name: string) => {
      const r = await ctx.call<VmDetachResult>('vm.detach', { name });
      confirm(ctx, r, () => `detached ${r.detached}`);
    });
  vm.command('list')
    .description('list attached VMs')
    .action(async () => {
      const vms = await ctx.call<VmInfo[]>('vm.list');
      print(ctx.json(), vms, () =>
        vms.length === 0
          ? 'no VMs attached'
          : table(
              ['VM', 'NET', 'DEVICE', 'MAC', 'IP', 'STATE'],
              vms.map((v) => [v.name, v.net, describePort(v.port), v.mac ?? '-', v.ip ?? '-', `${portState(v.port)}: ${safeText(v.port.detail)}`]),
            ),
      );
    });
  return vm;
}

export { InvalidArgumentError };
