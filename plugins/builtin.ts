/** The built-in port drivers, one per kind of device: the daemon's default registry holds them. */
import type { BuiltinDrivers } from './registry.js';
import { tapDriver } from './tap/index.js';
import { tunDriver } from './tun/index.js';
import { unixConnectDriver, unixListenDriver } from './unix-stream/index.js';
import { dgramDriver } from './unix-dgram/index.js';
import { fdDriver } from './fd/index.js';
import { ifaceDriver } from './iface/index.js';
import { vhostUserDriver } from './vhost-user/index.js';

export const builtinDrivers: BuiltinDrivers = {
  tap: tapDriver,
  tun: tunDriver,
  unix: unixConnectDriver,
  'unix-listen': unixListenDriver,
  dgram: dgramDriver,
  fd: fdDriver,
  iface: ifaceDriver,
  'vhost-user': vhostUserDriver,
};
