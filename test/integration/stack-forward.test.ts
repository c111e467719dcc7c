/**
 * Port forwards into a VM: `mvnet forward add VM --host 127.0.0.1:PORT --guest PORT` makes the
 * daemon listen on 127.0.0.1:PORT in its own (the router) namespace and open each connection
 * into the VM. An HTTP server of the test's own runs inside the VM namespace; curl in the router
 * namespace reaches it through the forward, bytes intact both ways; `forward list` shows it;
 * `forward remove` closes the listener. Traffic only to 127.0.0.1 and inside the namespaces.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupAll, type ManagedProcess } from '../support/netns.js';
import { sh, startTopology, type StackVm, type Topology } from '../support/stack-topology.js';
import type { ForwardInfo } from '../../daemon/control/api.js';

afterAll(cleanupAll);

const HOST_PORT = 18080;
const GUEST_PORT = 8080;
const VM_IP = '10.215.0.20';


describe('stack: port forward into a VM', () => {
  let t: Topology;
  let vm: StackVm;
  let server: ManagedProcess;

  beforeAll(async () => {
    t = await startTopology({ prefix: 'sfw' });
    await t.cli(['net', 'create', 'lan', '--subnet', '10.215.0.0/24']);
    vm = await t.addVm('w', 'lan', { ip: VM_IP });
    await vm.configure();
    // The VM's own HTTP server (the same program the upstream runs), on its leased address.
    server = vm.ns.spawn(
      ['node', t.programs.upstreamServer, JSON.stringify({ hosts: ['0.0.0.0'], http: GUEST_PORT, half: 8081, rst: 8082, udpEcho: 8083, halfReply: 1024 })],
      { label: 'VM http server' },
    );
    await server.waitForLine((l) => l.includes('"ev":"ready"'), { timeoutMs: 15_000 });
  });

  it('forward add: the daemon listens on 127.0.0.1:PORT in its namespace and opens connections into the VM', async () => {
    const r = await t.daemon.cli(['forward', 'add', 'w', '--host', `127.0.0.1:${HOST_PORT}`, '--guest', String(GUEST_PORT)]);
    expect(r.code, r.stderr).toBe(0);
    const hello = await sh(t.router, `curl -q --noproxy '*' -sS --max-time 10 http://127.0.0.1:${HOST_PORT}/hello`);
    expect(hello.code, hello.stderr).toBe(0);
    expect(hello.stdout).toBe('hello\n');
    // The VM's server saw a connection from the gateway side of its network.
    expect(server.lines.some((l) => l.includes('"ev":"http-conn"'))).toBe(true);
  });

  it('carries bytes intact both ways through the forward', async () => {
    const size = 8 * 1024 * 1024;
    const want = (await vm.exec(['curl', '-q', '--noproxy', '*', '-sS', `http://127.0.0.1:${GUEST_PORT}/sha/${size}`])).stdout.trim();
    const dl = await sh(t.router, `curl -q --noproxy '*' -sS --fail --max-time 60 http://127.0.0.1:${HOST_PORT}/bytes/${size} | sha256sum`);
    expect(dl.code, dl.stderr).toBe(0);
    expect(dl.stdout.split(' ')[0]).toBe(want);
    const ul = await sh(
      t.router,
      `head -c ${size} /dev/urandom > ${t.dir}/fw-up.bin && sha256sum ${t.dir}/fw-up.bin | cut -d' ' -f1 && curl -q --noproxy '*' -sS --fail --max-time 60 -H 'Expect:' -T ${t.dir}/fw-up.bin http://127.0.0.1:${HOST_PORT}/upload`,
    );
    expect(ul.code, ul.stderr).toBe(0);
    const [sent, answer] = ul.stdout.trim().split('\n');
    expect(JSON.parse(answer!)).toEqual({ bytes: size, sha256: sent });
  }, 120_000);

  it('forward list shows it', async () => {
    const list = JSON.parse(await t.daemon.cliOk(['--json', 'forward', 'list'])) as ForwardInfo[];
    expect(list).toHaveLength(1);
    expect(list[0]).toMatchObject({ vm: 'w', host: '127.0.0.1', port: HOST_PORT, guestPort: GUEST_PORT });
  });

  it('forward remove closes the listener', async () => {
    const r = await t.daemon.cli(['forward', 'remove', 'w', '--host', `127.0.0.1:${HOST_PORT}`]);
    expect(r.code, r.stderr).toBe(0);
    const after = await sh(t.router, `curl -q --noproxy '*' -sS --max-time 5 http://127.0.0.1:${HOST_PORT}/hello`);
    expect(after.code).toBe(7); // connection refused: nothing listens any more
    const list = JSON.parse(await t.daemon.cliOk(['--json', 'forward', 'list'])) as ForwardInfo[];
    expect(list).toEqual([]);
  });
});
