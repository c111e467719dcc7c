/**
 * Stands in for plugins/builtin.ts in the control fuzzer (vi.mock): random requests must not
 * create TAP devices, bind sockets at random paths or open random fds on the host, as the real
 * drivers would for root. Every port is an in-memory one; a spec naming "missing" fails as a
 * device that cannot be opened does. The daemon's checks of the spec all run before this.
 */
import type { BuiltinPortSpec, Port, PortContext } from '../../plugins/types.js';
import type { BuiltinDrivers } from '../../plugins/registry.js';
import { MemPort } from '../support/mem-port.js';

function open(spec: BuiltinPortSpec, ctx: PortContext): Promise<Port> {
  if (JSON.stringify(spec).includes('missing')) return Promise.reject(new Error('no such device (sandbox)'));
  return Promise.resolve(new MemPort(`sandbox:${spec.kind}`, { mtu: ctx.mtu }));
}

export const builtinDrivers: BuiltinDrivers = {
  tap: { kind: 'tap', open },
  tun: { kind: 'tun', open },
  unix: { kind: 'unix', open },
  'unix-listen': { kind: 'unix-listen', open },
  dgram: { kind: 'dgram', open },
  fd: { kind: 'fd', open },
  iface: { kind: 'iface', open },
  'vhost-user': { kind: 'vhost-user', open },
};
