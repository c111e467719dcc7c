/** Port drivers by kind. A new kind of VM device is one driver and one line here. */
import type { PortDriver, PortKind, PortSpec } from './types.js';
import { tapDriver } from './tap/index.js';
import { tunDriver } from './tun/index.js';
import { unixConnectDriver, unixListenDriver } from './unix-stream/index.js';
import { dgramDriver } from './unix-dgram/index.js';
import { fdDriver } from './fd/index.js';
import { ifaceDriver } from './iface/index.js';

const drivers: { [K in PortKind]: PortDriver<Extract<PortSpec, { kind: K }>> } = {
  tap: tapDriver,
  tun: tunDriver,
  unix: unixConnectDriver,
  'unix-listen': unixListenDriver,
  dgram: dgramDriver,
  fd: fdDriver,
  iface: ifaceDriver,
};

export function driverFor<K extends PortKind>(kind: K): PortDriver<Extract<PortSpec, { kind: K }>> {
  return drivers[kind];
}
