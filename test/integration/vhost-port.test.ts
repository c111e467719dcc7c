/**
 * `mvnet vm attach VM --net N --vhost-user [PATH]` against a real daemon, with the fake
 * vhost-user front-end (test/support/vhost-frontend.ts) doing what QEMU does: the socket made in
 * the VM socket directory, `vm list` states as the device goes listening → running → broken,
 * frames both ways through the rings (ARP to the gateway), the counters, daemon `kill -9` and
 * restart re-listening on the same path (the front-end reconnects and traffic resumes), a broken
 * ring on one VM leaving another working, detach removing the socket.
 */
import { existsSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDaemon, type Daemon } from '../support/daemon.js';
import { cleanupAll, registerCleanup, waitFor } from '../support/netns.js';
import { arpRequest, icmpEchoRequestFrame, parseArp, randomMac } from '../support/frames.js';
import { DESC_F_NEXT, TX, VhostFrontend } from '../support/vhost-frontend.js';
import type { StatusInfo, VmInfo } from '../../daemon/control/api.js';

afterAll(cleanupAll);

const SUBNET = '10.78.5.0/24';
const GATEWAY = '10.78.5.1';

/** An ARP request for the gateway from the guest; resolves with the reply the guest's RX ring got. */
async function arpGateway(fe: VhostFrontend, mac: string, ip: string): Promise<void> {
  fe.postRx(4);
  fe.sendFrames([arpRequest({ srcMac: mac, srcIp: ip, targetIp: GATEWAY })]);
  await waitFor(
    () => {
      fe.reclaimTx();
      return fe.receiveFrames().some((f) => {
        const a = parseArp(f.frame);
        return a !== undefined && a.op === 2 && a.senderIp === GATEWAY && a.targetMac === mac;
      });
    },
    { what: `the gateway's ARP reply in ${mac}'s RX ring` },
  );
}

