/**
 * Fuzzes the control API: random and mutated JSON-RPC requests, as lines of text, into an
 * in-process Daemon's method table (control/methods.ts) with a temp state dir. The test files
 * that use this replace the port drivers with sandbox-builtin.ts (vi.mock), so no request
 * touches a host device; everything before the driver (the checks of every parameter, the
 * state, the routes, the forwards, the saves) is the daemon's own.
 *
 * A request may succeed or fail cleanly: a line that is not JSON or not a request, an unknown
 * method, or a UserError (a JSON-RPC error with the user's message). A crash is any other
 * exception (the server would answer "internal error"), a result that is not JSON, or a daemon
 * whose status() throws afterwards. Forwards listen only on 127.0.0.1:41000-41999 (requests
 * for others are not sent), Tor's binary does not exist (Tor "fails to start", as logged).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { Daemon } from '../../daemon/daemon.js';
import { DEFAULTS, type DaemonConfig } from '../../daemon/config.js';
import { methods } from '../../daemon/control/methods.js';
import type { MethodTable } from '../../daemon/control/rpc.js';
import { UserError } from '../../daemon/errors.js';
import { StateStore } from '../../daemon/state/store.js';
import { inputSeed, mutate, Rng } from './rng.js';
import { errorText, KEEP_CRASHES, type FuzzReport } from './report.js';

const NAMES = ['a', 'b', 'lan', 'vm1', 'vm2', 'x'.repeat(40), '', '-x', 'A_b.c', 'über', '..', 'a/b', 'vm 1', '0'];
/** Network names: mostly a few, so that attachments find their network. */
const NETS = ['a', 'b', 'lan', 'a', 'b', 'lan', 'A_b.c', 'x'.repeat(63), ''];
const SUBNETS = ['10.9.0.0/24', '10.9.1.0/24', '10.9.0.0/16', '192.168.77.0/24', '10.9.0.5/24', '127.0.0.0/8', '224.0.0.0/4', '0.0.0.0/0', '10.9.0.0/31', '10.9.0.0/33', 'x'];
const KINDS = ['tap', 'tun', 'unix', 'unix-listen', 'dgram', 'fd', 'iface', 'vhost-user', 'bogus'];
const ROUTE_KINDS = ['none', 'direct', 'via', 'tor', 'bogus'];
const METHODS = ['daemon.status', 'net.create', 'net.list', 'net.delete', 'vm.attach', 'vm.detach', 'vm.list', 'route.set', 'route.show', 'route.clear', 'tor.status', 'tor.newnym', 'onion.list', 'onion.add', 'onion.remove', 'onion.expose', 'onion.unexpose', 'forward.add', 'forward.list', 'forward.remove', 'nope', '__proto__', 'constructor', 'toString'];

/** Odd values for any field: wrong types, edges, huge and nested. */
function oddValue(rng: Rng, depth = 0): unknown {
  switch (rng.int(14)) {
    case 0:
      return null;
    case 1:
      return rng.bool();
    case 2:
      return rng.pick([0, -1, 1, 65535, 65536, 1.5, 1e308, -0, 2 ** 53, Number.MAX_SAFE_INTEGER]);
    case 3:
      return rng.pick(NAMES);
    case 4:
      return 'x'.repeat(rng.pick([0, 1, 16, 256, 5000]));
    case 5:
      return depth < 3 ? [oddValue(rng, depth + 1), oddValue(rng, depth + 1)] : [];
    case 6:
      return depth < 3 ? { [rng.pick(['name', 'kind', 'vm', '__proto__', 'constructor', 'path'])]: oddValue(rng, depth + 1) } : {};
    case 7:
      return rng.pick(SUBNETS);
    case 8:
      return rng.pick(['127.0.0.1:41001', '[::1]:41002', '10.9.0.7', 'fd00::/64', 'fd00::/48', '52:54:00:12:34:56', 'ff:ff:ff:ff:ff:ff']);
    case 9:
      return rng.bytes(rng.int(20)).toString('latin1');
    default:
      return undefined;
  }
}

function maybe<T>(rng: Rng, v: T, p = 0.8): T | unknown {
  return rng.bool(p) ? v : oddValue(rng);
}

