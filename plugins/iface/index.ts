/**
 * `--iface NAME [--netns NS]`: an existing interface (a veth end, a QEMU-made TAP, a bridge
 * port…) joined through an AF_PACKET socket: promiscuous, every protocol, our own writes not
 * read back (PACKET_IGNORE_OUTGOING). The interface is not ours: it is never created, changed
 * or deleted.
 *
 * Veths and TAPs hand AF_PACKET sockets GSO super-frames and frames whose checksum is left to
 * "hardware". The socket is therefore opened with PACKET_VNET_HDR, so each read says what it
 * is, and daemon/wire/gso.ts turns such frames into plain, checksummed Ethernet frames.
 * Writes carry an all-zero virtio_net_hdr (prepended by the device): plain frames, no offload.
 */
import { normalizeOffload } from '../../daemon/wire/gso.js';
import { DevicePort, deviceLabel } from '../native/device-port.js';
import { native, netnsPath } from '../native/index.js';
import type { PortContext, PortDriver, PortSpec } from '../types.js';
import { maxFrameFor } from '../types.js';

type Spec = Extract<PortSpec, { kind: 'iface' }>;

class IfacePort extends DevicePort {
  constructor(name: string, fd: number, ctx: PortContext) {
    super({
      kind: 'iface',
      name,
      layer: 2,
      fd,
      mode: 'packet',
      maxFrame: maxFrameFor(ctx.mtu),
      vnet: 'normalize',
      normalize: normalizeOffload,
      log: ctx.log,
    });
  }

  protected upDetail(): string {
    return `interface ${this.name}`;
  }
}

export const ifaceDriver: PortDriver<Spec> = {
  kind: 'iface',
  async open(spec, ctx) {
    const netns = spec.netns !== undefined ? netnsPath(spec.netns) : undefined;
    const label = deviceLabel(spec.ifname, netns);
    if (native.ifIndex(spec.ifname, netns) === 0) {
      throw new Error(`interface ${spec.ifname} does not exist${netns ? ` in ${netns}` : ''}; an iface port joins an existing interface`);
    }
    // The host's own traffic (127.0.0.1, its services) would become a VM's network.
    if (native.linkInfo(spec.ifname, netns).loopback) throw new Error(`interface ${spec.ifname} is a loopback interface; it cannot be a VM's device`);
    const { fd } = native.openPacket({ ifname: spec.ifname, netns, vnetHdr: true });
    const port = new IfacePort(label, fd, ctx);
    ctx.log.info({ port: label }, 'joined interface');
    return port;
  },
};
