/**
 * `--dgram PATH [--dgram-peer PEER]`: a unix datagram socket bound at PATH, one Ethernet frame
 * per datagram — QEMU's `-netdev dgram,local.type=unix,local.path=PEER,remote.type=unix,
 * remote.path=PATH`. Frames go to PEER when given, otherwise to whoever sent us the last
 * datagram (QEMU sends from its bound local path), so the port waits for the VM's first
 * datagram before it can send.
 */
import fs from 'node:fs';
import { DevicePort } from '../native/device-port.js';
import { native } from '../native/index.js';
import type { PortContext, PortDriver, PortSpec, PortStatus } from '../types.js';
import { maxFrameFor } from '../types.js';

type Spec = Extract<PortSpec, { kind: 'dgram' }>;

class DgramPort extends DevicePort {
  constructor(
    private readonly path: string,
    fd: number,
    ctx: PortContext,
  ) {
    super({
      kind: 'dgram',
      name: path,
      layer: 2,
      fd,
      mode: 'dgram',
      maxFrame: maxFrameFor(ctx.mtu),
      vnet: 'none',
      log: ctx.log,
    });
  }

  /** The peer's socket path, once known. */
  peer(): string | undefined {
    return this.closed ? undefined : this.device.stats().peer;
  }

  setPeer(path: string): void {
    this.device.setPeer(path);
  }

  protected upDetail(): string {
    return `sending to ${this.peer() ?? '?'}`;
  }

  override status(): PortStatus {
    const s = super.status();
    if (s.state === 'up' && this.peer() === undefined) {
      return { state: 'waiting', detail: "waiting for the VM's first datagram" };
    }
    return s;
  }

  protected override afterClose(remove: boolean): void {
    if (!remove) return;
    try {
      if (fs.lstatSync(this.path).isSocket()) fs.rmSync(this.path, { force: true });
    } catch {
      // already gone
    }
  }
}

export const dgramDriver: PortDriver<Spec> = {
  kind: 'dgram',
  async open(spec, ctx) {
    const { fd } = native.openUnixDgram({ path: spec.path });
    let port: DgramPort;
    try {
      port = new DgramPort(spec.path, fd, ctx);
    } catch (err) {
      fs.closeSync(fd);
      fs.rmSync(spec.path, { force: true });
      throw err;
    }
    if (spec.peer !== undefined) port.setPeer(spec.peer);
    ctx.log.info({ port: spec.path, peer: spec.peer }, 'datagram socket bound');
    return port;
  },
};
