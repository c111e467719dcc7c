/**
 * `mvnet capture` against a scripted control socket that speaks capture.start as COMMON's
 * control API describes it (reply line, pcapng, ISBs at the end, then the daemon's end): how the
 * CLI stops (count, Ctrl-C, a reader that went away with `| head`, a reader that never reads),
 * and that errors are one line. The real daemon's captures are in capture-cli.test.ts.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { LINKTYPE_ETHERNET, PcapngWriter } from '../../daemon/capture/pcapng.js';
import { CLI_JS } from '../support/daemon.js';
import { cleanupAll, makeTempDir, registerCleanup, run, waitFor, withTimeout } from '../support/netns.js';
import { ethernet, icmpEcho, ipv4Packet } from '../support/frames.js';

afterAll(cleanupAll);

interface Session {
  params: Record<string, unknown>;
  /** Resolves when the client half-closed its side. */
  clientEnded: Promise<void>;
  /** Packets written so far. */
  sent: number;
}

interface Script {
  /** Answer with this JSON-RPC error instead of a capture. */
  error?: string;
  /** Packets to send at once; then (with `endAfter`) the capture ends by itself. */
  packets?: number;
  /** Keep sending packets every `everyMs` until the client half-closes. */
  stream?: boolean;
  /** What the ISB says besides what was sent. */
  filteredOut?: number;
  dropped?: number;
}

/** A control socket that answers capture.start per `script`; records each session. */
async function fakeDaemon(script: Script): Promise<{ socket: string; sessions: Session[]; script: Script }> {
  const dir = makeTempDir('fake');
  const socket = join(dir, 'mvnet.sock');
  const sessions: Session[] = [];
  const server = net.createServer((c) => {
    let buf = '';
    c.setEncoding('utf8');
    c.on('error', () => {});
    const onData = (s: string): void => {
      buf += s;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      c.off('data', onData);
      const req = JSON.parse(buf.slice(0, nl)) as { id: number; method: string; params: Record<string, unknown> };
      if (script.error !== undefined) {
        c.end(JSON.stringify({ jsonrpc: '2.0', id: req.id, error: { code: -32602, message: script.error } }) + '\n');
        return;
      }
      let endClient!: () => void;
      const session: Session = { params: req.params, clientEnded: new Promise<void>((r) => (endClient = r)), sent: 0 };
      sessions.push(session);
      const w = new PcapngWriter({ userappl: 'mvnet fake' });
      const idb = w.addInterface({ linkType: LINKTYPE_ETHERNET, snaplen: 0, name: 'vm1' }).block;
      c.write(JSON.stringify({ jsonrpc: '2.0', id: req.id, result: { id: 'c1', points: ['vm1'] } }) + '\n');
      c.write(Buffer.concat([w.header(), idb]));
      const packet = (): Buffer => {
        const seq = session.sent++;
        const frame = ethernet('02:00:00:00:00:02', '02:00:00:00:00:01', 0x0800, ipv4Packet({ src: '10.0.0.1', dst: '10.0.0.2', protocol: 1, payload: icmpEcho({ type: 8, id: 1, seq: seq & 0xffff, data: Buffer.alloc(500) }) }));
        return w.packet(0, BigInt(Date.now()) * 1_000_000n + BigInt(seq), frame, { direction: 'out' });
      };
      let finished = false;
      const finish = (): void => {
        if (finished) return;
        finished = true;
        clearInterval(timer);
        const seen = session.sent + (script.filteredOut ?? 0) + (script.dropped ?? 0);
        c.end(w.stats(0, BigInt(Date.now()) * 1_000_000n, { ifRecv: seen, filterAccept: seen - (script.filteredOut ?? 0), osDrop: script.dropped ?? 0 }));
      };
      let timer: NodeJS.Timeout | undefined;
      if (script.packets !== undefined) {
        for (let i = 0; i < script.packets; i++) c.write(packet());
        if (!script.stream) finish();
      }
      if (script.stream) {
        // As a daemon sink would: write while the socket takes it, else drop (and count).
        timer = setInterval(() => {
          for (let i = 0; i < 20; i++) {
            if (c.writableNeedDrain) {
              script.dropped = (script.dropped ?? 0) + 1;
              continue;
            }
            c.write(packet());
          }
        }, 2);
      }
      c.on('end', () => {
        endClient();
        finish();
      });
      c.resume();
    };
    c.on('data', onData);
  });
  await new Promise<void>((r) => server.listen(socket, r));
  registerCleanup(`fake daemon ${socket}`, () => new Promise<void>((r) => server.close(() => r())));
  return { socket, sessions, script };
}

