/**
 * `--dgram PATH [--dgram-peer PEER]`: a unix datagram socket bound at PATH, one Ethernet frame
 * per datagram — QEMU's `-netdev dgram,local.type=unix,local.path=PEER,remote.type=unix,
 * remote.path=PATH`. Frames go to PEER when given, otherwise to whoever sent us the last
 * datagram (QEMU sends from its bound local path), so the port waits for the VM's first
 * datagram before it can send. PATH is made by common/socket-path.ts (never over a live socket
 * or through a symlink; only that file is removed at detach); PEER must be a socket if it exists.
 */
import fs from 'node:fs';
import { DevicePort } from '../native/device-port.js';
import { native } from '../native/index.js';
import type { PortContext, PortDriver, PortSpec, PortStatus } from '../types.js';
import { maxFrameFor } from '../types.js';
import { checkPeerSocket, createSocketAt, removeOwnSocket, type FileId } from '../common/socket-path.js';

type Spec = Extract<PortSpec, { kind: 'dgram' }>;

class DgramPort extends DevicePort {
  constructor(
    path: string,
    /** Where the socket was made (its directory's real path) and which file it is. */
    private readonly made: { path: string; id: FileId },
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

  /**
   * The peer read at the start of the status() in progress (null: none in progress). status()
   * runs every second for every VM (the events watch) and for each in `mvnet status`: one
   * native stats() for the peer instead of two.
   */
  private statusPeer: string | undefined | null = null;

  /** The peer's socket path, once known. */
  peer(): string | undefined {
    return this.closed ? undefined : this.device.stats().peer;
  }

  setPeer(path: string): void {
    this.device.setPeer(path);
  }

  protected upDetail(): string {
    return `sending to ${(this.statusPeer !== null ? this.statusPeer : this.peer()) ?? '?'}`;
  }

  override status(): PortStatus {
    this.statusPeer = this.peer();
    try {
      const s = super.status();
      if (s.state === 'up' && this.statusPeer === undefined) {
        return { state: 'waiting', detail: "waiting for the VM's first datagram" };
      }
      return s;
    } finally {
      this.statusPeer = null;
    }
  }

  protected override afterClose(remove: boolean): void {
    if (remove) removeOwnSocket(this.made.path, this.made.id);
  }
}

export const dgramDriver: PortDriver<Spec> = {
  kind: 'dgram',
  async open(spec, ctx) {
    if (spec.peer !== undefined) checkPeerSocket(spec.peer);
    const made = await createSocketAt(
      spec.path,
      ctx.socketGid,
      (tmp) => native.openUnixDgram({ path: tmp }).fd,
      (fd) => fs.closeSync(fd),
    );
    let port: DgramPort;
    try {
      port = new DgramPort(spec.path, { path: made.path, id: made.id }, made.value, ctx);
    } catch (err) {
      fs.closeSync(made.value);
      removeOwnSocket(made.path, made.id);
      throw err;
    }
    if (spec.peer !== undefined) port.setPeer(spec.peer);
    ctx.log.info({ port: spec.path, peer: spec.peer }, 'datagram socket bound');
    return port;
  },
};
