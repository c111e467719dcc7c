/**
 * Fail closed: the daemon's embedded Tor is SIGKILLed in the middle of an all-tor VM's large
 * download (`torUpstream()`'s /large, rate-limited so it is still running).
 *
 * - the download fails (no silent truncation that looks complete);
 * - `mvnet tor status` says why (not ready; the daemon logged "tor is down" with the reason);
 * - the daemon starts tor again by itself, with growing delays (backoff); to hold Tor down long
 *   enough to look, the embedded tor runs through a wrapper (`tor.binary`) that refuses to start
 *   while the test says so (the network itself is left alone);
 * - while Tor is down, the VM's new TCP connections are reset at once and its DNS queries get
 *   SERVFAIL;
 * - nothing leaks meanwhile: the router namespace (default routes into a sink, see
 *   mvnet-harness.ts) is captured from before the daemon starts to the end and judged by the
 *   same detector as the leak test;
 * - once tor may start again, the daemon's next automatic restart brings it back, it becomes
 *   ready and new downloads work — complete and intact — without touching the VM.
 */
import { createReadStream, statSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupAll, uniqueName, waitFor, type ManagedProcess } from '../support/netns.js';
import { privateTor, torUpstream } from './context.js';
import { NsCapture, TorRouter, classifyLeaks, flows, patternSha256, type TorVm } from './mvnet-harness.js';
import type { TorStatus } from '../../daemon/control/api.js';

const tor = privateTor();
const up = torUpstream();

afterAll(cleanupAll);

function sha256File(file: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    createReadStream(file)
      .on('data', (d) => h.update(d))
      .on('end', () => resolve(h.digest('hex')))
      .on('error', reject);
  });
}

function fileSize(file: string): number {
  try {
    return statSync(file).size;
  } catch {
    return 0;
  }
}

