/**
 * `mvnet-cni` run exactly as a container runtime runs a CNI plugin: the `CNI_*` environment, the
 * network configuration on stdin, the result (or error) JSON on stdout, the exit code. The
 * namespace is made by the test. The ADD result is checked against the CNI 1.0 result schema's
 * rules; the namespace then pings its gateway through mvnet; CHECK passes with the cached
 * result and fails when the attachment is lost; DEL removes the TAP, the attachment and the
 * route, and succeeds again (also without CNI_NETNS). Bad input gets the spec's error codes.
 */
import { randomBytes } from 'node:crypto';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT, runCli, startDaemon, type Daemon } from '../support/daemon.js';
import { cleanupAll, createNetns, run, type Netns } from '../support/netns.js';
import type { RouteInfo, VmInfo } from '../../daemon/control/api.js';

const CNI_JS = join(REPO_ROOT, 'dist', 'cli', 'cni.js');
const SUBNET = '10.233.0.0/24';
const GATEWAY = '10.233.0.1';

interface CniOut {
  code: number;
  stdout: string;
  json: Record<string, unknown> | null;
}

type Obj = Record<string, unknown>;

function isCidr(s: unknown): boolean {
  if (typeof s !== 'string') return false;
  const [a, p] = s.split('/');
  const v = isIP(a ?? '');
  return v !== 0 && p !== undefined && /^\d{1,3}$/.test(p) && Number(p) <= (v === 4 ? 32 : 128);
}

/**
 * The CNI 1.0 result schema's rules (SPEC.md "Success"): the keys it defines and no others,
 * interfaces with a name (mac, sandbox optional strings), ips with a CIDR address, an optional
 * gateway address and an `interface` index into interfaces, routes with a CIDR dst and an
 * optional gw, dns with lists of nameservers, search domains and options.
 */
function cniResultProblems(r: Obj, version: string): string[] {
  const p: string[] = [];
  const allowed = new Set(['cniVersion', 'interfaces', 'ips', 'routes', 'dns']);
  for (const k of Object.keys(r)) if (!allowed.has(k)) p.push(`unknown key ${k}`);
  if (r.cniVersion !== version) p.push(`cniVersion ${String(r.cniVersion)}`);
  const ifaces = (r.interfaces ?? []) as Obj[];
  if (!Array.isArray(ifaces)) p.push('interfaces is not a list');
  ifaces.forEach((i, n) => {
    if (typeof i.name !== 'string' || i.name === '') p.push(`interfaces[${n}].name`);
    if (i.mac !== undefined && (typeof i.mac !== 'string' || !/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/.test(i.mac))) p.push(`interfaces[${n}].mac`);
    if (i.sandbox !== undefined && typeof i.sandbox !== 'string') p.push(`interfaces[${n}].sandbox`);
    for (const k of Object.keys(i)) if (!['name', 'mac', 'mtu', 'sandbox', 'socketPath', 'pciID'].includes(k)) p.push(`interfaces[${n}].${k} unknown`);
  });
  const ips = (r.ips ?? []) as Obj[];
  if (!Array.isArray(ips)) p.push('ips is not a list');
  ips.forEach((ip, n) => {
    if (!isCidr(ip.address)) p.push(`ips[${n}].address ${String(ip.address)}`);
    if (ip.gateway !== undefined && isIP(String(ip.gateway)) === 0) p.push(`ips[${n}].gateway`);
    if (ip.interface !== undefined && (!Number.isInteger(ip.interface) || (ip.interface as number) < 0 || (ip.interface as number) >= ifaces.length)) p.push(`ips[${n}].interface is no index into interfaces`);
    if ('version' in ip) p.push(`ips[${n}].version is not in CNI 1.0`);
  });
  const routes = (r.routes ?? []) as Obj[];
  routes.forEach((rt, n) => {
    if (!isCidr(rt.dst)) p.push(`routes[${n}].dst`);
    if (rt.gw !== undefined && isIP(String(rt.gw)) === 0) p.push(`routes[${n}].gw`);
  });
  const dns = (r.dns ?? {}) as Obj;
  for (const k of ['nameservers', 'search', 'options'] as const) {
    if (dns[k] !== undefined && (!Array.isArray(dns[k]) || !(dns[k] as unknown[]).every((x) => typeof x === 'string'))) p.push(`dns.${k}`);
  }
  if (Array.isArray(dns.nameservers) && !(dns.nameservers as string[]).every((x) => isIP(x) !== 0)) p.push('dns.nameservers are not addresses');
  if (dns.domain !== undefined && typeof dns.domain !== 'string') p.push('dns.domain');
  return p;
}

