/**
 * `--tun NAME [--netns NS]`: a layer-3 TUN device (IFF_TUN | IFF_NO_PI): frames are bare
 * IPv4/IPv6 packets. Persistent like the TAP (survives a daemon restart, deleted on detach);
 * the MTU is the network's and the device is brought up. No MAC, no vnet header.
 */
import fs from 'node:fs';
import { DevicePort, deviceLabel } from '../native/device-port.js';
import { native, netnsPath } from '../native/index.js';
import type { PortContext, PortDriver, PortSpec } from '../types.js';

type Spec = Extract<PortSpec, { kind: 'tun' }>;

class TunPort extends DevicePort {
  constructor(
    private readonly ifname: string,
    private readonly netns: string | undefined,
    private readonly fd: number,
    ctx: PortContext,
  ) {
    super({
      kind: 'tun',
      name: deviceLabel(ifname, netns),
      layer: 3,
      fd,
      mode: 'packet',
      maxFrame: ctx.mtu,
      vnet: 'none',
      log: ctx.log,
    });
  }

  protected upDetail(): string {
    return `tun ${this.name}`;
  }

  protected override beforeClose(remove: boolean): void {
    if (!remove) return;
    try {
      native.setPersist(this.fd, false);
    } catch (err) {
      this.log.warn({ port: this.name, err }, 'could not clear TUNSETPERSIST; removing by name');
    }
  }

  protected override afterClose(remove: boolean): void {
    if (!remove) return;
    try {
      native.removeTun(this.ifname, false, this.netns);
    } catch (err) {
      this.log.warn({ port: this.name, err }, 'could not remove the tun device');
    }
  }
}

export const tunDriver: PortDriver<Spec> = {
  kind: 'tun',
  async open(spec, ctx) {
    const netns = spec.netns !== undefined ? netnsPath(spec.netns) : undefined;
    const r = native.openTun({ name: spec.ifname, tap: false, netns });
    try {
      native.setPersist(r.fd, true);
      native.configureLink({ name: r.name, netns, mtu: ctx.mtu, up: true });
      const port = new TunPort(r.name, netns, r.fd, ctx);
      ctx.log.info(
        { port: port.name, created: r.created, restoring: ctx.restoring },
        r.created ? 'tun device created' : 'attached to an existing tun device',
      );
      return port;
    } catch (err) {
      if (r.created) {
        try {
          native.setPersist(r.fd, false);
        } catch {
          // closing still detaches
        }
      }
      fs.closeSync(r.fd);
      throw err;
    }
  },
};
