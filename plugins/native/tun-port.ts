/**
 * What the tap and tun drivers share: a /dev/net/tun device made persistent so it outlives the
 * daemon (a restarted daemon re-attaches to it), deleted only by `close({ remove: true })`
 * (detach); and the open that leaves no half-configured device behind.
 */
import fs from 'node:fs';
import { DevicePort, deviceLabel, type DevicePortConfig } from './device-port.js';
import { native } from './index.js';
import type { OpenTunOptions } from './types.js';
import type { Port, PortContext } from '../types.js';

export abstract class PersistentTunPort extends DevicePort {
  constructor(
    private readonly ifname: string,
    private readonly netns: string | undefined,
    private readonly fd: number,
    private readonly tap: boolean,
    cfg: Omit<DevicePortConfig, 'name' | 'fd' | 'mode'>,
  ) {
    super({ ...cfg, name: deviceLabel(ifname, netns), fd, mode: 'packet' });
  }

  protected upDetail(): string {
    return `${this.kind} ${this.name}`;
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
      native.removeTun(this.ifname, this.tap, this.netns);
    } catch (err) {
      this.log.warn({ port: this.name, err }, `could not remove the ${this.kind} device`);
    }
  }
}

/**
 * Opens (or re-attaches to) the device, makes it persistent, sets MTU (and MAC) and brings it
 * up, then builds the port; on failure a device we created is not left behind.
 */
export function openPersistentTun(
  opts: OpenTunOptions,
  ctx: PortContext,
  mac: Buffer | undefined,
  make: (name: string, fd: number) => Port,
  logFields: Record<string, unknown> = {},
): Port {
  const kind = opts.tap ? 'tap' : 'tun';
  const r = native.openTun(opts);
  try {
    native.setPersist(r.fd, true);
    native.configureLink({ name: r.name, netns: opts.netns, mtu: ctx.mtu, mac, up: true });
    const port = make(r.name, r.fd);
    ctx.log.info({ port: port.name, created: r.created, restoring: ctx.restoring, ...logFields }, r.created ? `${kind} device created` : `attached to an existing ${kind} device`);
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
}
