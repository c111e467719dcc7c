/**
 * An all-tor VM cannot reach Tor's SOCKS port, its control port or the daemon's control socket
 * by any address. The embedded Tor is given a TCP SocksPort, 127.0.0.1:9050 in the router
 * namespace (`tor.socks`), so that there is a TCP listener to aim at; its ControlPort is always
 * a unix socket.
 *
 * From the VM's kernel: 127.0.0.1 and ::1 (the VM's own loopback, another namespace), the
 * gateway's addresses (v4, v6) on the whole range 1-1024 and the usual Tor/proxy ports, the
 * router namespace's own address, unmapped addresses of the automap range, link-local. With hand-
 * made frames (a raw socket on the TAP), what the VM's kernel would never send out: 127.0.0.1,
 * 0.0.0.0, ::1 and the router's address as destinations through the gateway. None connects; the
 * daemon answers the gateway and special destinations with RST (fail closed), never a SYN-ACK.
 * Positive controls: the listener really is there in the router namespace, and the same probes
 * towards the upstream's address connect (through Tor).
 *
 * Unix sockets: the VM's namespace shares the filesystem with the router's (namespaces isolate
 * the network, not paths), so a process in the VM namespace that can open the path of the
 * daemon's socket or Tor's sockets reaches them; that is a matter of file permissions and of
 * real VMs not sharing the host's filesystem, documented here rather than asserted. What is
 * asserted: the sockets are bound in the router namespace only (not listed in the VM namespace's
 * /proc/net/unix, so not reachable by any network means there), Tor's directory is 0700 and the
 * control socket 0660.
 */
import { statSync } from 'node:fs';
import net from 'node:net';
import { dirname } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupAll } from '../support/netns.js';
import { torUpstream } from './context.js';
import { TorRouter, type TorVm } from './mvnet-harness.js';

const up = torUpstream();

afterAll(cleanupAll);

const GW = '10.237.0.1';
const GW6 = 'fd00:237::1';
const VM6 = 'fd00:237::10';
const TOR_PORTS = [9050, 9051, 9150, 9151, 9040, 9053, 8118, 8080, 8443, 5353, 65535];

