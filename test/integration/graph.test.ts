/**
 * `mvnet graph` against a real daemon with a known topology: two networks, VMs on QEMU-style
 * socket ports (one connected and talking, so its counters move), and the routes none, direct,
 * via and all-tor (Tor not configured: the daemon runs in a namespace the test made, with
 * nothing but `lo`, so the Tor it starts for that route reaches nothing), and a second daemon
 * with Tor configured (external, at a loopback port nobody listens on). The DOT output is
 * rendered by Graphviz (`dot -Tsvg`), the HTML page by headless Chromium (screenshot, DOM, and
 * no console output at all: an uncaught error or a CSP violation would show there), and
 * `--serve` answers on 127.0.0.1 (the page polls the JSON endpoint, which follows changes) and
 * refuses 0.0.0.0 and ::.
 */
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI_JS, startDaemon, type Daemon } from '../support/daemon.js';
import { cleanupAll, createNetns, makeTempDir, run, spawnProcess, type ManagedProcess, type Netns } from '../support/netns.js';
import { QemuStreamServer } from '../support/qemu-peer.js';
import { arpRequest, parseArp } from '../support/frames.js';
import type { Graph } from '../../cli/graph/model.js';

afterAll(cleanupAll);

const MAC_A1 = '02:00:00:77:93:11';