describe('fail closed: Tor killed during a download', () => {
  let r: TorRouter;
  let vm: TorVm;
  let cap: NsCapture;
  let onionAddr: string;
  let killedAt = 0;
  let logMark = 0;
  let watch: ReturnType<TorRouter['watchTorStatus']>;

  beforeAll(async () => {
    r = await TorRouter.create({
      prefix: 'tfc',
      mode: 'embedded',
      sink: true,
      deferDaemon: true,
      torWrapper: true,
      // Tor is killed and held down on purpose: the daemon says so at error level.
      expectErrors: ['tor', 'killing tor to start it again', 'Tor did not start'],
    });
    cap = await r.capture();
    await r.startDaemon();
    await r.cli(['net', 'create', 'lan', '--subnet', '10.233.0.0/24']);
    vm = await r.addVm('vm1', 'lan');
    await r.cli(['route', '--all-tor', 'vm1']);
    await vm.configure();
    await r.waitTorReady(90_000);
    // Circuits are built and the onion has an automap address before the failure.
    const warm = await vm.curl(['--max-time', '30', up.nameUrl]);
    expect(warm.stdout, warm.stderr).toBe(`${up.hello}\n`);
    const g = await vm.exec(['getent', 'ahostsv4', tor.onion.hostname]);
    onionAddr = g.stdout.split(/\s+/)[0]!;
    expect(onionAddr).toMatch(/^10\./);
  }, 150_000);

  it('the download in progress fails when tor is SIGKILLed', async () => {
    const file = join(r.dir, `${uniqueName('large', 20)}.bin`);
    // What the VM receives: how does the killed stream end for it (FIN or RST)?
    const vmCap = await NsCapture.start(vm.ns, r.dir);
    // 1 MB/s: 8 MiB take ~8 s, so the kill lands in the middle.
    const dl: ManagedProcess = vm.ns.spawn(
      ['curl', '-q', '--noproxy', '*', '-sS', '--limit-rate', '1M', '--max-time', '60', '-o', file, '-w', '%{http_code} %{size_download}', `${up.nameUrl}large`],
      { label: 'curl /large in vm1' },
    );
    await waitFor(() => fileSize(file) >= 1_000_000 || !dl.running, { timeoutMs: 30_000, intervalMs: 50, what: 'the download to pass 1 MB' });
    expect(dl.running, dl.tail()).toBe(true);
    const pid = r.embeddedTorPid();
    expect(pid, 'the embedded tor process').toBeDefined();
    logMark = r.daemon.logs.length;
    watch = r.watchTorStatus();
    await waitFor(() => watch.states.length > 0, { what: 'a first tor status' });
    // Every restart of tor fails from now on, until the test allows it again.
    r.blockTorStart(true);
    process.kill(pid!, 'SIGKILL');
    killedAt = Date.now();
    const exit = await dl.exited;
    const got = fileSize(file);
    console.log(`[failclosed] download ended ${Date.now() - killedAt} ms after the kill: curl exit ${exit.code}, ${got} of ${up.largeBytes} bytes, ${dl.lines.join(' ')} ${dl.stderr.trim()}`);
    const ends = (await vmCap.stop()).filter((p) => p.proto === 'tcp' && p.src === up.address && p.sport === up.httpPort && (p.flags! & 0x05) !== 0);
    const how = ends.map((p) => ((p.flags! & 0x04) !== 0 ? 'RST' : 'FIN'));
    console.log(`[failclosed] the VM's download connection was ended by the gateway with: ${how.join(', ') || '(nothing)'}`);
    expect(exit.code, dl.tail()).not.toBe(0);
    expect(got).toBeGreaterThanOrEqual(1_000_000);
    expect(got).toBeLessThan(up.largeBytes);
    // A stream through a dead Tor is reset, never ended as if it were complete.
    expect(how, 'how the gateway ended the VM stream').toContain('RST');
    expect(how).not.toContain('FIN');
  }, 60_000);

  it('tor status says why (down, lastError names the kill); the daemon retries with growing delays', async () => {
    await r.waitForLog((l) => l.msg === 'tor is down', { from: logMark, timeoutMs: 10_000 });
    // Two failed restarts: ~1 s after the kill, then ~2 s after that.
    await waitFor(() => watch.states.some((x) => x.restarts >= 2 && x.phase === 'down'), { timeoutMs: 20_000, what: 'two failed restarts of tor' });
    const states = [...watch.states];
    const seq = states.map((x) => `+${x.at - killedAt} ms ${x.phase} ${x.progress}% restarts=${x.restarts} summary=${JSON.stringify(x.summary)} lastError=${JSON.stringify(x.lastError)}`);
    const msg = seq.join('\n');
    console.log(`[failclosed] tor status from the kill on:\n  ${seq.join('\n  ')}`);
    expect(states[0]!.phase, msg).toBe('ready');
    // Down, and why: first the kill...
    const down = states.filter((x) => x.phase === 'down');
    expect(down.some((x) => x.restarts === 0 && /killed by SIGKILL/.test(x.lastError ?? '')), `no 'down' status names the kill:\n${msg}`).toBe(true);
    // ...then why the restarts fail (tor's [err] line, as the daemon captured it).
    expect(down.some((x) => x.restarts >= 1 && /exited with code 1.*tor start blocked/.test(x.lastError ?? '')), msg).toBe(true);
    // Backoff: the second restart comes later after its failure than the first after the kill.
    const firstAt = (n: number): number => states.find((x) => x.restarts >= n)!.at;
    const gap1 = firstAt(1) - killedAt;
    const gap2 = firstAt(2) - firstAt(1);
    expect(gap1, msg).toBeGreaterThanOrEqual(800);
    expect(gap2, msg).toBeGreaterThan(gap1);
    expect(states.slice(1).every((x) => x.phase !== 'ready'), msg).toBe(true);
    const now = await r.torStatus();
    expect(now.phase).not.toBe('ready');
    expect(now.lastError, JSON.stringify(now)).toBeTruthy();
    // What the daemon's own log says about it (warnings and errors about tor).
    const logged = r.daemon.logs.slice(logMark).filter((l) => (l.level ?? 0) >= 40 && !/DirAuthority|TestingTorNetwork|as root/.test(String(l.tor ?? '')));
    console.log(`[failclosed] daemon warnings after the kill:\n  ${logged.map((l) => JSON.stringify(l)).slice(0, 8).join('\n  ')}`);
  }, 30_000);

  it('while Tor is down, new connections are reset at once and DNS answers SERVFAIL', async () => {
    const status = await r.torStatus();
    expect(status.phase, JSON.stringify(status)).not.toBe('ready');
    for (const [host, port] of [
      [up.address, up.httpPort],
      [onionAddr, 80],
      [tor.relays[0]!.address, tor.relays[0]!.orPort],
    ] as const) {
      const t = await vm.tcp(host, port, 5_000);
      expect(t, `${host}:${port}`).toMatchObject({ ok: false, code: 'ECONNREFUSED' });
      expect(t.ms, `${host}:${port}`).toBeLessThan(2_000);
    }
    // Raw queries to the gateway (what the VM's resolver gets back), A and AAAA.
    for (const name of [up.name, tor.onion.hostname, 'hello.onion.mvnet']) {
      for (const type of ['A', 'AAAA'] as const) {
        const d = await vm.dnsRaw('10.233.0.1', name, type);
        expect(d, `${name} ${type}`).toMatchObject({ rcode: 'SERVFAIL', answers: [] });
      }
    }
    expect(await vm.dns(up.name)).toMatchObject({ ok: false, code: 'ESERVFAIL' });
    // curl by name fails fast as well (the resolver gets SERVFAIL, nothing to connect to).
    const c = await vm.curl(['--max-time', '10', up.nameUrl], 30_000);
    expect(c.code).not.toBe(0);
    expect((await r.torStatus()).phase).not.toBe('ready');
    const nets = await r.cliJson<{ name: string; router: { torRefused: number } }[]>(['net', 'list']);
    expect(nets[0]!.router.torRefused).toBeGreaterThanOrEqual(3);
  }, 60_000);

  it('after Tor is back, new downloads work (complete, intact) without touching the VM', async () => {
    const states = await watch.stop();
    // Never ready at any moment while tor was held down.
    expect(states.slice(1).every((x) => x.phase !== 'ready')).toBe(true);
    r.blockTorStart(false);
    const t0 = Date.now();
    const s: TorStatus = await r.waitTorReady(90_000);
    console.log(`[failclosed] ready again ${Date.now() - t0} ms after tor may start again (restarts ${s.restarts})`);
    expect(s.restarts).toBeGreaterThanOrEqual(3);
    const file = join(r.dir, `${uniqueName('large', 20)}.bin`);
    const res = await vm.curl(['--max-time', '60', '--fail', '-o', file, '-w', '%{http_code} %{size_download}', `${up.nameUrl}large`], 90_000);
    expect(res.code, res.stderr).toBe(0);
    expect(fileSize(file)).toBe(up.largeBytes);
    expect(await sha256File(file)).toBe(patternSha256(up.largeBytes));
    const d = await vm.dns(up.name);
    expect(d).toMatchObject({ ok: true, addresses: [up.address] });
  }, 120_000);

  it('nothing leaked from the router namespace at any time (start, kill, down, recovery)', async () => {
    const pkts = await cap.stop();
    const v = classifyLeaks(pkts, { torAddrs: new Set([r.link!.routerAddr]), relays: r.relayEndpoints() });
    expect(v.relay.length).toBeGreaterThan(0);
    expect(v.leaks, flows(v.leaks).join('\n')).toEqual([]);
    const afterKill = v.relay.filter((p) => p.ts * 1000 > killedAt && p.dir === 'out' && (p.flags! & 0x12) === 0x02);
    // Tor's reconnects after the relays came back are the only new connections.
    console.log(`[failclosed] ${pkts.length} packets, ${v.leaks.length} leaks; ${afterKill.length} relay SYNs after the kill`);
  });
});