describe('an all-tor VM cannot reach the SOCKS port, the control port or the daemon socket', () => {
  let r: TorRouter;
  let vm: TorVm;
  let vmIp: string;
  let routerAddr: string;

  beforeAll(async () => {
    r = await TorRouter.create({ prefix: 'trc', mode: 'embedded', tor: { socks: '127.0.0.1:9050' } });
    routerAddr = r.link!.routerAddr;
    await r.cli(['net', 'create', 'lan', '--subnet', '10.237.0.0/24', '--ipv6', 'fd00:237::/64']);
    vm = await r.addVm('vm1', 'lan', { ipv6: true });
    await r.cli(['route', '--all-tor', 'vm1']);
    vmIp = (await vm.configure()).ip;
    await vm.exec(['ip', '-6', 'addr', 'add', `${VM6}/64`, 'dev', vm.ifname, 'nodad'], { check: true });
    await vm.exec(['ip', '-6', 'route', 'replace', 'default', 'via', GW6, 'dev', vm.ifname], { check: true });
    await r.waitTorReady(90_000);
  }, 150_000);

  it('positive controls: the SOCKS listener exists in the router namespace, and the VM reaches the upstream through Tor', async () => {
    const ss = await r.ns.exec(['ss', '-Hltn']);
    expect(ss.stdout).toMatch(/127\.0\.0\.1:9050\b/);
    // The daemon itself uses that TCP SOCKS port (no unix SOCKS socket in this mode).
    const res = await vm.curl(['--max-time', '30', `${up.url}whoami`]);
    expect(res.stdout, res.stderr).toBe(`${up.exitAddress}\n`);
  }, 60_000);

  it("the VM's loopback (127.0.0.1, ::1) is its own: nothing there", async () => {
    for (const host of ['127.0.0.1', '::1', '0.0.0.0']) {
      for (const port of [9050, 9051]) {
        const t = await vm.tcp(host, port, 3_000);
        expect(t, `${host}:${port}`).toMatchObject({ ok: false, code: 'ECONNREFUSED' });
      }
    }
  });

  it("the gateway's addresses, on 1-1024 and the usual Tor/proxy ports: every one reset but DNS (53)", async () => {
    const ports = [...Array.from({ length: 1024 }, (_, i) => i + 1), ...TOR_PORTS];
    for (const host of [GW, GW6]) {
      const res = await vm.tcpMany(host, ports, 4_000);
      expect(res.open, host).toEqual([53]);
      expect(res.timeout, host).toEqual([]);
      expect(res.other, host).toEqual({});
      expect(res.refused, host).toBe(ports.length - 1);
    }
    // Port 53 is the gateway's DNS over TCP, not a proxy: a SOCKS5 greeting gets no SOCKS answer.
    const greeting = await vm.exec(
      ['node', '-e', `const s=require('net').connect(53,'${GW}');let got=Buffer.alloc(0);s.on('connect',()=>s.write(Buffer.from([5,1,0])));s.on('data',d=>got=Buffer.concat([got,d]));s.on('close',()=>{console.log(got.toString('hex'));process.exit(0)});s.on('error',()=>{});setTimeout(()=>{console.log(got.toString('hex'));process.exit(0)},2000);`],
      { timeoutMs: 10_000 },
    );
    expect(greeting.stdout.trim()).not.toMatch(/^0500/);
    expect(greeting.stdout.trim()).toBe('');
  }, 90_000);

  it("the router namespace's own address, unmapped automap addresses and link-local: reset, never connected", async () => {
    const targets: [string, number][] = [];
    for (const port of [9050, 9051, 80]) targets.push([routerAddr, port]);
    for (const host of ['10.192.0.1', '10.200.0.1', '10.255.255.254']) for (const port of [80, 9050]) targets.push([host, port]);
    for (const host of ['169.254.0.1', '169.254.169.254']) for (const port of [80, 9050]) targets.push([host, port]);
    for (const [host, port] of targets) {
      const t = await vm.tcp(host, port, 4_000);
      expect(t, `${host}:${port}\n${r.logTail(10)}`).toMatchObject({ ok: false, code: 'ECONNREFUSED' });
    }
    const nets = await r.cliJson<{ name: string; router: Record<string, number> }[]>(['net', 'list']);
    expect(nets[0]!.router.tcpRefused).toBeGreaterThanOrEqual(targets.length);
  }, 90_000);

  it('hand-made SYNs to 127.0.0.1, 0.0.0.0, ::1 and the router address through the gateway: RST, never SYN-ACK', async () => {
    const results = await vm.rawProbe({
      srcIp: vmIp,
      srcIp6: VM6,
      gwIp: GW,
      targets: [
        { ip: up.address, port: up.httpPort }, // control: through Tor, connects
        { ip: '127.0.0.1', port: 9050 },
        { ip: '127.0.0.1', port: 9051 },
        { ip: '127.0.0.53', port: 9050 },
        { ip: '0.0.0.0', port: 9050 },
        { ip: routerAddr, port: 9050 },
        { ip: '::1', port: 9050 },
        { ip: '::ffff:127.0.0.1', port: 9050 },
      ],
      waitMs: 5_000,
    });
    const msg = JSON.stringify(results);
    console.log(`[reach] raw SYNs: ${results.map((x) => `${x.ip}:${x.port} → ${x.replies.join(',')}`).join('; ')}`);
    expect(results[0], msg).toMatchObject({ replies: ['synack'] });
    for (const res of results.slice(1)) expect(res.replies, `${res.ip}:${res.port} ${msg}`).toEqual(['rst']);
  }, 90_000);

  it("the unix sockets (daemon's, Tor's control) are bound in the router namespace only; Tor's dir is 0700", async () => {
    const socketPath = r.daemon.socket;
    const control = r.embedded.control;
    // /proc/net/unix is per network namespace: the router's lists them, the VM's does not.
    const routerUnix = (await r.ns.exec(['ss', '-Hxl'])).stdout;
    const vmUnix = (await vm.exec(['ss', '-Hxl'])).stdout;
    expect(routerUnix).toContain(socketPath);
    expect(routerUnix).toContain(control);
    expect(vmUnix).not.toContain(socketPath);
    expect(vmUnix).not.toContain(control);
    // root's STATE/tor lets only tor's group through; the sockets' directory is tor's alone.
    expect(statSync(r.embedded.dir).mode & 0o007).toBe(0);
    expect(statSync(dirname(control)).mode & 0o777).toBe(0o700);
    expect(statSync(socketPath).mode & 0o007).toBe(0);
    // Documented, not asserted as unreachable: the filesystem is shared, so root in the VM
    // namespace can still open the paths. This process (root, root namespace) shows it:
    const reachable = await new Promise<boolean>((resolve) => {
      const c = net.createConnection({ path: control });
      c.once('connect', () => {
        c.destroy();
        resolve(true);
      });
      c.once('error', () => resolve(false));
    });
    console.log(`[reach] tor control socket ${control} is reachable by path from another namespace as root: ${reachable} (filesystem, not network)`);
  });
});
