/**
 * Operating the embedded Tor (issue 12): what people see while Tor bootstraps or cannot, whom
 * it runs as, and that it stops when nothing needs it.
 *
 * 1. A Tor that cannot bootstrap says why: the daemon's embedded tor joins the private network
 *    (its torrc) from a namespace of this test's own where the relays' addresses are local (on
 *    lo) and nothing listens: every connection is refused (nothing leaves the namespace). Tor
 *    reports a BOOTSTRAP PROBLEM with a reason (CONNECTREFUSED); `tor status --json` carries it (bootstrapProblem, warnings), `mvnet status`
 *    has a Tor line with it, the `route --all-tor` reply says the VM fails closed and why, and
 *    `route --wait` gives up at its timeout naming tor's reason.
 * 2. With the private network reachable: the embedded tor runs as an unprivileged user with
 *    Sandbox 1 and still routes (curl through it from an all-tor VM); `route --wait` prints one
 *    plain line per bootstrap change when not on a terminal and a bar redrawn with \r on one
 *    (script(1) gives it a pty); clearing the last Tor route stops tor after tor.idleStopSec,
 *    and a new Tor route starts it again.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI_JS, startDaemon, type Daemon } from '../support/daemon.js';
import { cleanupAll, createNetns, makeTempDir, pidAlive as alive, run, spawnProcess, waitFor, type Netns } from '../support/netns.js';
import { privateTor, torUpstream } from './context.js';
import { TorRouter, type TorVm } from './mvnet-harness.js';
import type { MvnetEvent, RouteSetInfo, StatusInfo, TorStatus } from '../../daemon/control/api.js';

const tor = privateTor();
const up = torUpstream();

afterAll(cleanupAll);

/** The uid a process runs as (real uid, from /proc/PID/status), undefined once it is gone. */
function uidOf(pid: number): number | undefined {
  try {
    const m = /^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}


describe('a Tor that cannot bootstrap says why', () => {
  let ns: Netns;
  let d: Daemon;

  beforeAll(async () => {
    // The relays' network on lo: connections are refused at once. (With no route at all, tor
    // fails each connect with ENETUNREACH and reports nothing: it says "0% Starting" for ever.)
    ns = await createNetns('tops-nr');
    await ns.exec(['ip', 'addr', 'add', tor.relayNet.replace(/\.0\//, '.1/'), 'dev', 'lo']);
    const dir = makeTempDir('topsnr');
    const config = join(dir, 'mvnet.json');
    writeFileSync(config, JSON.stringify({ logLevel: 'info', tor: { mode: 'embedded', torrc: tor.torrcForClient(), stopWhenUnused: false } }));
    d = await startDaemon({ netns: ns, config });
  }, 60_000);

  it('tor status --json has tor\'s bootstrap problem and warnings; tor runs as an unprivileged user', async () => {
    let last: TorStatus | undefined;
    const s = await waitFor(
      async () => {
        last = await d.cliJson<TorStatus>(['tor', 'status']);
        return last.bootstrapProblem !== null && last.warnings.some((w) => /bootstrap stuck/.test(w)) ? last : undefined;
      },
      { timeoutMs: 45_000, intervalMs: 300, what: `a bootstrap problem in tor status (last: ${JSON.stringify(last)})` },
    );
    console.log(`[tor-ops] tor status while it cannot bootstrap: ${JSON.stringify({ phase: s.phase, progress: s.progress, bootstrapProblem: s.bootstrapProblem, warnings: s.warnings, privileges: s.privileges })}`);
    expect(s.phase).not.toBe('ready');
    // Tor's own words: "Connection refused" (CONNECTREFUSED).
    expect(s.bootstrapProblem!.warning).toMatch(/connection refused/i);
    expect(s.bootstrapProblem!.reason).toBe('CONNECTREFUSED');
    expect(s.warnings.length).toBeLessThanOrEqual(8);
    expect(new Set(s.warnings).size).toBe(s.warnings.length);
    expect(s.privileges).toMatchObject({ user: 'debian-tor', sandbox: true });
    expect(s.pid).toBeDefined();
    const uid = uidOf(s.pid!);
    expect(uid, `/proc/${s.pid}/status`).toBeDefined();
    expect(uid).not.toBe(0);
    const human = await d.cliOk(['tor', 'status']);
    expect(human).toMatch(/bootstrap problem at \d+% .*Connection refused \[CONNECTREFUSED\]/i);
    expect(human).toMatch(/runs as debian-tor \(pid \d+\), sandbox on/);
  }, 60_000);

  it('mvnet events carries tor\'s warnings (tor.warning), replayed to a follower that comes later', async () => {
    const f = spawnProcess(['node', CLI_JS, '--socket', d.socket, '--json', 'events', '--backlog', '1000', '--type', 'tor.warning'], { label: 'mvnet events --type tor.warning' });
    try {
      const line = await f.waitForLine((l) => /"type":"tor\.warning"/.test(l), { timeoutMs: 60_000 });
      const ev = JSON.parse(line) as MvnetEvent;
      expect(ev.type === 'tor.warning' && ev.message.length > 0).toBe(true);
      expect(ev.type).toBe('tor.warning');
    } finally {
      await f.stop();
    }
  });

  it('mvnet status has a Tor line with the reason', async () => {
    const st = await d.cliJson<StatusInfo>(['status']);
    expect(st.tor?.bootstrapProblem?.reason).toBe('CONNECTREFUSED');
    const human = await d.cliOk(['status']);
    expect(human).toMatch(/^Tor \(embedded\): (starting|bootstrapping) \d+%.*; tor says: Connection refused \(CONNECTREFUSED\)/im);
  });

  it('the route --all-tor reply says the VM fails closed, and why', async () => {
    const r = await d.cliJson<RouteSetInfo>(['route', '--all-tor', '--create', 'vm1']);
    expect(r.route).toEqual({ kind: 'tor' });
    expect(r.tor?.phase).not.toBe('ready');
    expect(r.tor?.bootstrapProblem?.reason).toBe('CONNECTREFUSED');
    const human = await d.cliOk(['route', '--all-tor', 'vm1']);
    expect(human).toMatch(/vm1 fails closed until Tor is ready; tor says: Connection refused \(CONNECTREFUSED\)/);
  });

  it('route --wait gives up at --wait-timeout with tor\'s reason (non-zero exit, plain progress lines)', async () => {
    const t0 = Date.now();
    const r = await d.cli(['route', '--all-tor', 'vm1', '--wait', '--wait-timeout', '2'], { timeoutMs: 20_000 });
    expect(r.code).not.toBe(0);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(2_000);
    expect(r.stderr).toMatch(/Tor did not become ready within 2 s: .*tor says: Connection refused \(CONNECTREFUSED\)/);
    // Not a terminal: plain lines, no \r redraws.
    expect(r.stdout).toMatch(/^\d+% Tor (starting|bootstrapping) \d+%/m);
    expect(r.stdout).not.toContain('\r');
    expect(r.stdout).not.toContain('\x1b');
  }, 30_000);
});

describe('unprivileged sandboxed Tor routes, reports progress, and stops when unused', () => {
  let r: TorRouter;
  let vm: TorVm;
  const IDLE_SEC = 2;

  beforeAll(async () => {
    r = await TorRouter.create({ prefix: 'tops', mode: 'embedded', tor: { idleStopSec: IDLE_SEC } });
    await r.cli(['net', 'create', 'lan', '--subnet', '10.234.0.0/24']);
    vm = await r.addVm('vm1', 'lan');
    await vm.configure();
  }, 120_000);

  it('route --all-tor --wait (not a terminal): one plain line per bootstrap change, then ready; tor runs as debian-tor with the sandbox and routes', async () => {
    // The config's tor section starts tor with the daemon; nothing needs it yet, so it stops.
    await r.waitTorStatus((s) => s.phase === 'down' && /stopWhenUnused/.test(s.summary), 'tor stopped while unused', (IDLE_SEC + 30) * 1000);
    const res = await r.daemon.cli(['route', '--all-tor', 'vm1', '--wait', '--wait-timeout', '90'], { timeoutMs: 120_000 });
    expect(res.code, res.stderr).toBe(0);
    console.log(`[tor-ops] route --wait (pipe):\n${res.stdout}`);
    const lines = res.stdout.trim().split('\n');
    expect(lines.length, res.stdout).toBeGreaterThan(2);
    expect(lines[0]).toMatch(/^\d+% Tor (starting|bootstrapping|down)/);
    expect(lines.at(-1)).toMatch(/^vm1: .*; Tor is ready$/);
    expect(new Set(lines).size).toBe(lines.length);
    expect(res.stdout).not.toContain('\r');
    expect(res.stdout).not.toContain('\x1b');
    const s = await r.torStatus();
    expect(s.phase).toBe('ready');
    expect(s.privileges).toMatchObject({ user: 'debian-tor', sandbox: true });
    const pid = r.embeddedTorPid();
    expect(pid).toBe(s.pid);
    expect(uidOf(pid!)).toBe(Number((await run(['id', '-u', 'debian-tor'])).stdout.trim()));
    const c = await vm.curl(['--max-time', '30', up.nameUrl]);
    expect(c.stdout, c.stderr).toBe(`${up.hello}\n`);
  }, 150_000);

  it('clearing the last Tor route stops tor after idleStopSec; tor status says why', async () => {
    const pid = r.embeddedTorPid()!;
    const t0 = Date.now();
    await r.cli(['route', '--clear', 'vm1']);
    await waitFor(() => !alive(pid), { timeoutMs: (IDLE_SEC + 15) * 1000, intervalMs: 100, what: 'tor to exit after the grace period' });
    const took = Date.now() - t0;
    console.log(`[tor-ops] tor exited ${took} ms after the last Tor route was cleared (idleStopSec ${IDLE_SEC})`);
    expect(took).toBeGreaterThanOrEqual(IDLE_SEC * 1000 - 100);
    const s = await r.torStatus();
    expect(s.phase, r.logTail(40)).toBe('down');
    expect(s.summary).toMatch(/nothing needed Tor .*stopWhenUnused/);
    expect(r.embeddedTorPid()).toBeUndefined();
  }, 30_000);

  it('a new Tor route starts it again; on a terminal route --wait draws a bar redrawn with \\r', async () => {
    // script(1) runs the CLI on a pty: stdout is a terminal.
    const cmd = ['node', CLI_JS, '--socket', r.daemon.socket, 'route', '--all-tor', 'vm1', '--wait', '--wait-timeout', '90'].join(' ');
    const res = await run(['script', '-q', '-e', '-c', cmd, '/dev/null'], { check: false, timeoutMs: 120_000 });
    expect(res.code, res.stdout + res.stderr).toBe(0);
    console.log(`[tor-ops] route --wait (terminal): ${JSON.stringify(res.stdout)}`);
    expect(res.stdout).toMatch(/\r\[[#-]{24}\] +\d+% Tor /);
    expect(res.stdout).toContain('\x1b[K');
    expect(res.stdout).toMatch(/vm1: .*; Tor is ready\r?\n$/);
    const pid = r.embeddedTorPid();
    expect(pid).toBeDefined();
    expect(uidOf(pid!)).not.toBe(0);
    const c = await vm.curl(['--max-time', '30', up.nameUrl]);
    expect(c.stdout, c.stderr).toBe(`${up.hello}\n`);
  }, 150_000);

  it('under --json, route --wait prints the final JSON only', async () => {
    await r.cli(['route', '--clear', 'vm1']);
    await waitFor(async () => (await r.torStatus()).phase === 'down', { timeoutMs: (IDLE_SEC + 15) * 1000, intervalMs: 200, what: 'tor stopped again' });
    const res = await r.daemon.cli(['--json', 'route', '--all-tor', 'vm1', '--wait', '--wait-timeout', '90'], { timeoutMs: 120_000 });
    expect(res.code, res.stderr).toBe(0);
    const j = JSON.parse(res.stdout) as RouteSetInfo;
    expect(j).toMatchObject({ vm: 'vm1', route: { kind: 'tor' } });
    expect(j.tor).toBeNull();
    expect((await r.torStatus()).phase).toBe('ready');
  }, 150_000);
});

