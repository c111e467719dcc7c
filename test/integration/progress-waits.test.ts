/**
 * Progress where people wait (cli/progress.ts), against the real daemon:
 *
 * - `vm attach --unix-listen PATH --wait` returns only once something connected to the socket (a
 *   real unix client, as QEMU's `-netdev stream,server=off` would), printing the port's state as
 *   plain lines meanwhile (not a terminal); with nobody connecting it gives up at --wait-timeout.
 * - `mvnet capture VM -w FILE` on a terminal (script(1) gives it a pty) redraws one line of
 *   counters with \r while it runs; not on a terminal, no such line.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI_JS, startDaemon, type Daemon } from '../support/daemon.js';
import { cleanupAll, makeTempDir, run, waitFor } from '../support/netns.js';
import { attachTapVm, type TapVm } from '../support/vms.js';

afterAll(cleanupAll);

let d: Daemon;
let dir: string;

beforeAll(async () => {
  d = await startDaemon();
  dir = makeTempDir('pw');
  await d.cliOk(['net', 'create', 'A', '--subnet', '10.86.1.0/24']);
}, 60_000);

describe('vm attach --wait', () => {
  it('returns once a client connected to the --unix-listen socket, with plain progress lines meanwhile', async () => {
    const sock = join(dir, 'v1.sock');
    const child = spawn('node', [CLI_JS, '--socket', d.socket, 'vm', 'attach', 'v1', '--net', 'A', '--unix-listen', sock, '--wait', '--wait-timeout', '30'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    let done = false;
    void exited.then(() => (done = true));
    await waitFor(() => existsSync(sock) && stdout.includes('v1: waiting'), { timeoutMs: 15_000, intervalMs: 50, what: 'the socket and a first progress line' });
    // Still waiting: nothing has connected yet.
    await new Promise((r) => setTimeout(r, 500));
    expect(done, stdout + stderr).toBe(false);
    const client = net.createConnection({ path: sock });
    await new Promise<void>((resolve, reject) => client.once('connect', resolve).once('error', reject));
    const code = await exited;
    client.destroy();
    expect(code, stderr).toBe(0);
    const lines = stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^v1: waiting \(.*\), \d+ s$/);
    expect(lines.at(-1)).toMatch(/^attached v1 to A by .*: up \(/);
    expect(stdout).not.toContain('\r');
  }, 40_000);

  it('gives up at --wait-timeout with the port state (exit 1, one line on stderr)', async () => {
    const r = await d.cli(['vm', 'attach', 'v2', '--net', 'A', '--unix-listen', join(dir, 'v2.sock'), '--wait', '--wait-timeout', '1']);
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toMatch(/^mvnet: v2 did not come up within 1 s: waiting \(.+\)$/);
  });

  it('--wait-timeout without --wait is refused', async () => {
    const r = await d.cli(['vm', 'attach', 'v3', '--net', 'A', '--unix-listen', join(dir, 'v3.sock'), '--wait-timeout', '5']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/--wait-timeout goes with --wait/);
  });
});

describe('capture counters while running', () => {
  let vm: TapVm;

  beforeAll(async () => {
    vm = await attachTapVm(d, { vm: 'c1', net: 'A', cidr: '10.86.1.20/24' });
  }, 30_000);

  it('on a terminal: one line of counters redrawn with \\r, erased before the summary', async () => {
    const file = join(dir, 'c1.pcapng');
    const cmd = ['node', CLI_JS, '--socket', d.socket, 'capture', 'c1', '-w', file, '--duration', '3'].join(' ');
    const cap = run(['script', '-q', '-e', '-c', cmd, '/dev/null'], { check: false, timeoutMs: 30_000 });
    // Traffic for it: pings to the gateway.
    await vm.ns.exec(['ping', '-c', '10', '-i', '0.2', '-W', '1', '10.86.1.1'], { check: false });
    const r = await cap;
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const ESC = String.fromCharCode(27);
    const frames = [...r.stdout.matchAll(new RegExp(`\\rcaptured (\\d+) packets, dropped (\\d+)${ESC}\\[K`, 'g'))].map((m) => Number(m[1]));
    expect(frames.length, JSON.stringify(r.stdout)).toBeGreaterThan(0);
    expect(Math.max(...frames)).toBeGreaterThan(0);
    expect(r.stdout).toMatch(new RegExp(`\\r${ESC}\\[K\\d+ packets captured`));
  }, 40_000);

  it('not on a terminal: no counter line', async () => {
    const r = await d.cli(['capture', 'c1', '-w', join(dir, 'c2.pcapng'), '--duration', '1']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).not.toContain('\r');
    expect(r.stderr).toMatch(/packets captured/);
  }, 20_000);
});
