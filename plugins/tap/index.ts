/**
 * `--tap NAME [--netns NS] [--mac MAC] [--vnet-hdr]`: a TAP device the daemon creates (or
 * re-attaches to), inside the VM's namespace when one is given. The device is made persistent
 * so that it outlives the daemon: a restarted daemon re-attaches to the same device and the VM
 * (or whatever holds the other side) keeps its link. Only `close({ remove: true })` — detach —
 * deletes it.
 *
 * With `vnetHdr`, every frame in both directions starts with a 10-byte virtio_net_hdr and the
 * kernel may hand us TSO super-frames and frames with partial checksums (TUNSETOFFLOAD).
 */
import fs from 'node:fs';
import { DevicePort, deviceLabel, parseMac } from '../native/device-port.js';
import { native, netnsPath } from '../native/index.js';
import type { PortContext, PortDriver, PortSpec } from '../types.js';
import { maxFrameFor } from '../types.js';

type Spec = Extract<PortSpec, { kind: 'tap' }>;

class TapPort extends DevicePort {
  constructor(
    private readonly ifname: string,
    private readonly netns: string | undefined,
    private readonly fd: number,
    vnetHdr: boolean,
    ctx: PortContext,
  ) {
    super({
      kind: 'tap',
      name: deviceLabel(ifname, netns),
      layer: 2,
      fd,
      mode: 'packet',
      maxFrame: maxFrameFor(ctx.mtu),
      vnet: vnetHdr ? 'pass' : 'none',
      log: ctx.log,
    });
  }

  protected upDetail(): string {
    return `tap ${this.name}`;
  }

  protected override beforeClose(remove: boolean): void {
    if (!remove) return;
    // Not persistent any more: the kernel deletes the device when our fd closes.
    try {
      native.setPersist(this.fd, false);
    } catch (err) {
      this.log.warn({ port: this.name, err }, 'could not clear TUNSETPERSIST; removing by name');
    }
  }

  protected override afterClose(remove: boolean): void {
    if (!remove) return;
    try {
      native.removeTun(this.ifname, true, this.netns);
    } catch (err) {
      this.log.warn({ port: this.name, err }, 'could not remove the tap device');
    }
  }
}

export const tapDriver: PortDriver<Spec> = {
  kind: 'tap',
  async open(spec, ctx) {
    const netns = spec.netns !== undefined ? netnsPath(spec.netns) : undefined;
    const mac = spec.mac !== undefined ? parseMac(spec.mac) : undefined;
    const vnetHdr = spec.vnetHdr ?? false;
    const r = native.openTun({ name: spec.ifname, tap: true, vnetHdr, multiQueue: spec.multiQueue ?? false, netns });
    try {
      native.setPersist(r.fd, true);
      native.configureLink({ name: r.name, netns, mtu: ctx.mtu, mac, up: true });
      const port = new TapPort(r.name, netns, r.fd, vnetHdr, ctx);
      ctx.log.info(
        { port: port.name, created: r.created, restoring: ctx.restoring, vnetHdr },
        r.created ? 'tap device created' : 'attached to an existing tap device',
      );
      return port;
    } catch (err) {
      // Leave no half-configured device behind that we made ourselves.
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
