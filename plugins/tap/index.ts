/**
 * `--tap NAME [--netns NS] [--mac MAC] [--vnet-hdr]`: a TAP device the daemon creates (or
 * re-attaches to), inside the VM's namespace when one is given. The device is made persistent
 * so that it outlives the daemon: a restarted daemon re-attaches to the same device and the VM
 * (or whatever holds the other side) keeps its link. Only `close({ remove: true })` — detach —
 * deletes it, and only if mvnet created it (a TAP that was there before is given back as it was).
 *
 * With `vnetHdr`, every frame in both directions starts with a 10-byte virtio_net_hdr and the
 * kernel may hand us TSO super-frames and frames with partial checksums (TUNSETOFFLOAD).
 */
import { deviceMacBytes } from '../native/device-port.js';
import { netnsPath } from '../native/index.js';
import { PersistentTunPort, openPersistentTun } from '../native/tun-port.js';
import type { DeviceRecord, PortContext, PortDriver, PortSpec } from '../types.js';
import { maxFrameFor } from '../types.js';

type Spec = Extract<PortSpec, { kind: 'tap' }>;

class TapPort extends PersistentTunPort {
  constructor(ifname: string, netns: string | undefined, fd: number, device: DeviceRecord, vnetHdr: boolean, ctx: PortContext) {
    super(ifname, netns, fd, true, device, { kind: 'tap', layer: 2, maxFrame: maxFrameFor(ctx.mtu), vnet: vnetHdr ? 'pass' : 'none', log: ctx.log });
  }
}

export const tapDriver: PortDriver<Spec> = {
  kind: 'tap',
  async open(spec, ctx) {
    const netns = spec.netns !== undefined ? netnsPath(spec.netns) : undefined;
    const mac = spec.mac !== undefined ? deviceMacBytes(spec.mac) : undefined;
    const vnetHdr = spec.vnetHdr ?? false;
    return openPersistentTun(
      { name: spec.ifname, tap: true, vnetHdr, multiQueue: spec.multiQueue ?? false, netns },
      ctx,
      mac,
      (name, fd, device) => new TapPort(name, netns, fd, device, vnetHdr, ctx),
      { vnetHdr },
    );
  },
};