function portSpec(rng: Rng, vm: string): unknown {
  const kind = rng.pick(KINDS);
  const path = rng.pick([`/run/mvnet-fuzz/${vm}.sock`, `/run/mvnet-fuzz/${vm}.sock`, '/run/vm1.sock', 'vm.sock', '/tmp/missing.sock', '../x.sock', '']);
  const spec: Record<string, unknown> = { kind };
  if (kind === 'tap' || kind === 'tun' || kind === 'iface') spec.ifname = maybe(rng, rng.pick(['tap0', 'mvfz0', 'missing0', 'lo', 'x'.repeat(20)]));
  else if (kind === 'fd') Object.assign(spec, rng.bool() ? { fd: maybe(rng, rng.pick([0, 1, 3, 99, -1])) } : { rx: path, tx: path });
  else spec.path = maybe(rng, path);
  if (rng.bool(0.2)) spec.netns = maybe(rng, '/run/netns/missing');
  if (rng.bool(0.1)) spec.vnetHdr = oddValue(rng);
  return spec;
}

function route(rng: Rng): unknown {
  const kind = rng.pick(ROUTE_KINDS);
  const r: Record<string, unknown> = { kind };
  if (kind === 'via') r.vm = maybe(rng, rng.pick(NAMES));
  if (kind === 'direct' && rng.bool(0.5)) r.allow = maybe(rng, [{ cidr: rng.pick(['10.0.0.0/8', '0.0.0.0/0', '::/0', '192.0.2.1/32', 'bad']), ports: rng.bool() ? [[80, 80], [1000, 2000]] : undefined }]);
  if ((kind === 'direct' || kind === 'none') && rng.bool(0.3)) r.torPorts = maybe(rng, [443, 80]);
  return r;
}

/** Params that a caller of `method` would send, mostly right, sometimes odd. */
function params(rng: Rng, method: string): unknown {
  const name = rng.bool(0.7) ? `vm${rng.int(12)}` : rng.pick(NAMES);
  switch (method) {
    case 'net.create':
      return { name: maybe(rng, rng.pick(NETS)), subnet: maybe(rng, rng.pick(SUBNETS)), gateway: rng.bool(0.3) ? maybe(rng, '10.9.0.1') : undefined, ipv6: rng.bool(0.3) ? maybe(rng, rng.pick(['fd00:9::/64', 'fd00::/48', '::1/128'])) : undefined, mtu: rng.bool(0.3) ? maybe(rng, rng.pick([1280, 1500, 9000, 68, 100000])) : undefined };
    case 'net.delete':
      return { name: maybe(rng, rng.pick(NETS)), force: maybe(rng, rng.bool()) };
    case 'vm.attach':
      return { name: maybe(rng, name), net: maybe(rng, rng.pick(NETS)), port: maybe(rng, portSpec(rng, name)), mac: rng.bool(0.3) ? maybe(rng, '52:54:00:12:34:56') : undefined, ip: rng.bool(0.3) ? maybe(rng, rng.pick(['10.9.0.7', '10.9.0.1', '10.9.0.255', '10.9.1.7'])) : undefined };
    case 'vm.detach':
    case 'route.show':
      return { name: maybe(rng, name), vm: maybe(rng, name) };
    case 'route.set':
      return { vm: maybe(rng, name), route: maybe(rng, route(rng)), create: rng.bool(0.5) ? maybe(rng, true) : undefined };
    case 'route.clear':
      return { vm: maybe(rng, name) };
    case 'tor.newnym':
      return rng.bool(0.3) ? { all: true } : { vm: maybe(rng, name) };
    case 'onion.add':
      return { name: maybe(rng, name), address: maybe(rng, rng.pick(['abcdefghijklmnopqrstuvwxyz234567abcdefghijklmnopqrstuvwx.onion', 'x.onion', ''])) };
    case 'onion.remove':
      return { name: maybe(rng, name) };
    case 'onion.expose':
    case 'onion.unexpose':
      return { vm: maybe(rng, name), port: maybe(rng, rng.pick([80, 0, 70000])), onionPort: rng.bool(0.3) ? maybe(rng, 8080) : undefined, persist: rng.bool(0.2) };
    case 'forward.add':
      return { vm: maybe(rng, name), host: maybe(rng, `127.0.0.1:${41000 + rng.int(1000)}`), guestPort: maybe(rng, rng.pick([22, 80, 0, 65536])) };
    case 'forward.remove':
      return { host: maybe(rng, `127.0.0.1:${41000 + rng.int(1000)}`), vm: rng.bool(0.3) ? maybe(rng, name) : undefined };
    default:
      return rng.bool(0.7) ? {} : oddValue(rng);
  }
}