/** Chromium headless on a URL: its stderr, minus the noise of a machine without D-Bus or a GPU. */
async function chromium(url: string, args: string[], dir: string): Promise<{ code: number; stdout: string; console: string[] }> {
  const r = await run(
    ['chromium', '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-extensions', `--user-data-dir=${join(dir, 'profile')}`, '--enable-logging=stderr', '--v=0', '--window-size=1200,800', ...args, url],
    { check: false, timeoutMs: 90_000 },
  );
  // Every console message of the page (log, warn, error, uncaught exceptions, CSP reports) is an INFO:CONSOLE line.
  const consoleLines = r.stderr.split('\n').filter((l) => /:CONSOLE[:(]/.test(l) || /Uncaught/.test(l));
  return { code: r.code, stdout: r.stdout, console: consoleLines };
}

function get(url: string, headers: Record<string, string> = {}, method = 'GET'): Promise<{ status: number; type: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type'] ?? ''), body }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('mvnet graph of a known topology', () => {
  let ns: Netns;
  let d: Daemon;
  let dir: string;
  let a1: QemuStreamServer;

  beforeAll(async () => {
    ns = await createNetns('graph');
    dir = makeTempDir('graph');
    d = await startDaemon({ netns: ns });
    await d.cliOk(['net', 'create', 'A', '--subnet', '10.77.93.0/24']);
    await d.cliOk(['net', 'create', 'B', '--subnet', '10.77.94.0/24', '--ipv6', 'fd00:77:94::/64']);
    a1 = await QemuStreamServer.listen(join(dir, 'a1.sock'));
    const b2 = await QemuStreamServer.listen(join(dir, 'b2.sock'));
    await d.cliOk(['vm', 'attach', 'a1', '--net', 'A', '--unix', a1.path, '--mac', MAC_A1, '--ip', '10.77.93.11']);
    await d.cliOk(['vm', 'attach', 'a2', '--net', 'A', '--unix-listen']);
    await d.cliOk(['vm', 'attach', 'b1', '--net', 'B', '--unix-listen']);
    await d.cliOk(['vm', 'attach', 'b2', '--net', 'B', '--unix', b2.path, '--ip', '10.77.94.5']);
    await a1.waitConnected();
    await b2.waitConnected();
    // a1 talks: one ARP request in, the gateway's reply out.
    a1.send(arpRequest({ srcMac: MAC_A1, srcIp: '10.77.93.11', targetIp: '10.77.93.1' }));
    await a1.nextFrame((f) => parseArp(f)?.op === 2, 10_000);
    await d.cliOk(['route', '--direct', 'a1']);
    await d.cliOk(['route', '--via', 'b2', 'b1']);
    await d.cliOk(['route', '--all-tor', 'b2']);
  });

  it('JSON: the nodes, the routes and the counters', async () => {
    const g = JSON.parse((await d.cliOk(['graph', '--format', 'json']))) as Graph;
    expect(JSON.parse(await d.cliOk(['--json', 'graph']))).toMatchObject({ version: 1, links: [] });
    expect(g.nodes.map((n) => n.id).sort()).toEqual(['host', 'net:A', 'net:B', 'tor', 'vm:a1', 'vm:a2', 'vm:b1', 'vm:b2']);
    const node = (id: string): Graph['nodes'][number] | undefined => g.nodes.find((n) => n.id === id);
    expect(node('vm:a1')).toMatchObject({ route: 'direct', state: 'up', ip: '10.77.93.11', mac: MAC_A1 });
    expect(node('vm:a2')).toMatchObject({ route: 'none', state: 'waiting' });
    expect(node('vm:b1')).toMatchObject({ route: 'via', state: 'waiting' });
    expect(node('vm:b2')).toMatchObject({ route: 'tor', state: 'up' });
    expect(node('tor')).toMatchObject({ configured: false });
    const att = g.edges.find((e) => e.id === 'att:a1');
    expect(att?.type === 'attachment' ? att.counters : null).toMatchObject({ rxFrames: 1, rxBytes: 60 });
    expect(att?.type === 'attachment' ? att.counters.txFrames : 0).toBeGreaterThanOrEqual(1);
    expect(g.edges.filter((e) => e.type === 'route').map((e) => `${e.from}->${e.to}`).sort()).toEqual(['vm:a1->host', 'vm:b1->vm:b2', 'vm:b2->tor']);
  });

  it('DOT: Graphviz renders it, with every node and edge', async () => {
    const dot = await d.cliOk(['graph']);
    const file = join(dir, 'g.dot');
    writeFileSync(file, dot);
    const r = await run(['dot', '-Tsvg', file], { check: false });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe('');
    const titles = [...r.stdout.matchAll(/<title>([^<]*)<\/title>/g)].map((m) => m[1]!.replace(/&#45;/g, '-').replace(/&gt;/g, '>'));
    for (const id of ['net:A', 'net:B', 'vm:a1', 'vm:a2', 'vm:b1', 'vm:b2', 'host', 'tor']) expect(titles).toContain(id);
    for (const e of ['vm:a1->net:A', 'vm:a2->net:A', 'vm:b1->net:B', 'vm:b2->net:B', 'vm:a1->host', 'vm:b1->vm:b2', 'vm:b2->tor']) expect(titles).toContain(e);
    expect(r.stdout.match(/class="node"/g)).toHaveLength(8);
    expect(r.stdout.match(/class="edge"/g)).toHaveLength(7);
    // The counters are on the attachment edge.
    expect(r.stdout).toMatch(/rx 1 fr \/ 60 B/);
  });

  it('HTML: headless Chromium draws it, with nothing on the console', async () => {
    const page = join(dir, 'graph.html');
    writeFileSync(page, await d.cliOk(['graph', '--format', 'html']));
    const shot = join(dir, 'graph.png');
    const s = await chromium(`file://${page}`, [`--screenshot=${shot}`, '--virtual-time-budget=5000'], dir);
    expect(s.code).toBe(0);
    expect(s.console).toEqual([]);
    expect(existsSync(shot)).toBe(true);
    const png = readFileSync(shot);
    expect(png.subarray(1, 4).toString()).toBe('PNG');
    expect(statSync(shot).size).toBeGreaterThan(10_000);
    const dom = await chromium(`file://${page}`, ['--dump-dom', '--virtual-time-budget=5000'], dir);
    expect(dom.console).toEqual([]);
    expect(dom.stdout).toMatch(/<body[^>]* data-ready="true"/);
    expect(dom.stdout).toMatch(/data-nodes="8"/);
    expect(dom.stdout).toMatch(/data-edges="7"/);
    expect(dom.stdout).toContain('<canvas');
  });

  it('the console check catches a page that throws', async () => {
    const bad = join(dir, 'bad.html');
    writeFileSync(bad, (await d.cliOk(['graph', '--format', 'html'])).replace("'use strict';", "'use strict'; throw new Error('broken page');"));
    const s = await chromium(`file://${bad}`, ['--dump-dom', '--virtual-time-budget=2000'], dir);
    expect(s.console.join('\n')).toContain('Uncaught Error: broken page');
    expect(s.stdout).not.toContain('data-ready="true"');
  });

  describe('--serve', () => {
    let srv: ManagedProcess;
    let url: string;

    beforeAll(async () => {
      srv = spawnProcess(['node', CLI_JS, '--socket', d.socket, 'graph', '--serve', '127.0.0.1:0', '--refresh', '500'], { label: 'mvnet graph --serve' });
      const line = await srv.waitForLine((l) => l.startsWith('serving the topology on '), { timeoutMs: 20_000 });
      url = /on (http:\/\/127\.0\.0\.1:\d+\/)/.exec(line)![1]!;
    });

    afterAll(async () => {
      await srv.stop('SIGTERM', 5_000);
    });

    it('serves the page and the JSON on 127.0.0.1, and the JSON follows the daemon', async () => {
      const page = await get(url);
      expect(page.status).toBe(200);
      expect(page.type).toBe('text/html; charset=utf-8');
      expect(page.body).toContain('"endpoint":"/graph.json"');
      const j1 = await get(`${url}graph.json`);
      expect(j1.status).toBe(200);
      expect((JSON.parse(j1.body) as Graph).nodes.some((n) => n.id === 'vm:a3')).toBe(false);
      await d.cliOk(['vm', 'attach', 'a3', '--net', 'A', '--unix-listen']);
      try {
        const j2 = JSON.parse((await get(`${url}graph.json`)).body) as Graph;
        expect(j2.nodes.find((n) => n.id === 'vm:a3')).toMatchObject({ type: 'vm', state: 'waiting' });
      } finally {
        await d.cliOk(['vm', 'detach', 'a3']);
      }
    });

    it('refuses other Host headers, other methods and other paths', async () => {
      expect((await get(url, { host: 'evil.example:80' })).status).toBe(421);
      expect((await get(url, { host: `localhost:${new URL(url).port}` })).status).toBe(200);
      expect((await get(url, {}, 'POST')).status).toBe(405);
      expect((await get(`${url}etc/passwd`)).status).toBe(404);
    });

    it('the served page polls the endpoint (Chromium), with nothing on the console', async () => {
      const dom = await chromium(url, ['--dump-dom', '--virtual-time-budget=3000'], dir);
      expect(dom.console).toEqual([]);
      expect(dom.stdout).toMatch(/data-ready="true"/);
      const m = /data-refreshes="(\d+)"/.exec(dom.stdout);
      expect(m, 'the page never refreshed from /graph.json').not.toBeNull();
      expect(Number(m![1])).toBeGreaterThanOrEqual(1);
    });

    it('stops on SIGTERM, at once and cleanly', async () => {
      const exit = await srv.stop('SIGTERM', 3_000);
      expect(exit).toEqual({ code: 0, signal: null });
      await expect(get(url)).rejects.toThrow(/ECONNREFUSED/);
    });

    it('refuses 0.0.0.0, :: and names, before listening', async () => {
      for (const [addr, reason] of [
        ['0.0.0.0:0', '0.0.0.0 is not a loopback address'],
        ['[::]:0', ':: is not a loopback address'],
        ['localhost:0', '"localhost" is not an IP address'],
      ] as const) {
        const r = await run(['node', CLI_JS, '--socket', d.socket, 'graph', '--serve', addr], { check: false, timeoutMs: 20_000 });
        expect(r.code).not.toBe(0);
        expect(r.stdout).toBe('');
        expect(r.stderr.trim().split('\n')).toHaveLength(1);
        expect(r.stderr).toContain(reason);
      }
    });
  });
});

describe('mvnet graph with Tor configured', () => {
  it('shows Tor as configured', async () => {
    const ns = await createNetns('graphtor');
    const dir = makeTempDir('graphtor');
    const cfg = join(dir, 'mvnet.json');
    // External Tor at a loopback port of the test's own namespace where nothing listens.
    writeFileSync(cfg, JSON.stringify({ tor: { mode: 'external', socks: '127.0.0.1:9', control: '127.0.0.1:9' } }));
    const d = await startDaemon({ netns: ns, config: cfg });
    await d.cliOk(['net', 'create', 'T', '--subnet', '10.77.95.0/24']);
    await d.cliOk(['vm', 'attach', 't1', '--net', 'T', '--unix-listen']);
    await d.cliOk(['route', '--all-tor', 't1']);
    const g = JSON.parse(await d.cliOk(['graph', '--format', 'json'])) as Graph;
    expect(g.daemon.torConfigured).toBe(true);
    const tor = g.nodes.find((n) => n.id === 'tor');
    expect(tor).toMatchObject({ type: 'tor', configured: true });
    expect(tor?.label).not.toContain('not configured');
    expect(g.edges.find((e) => e.id === 'route:t1:tor')).toMatchObject({ type: 'route', route: 'tor' });
    const r = await run(['dot', '-Tsvg'], { check: false, input: await d.cliOk(['graph']) });
    expect(r.code, r.stderr).toBe(0);
    await d.stop();
  });
});
