/** Port drivers by kind. A new kind of VM device is one driver and one line here. */
import type { Port, PortContext, PortDriver, PortSpec } from './types.js';
import { tapDriver } from './tap/index.js';
import { tunDriver } from './tun/index.js';
import { unixConnectDriver, unixListenDriver } from './unix-stream/index.js';
import { dgramDriver } from './unix-dgram/index.js';
import { fdDriver } from './fd/index.js';
import { ifaceDriver } from './iface/index.js';

/** Each kind's spec, by kind. */
type SpecOf = { [S in PortSpec as S['kind']]: S };

const drivers: { [K in keyof SpecOf]: PortDriver<SpecOf[K]> } = {
  tap: tapDriver,
  tun: tunDriver,
  unix: unixConnectDriver,
  'unix-listen': unixListenDriver,
  dgram: dgramDriver,
  fd: fdDriver,
  iface: ifaceDriver,
};

/** `kind` picks the driver and types `spec` for it: the driver gets the spec of its own kind. */
function openWith<K extends keyof SpecOf>(kind: K, spec: SpecOf[K], ctx: PortContext): Promise<Port> {
  return drivers[kind].open(spec, ctx);
}

/** Opens the port `spec` describes with the driver of its kind. */
export function openPort(spec: PortSpec, ctx: PortContext): Promise<Port> {
  return openWith(spec.kind, spec, ctx);
}