/** Request line `seed`: a valid request, a mutated one (as text), or junk. */
export function controlInput(seed: number): string {
  const rng = new Rng(seed);
  const method = rng.pick(METHODS);
  const req = { jsonrpc: maybe(rng, '2.0', 0.95), id: maybe(rng, rng.int(1000), 0.9), method: maybe(rng, method, 0.95), params: rng.bool(0.95) ? params(rng, method) : oddValue(rng) };
  const line = JSON.stringify(req);
  const k = rng.int(10);
  if (k < 6) return line;
  if (k < 9) return mutate(rng, Buffer.from(line)).toString('latin1');
  return rng.bytes(rng.int(100)).toString('latin1');
}

/** Only loopback forwards in the fuzzer's own port range are ever listened on. */
function allowed(req: { method?: unknown; params?: unknown }): boolean {
  if (req.method !== 'forward.add') return true;
  const host = (req.params as { host?: unknown } | null)?.host;
  if (typeof host !== 'string') return true;
  const m = /^127\.0\.0\.1:(\d+)$/.exec(host);
  return m !== null && Number(m[1]) >= 41000 && Number(m[1]) <= 41999;
}

export interface ControlHarness {
  daemon: Daemon;
  table: MethodTable;
  close(): Promise<void>;
}

/** A fresh daemon with two networks to attach to. */
export async function controlHarness(): Promise<ControlHarness> {
  // tmpfs when there is one: every change is saved with fsync.
  const base = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
  const dir = mkdtempSync(join(base, 'mvnet-fuzz-'));
  const cfg: DaemonConfig = { ...DEFAULTS, stateDir: dir, socket: join(dir, 'mvnet.sock'), tor: { ...DEFAULTS.tor, binary: join(dir, 'no-tor-here') } };
  const daemon = new Daemon(pino({ level: 'silent' }), new StateStore(dir), cfg);
  const table = methods(daemon, { socket: cfg.socket, stateDir: dir, version: 'fuzz' });
  await daemon.createNetwork({ name: 'a', subnet: '10.9.0.0/24' });
  await daemon.createNetwork({ name: 'lan', subnet: '10.9.1.0/24', ipv6: 'fd00:9::/64' });
  return {
    daemon,
    table,
    close: async () => {
      await daemon.shutdown();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Sends one request line as the control server would; returns the crash, or null. */
export async function controlOne(h: ControlHarness, line: string, seen?: Record<string, number>): Promise<{ where: string; error: string } | null> {
  let req: unknown;
  try {
    req = JSON.parse(line);
  } catch {
    return null; // answered "request is not valid JSON"
  }
  const r = req as { jsonrpc?: unknown; method?: unknown; params?: unknown };
  if (typeof r !== 'object' || r === null || r.jsonrpc !== '2.0' || typeof r.method !== 'string') return null;
  if (!Object.hasOwn(h.table, r.method)) return null; // "unknown method"
  if (!allowed(r)) return null;
  const method = r.method;
  try {
    const result = await h.table[method]!(r.params ?? {});
    JSON.stringify(result ?? null);
    if (seen !== undefined) seen[`ok.${method}`] = (seen[`ok.${method}`] ?? 0) + 1;
  } catch (e) {
    if (!(e instanceof UserError)) return { where: method, error: errorText(e) };
    if (seen !== undefined) seen.userErrors = (seen.userErrors ?? 0) + 1;
  }
  try {
    JSON.stringify(h.daemon.status({ socket: '', stateDir: '', version: '' }));
  } catch (e) {
    return { where: `status after ${method}`, error: errorText(e) };
  }
  return null;
}

export async function fuzzControl(count: number, seed: number): Promise<FuzzReport> {
  const t0 = performance.now();
  const r: FuzzReport = { target: 'control API (JSON-RPC method table)', ran: 0, crashed: 0, crashes: [], ms: 0 };
  let h = await controlHarness();
  const seen: Record<string, number> = {};
  r.coverage = seen;
  try {
    for (let i = 0; i < count; i++) {
      const s = inputSeed(seed, i);
      const line = controlInput(s);
      const c = await controlOne(h, line, seen);
      r.ran++;
      if (c !== null) {
        r.crashed++;
        if (r.crashes.length < KEEP_CRASHES) r.crashes.push({ seed: s, where: c.where, error: c.error, input: line });
      }
      // A fresh daemon now and then: the state (networks, VMs) stays small and varied.
      if (i % 5000 === 4999) {
        await h.close();
        h = await controlHarness();
      }
    }
  } finally {
    await h.close();
  }
  r.ms = performance.now() - t0;
  return r;
}
