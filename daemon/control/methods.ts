/** The control API's method table: one group per area; the daemon core does the work. */
import type { Daemon } from '../daemon.js';
import { asObject, checkName } from '../state/validate.js';
import { UserError, NotFoundError } from '../errors.js';

function checkPort(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 65535) throw new UserError(`invalid ${what} ${JSON.stringify(v)}: a port from 1 to 65535`);
  return v;
}
import { TakeOver, type MethodTable } from './rpc.js';
import { checkCaptureParams } from '../capture/params.js';
import { StreamSink } from '../capture/sink-stream.js';
import type { CapturePointInfo, CaptureStarted } from './api.js';
import { checkFollowParams } from '../events/bus.js';

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
    'vm.attachMany': (p) => d.attachMany(p),
    'link.key': async () => d.linkKey(),
    'link.add': (p) => d.addLink(p),
    'link.list': async () => d.listLinks(),
    'link.remove': async (p) => d.removeLink(asObject(p, 'params').name),
    'vm.detach': async (p) => d.detach(asObject(p, 'params').name),
    'vm.list': async () => d.listVms(),
    'route.set': (p) => d.setRoute(p),
    'route.show': async (p) => d.showRoutes(p),
    'route.clear': (p) => d.clearRoute(p),
    'tor.status': () => d.tor.status(),
    'tor.newnym': async (p) => {
      const o = asObject(p, 'params');
      if (o.all === true) return d.tor.newnym(null, true);
      const vm = checkName(o.vm, 'VM');
      if (!d.routeOf(vm) || !d.knowsVm(vm)) throw new NotFoundError(`no VM named ${vm}`);
      return d.tor.newnym(vm, false);
    },
    'onion.list': () => d.tor.list(),
    'onion.discover': () => d.tor.discover(),
    'onion.add': async (p) => {
      const o = asObject(p, 'params');
      return d.tor.addAlias(o.name, o.address);
    },
    'onion.remove': async (p) => d.tor.removeAlias(asObject(p, 'params').name),
    'onion.expose': async (p) => {
      const o = asObject(p, 'params');
      const vm = checkName(o.vm, 'VM');
      if (!d.knowsVm(vm)) throw new NotFoundError(`no VM named ${vm} is attached`);
      const port = checkPort(o.port, 'port');
      const onionPort = o.onionPort === undefined ? port : checkPort(o.onionPort, 'onion port');
      return d.tor.expose(vm, port, onionPort, o.persist === true);
    },
    'onion.unexpose': async (p) => {
      const o = asObject(p, 'params');
      return d.tor.unexpose(checkName(o.vm, 'VM'), o.port === undefined ? undefined : checkPort(o.port, 'port'));
    },
    'forward.add': (p) => d.addForward(p),
    'forward.list': async () => d.forwards.list(),
    'forward.remove': (p) => d.removeForward(p),
    'tee.add': (p) => d.addTee(p),
    'tee.list': async () => d.listTees(),
    'tee.remove': (p) => d.removeTee(p),
    'capture.points': async (): Promise<CapturePointInfo[]> => d.capture.points(),
    'capture.start': async (p) => {
      const prep = d.capture.prepare(checkCaptureParams(p), true);
      const started: CaptureStarted = { id: prep.id, points: prep.points.map((x) => x.name) };
      // The reply line first, then the connection carries the pcapng stream (server.ts TakeOver).
      return new TakeOver(started, (sock, clientEnded) => {
        const s = d.capture.open(prep, new StreamSink(sock));
        if (clientEnded) s.stop('the client ended its side');
      });
    },
    'events.follow': async (p) => {
      const params = checkFollowParams(p);
      // The reply line, then one JSON line per event for as long as the client reads (events/bus.ts).
      return new TakeOver({ following: params.types.length > 0 ? params.types : ['*'] }, (sock, clientEnded) => d.events.bus.follow(sock, params, clientEnded));
    },
  };
}

/**
 * Methods that only read: the control server runs them without waiting for the change lock, so
 * `status` answers even while a slow change (one waiting on Tor) is applied.
 */
export const READ_ONLY_METHODS: ReadonlySet<string> = new Set([
  'daemon.status',
  'net.list',
  'vm.list',
  'link.list',
  'route.show',
  'forward.list',
  'tor.status',
  'onion.list',
  'capture.points',
  // Changes no state: a capture (which then streams for as long as it runs) never waits behind a slow change.
  'capture.start',
  'tee.list',
  // Streams for as long as the client follows: never waits behind a slow change.
  'events.follow',
]);
