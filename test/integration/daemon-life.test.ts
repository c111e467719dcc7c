/**
 * The daemon's own life, tried the way a new user (or a hostile caller) would:
 * - 200 control clients at once are all answered;
 * - a second `mvnet daemon` on the same state (same or another socket), or on the same socket,
 *   exits with one line naming the first one's pid and touches nothing of it; once the first is
 *   SIGKILLed, the kernel has released its lock and a new daemon starts;
 * - SIGHUP reloads the config (a new logLevel takes effect) and never stops the daemon;
 * - a stdout reader that goes away (`mvnet daemon | head -3`) or stops reading neither blocks
 *   nor kills the daemon, and SIGTERM still stops it promptly and removes its socket.
 */
import fs from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CLI_JS, Daemon, startDaemon } from '../support/daemon.js';
import { cleanupAll, makeTempDir, run, spawnProcess, withTimeout, type ManagedProcess } from '../support/netns.js';
import { QemuStreamClient } from '../support/qemu-peer.js';
import { attachTapVm } from '../support/vms.js';

afterAll(cleanupAll);

interface Reply {
  id: number | string | null;
  result?: { daemon?: { pid: number } };
  error?: { message: string };
}

/** A control connection that sends requests one at a time and reads each answer. */
class Rpc {
  private readonly sock: net.Socket;
  private buf = '';
  private waiter: { resolve: (r: Reply) => void; reject: (e: Error) => void } | null = null;
  private nextId = 1;

  constructor(socket: string) {
    this.sock = net.createConnection({ path: socket });
    this.sock.setEncoding('utf8');
    this.sock.on('error', (e) => this.settle()?.reject(e));
    this.sock.on('close', () => this.settle()?.reject(new Error('control connection closed')));
    this.sock.on('data', (d: string) => {
      this.buf += d;
      const nl = this.buf.indexOf('\n');
      if (nl < 0) return;
      const line = this.buf.slice(0, nl);
      this.buf = this.buf.slice(nl + 1);
      this.settle()?.resolve(JSON.parse(line) as Reply);
    });
  }

  private settle(): { resolve: (r: Reply) => void; reject: (e: Error) => void } | null {
    const w = this.waiter;
    this.waiter = null;
    return w;
  }

  call(method: string): Promise<Reply> {
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
      this.sock.write(JSON.stringify({ jsonrpc: '2.0', id: this.nextId++, method }) + '\n');
    });
  }

  close(): void {
    this.sock.destroy();
  }
}

/** `mvnet daemon` run to its end (a second daemon that must refuse to start). */
function secondDaemon(stateDir: string, socket: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return run(['node', CLI_JS, 'daemon', '--state-dir', stateDir, '--socket', socket], { check: false, timeoutMs: 20_000 });
}

function inode(p: string): number {
  return fs.lstatSync(p).ino;
}

describe('control socket under load', () => {
  it('answers 200 clients that ask for status at once', async () => {
    const d = await startDaemon();
    const clients = Array.from({ length: 200 }, () => new Rpc(d.socket));
    const replies = await withTimeout(Promise.all(clients.map((c) => c.call('daemon.status'))), 20_000, '200 status answers');
    for (const c of clients) c.close();
    expect(replies.every((r) => r.result?.daemon?.pid === d.pid)).toBe(true);
  });
});

describe('a second daemon on the same state', () => {
  it('refuses with one line naming the first, touches nothing, and starts once the first is killed', async () => {
    const a = await startDaemon();
    await a.cliOk(['net', 'create', 'L', '--subnet', '10.77.61.0/24']);
    const vmSock = join(a.stateDir, 'ql.sock');
    await a.cliOk(['vm', 'attach', 'ql', '--net', 'L', '--unix-listen', vmSock]);
    const peer = await QemuStreamClient.connect(vmSock);
    const tap = await attachTapVm(a, { vm: 't1', net: 'L', cidr: '10.77.61.11/24', prefix: 'life' });
    const before = {
      vmSock: inode(vmSock),
      control: inode(a.socket),
      tap: ((await tap.ns.link(tap.ifname)) as { ifindex?: number } | undefined)?.ifindex,
      logs: a.logs.length,
    };
    expect((await a.vm('ql')).port.state).toBe('up');

    const otherDir = makeTempDir('life-b');
    for (const socket of [a.socket, join(otherDir, 'b.sock')]) {
      const r = await secondDaemon(a.stateDir, socket);
      expect(r.code).not.toBe(0);
      expect(r.stderr.trim().split('\n')).toEqual([expect.stringMatching(new RegExp(`in use by another mvnet daemon \\(pid ${a.pid}\\)`))]);
      expect(r.stdout).toBe('');
    }
    expect(fs.existsSync(join(otherDir, 'b.sock'))).toBe(false);
    // Another state dir, same control socket: refused before that state is even read.
    const r = await secondDaemon(otherDir, a.socket);
    expect(r.code).not.toBe(0);
    expect(r.stderr.trim().split('\n')).toEqual([`mvnet: another mvnet daemon (pid ${a.pid}) is already listening on ${a.socket}`]);

    // A is intact: its sockets are the same files, its TAP the same device, its VMs up, and it answers.
    expect(inode(vmSock)).toBe(before.vmSock);
    expect(inode(a.socket)).toBe(before.control);
    expect(((await tap.ns.link(tap.ifname)) as { ifindex?: number } | undefined)?.ifindex).toBe(before.tap);
    const s = await a.status();
    expect(s.daemon.pid).toBe(a.pid);
    expect(s.vms.map((v) => [v.name, v.port.state]).sort()).toEqual([
      ['ql', 'up'],
      ['t1', 'up'],
    ]);
    expect(a.logs.length).toBe(before.logs);

    await a.kill('SIGKILL');
    peer.disconnect();
    // The kernel released the lock with the process: a new daemon takes the state over.
    const b = new Daemon({ stateDir: a.stateDir, socket: a.socket });
    await b.start();
    expect((await b.status()).daemon.pid).toBe(b.pid);
    expect((await b.status()).vms.map((v) => v.name).sort()).toEqual(['ql', 't1']);
    await b.stop();
  });
});

