/** The control API's method table: one group per area; the daemon core does the work. */
import type { Daemon } from '../daemon.js';
import { asObject } from '../validate.js';
import type { MethodTable } from './rpc.js';

export interface DaemonInfo {
  socket: string;
  stateDir: string;
  version: string;
}

export function methods(d: Daemon, info: DaemonInfo): MethodTable {
  return {
    'daemon.status': async () => d.status(info),
    'net.create': (p) => d.createNetwork(p),
    'net.list': async () => d.listNetworks(),
    'net.delete': async (p) => {
      const o = asObject(p, 'params');
      return d.deleteNetwork(o.name, o.force === true);
    },
    'vm.attach': (p) => d.attach(p),
    'vm.detach': async (p) => d.detach(asObject(p, 'params').name),
    'vm.list': async () => d.listVms(),
    'route.set': (p) => d.setRoute(p),
    'route.show': async (p) => d.showRoutes(p),
    'forward.add': (p) => d.addForward(p),
    'forward.list': async () => d.forwards.list(),
    'forward.remove': (p) => d.removeForward(p),
  };
}
