import { Command, InvalidArgumentError } from 'commander';
import type { Ctx } from '../context.js';
import { confirm, print, table } from '../output.js';
import { safeText } from '../text.js';
import { describePort, portParams, portState, type AttachOpts } from './vm-port.js';
import type { VmDetachResult, VmInfo } from '../../daemon/control/api.js';
import { CliError, UsageError } from '../client.js';
import { parseIntArg } from './net.js';
import { waitVmUp } from './vm-wait.js';

export function vmCommand(ctx: Ctx): Command {
  const vm = new Command('vm').description("VMs' devices on networks");
  vm.command('attach [vm]')
    .description('attach a VM device or socket to a network (--batch: many, from a JSON array)')
    // Required unless --batch (checked in the action: each entry of a batch names its own).
    .option('--net <name>', 'network to attach to')
    .option('--tap <ifname>', 'a TAP device (created if missing; removed at detach if created)')
    .option('--tun <ifname>', 'a TUN device (IP packets; mvnet answers ARP for it)')
    .option('--unix <path>', "connect to QEMU's -netdev stream server=on socket (reconnects)")
    .option('--unix-listen [path]', 'listen for QEMU -netdev stream server=off to connect (a bare name or none: in the VM socket directory)')
    .option('--dgram [path]', 'bind this unix datagram socket for QEMU -netdev dgram (a bare name or none: in the VM socket directory)')
    .option('--vhost-user [path]', 'be the vhost-user back-end QEMU connects to (-chardev socket,path=PATH,reconnect=1 -netdev vhost-user; its memory shared: memory-backend-memfd,share=on); a bare name or none: in the VM socket directory')
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
    .option('--batch <file>', 'attach every VM of a JSON array in FILE (- for stdin) over one connection: objects with vm, net and the options above in camelCase (unixListen, vhostUser, vnetHdr, …) but fd and wait')
    .action(async (name: string | undefined, o: AttachOpts & { batch?: string }) => {
      if (o.batch !== undefined) {
        const given = Object.keys(o).filter((k) => k !== 'batch');
        if (name !== undefined || given.length > 0) throw new UsageError('--batch takes every VM from its file: give no VM name and no other option of vm attach');
        // Loaded only for --batch.
        const { attachBatch } = await import('./vm-batch.js');
        return attachBatch(ctx, o.batch);
      }
      if (name === undefined) throw new UsageError("missing required argument 'vm' (or give --batch FILE)");
      if (o.net === undefined) throw new UsageError("required option '--net <name>' not specified");
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