describe('vhost-user port through the daemon', () => {
  let d: Daemon;
  let dir: string;
  const fes: VhostFrontend[] = [];

  beforeAll(async () => {
    d = await startDaemon();
    registerCleanup('vhost front-ends', async () => {
      for (const fe of fes) fe.close();
      await Promise.resolve();
    });
    await d.cliOk(['net', 'create', 'vh', '--subnet', SUBNET]);
    const st = JSON.parse(await d.cliOk(['--json', 'status'])) as StatusInfo;
    dir = st.daemon.vmSocketDir;
  });

  it('attach (a socket named after the VM), running, frames both ways, kill -9 and restart, detach', async () => {
    const out = JSON.parse(await d.cliOk(['--json', 'vm', 'attach', 'g1', '--net', 'vh', '--vhost-user'])) as VmInfo;
    const path = `${dir}/g1.vhost.sock`;
    expect(out.port).toMatchObject({ kind: 'vhost-user', path, state: 'waiting', device: 'listening' });
    // The --json contract: the kind's own keys (kind, path) beside state, device, detail, lastError, stats.
    expect(Object.keys(out.port).sort()).toEqual(['detail', 'device', 'kind', 'lastError', 'path', 'state', 'stats']);
    expect(out.port.detail).toMatch(new RegExp(`^listening on ${path}`));
    expect(existsSync(path)).toBe(true);

    // A second attachment on the same socket is refused; so is a socket where others could replace it; in one line each.
    const clash = await d.cli(['vm', 'attach', 'g9', '--net', 'vh', '--vhost-user', path]);
    expect(clash.code).not.toBe(0);
    const tmp = await d.cli(['vm', 'attach', 'g9', '--net', 'vh', '--vhost-user', '/tmp/mvt-g9.vhost.sock']);
    expect(tmp.code).not.toBe(0);
    expect(tmp.stderr.trimEnd().split('\n')).toEqual([expect.stringMatching(/^mvnet: .*socket directory \/tmp is writable by everyone/)]);
    const bad = await d.cli(['vm', 'attach', 'g9', '--net', 'vh', '--vhost-user', '../g9.sock']);
    expect(bad.stderr.trimEnd().split('\n')).toEqual([expect.stringMatching(/^mvnet: .*plain file name/)]);
    expect(existsSync('/tmp/mvt-g9.vhost.sock')).toBe(false);

    const fe = VhostFrontend.connect(path);
    fes.push(fe);
    await fe.start();
    await waitFor(async () => (await d.vm('g1')).port.detail.startsWith('running'), { what: 'g1 running' });
    expect((await d.vm('g1')).port).toMatchObject({ state: 'up', device: 'running' });

    const mac = randomMac();
    await arpGateway(fe, mac, '10.78.5.20');
    const v = await d.vm('g1');
    expect(v.mac).toBe(mac);
    expect(v.port.stats.rxFrames).toBeGreaterThanOrEqual(1);
    expect(v.port.stats.txFrames).toBeGreaterThanOrEqual(1);
    const list = await d.cliOk(['vm', 'list']);
    expect(list).toMatch(new RegExp(`g1 +vh +vhost-user ${path} .* up: running`));

    // The daemon dies; a new one re-listens on the same path and the front-end comes back.
    await d.kill('SIGKILL');
    await fe.waitClosed();
    await d.start();
    expect((await d.vm('g1')).port.state).toBe('waiting');
    fe.reconnect(path);
    await fe.start();
    await waitFor(async () => (await d.vm('g1')).port.detail.startsWith('running'), { what: 'g1 running again' });
    await arpGateway(fe, mac, '10.78.5.20');

    await d.cliOk(['vm', 'detach', 'g1']);
    await fe.waitClosed();
    expect(existsSync(path)).toBe(false);
  });

  it('two guests: frames from one to the other (cut through natively once both MACs are known), counted on both ports', async () => {
    await d.cliOk(['vm', 'attach', 'ga', '--net', 'vh', '--vhost-user', 'ga.sock']);
    await d.cliOk(['vm', 'attach', 'gb', '--net', 'vh', '--vhost-user', 'gb.sock']);
    const a = VhostFrontend.connect(`${dir}/ga.sock`);
    const b = VhostFrontend.connect(`${dir}/gb.sock`);
    fes.push(a, b);
    await a.start();
    await b.start();
    const macA = randomMac();
    const macB = randomMac();
    // Each guest's first frame (ARP to the gateway) makes the switch learn its MAC.
    await arpGateway(a, macA, '10.78.5.40');
    await arpGateway(b, macB, '10.78.5.41');
    const before = (await d.vm('ga')).port.stats.rxFrames;
    const N = 20;
    const payload = (i: number): Buffer => icmpEchoRequestFrame({ srcMac: macA, dstMac: macB, srcIp: '10.78.5.40', dstIp: '10.78.5.41', id: 7, seq: i });
    b.postRx(N + 4);
    a.sendFrames(Array.from({ length: N }, (_, i) => payload(i)));
    const got: Buffer[] = [];
    await waitFor(() => {
      a.reclaimTx();
      got.push(...b.receiveFrames().map((f) => Buffer.from(f.frame)));
      return got.length >= N;
    }, { what: `${N} frames from ga in gb's RX ring` });
    expect(got).toEqual(Array.from({ length: N }, (_, i) => payload(i)));
    await waitFor(async () => (await d.vm('ga')).port.stats.rxFrames >= before + N, { what: "ga's port counting the frames" });
    expect((await d.vm('gb')).port.stats.txFrames).toBeGreaterThanOrEqual(N);
    // Cut-through was taken up for the vhost-user ports (no fallback to JS).
    expect(d.allLogs.filter((l) => l.msg === 'vhost-user cut-through refused; forwarding in JS')).toEqual([]);
    await d.cliOk(['vm', 'detach', 'ga']);
    await d.cliOk(['vm', 'detach', 'gb']);
  });

  it('a guest breaking its ring marks its device broken (down, with why); another VM keeps working', async () => {
    await d.cliOk(['vm', 'attach', 'ok1', '--net', 'vh', '--vhost-user', 'ok1.sock']);
    await d.cliOk(['vm', 'attach', 'bad1', '--net', 'vh', '--vhost-user', 'bad1.sock']);
    const good = VhostFrontend.connect(`${dir}/ok1.sock`);
    fes.push(good);
    await good.start();
    // A descriptor loop on the guest's TX ring (as breakGuestRing, without waiting for the
    // back-end to hang up: a ring violation stops the rings, the connection may stay).
    const bad = VhostFrontend.connect(`${dir}/bad1.sock`, { memSize: 1 << 20, num: 64, bufSize: 2048 });
    fes.push(bad);
    await bad.start();
    const r = bad.rings[TX]!;
    r.writeDesc(0, { addr: r.bufGpa(0), len: 64, flags: DESC_F_NEXT, next: 1 });
    r.writeDesc(1, { addr: r.bufGpa(1), len: 64, flags: DESC_F_NEXT, next: 0 });
    r.availPush(0);
    r.kick();
    const b = await waitFor(async () => {
      const x = await d.vm('bad1');
      return x.port.state === 'down' ? x : undefined;
    }, { what: 'bad1 down' });
    expect(b.port.detail).toMatch(/^broken: .+/);
    expect(b.port.device).toBe('broken');
    await arpGateway(good, randomMac(), '10.78.5.30');
    expect((await d.vm('ok1')).port.state).toBe('up');
    expect(b.port.detail).toMatch(/guest ring violation/);
    // QEMU connecting again gives the device a new start.
    bad.disconnect();
    const again = VhostFrontend.connect(`${dir}/bad1.sock`);
    fes.push(again);
    await again.start();
    await waitFor(async () => (await d.vm('bad1')).port.detail.startsWith('running'), { what: 'bad1 running after a new connection' });
  });
});
