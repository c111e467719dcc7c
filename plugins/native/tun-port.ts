/**
 * What the tap and tun drivers share: a /dev/net/tun device made persistent so it outlives the
 * daemon (a restarted daemon re-attaches to it), and the open that leaves no half-configured
 * device behind. Detach (`close({ remove: true })`) deletes the device only if mvnet created
 * it; a device that was there before (the admin's) is left, with the MTU, MAC, up/down and
 * persistence attaching changed put back as they were.
 */
import fs from 'node:fs';
import { DevicePort, deviceLabel, deviceMacBytes, type DevicePortConfig } from './device-port.js';
import { native } from './index.js';
import type { OpenTunOptions } from './types.js';
import type { DeviceRecord, Port, PortContext } from '../types.js';

function macText(b: Buffer): string {
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
}

/** Puts back what attaching changed on a device mvnet did not create (fd still open). */
function restoreForeign(fd: number, ifname: string, netns: string | undefined, rec: DeviceRecord): void {
  const was = rec.was;
  if (rec.created || was === undefined) return;
  if (was.persistent === false) native.setPersist(fd, false);
  native.configureLink({
    name: ifname,
    netns,
    ...(was.mtu !== undefined ? { mtu: was.mtu } : {}),
    ...(was.mac !== undefined ? { mac: deviceMacBytes(was.mac) } : {}),
    ...(was.up !== undefined ? { up: was.up } : {}),
  });
}

export abstract class PersistentTunPort extends DevicePort {
  constructor(
    private readonly ifname: string,
    private readonly netns: string | undefined,
    private readonly fd: number,
    private readonly tap: boolean,
    readonly owned: DeviceRecord,
    cfg: Omit<DevicePortConfig, 'name' | 'fd' | 'mode'>,
  ) {
    super({ ...cfg, name: deviceLabel(ifname, netns), fd, mode: 'packet' });
  }

  protected upDetail(): string {
    return `${this.kind} ${this.name}`;
  }

  protected override beforeClose(remove: boolean): void {
    if (!remove) return;
    if (!this.owned.created) {
      try {
        restoreForeign(this.fd, this.ifname, this.netns, this.owned);
        if (this.owned.was !== undefined) this.log.info({ port: this.name, restored: this.owned.was }, `${this.kind} device given back as it was found`);
      } catch (err) {
        this.log.warn({ port: this.name, err }, `could not restore the settings of the ${this.kind} device mvnet did not create`);
      }
      return;
    }
    // Not persistent any more: the kernel deletes the device when our fd closes.
    try {
      native.setPersist(this.fd, false);
    } catch (err) {
      this.log.warn({ port: this.name, err }, 'could not clear TUNSETPERSIST; removing by name');
    }
  }

  protected override afterClose(remove: boolean): void {
    if (!remove || !this.owned.created) return;
    try {
      native.removeTun(this.ifname, this.tap, this.netns);
    } catch (err) {
      this.log.warn({ port: this.name, err }, `could not remove the ${this.kind} device`);
    }
  }
}

/**
 * Opens (or re-attaches to) the device, makes it persistent, sets MTU (and MAC) and brings it
 * up, then builds the port; on failure a device we created is not left behind and one we did
 * not is given back as it was.
 *
 * The record of what was done comes from the first attach: on a restore (`ctx.owned`) the
 * device's current settings are mvnet's own, so they say nothing about what it was before.
 */
export function openPersistentTun(
  opts: OpenTunOptions,
  ctx: PortContext,
  mac: Buffer | undefined,
  make: (name: string, fd: number, device: DeviceRecord) => Port,
  logFields: Record<string, unknown> = {},
): Port {
  const kind = opts.tap ? 'tap' : 'tun';
  const r = native.openTun(opts);
  let device: DeviceRecord = { created: true };
  try {
    if (!r.created) device = ctx.owned ?? foreignRecord(r.name, opts.netns, r.persistent, ctx.mtu, mac);
    native.setPersist(r.fd, true);
    native.configureLink({ name: r.name, netns: opts.netns, mtu: ctx.mtu, mac, up: true });
    const port = make(r.name, r.fd, device);
    ctx.log.info({ port: port.name, created: r.created, restoring: ctx.restoring, owned: device, ...logFields }, r.created ? `${kind} device created` : `attached to an existing ${kind} device`);
    return port;
  } catch (err) {
    try {
      if (r.created) native.setPersist(r.fd, false);
      else restoreForeign(r.fd, r.name, opts.netns, device);
    } catch {
      // closing still detaches
    }
    fs.closeSync(r.fd);
    throw err;
  }
}

/** A device that was there before: what configuring it for the network is about to change. */
function foreignRecord(name: string, netns: string | undefined, persistent: boolean, mtu: number, mac: Buffer | undefined): DeviceRecord {
  const now = native.linkInfo(name, netns);
  const was: NonNullable<DeviceRecord['was']> = {};
  if (now.mtu !== mtu) was.mtu = now.mtu;
  if (mac !== undefined && !now.mac.equals(mac)) was.mac = macText(now.mac);
  if (!now.up) was.up = false;
  if (!persistent) was.persistent = false;
  return Object.keys(was).length > 0 ? { created: false, was } : { created: false };
}