describe('mvnet-cni', () => {
  let d: Daemon;
  let ns: Netns;
  const containerId = randomBytes(32).toString('hex');

  function conf(mvnet: Obj = {}, extra: Obj = {}): Obj {
    return { cniVersion: '1.0.0', name: 'lan', type: 'mvnet-cni', mvnet: { socket: d.socket, ...mvnet }, ...extra };
  }

  async function cni(command: string, config: unknown, env: Record<string, string | undefined> = {}): Promise<CniOut> {
    const base: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? '/usr/bin:/bin' };
    const full: Record<string, string | undefined> = {
      CNI_COMMAND: command,
      CNI_CONTAINERID: containerId,
      CNI_NETNS: `/run/netns/${ns.name}`,
      CNI_IFNAME: 'eth0',
      CNI_PATH: `${join(REPO_ROOT, 'dist', 'cli')}:/usr/lib/cni`,
      ...env,
    };
    for (const [k, v] of Object.entries(full)) if (v !== undefined) base[k] = v;
    const r = await run([CNI_JS], { check: false, env: base, input: typeof config === 'string' ? config : JSON.stringify(config) });
    const t = r.stdout.trim();
    return { code: r.code, stdout: r.stdout, json: t === '' ? null : (JSON.parse(t) as Obj) };
  }

  function failed(o: CniOut, code: number, msg: RegExp): void {
    expect(o.code, o.stdout).not.toBe(0);
    expect(o.json, o.stdout).toMatchObject({ cniVersion: '1.0.0', code });
    expect(o.json!.msg).toMatch(msg);
  }

  async function vms(): Promise<VmInfo[]> {
    return JSON.parse((await runCli(d.socket, ['vm', 'list'], { json: true })).stdout) as VmInfo[];
  }
  async function routes(): Promise<RouteInfo[]> {
    return JSON.parse((await runCli(d.socket, ['route', 'show'], { json: true })).stdout) as RouteInfo[];
  }

  beforeAll(async () => {
    d = await startDaemon();
    ns = await createNetns('cni');
    expect((await runCli(d.socket, ['net', 'create', 'lan', '--subnet', SUBNET])).code).toBe(0);
  });

  afterAll(cleanupAll);

  it('VERSION lists the spec versions', async () => {
    const o = await cni('VERSION', { cniVersion: '1.0.0' });
    expect(o.code).toBe(0);
    expect(o.json).toEqual({ cniVersion: '1.0.0', supportedVersions: ['0.4.0', '1.0.0'] });
  });

  it('runs as a program (run bit and shebang), as a runtime finds it in CNI_PATH', async () => {
    const r = await run(['test', '-x', CNI_JS]);
    expect(r.code).toBe(0);
  });

  let result: Obj;

  it('ADD: a TAP in the namespace with the address mvnet assigns, the route from the mvnet section, a schema-valid result', async () => {
    const o = await cni('ADD', conf({ route: 'direct' }));
    expect(o.code, o.stdout).toBe(0);
    result = o.json!;
    expect(cniResultProblems(result, '1.0.0')).toEqual([]);
    const mac = (result.interfaces as Obj[])[0]!.mac as string;
    expect(result).toEqual({
      cniVersion: '1.0.0',
      interfaces: [{ name: 'eth0', mac, sandbox: `/run/netns/${ns.name}` }],
      ips: [{ address: '10.233.0.254/24', gateway: GATEWAY, interface: 0 }],
      routes: [{ dst: '0.0.0.0/0', gw: GATEWAY }],
      dns: { nameservers: [GATEWAY], domain: 'lan.mvnet', search: ['lan.mvnet'] },
    });
    const link = JSON.parse((await ns.exec(['ip', '-j', 'addr', 'show', 'dev', 'eth0'])).stdout) as { address: string; mtu: number; flags: string[]; addr_info: { local: string }[] }[];
    expect(link[0]).toMatchObject({ address: mac, mtu: 1500 });
    expect(link[0]!.flags).toContain('UP');
    expect(link[0]!.addr_info.map((a) => a.local)).toContain('10.233.0.254');
    const [v] = await vms();
    expect(v).toMatchObject({ net: 'lan', ip: '10.233.0.254', mac, port: { kind: 'tap', ifname: 'eth0', netns: `/run/netns/${ns.name}`, state: 'up' } });
    expect((await routes()).map((r) => [r.vm, r.route.kind])).toEqual([[v!.name, 'direct']]);
  });

  it('the namespace reaches its gateway through mvnet', async () => {
    const r = await ns.exec(['ping', '-c', '2', '-W', '5', GATEWAY], { check: false });
    expect(r.code, r.stdout + r.stderr).toBe(0);
  });

  it('CHECK passes with the cached result, and fails when the route or the attachment is gone', async () => {
    const ok = await cni('CHECK', conf({ route: 'direct' }, { prevResult: result }));
    expect(ok.code, ok.stdout).toBe(0);
    expect(ok.stdout).toBe('');
    failed(await cni('CHECK', conf({ route: 'none' }, { prevResult: result })), 102, /route is direct, not none/);
    const wrongPrev = { ...result, ips: [{ address: '10.233.0.9/24', interface: 0 }] };
    failed(await cni('CHECK', conf({ route: 'direct' }, { prevResult: wrongPrev })), 102, /prevResult does not list 10.233.0.254\/24/);
    const [v] = await vms();
    expect((await runCli(d.socket, ['vm', 'detach', v!.name])).code).toBe(0);
    failed(await cni('CHECK', conf({ route: 'direct' }, { prevResult: result })), 102, /not attached/);
  });

  it('DEL cleans up and succeeds again, also without CNI_NETNS', async () => {
    // Attached again first (the last test detached it behind the plugin's back).
    const again = await cni('ADD', conf({ route: 'direct', ip: '10.233.0.20' }));
    expect(again.code, again.stdout).toBe(0);
    expect((again.json!.ips as Obj[])[0]!.address).toBe('10.233.0.20/24');
    const del = await cni('DEL', conf({ route: 'direct' }));
    expect(del.code, del.stdout).toBe(0);
    expect(del.stdout).toBe('');
    expect((await ns.exec(['ip', 'link', 'show', 'eth0'], { check: false })).code).not.toBe(0);
    expect(await vms()).toEqual([]);
    expect(await routes()).toEqual([]);
    expect((await cni('DEL', conf({ route: 'direct' }))).code).toBe(0);
    expect((await cni('DEL', conf(), { CNI_NETNS: undefined })).code).toBe(0);
  });

  it('a 0.4.0 config gets a 0.4.0 result (ips name their version)', async () => {
    const o = await cni('ADD', conf({}, { cniVersion: '0.4.0' }));
    expect(o.code, o.stdout).toBe(0);
    expect(o.json).toMatchObject({ cniVersion: '0.4.0', ips: [{ version: '4', address: '10.233.0.254/24', gateway: GATEWAY, interface: 0 }] });
    expect((await cni('DEL', conf({}, { cniVersion: '0.4.0' }))).code).toBe(0);
    expect(await vms()).toEqual([]);
  });

  it('CNI_ARGS IP= gives a static address; IgnoreUnknown lets other keys pass', async () => {
    const o = await cni('ADD', conf(), { CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAME=x;IP=10.233.0.33' });
    expect(o.code, o.stdout).toBe(0);
    expect((o.json!.ips as Obj[])[0]!.address).toBe('10.233.0.33/24');
    failed(await cni('ADD', conf(), { CNI_ARGS: 'K8S_POD_NAME=x', CNI_IFNAME: 'eth1' }), 4, /unknown key K8S_POD_NAME/);
    expect((await cni('DEL', conf())).code).toBe(0);
    expect(await vms()).toEqual([]);
  });

  it('errors: the spec codes on stdout, a non-zero exit, nothing left behind', async () => {
    failed(await cni('ADD', '{"cniVersion":'), 6, /not JSON/);
    const old = await cni('ADD', conf({}, { cniVersion: '0.3.1' }));
    expect(old.code).not.toBe(0);
    expect(old.json).toMatchObject({ code: 1 });
    expect(old.json!.msg).toMatch(/cniVersion "0.3.1" is not supported/);
    failed(await cni('ADD', conf(), { CNI_CONTAINERID: undefined }), 4, /CNI_CONTAINERID is not set/);
    failed(await cni('ADD', conf(), { CNI_IFNAME: 'a/b' }), 4, /CNI_IFNAME/);
    failed(await cni('FROB', conf()), 4, /unknown CNI_COMMAND/);
    failed(await cni('ADD', conf({ colour: 'red' })), 2, /unknown key mvnet.colour/);
    failed(await cni('ADD', conf({}, { name: undefined })), 7, /no name/);
    failed(await cni('ADD', conf(), { CNI_NETNS: '/run/netns/mvt-cni-nonexistent' }), 3, /does not exist/);
    failed(await cni('ADD', conf({ route: 'all-tor' })), 101, /needs Tor/);
    failed(await cni('ADD', conf({ network: 'nonet' })), 101, /no mvnet network named nonet/);
    failed(await cni('ADD', conf({ socket: `${d.stateDir}/nobody.sock` })), 11, /not running/);
    expect(await vms()).toEqual([]);
    expect(await routes()).toEqual([]);
    expect((await ns.exec(['ip', 'link', 'show', 'eth0'], { check: false })).code).not.toBe(0);
  });
});
