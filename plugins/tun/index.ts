/**
 * `--tun NAME [--netns NS]`: a layer-3 TUN device (IFF_TUN | IFF_NO_PI): frames are bare
 * IPv4/IPv6 packets. Persistent like the TAP (survives a daemon restart, deleted on detach if mvnet created it);
 * the MTU is the network's and the device is brought up. No MAC, no vnet header.
 */
import { netnsPath } from '../native/index.js';
import { PersistentTunPort, openPersistentTun } from '../native/tun-port.js';
import type { DeviceRecord, PortContext, PortDriver, PortSpec } from '../types.js';

type Spec = Extract<PortSpec, { kind: 'tun' }>;

class TunPort extends PersistentTunPort {
  constructor(ifname: string, netns: string | undefined, fd: number, device: DeviceRecord, ctx: PortContext) {
    super(ifname, netns, fd, false, device, { kind: 'tun', layer: 3, maxFrame: ctx.mtu, vnet: 'none', log: ctx.log });
  }
}

export const tunDriver: PortDriver<Spec> = {
  kind: 'tun',
  async open(spec, ctx) {
    const netns = spec.netns !== undefined ? netnsPath(spec.netns) : undefined;
    return openPersistentTun({ name: spec.ifname, tap: false, netns }, ctx, undefined, (name, fd, device) => new TunPort(name, netns, fd, device, ctx));
  },
};
