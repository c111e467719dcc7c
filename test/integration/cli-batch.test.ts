/**
 * `mvnet vm attach --batch FILE|-` against a real daemon: many VMs over ONE control connection,
 * pipelined; every VM tried and each failure named; a bad file refused (exit 2) before anything
 * is attached. A counting relay between the CLI and the daemon's socket (a real unix socket)
 * shows how many connections the CLI opened and how many requests it had in flight.
 */
import { writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI_JS, rawRpc, startDaemon, type CliResult, type Daemon } from '../support/daemon.js';
import { cleanupAll, makeTempDir, registerCleanup, run } from '../support/netns.js';
import type { CliErrorJson, VmAttachBatchItem, VmInfo } from '../../daemon/control/api.js';

/** A unix-socket relay to the daemon that counts connections, and per connection the request lines sent before the first answer came back. */
interface Relay {
  path: string;
  connections: number;
  /** Per connection: request lines seen before the first answer line was relayed. */
  aheadOfFirstAnswer: number[];
  requests: number;
  /** Stop relaying answers after this many (null: relay all): a daemon that stops answering. */
  answerLimit: number | null;
  close(): Promise<void>;
}

async function relay(to: string, path: string): Promise<Relay> {
  const r: Relay = { path, connections: 0, aheadOfFirstAnswer: [], requests: 0, answerLimit: null, close: async () => {} };
  const server = net.createServer((client) => {
    const n = r.connections++;
    let requestsSoFar = 0;
    let answers = 0;
    r.aheadOfFirstAnswer[n] = 0;
    const up = net.createConnection({ path: to });
    client.on('data', (d: Buffer) => {
      for (const b of d) if (b === 0x0a) requestsSoFar++;
      r.requests += d.filter((b) => b === 0x0a).length;
      up.write(d);
    });
    up.on('data', (d: Buffer) => {
      for (let i = 0; i < d.length; i++) {
        if (d[i] !== 0x0a) continue;
        if (answers === 0) r.aheadOfFirstAnswer[n] = requestsSoFar;
        answers++;
        if (r.answerLimit !== null && answers >= r.answerLimit) {
          // Pass the answers up to the limit, then nothing more (the connection stays open).
          client.write(d.subarray(0, i + 1));
          up.removeAllListeners('data');
          return;
        }
      }
      client.write(d);
    });
    const end = (): void => {
      client.destroy();
      up.destroy();
    };
    client.on('error', end);
    up.on('error', end);
    client.on('close', end);
    up.on('close', () => {
      if (r.answerLimit === null) end();
    });
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  r.close = () => new Promise<void>((resolve) => server.close(() => resolve()));
  registerCleanup(`relay ${path}`, () => r.close());
  return r;
}

function cli(socket: string, args: string[], input?: string): Promise<CliResult> {
  return run(['node', CLI_JS, '--socket', socket, ...args], { check: false, ...(input !== undefined ? { input } : {}) });
}

describe('vm attach --batch', () => {
  let d: Daemon;
  let dir: string;
  let r: Relay;

  const names = async (): Promise<string[]> => (await d.cliJson<VmInfo[]>(['vm', 'list'])).map((v) => v.name).sort();

  beforeAll(async () => {
    d = await startDaemon();
    dir = makeTempDir('cli-batch');
    r = await relay(d.socket, join(dir, 'relay.sock'));
    await d.cliOk(['net', 'create', 'ba', '--subnet', '10.77.43.0/24']);
    await d.cliOk(['net', 'create', 'bb', '--subnet', '10.77.44.0/24']);
  });

  afterAll(cleanupAll);

  it('attaches 250 VMs from a file over one connection, in pipelined vm.attachMany chunks, one line each', async () => {
    const vms = Array.from({ length: 250 }, (_, i) => ({ vm: `m${i}`, net: i % 2 === 0 ? 'ba' : 'bb', dgram: true, ...(i === 7 ? { ip: '10.77.44.77' } : {}) }));
    const file = join(dir, 'many.json');
    writeFileSync(file, JSON.stringify(vms));
    const before = r.connections;
    const res = await cli(r.path, ['vm', 'attach', '--batch', file]);
    expect(res.stderr).toBe('');
    expect(res.code).toBe(0);
    const lines = res.stdout.trimEnd().split('\n');
    expect(lines).toHaveLength(250);
    expect(lines[0]).toMatch(/^attached m0 to ba by dgram \S+m0\.sock: waiting/);
    expect(lines[249]).toMatch(/^attached m249 to bb by dgram/);
    expect(r.connections - before).toBe(1);
    // Chunks of 100 VMs (one state write each), pipelined: the three requests were all on their way
    // before the daemon's first answer came back.
    expect(r.aheadOfFirstAnswer[before]).toBe(3);
    const list = await d.cliJson<VmInfo[]>(['vm', 'list']);
    expect(list).toHaveLength(250);
    expect(list.find((v) => v.name === 'm7')).toMatchObject({ net: 'bb', ip: '10.77.44.77' });
    // Detached straight over the control socket: a hundred CLI runs would be most of this test's time.
    for (const v of vms) expect((await rawRpc(d.socket, 'vm.detach', { name: v.vm })).error).toBeUndefined();
  });

  it('tries every VM from stdin: names each failure, attaches the rest, exits non-zero (--json: an array in order)', async () => {
    await d.cliOk(['vm', 'attach', 'taken', '--net', 'ba', '--dgram']);
    const batch = [
      { vm: 'ok1', net: 'ba', dgram: true },
      { vm: 'taken', net: 'ba', dgram: true },
      { vm: 'nonet', net: 'nosuch', dgram: true },
      { vm: 'ok2', net: 'bb', unixListen: true, mac: '52:54:00:aa:bb:01' },
      { vm: 'badmac', net: 'bb', dgram: true, mac: '52:54:00:aa:bb:01' },
      { vm: 'ok3', net: 'bb', kind: 'nosuchkind', options: { a: 1 } },
    ];
    const text = await cli(d.socket, ['vm', 'attach', '--batch', '-'], JSON.stringify(batch));
    expect(text.code).not.toBe(0);
    expect(text.stdout.trimEnd().split('\n')).toEqual([expect.stringMatching(/^attached ok1 to ba/), expect.stringMatching(/^attached ok2 to bb by unix-listen/)]);
    const errs = text.stderr.trimEnd().split('\n');
    expect(errs).toHaveLength(4);
    expect(errs[0]).toMatch(/^mvnet: vm taken: VM taken is already attached/);
    expect(errs[1]).toMatch(/^mvnet: vm nonet: no network named nosuch/);
    expect(errs[2]).toMatch(/^mvnet: vm badmac: MAC 52:54:00:aa:bb:01 is already used by VM ok2/);
    expect(errs[3]).toMatch(/^mvnet: vm ok3: /);
    expect(await names()).toEqual(['ok1', 'ok2', 'taken']);
    for (const n of ['ok1', 'ok2']) await d.cliOk(['vm', 'detach', n]);

    const j = await cli(d.socket, ['--json', 'vm', 'attach', '--batch', '-'], JSON.stringify(batch));
    expect(j.code).not.toBe(0);
    const items = JSON.parse(j.stdout) as VmAttachBatchItem[];
    expect(items.map((it) => [it.vm, it.ok])).toEqual([['ok1', true], ['taken', false], ['nonet', false], ['ok2', true], ['badmac', false], ['ok3', false]]);
    const taken = items[1]!;
    expect(!taken.ok && taken.error).toMatchObject({ code: 'conflict', exitCode: 5 });
    expect(items[0]!.ok && items[0]!.result).toMatchObject({ name: 'ok1', net: 'ba' });
    const e = JSON.parse(j.stderr) as CliErrorJson;
    expect(e.error.exitCode).toBe(j.code);
    expect(e.error.message).toMatch(/^4 of 6 VMs not attached: taken \(.*\); nonet \(.*\); badmac \(.*\); ok3 \(/);
    for (const n of ['ok1', 'ok2', 'taken']) await d.cliOk(['vm', 'detach', n]);
  });

  it('exits with the failures\u2019 exit code when they share one (all conflicts: 5)', async () => {
    await d.cliOk(['vm', 'attach', 'c1', '--net', 'ba', '--dgram']);
    const res = await cli(d.socket, ['vm', 'attach', '--batch', '-'], JSON.stringify([{ vm: 'c1', net: 'ba', dgram: true }, { vm: 'c2', net: 'ba', dgram: true }]));
    expect(res.code).toBe(5);
    expect(res.stdout).toMatch(/^attached c2 /);
    await d.cliOk(['vm', 'detach', 'c1']);
    await d.cliOk(['vm', 'detach', 'c2']);
  });

  for (const [what, content, message] of [
    ['not JSON', '[{"vm": "x",', /^mvnet: --batch -: not JSON/],
    ['not an array', '{"vm": "x", "net": "ba", "dgram": true}', /expected a JSON array of VMs, got object/],
    ['an unknown field', '[{"vm": "f1", "net": "ba", "dgram": true}, {"vm": "f2", "net": "ba", "tapp": "t0"}]', /entry 2 \(f2\): unknown field "tapp"/],
    ['a missing vm', '[{"vm": "f1", "net": "ba", "dgram": true}, {"net": "ba", "dgram": true}]', /entry 2: missing vm/],
    ['a missing net', '[{"vm": "f1", "net": "ba", "dgram": true}, {"vm": "f2", "dgram": true}]', /entry 2 \(f2\): missing net/],
    ['a VM twice', '[{"vm": "f1", "net": "ba", "dgram": true}, {"vm": "f1", "net": "bb", "dgram": true}]', /entry 2 \(f1\): VM f1 appears twice/],
    ['no device', '[{"vm": "f1", "net": "ba", "dgram": true}, {"vm": "f2", "net": "ba"}]', /entry 2 \(f2\): give exactly one of --tap/],
    ['a field of the wrong type', '[{"vm": "f1", "net": "ba", "dgram": 5}]', /entry 1 \(f1\): dgram takes a path or true/],
    ['an fd', '[{"vm": "f1", "net": "ba", "fd": 0}]', /entry 1 \(f1\): fd cannot be given in a batch/],
  ] as const) {
    it(`refuses a file with ${what}: one line, exit 2, nothing attached`, async () => {
      const res = await cli(r.path, ['vm', 'attach', '--batch', '-'], content);
      expect(res.code).toBe(2);
      expect(res.stdout).toBe('');
      const lines = res.stderr.trimEnd().split('\n');
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(message);
      expect(await names()).toEqual([]);
    });
  }

  it('refuses a missing file, a VM name or device option beside --batch (exit 2, nothing sent)', async () => {
    const before = r.requests;
    const missing = await cli(r.path, ['vm', 'attach', '--batch', join(dir, 'nope.json')]);
    expect([missing.code, missing.stderr.trim()]).toEqual([2, `mvnet: --batch ${join(dir, 'nope.json')}: no such file`]);
    const both = await cli(r.path, ['vm', 'attach', 'x', '--batch', '-'], '[]');
    expect(both.code).toBe(2);
    const opt = await cli(r.path, ['vm', 'attach', '--net', 'ba', '--batch', '-'], '[]');
    expect(opt.code).toBe(2);
    expect(opt.stderr).toContain('--batch takes every VM from its file');
    expect(r.requests).toBe(before);
    // Without --batch a name and --net are still required.
    expect((await cli(d.socket, ['vm', 'attach', '--net', 'ba', '--dgram'])).stderr).toContain("missing required argument 'vm'");
    expect((await cli(d.socket, ['vm', 'attach', 'x', '--dgram'])).stderr).toContain("required option '--net <name>' not specified");
  });

  it('an empty array attaches nothing and succeeds; no daemon is exit 3 in one line', async () => {
    const empty = await cli(d.socket, ['--json', 'vm', 'attach', '--batch', '-'], '[]');
    expect([empty.code, JSON.parse(empty.stdout)]).toEqual([0, []]);
    const gone = await cli(join(dir, 'no-daemon.sock'), ['vm', 'attach', '--batch', '-'], '[{"vm": "g", "net": "ba", "dgram": true}]');
    expect(gone.code).toBe(3);
    expect(gone.stderr.trimEnd().split('\n')).toHaveLength(1);
  });

  it('a daemon that stops answering mid-batch: the answered VMs are reported, the rest time out (exit 3)', async () => {
    r.answerLimit = 2;
    try {
      // Three chunks (100, 100, 50 VMs); the relay passes the first two answers only.
      const batch = Array.from({ length: 250 }, (_, i) => ({ vm: `s${i}`, net: 'ba', dgram: true }));
      const res = await cli(r.path, ['--timeout', '1', 'vm', 'attach', '--batch', '-'], JSON.stringify(batch));
      expect(res.code).toBe(3);
      const out = res.stdout.trimEnd().split('\n');
      expect(out).toHaveLength(200);
      expect(out[0]).toMatch(/^attached s0 /);
      expect(out[199]).toMatch(/^attached s199 /);
      const errs = res.stderr.trimEnd().split('\n');
      expect(errs).toHaveLength(50);
      expect(errs[0]).toMatch(/^mvnet: vm s200: the daemon on \S+ did not answer vm\.attachMany within 1 s/);
      expect(errs[49]).toMatch(/^mvnet: vm s249: /);
    } finally {
      r.answerLimit = null;
    }
    // The last chunk may or may not be attached: the daemon drops what a closed client left queued.
    for (const n of await names()) expect((await rawRpc(d.socket, 'vm.detach', { name: n })).error).toBeUndefined();
  });
});