function cli(socket: string, args: string[], stdout: 'pipe' | 'ignore' = 'pipe'): { child: ChildProcess; stderr: () => string; stdout: () => Buffer; exit: Promise<number | null> } {
  const child = spawn('node', [CLI_JS, '--socket', socket, ...args], { stdio: ['ignore', stdout, 'pipe'] });
  const out: Buffer[] = [];
  let err = '';
  child.stdout?.on('data', (d: Buffer) => out.push(d));
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exit = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
  registerCleanup(`cli ${args.join(' ')}`, async () => {
    if (child.exitCode === null) child.kill('SIGKILL');
    await exit;
  });
  return { child, stderr: () => err, stdout: () => Buffer.concat(out), exit };
}

describe('mvnet capture against a scripted control socket', () => {
  it('-w - into tshark: every packet, then the summary with the daemon counters', async () => {
    const d = await fakeDaemon({ packets: 25, filteredOut: 4, dropped: 2 });
    const r = await run(['sh', '-c', `node ${CLI_JS} --socket ${d.socket} capture vm1 -c 25 icmp -w - | tshark -r - -T fields -e icmp.seq -e frame.interface_name`]);
    expect(r.stdout.trim().split('\n')).toEqual(Array.from({ length: 25 }, (_, i) => `${i}\tvm1`));
    expect(r.stderr).toContain('25 packets captured, 4 filtered out, 2 dropped');
    expect(d.sessions[0]!.params).toEqual({ from: { vm: 'vm1' }, filter: 'icmp', count: 25 });
  });

  it('without -w: one line per packet; --json: one object per packet and a JSON summary', async () => {
    const d = await fakeDaemon({ packets: 3 });
    const r = await run(['node', CLI_JS, '--socket', d.socket, 'capture', 'vm1'], { check: false });
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines.length).toBe(3);
    expect(lines[1]).toMatch(/^\d\d:\d\d:\d\d\.\d{6} vm1 out 542 02:00:00:00:00:01 > 02:00:00:00:00:02, IPv4 10\.0\.0\.1 > 10\.0\.0\.2: ICMP echo request, id 1, seq 1$/);
    const j = await run(['node', CLI_JS, '--socket', d.socket, '--json', 'capture', 'vm1'], { check: false });
    expect(JSON.parse(j.stdout.trim().split('\n')[0]!)).toMatchObject({ point: 'vm1', direction: 'out', length: 542 });
    expect(JSON.parse(j.stderr)).toMatchObject({ captured: 3, filteredOut: 0, dropped: 0, complete: true });
  });

  it('Ctrl-C half-closes, reads the statistics, prints the summary and exits 0', async () => {
    const d = await fakeDaemon({ stream: true, filteredOut: 1 });
    const p = cli(d.socket, ['capture', 'vm1']);
    await withTimeout(new Promise<void>((r) => p.child.stdout!.once('data', () => r())), 10_000, 'a first packet line');
    p.child.kill('SIGINT');
    expect(await withTimeout(p.exit, 10_000, 'the CLI to exit after SIGINT')).toBe(0);
    await d.sessions[0]!.clientEnded;
    const m = /(\d+) packets captured, 1 filtered out, (\d+) dropped/.exec(p.stderr());
    expect(m, p.stderr()).not.toBeNull();
    // Every packet the daemon sent was printed.
    expect(Number(m![1])).toBe(d.sessions[0]!.sent);
    expect(p.stdout().toString().trim().split('\n').length).toBe(d.sessions[0]!.sent);
  });

  it('| head: the reader goes away, the CLI ends the capture and exits 0', async () => {
    const d = await fakeDaemon({ stream: true });
    const r = await run(['sh', '-c', `node ${CLI_JS} --socket ${d.socket} capture vm1 | head -n 3`], { timeoutMs: 20_000 });
    expect(r.stdout.trim().split('\n').length).toBe(3);
    expect(r.stderr).toMatch(/\d+ packets captured, 0 filtered out, \d+ dropped/);
    await withTimeout(d.sessions[0]!.clientEnded, 5000, 'the CLI to half-close');
    const bash = await run(['bash', '-c', `set -o pipefail; node ${CLI_JS} --socket ${d.socket} capture vm1 -w - | head -c 100 > /dev/null`], { check: false, timeoutMs: 20_000 });
    expect(bash.code, bash.stderr).toBe(0);
  });

  it('a reader that never reads: the CLI stops reading (the daemon counts drops), and Ctrl-C still ends it', async () => {
    const d = await fakeDaemon({ stream: true });
    // stdout is a pipe this test never reads.
    const p = cli(d.socket, ['capture', 'vm1', '-w', '-']);
    p.child.stdout!.pause();
    // Until the daemon side drops: the pipe and socket buffers are full.
    await waitFor(() => (d.sessions[0] !== undefined && (d.script.dropped ?? 0) > 100 ? true : undefined), { timeoutMs: 15_000, what: 'the fake daemon to drop' });
    p.child.kill('SIGINT');
    expect(await withTimeout(p.exit, 10_000, 'the CLI to exit after SIGINT with a stuck reader'), p.stderr()).toBe(0);
    const m = /(\d+) packets captured, 0 filtered out, (\d+) dropped/.exec(p.stderr());
    expect(m, p.stderr()).not.toBeNull();
    expect(Number(m![2])).toBeGreaterThan(0);
  });

  it('errors are one line and exit non-zero: the daemon message passes through; bad arguments never reach it', async () => {
    const d = await fakeDaemon({ error: "bad filter: unknown word 'tcpp' at column 1" });
    const r = await run(['node', CLI_JS, '--socket', d.socket, 'capture', 'vm1', 'tcpp'], { check: false });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toBe("mvnet: bad filter: unknown word 'tcpp' at column 1\n");
    const dir = makeTempDir('w');
    mkdirSync(join(dir, 'sub'));
    const ok = await fakeDaemon({ packets: 1 });
    for (const [args, msg] of [
      [['capture', 'vm1', '-c', '0'], /-c must be an integer from 1/],
      [['capture', 'vm1', '-w', join(dir, 'f'), '--ring', '2'], /--ring needs --size MB/],
      [['capture', 'vm1', '-w', join(dir, 'sub')], /cannot write .*sub: is a directory/],
      [['capture', 'vm1', '--net', 'n1'], /give a VM \(vm1\) or --net, not both/],
      [['capture', '--duration', '0', 'vm1'], /--duration must be an integer from 1/],
      [['capture'], /give what to capture/],
    ] as const) {
      const e = await run(['node', CLI_JS, '--socket', ok.socket, ...args], { check: false });
      expect(e.code, args.join(' ')).not.toBe(0);
      expect(e.stderr, args.join(' ')).toMatch(msg);
      expect(e.stderr.trim().split('\n').length, e.stderr).toBe(1);
    }
    expect(ok.sessions.length).toBe(0);
    expect(existsSync(join(dir, 'f'))).toBe(false);
  });
});