describe('SIGHUP', () => {
  it('reloads the config, logs what changed, applies a new logLevel and never exits', async () => {
    const dir = makeTempDir('life-hup');
    const config = join(dir, 'mvnet.json');
    fs.writeFileSync(config, JSON.stringify({ logLevel: 'info' }));
    const d = await startDaemon({ config });
    const isRequestLog = (l: { msg?: string; method?: unknown }): boolean => l.msg === 'control request' && l.method === 'daemon.status';
    await d.status();

    fs.writeFileSync(config, JSON.stringify({ logLevel: 'debug', limits: { tcpPerVm: 7 }, direct: { connectTimeoutMs: 5000 } }));
    d.process.signal('SIGHUP');
    const reloaded = await d.waitForLog((l) => l.msg === 'config reloaded');
    expect(reloaded.changed).toEqual([
      { key: 'logLevel', from: 'info', to: 'debug' },
      { key: 'limits.tcpPerVm', from: 1024, to: 7 },
    ]);
    expect(reloaded.needRestart).toEqual(['direct.connectTimeoutMs']);
    // The status before the reload logged nothing at debug level (stdout is in order).
    expect(d.logs.slice(0, d.logs.indexOf(d.logs.find((l) => l.msg === 'config reloaded')!)).some(isRequestLog)).toBe(false);
    await d.status();
    await d.waitForLog(isRequestLog);

    // A broken file is reported and the running config kept.
    fs.writeFileSync(config, '{"logLevel": "loud"');
    d.process.signal('SIGHUP');
    await d.waitForLog((l) => l.msg === 'config not reloaded; the running one is kept');
    expect(d.running).toBe(true);
    expect((await d.status()).daemon.pid).toBe(d.pid);
  });

  it('without --config: stays up and says there is nothing to reload', async () => {
    const d = await startDaemon();
    d.process.signal('SIGHUP');
    await d.waitForLog((l) => l.msg === 'no config file to reload (started without --config)');
    expect((await d.status()).daemon.pid).toBe(d.pid);
  });
});

describe("the daemon's stdout", () => {
  function start(extra: string[] = []): {
    proc: ManagedProcess;
    stateDir: string;
    socket: string;
    stderrLine: (re: RegExp) => Promise<string>;
    exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  } {
    const stateDir = makeTempDir('life-out');
    const socket = join(stateDir, 'mvnet.sock');
    const proc = spawnProcess(['node', CLI_JS, 'daemon', '--state-dir', stateDir, '--socket', socket, ...extra], { label: 'mvnet daemon (stdout test)' });
    let err = '';
    const waiters: { re: RegExp; resolve: (s: string) => void }[] = [];
    proc.child.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
      for (const w of waiters) {
        const m = err.split('\n').find((l) => w.re.test(l));
        if (m !== undefined) w.resolve(m);
      }
    });
    const stderrLine = (re: RegExp): Promise<string> => new Promise((resolve) => waiters.push({ re, resolve }));
    // The process's end, not its output's: a reader that stops reading never sees the pipe's end.
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => proc.child.once('exit', (code, signal) => resolve({ code, signal })));
    return { proc, stateDir, socket, stderrLine, exited };
  }

  it('whose reader goes away (EPIPE): the daemon keeps serving and SIGTERM stops it promptly', async () => {
    const { proc, socket, stderrLine, exited } = start();
    await proc.waitForLine((l) => l.includes('"msg":"ready"'));
    // The reader goes away, as `head -3` does.
    proc.child.stdout!.destroy();
    const gone = stderrLine(/stdout is gone/);
    const rpc = new Rpc(socket);
    // Lines keep being logged (each `net create` logs one) until one hits the closed pipe.
    await run(['node', CLI_JS, '--socket', socket, 'net', 'create', 'E1', '--subnet', '10.77.62.0/24']);
    await withTimeout(gone, 10_000, 'the note that stdout is gone');
    await run(['node', CLI_JS, '--socket', socket, 'net', 'create', 'E2', '--subnet', '10.77.63.0/24']);
    expect((await rpc.call('daemon.status')).result?.daemon?.pid).toBe(proc.pid);
    rpc.close();
    proc.signal('SIGTERM');
    const exit = await withTimeout(exited, 5_000, 'the daemon to stop after SIGTERM');
    expect(exit).toEqual({ code: 0, signal: null });
    expect(fs.existsSync(socket)).toBe(false);
  });

  it('whose reader stops reading: the daemon is not blocked, and SIGTERM stops it promptly', async () => {
    const { proc, socket, exited } = start(['--log-level', 'debug']);
    await proc.waitForLine((l) => l.includes('"msg":"ready"'));
    // The pipe fills (64 KiB) and stays full: every control request logs a debug line.
    proc.child.stdout!.pause();
    const rpc = new Rpc(socket);
    for (let i = 0; i < 2000; i++) expect((await withTimeout(rpc.call('daemon.status'), 5_000, `status #${i}`)).result?.daemon?.pid).toBe(proc.pid);
    rpc.close();
    proc.signal('SIGTERM');
    const exit = await withTimeout(exited, 5_000, 'the daemon to stop after SIGTERM');
    expect(exit.code).toBe(0);
    expect(fs.existsSync(socket)).toBe(false);
  });
});
