/**
 * Shared harness of the mvnet-over-Tor tests (test/tor/mvnet-*.test.ts): a router namespace
 * running the real daemon (`node dist/cli/main.js daemon`) with a `tor` section, VM namespaces
 * attached by TAP that configure themselves like real VMs (udhcpc, the namespace's own
 * resolv.conf, curl), a packet capture of everything the router namespace sends or receives,
 * a leak classifier, a raw-frame TCP probe for destinations a VM kernel would never route, and
 * Tor control-port event helpers.
 *
 * Topology (every namespace is ours, created by this run; nothing reaches anything else):
 *
 *   VM ns ──TAP──> daemon in ROUTER ns ──routerLink() veth──> private Tor network ns (relays)
 *                        │  (embedded mode: the daemon's own tor runs here, joins the private
 *                        │   network with privateTor().torrcForClient(); external mode: the
 *                        │   daemon uses the private network's client over its unix sockets and
 *                        │   the router ns needs no link at all)
 *                        └─ optional SINK veth (default routes, v4 and v6) into a namespace that
 *                           forwards nothing and answers nothing: any leak attempt by the daemon
 *                           turns into packets the capture sees, instead of an ENETUNREACH that
 *                           leaves no trace (the Tails leak-test idea)
 *
 * HARD NETWORK RULE: only our namespaces and 127.0.0.0/8. The daemon's `dns.upstream` points at
 * a TEST-NET-1 address (never used by Tor routes; it goes to the sink, or nowhere).
 */
import { createHash } from 'node:crypto';
import net from 'node:net';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startDaemon, type Daemon, type ErrorPattern, type LogLine } from '../support/daemon.js';
import { createNetns, makeTempDir, registerCleanup, run, uniqueName, waitFor, type ManagedProcess, type Netns, type RunResult } from '../support/netns.js';
import { writePrograms, type ProgramPaths } from '../support/stack-programs.js';
import { TorControl, type ControlEvent } from '../support/tor-control.js';
import { privateTor } from './context.js';
import type { PrivateTorHandle, RouterLink } from './private-network.js';
import type { OnionEndpoint, TorStatus } from '../../daemon/control/api.js';

/** The daemon's resolver for direct routes: TEST-NET-1, exists nowhere (sink or no route). */
export const DIRECT_DNS_UPSTREAM = '192.0.2.53';
/** Router ↔ sink link. */
export const SINK_ROUTER_IP = '100.64.99.1';
export const SINK_IP = '100.64.99.2';
export const SINK_ROUTER_IP6 = 'fd00:5e::1';
export const SINK_IP6 = 'fd00:5e::2';

export type TorMode = 'embedded' | 'external';

export interface DhcpLease {
  event: string;
  interface: string;
  ip: string;
  mask: string;
  router: string;
  dns: string;
  mtu: string;
  domain: string;
}

export interface TorRouterOptions {
  /** Short namespace prefix (mvt-<prefix>-r-<random>). */
  prefix: string;
  mode: TorMode;
  /** Extra keys of the daemon's `tor` section (hiddenServiceDirs, socks, …). */
  tor?: Record<string, unknown>;
  /** Default routes into a sink namespace (see the file comment). */
  sink?: boolean;
  /** Reuse a state dir (restart tests). */
  stateDir?: string;
  logLevel?: string;
  /** Don't start the daemon yet (e.g. to start a capture first). */
  deferDaemon?: boolean;
  /**
   * Embedded mode: run tor through a wrapper (`tor.binary`) that refuses to start while a block
   * file exists (`blockTorStart(true)`), so a test can hold Tor down for as long as it needs
   * without touching the network. The wrapper execs tor: same pid, argv[0] "tor".
   */
  torWrapper?: boolean;
  /** Error-level daemon log lines the test provokes (see DaemonOptions.expectErrors). */
  expectErrors?: ErrorPattern[] | true;
}

/** The router namespace, its links and the daemon inside it. */
export class TorRouter {
  daemon!: Daemon;
  readonly tor: PrivateTorHandle = privateTor();

  private constructor(
    readonly opts: TorRouterOptions,
    readonly dir: string,
    readonly programs: ProgramPaths,
    readonly ns: Netns,
    readonly configFile: string,
    /** Embedded mode only: the veth to the private network. */
    readonly link: RouterLink | undefined,
    /** With `sink`: the sink namespace and the router's interface towards it. */
    readonly sink: { ns: Netns; routerIf: string; sinkIf: string } | undefined,
  ) {}

  static async create(opts: TorRouterOptions): Promise<TorRouter> {
    const tor = privateTor();
    const dir = makeTempDir(`${opts.prefix}h`);
    const programs = writePrograms(dir);
    const ns = await createNetns(`${opts.prefix}-r`);
    // The router never forwards in the kernel: the daemon is the only way across.
    await ns.exec(['sysctl', '-q', '-w', 'net.ipv4.ip_forward=0']);
    const link = opts.mode === 'embedded' ? await tor.routerLink(ns.name) : undefined;
    let sink: { ns: Netns; routerIf: string; sinkIf: string } | undefined;
    if (opts.sink) sink = await addSink(ns, opts.prefix);
    const blockFile = join(dir, 'block-tor-start');
    if (opts.torWrapper) {
      writeFileSync(
        join(dir, 'tor-wrapper.sh'),
        `#!/bin/sh\nif [ -e ${blockFile} ]; then echo "[err] mvnet test: tor start blocked"; exit 1; fi\nexec tor "$@"\n`,
        { mode: 0o755 },
      );
    }
    const torCfg: Record<string, unknown> =
      opts.mode === 'embedded'
        ? { mode: 'embedded', torrc: tor.torrcForClient(), ...(opts.torWrapper ? { binary: join(dir, 'tor-wrapper.sh') } : {}), ...opts.tor }
        : {
            mode: 'external',
            socks: `unix:${tor.client.socksPath}`,
            control: `unix:${tor.client.controlPath}`,
            cookieFile: tor.client.cookiePath,
            ...opts.tor,
          };
    const cfg = {
      logLevel: opts.logLevel ?? 'info',
      dns: { upstream: DIRECT_DNS_UPSTREAM },
      direct: { connectTimeoutMs: 5_000 },
      tor: torCfg,
    };
    const configFile = join(dir, 'mvnet.json');
    writeFileSync(configFile, JSON.stringify(cfg, null, 2));
    const r = new TorRouter(opts, dir, programs, ns, configFile, link, sink);
    if (!opts.deferDaemon) await r.startDaemon();
    return r;
  }

  async startDaemon(): Promise<void> {
    this.daemon = await startDaemon({
      netns: this.ns,
      config: this.configFile,
      ...(this.opts.stateDir ? { stateDir: this.opts.stateDir } : {}),
      ...(this.opts.expectErrors !== undefined ? { expectErrors: this.opts.expectErrors } : {}),
    });
  }

  /** With `torWrapper`: make every later start of tor fail (true) or work again (false). */
  blockTorStart(on: boolean): void {
    const f = join(this.dir, 'block-tor-start');
    if (on) writeFileSync(f, '');
    else rmSync(f, { force: true });
  }

  get stateDir(): string {
    return this.daemon.stateDir;
  }

  /** Embedded tor's files (STATE/tor/…: torrc root's, sockets and cookie in tor's run/). */
  get embedded(): { dir: string; torrc: string; control: string; cookie: string; socks: string } {
    const d = join(this.stateDir, 'tor');
    const r = join(d, 'run');
    return { dir: d, torrc: join(d, 'torrc'), control: join(r, 'control.sock'), cookie: join(r, 'control.authcookie'), socks: join(r, 'socks.sock') };
  }

  /** The control port the daemon's Tor listens on (its own, or the private client's). */
  controlTarget(): { path: string; cookie: string } {
    if (this.opts.mode === 'embedded') return { path: this.embedded.control, cookie: this.embedded.cookie };
    return { path: this.tor.client.controlPath, cookie: this.tor.client.cookiePath };
  }

  cli(args: readonly string[]): Promise<string> {
    return this.daemon.cliOk(args);
  }

  cliJson<T>(args: readonly string[]): Promise<T> {
    return this.daemon.cliJson<T>(args);
  }

  torStatus(): Promise<TorStatus> {
    return this.cliJson<TorStatus>(['tor', 'status']);
  }

  /**
   * One JSON-RPC 2.0 call on the control socket, in-process (one JSON object per line; the
   * contract the CLI speaks). For fast polling where spawning the CLI (~300 ms) is too slow.
   */
  rpc<T>(method: string, params: unknown = {}, timeoutMs = 5_000): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const c = net.createConnection({ path: this.daemon.socket });
      let buf = '';
      const timer = setTimeout(() => c.destroy(new Error(`rpc ${method} timed out`)), timeoutMs);
      c.setEncoding('utf8');
      c.once('connect', () => c.write(`${JSON.stringify({ jsonrpc: '2.0', id: 1, method, params })}\n`));
      c.on('data', (d: string) => {
        buf += d;
        const nl = buf.indexOf('\n');
        if (nl < 0) return;
        clearTimeout(timer);
        c.destroy();
        const res = JSON.parse(buf.slice(0, nl)) as { result?: T; error?: { message: string } };
        if (res.error) reject(new Error(`rpc ${method}: ${res.error.message}`));
        else resolve(res.result as T);
      });
      c.on('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
    });
  }

  /**
   * Records every distinct tor status (phase, progress, summary, lastError, restarts) by polling
   * `tor.status` every `intervalMs` until `stop()`: tor status has no event stream, and the
   * interesting states can last only about a second (the restart backoff).
   */
  watchTorStatus(intervalMs = 50): { states: (TorStatus & { at: number })[]; stop: () => Promise<(TorStatus & { at: number })[]> } {
    const states: (TorStatus & { at: number })[] = [];
    let running = true;
    const key = (s: TorStatus): string => JSON.stringify([s.phase, s.progress, s.summary, s.lastError, s.restarts]);
    const loop = (async (): Promise<void> => {
      while (running) {
        try {
          const s = await this.rpc<TorStatus>('tor.status');
          if (states.length === 0 || key(states[states.length - 1]!) !== key(s)) states.push({ ...s, at: Date.now() });
        } catch {
          // daemon busy or restarting: next round
        }
        await new Promise((r) => setTimeout(r, intervalMs));
      }
    })();
    return {
      states,
      stop: async () => {
        running = false;
        await loop;
        return states;
      },
    };
  }

  onionList(): Promise<OnionEndpoint[]> {
    return this.cliJson<OnionEndpoint[]>(['onion', 'list']);
  }

  /** Polls `tor status` (no event to await across the CLI) until `pred`; quotes the last status. */
  async waitTorStatus(pred: (s: TorStatus) => boolean, what: string, timeoutMs = 60_000): Promise<TorStatus> {
    let last: TorStatus | undefined;
    try {
      return await waitFor(
        async () => {
          last = await this.torStatus();
          return pred(last) ? last : undefined;
        },
        { timeoutMs, intervalMs: 200, what },
      );
    } catch (e) {
      throw new Error(`${(e as Error).message}\nlast tor status: ${JSON.stringify(last)}\n${this.logTail(40)}`);
    }
  }

  waitTorReady(timeoutMs = 60_000): Promise<TorStatus> {
    return this.waitTorStatus((s) => s.phase === 'ready', 'tor status phase ready', timeoutMs);
  }

  /** The daemon's last log lines (this run), for failure messages. */
  logTail(n = 30): string {
    return `--- daemon log (last ${n}) ---\n${this.daemon.logs
      .slice(-n)
      .map((l) => JSON.stringify(l))
      .join('\n')}`;
  }

  /** Resolves with the first log line at index ≥ `from` (of this run) matching `pred`. */
  waitForLog(pred: (l: LogLine) => boolean, opts: { from?: number; timeoutMs?: number } = {}): Promise<LogLine> {
    const from = opts.from ?? 0;
    return waitFor(() => this.daemon.logs.slice(from).find(pred), { timeoutMs: opts.timeoutMs ?? 30_000, intervalMs: 50, what: 'a daemon log line' });
  }

  /** Creates namespace + TAP (made by the daemon inside it) and attaches it as `name`. */
  async addVm(name: string, net: string, o: { ipv6?: boolean } = {}): Promise<TorVm> {
    const ns = await createNetns(`${this.opts.prefix}-${name}`, { ipv6: o.ipv6 ?? false });
    const ifname = uniqueName('mvtv');
    await this.cli(['vm', 'attach', name, '--net', net, '--tap', ifname, '--netns', ns.name]);
    await ns.waitForLink(ifname);
    await ns.exec(['ip', 'link', 'set', ifname, 'up']);
    return new TorVm(this, name, net, ns, ifname);
  }

  /** Pid of the embedded tor (the daemon's child whose command line names our torrc). */
  embeddedTorPid(): number | undefined {
    const needle = this.embedded.torrc;
    for (const d of readdirSync('/proc')) {
      if (!/^\d+$/.test(d)) continue;
      try {
        const cmd = readFileSync(`/proc/${d}/cmdline`, 'latin1').split('\0');
        if (cmd.includes(needle) && /(^|\/)tor$/.test(cmd[0] ?? '')) return Number(d);
      } catch {
        // gone meanwhile
      }
    }
    return undefined;
  }

  /** Allow-list of what a Tor client may talk to: every relay's ORPort and the DirPort. */
  relayEndpoints(): Set<string> {
    return new Set(this.tor.relays.flatMap((r) => [`${r.address}:${r.orPort}`, ...(r.dirPort !== undefined ? [`${r.address}:${r.dirPort}`] : [])]));
  }

  /** The router namespace's own addresses (v4 and v6, lo excluded). */
  async ownAddresses(): Promise<string[]> {
    const r = await this.ns.exec(['ip', '-j', 'addr', 'show']);
    const links = JSON.parse(r.stdout) as { ifname: string; addr_info?: { local: string }[] }[];
    return links.filter((l) => l.ifname !== 'lo').flatMap((l) => (l.addr_info ?? []).map((a) => a.local));
  }

  /** Starts a capture on every interface of the router namespace. */
  capture(): Promise<NsCapture> {
    return NsCapture.start(this.ns, this.dir);
  }
}

/** A veth from `routerNs` to a new namespace that forwards nothing; default routes (v4, v6) into it. */
async function addSink(routerNs: Netns, prefix: string): Promise<{ ns: Netns; routerIf: string; sinkIf: string }> {
  const ns = await createNetns(`${prefix}-sink`, { ipv6: true });
  await ns.exec(['sysctl', '-q', '-w', 'net.ipv4.ip_forward=0', 'net.ipv6.conf.all.forwarding=0']);
  const routerIf = uniqueName('mvts');
  const sinkIf = uniqueName('mvtk');
  await run(['ip', 'link', 'add', routerIf, 'netns', routerNs.name, 'type', 'veth', 'peer', 'name', sinkIf, 'netns', ns.name]);
  // IPv6 only on this interface of the router namespace (createNetns disabled it everywhere),
  // without DAD or router solicitations: the link stays quiet unless something sends.
  await routerNs.exec([
    'sysctl',
    '-q',
    '-w',
    `net.ipv6.conf.${routerIf}.disable_ipv6=0`,
    `net.ipv6.conf.${routerIf}.accept_dad=0`,
    `net.ipv6.conf.${routerIf}.router_solicitations=0`,
    `net.ipv6.conf.${routerIf}.accept_ra=0`,
  ]);
  await run(['ip', '-n', routerNs.name, '-batch', '-'], {
    input:
      `addr add ${SINK_ROUTER_IP}/30 dev ${routerIf}\naddr add ${SINK_ROUTER_IP6}/64 dev ${routerIf} nodad\nlink set ${routerIf} up\n` +
      `route add default via ${SINK_IP} dev ${routerIf}\n`,
  });
  await routerNs.exec(['ip', '-6', 'route', 'add', 'default', 'via', SINK_IP6, 'dev', routerIf]);
  await run(['ip', '-n', ns.name, '-batch', '-'], {
    input: `addr add ${SINK_IP}/30 dev ${sinkIf}\naddr add ${SINK_IP6}/64 dev ${sinkIf} nodad\nlink set ${sinkIf} up\n`,
  });
  return { ns, routerIf, sinkIf };
}

// ---------------------------------------------------------------------------------------------
// VMs

export class TorVm {
  private udhcpc: ManagedProcess | undefined;
  private etcDir: string | undefined;

  constructor(
    readonly router: TorRouter,
    readonly name: string,
    readonly net: string,
    readonly ns: Netns,
    readonly ifname: string,
  ) {}

  exec(cmd: readonly string[], opts: { timeoutMs?: number; check?: boolean; input?: string } = {}): Promise<RunResult> {
    return this.ns.exec(cmd, { check: false, ...opts });
  }

  /** busybox udhcpc in the foreground (kept running); resolves with the first bound lease. */
  async dhcp(timeoutMs = 20_000): Promise<DhcpLease> {
    this.udhcpc = this.ns.spawn(['udhcpc', '-f', '-i', this.ifname, '-s', this.router.programs.udhcpcScript, '-O', 'domain', '-t', '10', '-T', '1'], {
      label: `udhcpc ${this.name}`,
    });
    const line = await this.udhcpc.waitForLine((l) => l.startsWith('UDHCPC ') && /"event":"bound"/.test(l), { timeoutMs });
    return JSON.parse(line.slice('UDHCPC '.length)) as DhcpLease;
  }

  /** /etc/netns/<ns>/resolv.conf: what every later `ip netns exec` (glibc, curl) uses. */
  setResolvConf(nameservers: string[]): void {
    if (this.etcDir === undefined) {
      const dir = `/etc/netns/${this.ns.name}`;
      mkdirSync(dir, { recursive: true });
      this.etcDir = dir;
      registerCleanup(
        `etc dir ${dir}`,
        async () => rmSync(dir, { recursive: true, force: true }),
        () => rmSync(dir, { recursive: true, force: true }),
      );
    }
    writeFileSync(join(this.etcDir, 'resolv.conf'), [...nameservers.map((n) => `nameserver ${n}`), 'options timeout:3 attempts:2', ''].join('\n'));
  }

  /** DHCP, then resolv.conf from the lease's DNS server(s) (the gateway). */
  async configure(): Promise<DhcpLease> {
    const lease = await this.dhcp();
    this.setResolvConf(lease.dns.split(/\s+/).filter(Boolean));
    return lease;
  }

  /** curl in the VM, no proxy, no config; never throws for a failed transfer. */
  curl(args: readonly string[], timeoutMs = 60_000): Promise<RunResult> {
    return this.exec(['curl', '-q', '--noproxy', '*', '-sS', ...args], { timeoutMs });
  }

  /** The VM toolbox of stack-programs.ts (tcp, udp, dns modes); parses its JSON line. */
  async client<T = Record<string, unknown>>(args: readonly (string | number)[], timeoutMs = 30_000): Promise<T> {
    const r = await this.exec(['node', this.router.programs.vmClient, ...args.map(String)], { timeoutMs });
    const line = r.stdout.trim().split('\n').pop() ?? '';
    try {
      return JSON.parse(line) as T;
    } catch {
      throw new Error(`${this.name}: vm client ${args.join(' ')} printed no JSON (exit ${r.code}):\n${r.stdout}\n${r.stderr}`);
    }
  }

  /** One TCP connect from the VM kernel: {ok} or {ok:false, code} and how long it took. */
  tcp(host: string, port: number, timeoutMs = 8_000): Promise<{ ok: boolean; code?: string; ms: number }> {
    return this.client(['tcp', host, port, timeoutMs], timeoutMs + 10_000);
  }

  /** A DNS query through the namespace's resolv.conf (Node's c-ares): {ok, addresses} or {ok:false, code}. */
  dns(name: string, type: 'A' | 'AAAA' = 'A'): Promise<{ ok: boolean; addresses?: string[]; code?: string }> {
    return this.client(['dns', name, type], 30_000);
  }

  /**
   * TCP connects from the VM's kernel to many ports of one host (batches of 100 at once):
   * which connected, how many were refused, which timed out, other errors.
   */
  async tcpMany(host: string, ports: readonly number[], timeoutMs = 4_000): Promise<{ open: number[]; refused: number; timeout: number[]; other: Record<string, number[]> }> {
    const script = join(this.router.dir, 'tcp-many.cjs');
    if (!existsSync(script)) writeFileSync(script, TCP_MANY_JS);
    const r = await this.exec(['node', script, host, ports.join(','), String(timeoutMs)], { timeoutMs: 120_000 });
    try {
      return JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as { open: number[]; refused: number; timeout: number[]; other: Record<string, number[]> };
    } catch {
      throw new Error(`tcp-many printed no JSON (exit ${r.code}): ${r.stdout}${r.stderr}`);
    }
  }

  async mac(): Promise<string> {
    return this.ns.mac(this.ifname);
  }

  /**
   * One raw DNS query over UDP from the VM (no resolver library in between: c-ares, Node's,
   * refuses .onion names itself, RFC 7686). Returns the rcode name and the A/AAAA answers.
   */
  async dnsRaw(server: string, name: string, type: 'A' | 'AAAA' | 'PTR' | 'TXT' = 'A', timeoutMs = 5_000): Promise<DnsRawResult> {
    const script = join(this.router.dir, 'dns-raw.cjs');
    if (!existsSync(script)) writeFileSync(script, DNS_RAW_JS);
    const r = await this.exec(['node', script, server, name, type, String(timeoutMs)], { timeoutMs: timeoutMs + 10_000 });
    try {
      return JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as DnsRawResult;
    } catch {
      throw new Error(`dns-raw printed no JSON (exit ${r.code}): ${r.stdout}${r.stderr}`);
    }
  }

  /**
   * Sends hand-made TCP SYNs (and, for `udp`, datagrams) out of the TAP with a raw socket —
   * for destinations the VM's kernel would never route (127.0.0.1, the router's own addresses,
   * link-local) — and reports per target what came back within `waitMs`.
   */
  async rawProbe(o: { srcIp: string; srcIp6?: string; gwIp: string; targets: RawTarget[]; waitMs?: number }): Promise<RawProbeResult[]> {
    const script = join(this.router.dir, 'raw-probe.py');
    if (!existsSync(script)) writeFileSync(script, RAW_PROBE_PY);
    const srcMac = await this.mac();
    const input = JSON.stringify({ ifname: this.ifname, srcMac, srcIp: o.srcIp, srcIp6: o.srcIp6 ?? null, gwIp: o.gwIp, targets: o.targets, waitMs: o.waitMs ?? 1500 });
    const r = await this.exec(['python3', script], { input, timeoutMs: 60_000 });
    if (r.code !== 0) throw new Error(`raw probe failed (exit ${r.code}): ${r.stderr}${r.stdout}`);
    return JSON.parse(r.stdout) as RawProbeResult[];
  }
}

export interface DnsRawResult {
  /** NOERROR, SERVFAIL, NXDOMAIN, REFUSED, … or TIMEOUT. */
  rcode: string;
  answers: string[];
  ms: number;
}

const DNS_RAW_JS = String.raw`
'use strict';
const dgram = require('node:dgram');
const [server, name, type, timeoutStr] = process.argv.slice(2);
const TYPES = { A: 1, PTR: 12, TXT: 16, AAAA: 28 };
const RCODES = ['NOERROR', 'FORMERR', 'SERVFAIL', 'NXDOMAIN', 'NOTIMP', 'REFUSED'];
const id = Math.floor(Math.random() * 65536);
const head = Buffer.alloc(12);
head.writeUInt16BE(id, 0); head.writeUInt16BE(0x0100, 2); head.writeUInt16BE(1, 4);
const labels = name.split('.').filter(Boolean).map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)]));
const q = Buffer.concat([head, ...labels, Buffer.from([0, 0, TYPES[type], 0, 1])]);
const s = dgram.createSocket(server.includes(':') ? 'udp6' : 'udp4');
const t0 = Date.now();
const timer = setTimeout(() => { console.log(JSON.stringify({ rcode: 'TIMEOUT', answers: [], ms: Date.now() - t0 })); process.exit(0); }, Number(timeoutStr));
s.on('message', (m) => {
  if (m.readUInt16BE(0) !== id) return;
  clearTimeout(timer);
  const rcode = RCODES[m[3] & 15] || String(m[3] & 15);
  const an = m.readUInt16BE(6);
  let off = q.length;
  const answers = [];
  for (let i = 0; i < an && off < m.length; i++) {
    while (off < m.length && m[off] !== 0 && (m[off] & 0xc0) !== 0xc0) off += m[off] + 1;
    off += (m[off] & 0xc0) === 0xc0 ? 2 : 1;
    const t = m.readUInt16BE(off); const len = m.readUInt16BE(off + 8); const d = m.subarray(off + 10, off + 10 + len);
    if (t === 1) answers.push([...d].join('.'));
    else if (t === 28) answers.push(d.toString('hex').match(/.{4}/g).join(':'));
    else answers.push('type' + t);
    off += 10 + len;
  }
  console.log(JSON.stringify({ rcode, answers, ms: Date.now() - t0 }));
  process.exit(0);
});
s.send(q, 53, server);
`;

const TCP_MANY_JS = String.raw`
'use strict';
const net = require('node:net');
const [host, portsStr, timeoutStr] = process.argv.slice(2);
const ports = portsStr.split(',').map(Number);
const out = { open: [], refused: 0, timeout: [], other: {} };
function one(port) {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    const t = setTimeout(() => { s.destroy(); out.timeout.push(port); resolve(); }, Number(timeoutStr));
    s.on('connect', () => { clearTimeout(t); out.open.push(port); s.destroy(); resolve(); });
    s.on('error', (e) => {
      clearTimeout(t);
      if (e.code === 'ECONNREFUSED') out.refused++;
      else (out.other[e.code || e.message] = out.other[e.code || e.message] || []).push(port);
      resolve();
    });
  });
}
(async () => {
  for (let i = 0; i < ports.length; i += 100) await Promise.all(ports.slice(i, i + 100).map(one));
  console.log(JSON.stringify(out));
})();
`;

export interface RawTarget {
  /** IPv4 or IPv6 address. */
  ip: string;
  port: number;
  proto?: 'tcp';
}

export interface RawProbeResult {
  ip: string;
  port: number;
  /** What came back: "synack" (a connection would open), "rst", "icmp:<type>/<code>", or "none". */
  replies: string[];
}

/**
 * The raw probe (Python: AF_PACKET needs no package). Reads JSON on stdin: the TAP, our MAC/IP,
 * the gateway's IP (its MAC is learned by ARP here), targets. Prints a JSON array.
 * IPv6 targets are sent from `srcIp6`, or else from the VM's link-local address derived from its
 * MAC (EUI-64), to the gateway MAC.
 */
const RAW_PROBE_PY = String.raw`
import json, os, random, select, socket, struct, sys, time
cfg = json.load(sys.stdin)
ifname = cfg['ifname']
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
s.bind((ifname, 0))
mac = bytes(int(x, 16) for x in cfg['srcMac'].split(':'))
src = socket.inet_aton(cfg['srcIp'])
gw = socket.inet_aton(cfg['gwIp'])

def csum(b):
    if len(b) % 2: b += b'\0'
    t = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while t >> 16: t = (t & 0xffff) + (t >> 16)
    return (~t) & 0xffff

def recv_until(deadline, pred):
    while True:
        left = deadline - time.time()
        if left <= 0: return None
        r, _, _ = select.select([s], [], [], left)
        if not r: return None
        f = s.recv(65535)
        v = pred(f)
        if v is not None: return v

# ARP for the gateway.
arp = struct.pack('!HHBBH6s4s6s4s', 1, 0x0800, 6, 4, 1, mac, src, b'\0' * 6, gw)
s.send(b'\xff' * 6 + mac + b'\x08\x06' + arp)
def arp_reply(f):
    if len(f) >= 42 and f[12:14] == b'\x08\x06' and struct.unpack('!H', f[20:22])[0] == 2 and f[28:32] == gw:
        return f[22:28]
gwmac = recv_until(time.time() + 3, arp_reply)
if gwmac is None:
    print(json.dumps({'error': 'no ARP reply from the gateway'})); sys.exit(2)

ll6 = bytes([0xfe, 0x80] + [0] * 6 + [mac[0] ^ 2, mac[1], mac[2], 0xff, 0xfe, mac[3], mac[4], mac[5]])
if cfg.get('srcIp6'): ll6 = socket.inet_pton(socket.AF_INET6, cfg['srcIp6'])

def syn4(dst, sport, dport):
    seq = random.getrandbits(32)
    tcp = struct.pack('!HHIIBBHHH', sport, dport, seq, 0, 5 << 4, 0x02, 64240, 0, 0)
    ph = src + dst + struct.pack('!BBH', 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack('!H', csum(ph + tcp)) + tcp[18:]
    ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(tcp), random.getrandbits(16), 0x4000, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack('!H', csum(ip)) + ip[12:]
    return gwmac + mac + b'\x08\x00' + ip + tcp

def syn6(dst, sport, dport):
    seq = random.getrandbits(32)
    tcp = struct.pack('!HHIIBBHHH', sport, dport, seq, 0, 5 << 4, 0x02, 64240, 0, 0)
    ph = ll6 + dst + struct.pack('!I3xB', len(tcp), 6)
    tcp = tcp[:16] + struct.pack('!H', csum(ph + tcp)) + tcp[18:]
    ip = struct.pack('!IHBB16s16s', 6 << 28, len(tcp), 6, 64, ll6, dst)
    return gwmac + mac + b'\x86\xdd' + ip + tcp

results = []
for t in cfg['targets']:
    v6 = ':' in t['ip']
    dst = socket.inet_pton(socket.AF_INET6 if v6 else socket.AF_INET, t['ip'])
    sport = random.randint(20000, 60000)
    s.send(syn6(dst, sport, t['port']) if v6 else syn4(dst, sport, t['port']))
    seen = []
    deadline = time.time() + cfg['waitMs'] / 1000.0
    def match(f):
        if f[6:12] == mac: return None  # our own frame, looped back to the socket
        et = f[12:14]
        if et == b'\x08\x00':
            ihl = (f[14] & 15) * 4
            proto = f[23]
            p = f[14 + ihl:]
            if proto == 6 and f[26:30] == dst and len(p) >= 14 and struct.unpack('!HH', p[0:4]) == (t['port'], sport):
                fl = p[13]
                return 'synack' if fl & 0x12 == 0x12 else ('rst' if fl & 0x04 else 'tcp:%x' % fl)
            if proto == 1 and len(p) >= 8 + 20 + 4:
                inner = p[8:]
                iihl = (inner[0] & 15) * 4
                if inner[16:20] == dst and struct.unpack('!H', inner[iihl + 2:iihl + 4])[0] == t['port']:
                    return 'icmp:%d/%d' % (p[0], p[1])
        if et == b'\x86\xdd':
            nh = f[20]
            p = f[54:]
            if nh == 6 and f[22:38] == dst and len(p) >= 14 and struct.unpack('!HH', p[0:4]) == (t['port'], sport):
                fl = p[13]
                return 'synack' if fl & 0x12 == 0x12 else ('rst' if fl & 0x04 else 'tcp:%x' % fl)
            if nh == 58 and len(p) >= 8 + 40 + 4 and p[0] < 128:
                inner = p[8:]
                if inner[24:40] == dst and struct.unpack('!H', inner[42:44])[0] == t['port']:
                    return 'icmp6:%d/%d' % (p[0], p[1])
        return None
    while True:
        v = recv_until(deadline, match)
        if v is None: break
        seen.append(v)
        if v in ('synack', 'rst') or v.startswith('icmp'): break
    results.append({'ip': t['ip'], 'port': t['port'], 'replies': seen or ['none']})
print(json.dumps(results))
`;

// ---------------------------------------------------------------------------------------------
// Capture: tcpdump -i any in a namespace, parsed here from the pcap (LINUX_SLL2)

export type Direction = 'in' | 'out' | 'broadcast' | 'multicast' | 'otherhost';

export interface Pkt {
  ts: number;
  ifname: string;
  dir: Direction;
  /** ethertype. */
  etherType: number;
  /** 4, 6, or 0 for non-IP (ARP, …). */
  v: 0 | 4 | 6;
  proto: 'tcp' | 'udp' | 'icmp' | 'icmp6' | 'arp' | 'other';
  src: string;
  dst: string;
  sport?: number;
  dport?: number;
  /** TCP flags byte. */
  flags?: number;
  icmpType?: number;
  len: number;
}

const PKT_TYPE: Record<number, Direction> = { 0: 'in', 1: 'broadcast', 2: 'multicast', 3: 'otherhost', 4: 'out' };

function v6String(b: Buffer): string {
  const parts: string[] = [];
  for (let i = 0; i < 16; i += 2) parts.push(b.readUInt16BE(i).toString(16));
  // Compress the longest run of zeros (RFC 5952), enough for readable messages and comparisons.
  let best = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (parts[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && parts[j] === '0') j++;
    if (j - i > bestLen && j - i > 1) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (best < 0) return parts.join(':');
  return `${parts.slice(0, best).join(':')}::${parts.slice(best + bestLen).join(':')}`;
}

/** Parses a pcap file (µs or ns, either byte order) of link type LINUX_SLL2 (276) or LINUX_SLL (113). */
export function parsePcap(buf: Buffer, ifnames: Map<number, string>): Pkt[] {
  if (buf.length < 24) return [];
  const magicLE = buf.readUInt32LE(0);
  let le: boolean;
  let nano: boolean;
  if (magicLE === 0xa1b2c3d4 || magicLE === 0xa1b23c4d) {
    le = true;
    nano = magicLE === 0xa1b23c4d;
  } else {
    const magicBE = buf.readUInt32BE(0);
    if (magicBE !== 0xa1b2c3d4 && magicBE !== 0xa1b23c4d) throw new Error(`not a pcap file (magic ${magicLE.toString(16)})`);
    le = false;
    nano = magicBE === 0xa1b23c4d;
  }
  const u32 = (o: number): number => (le ? buf.readUInt32LE(o) : buf.readUInt32BE(o));
  const linkType = u32(20);
  if (linkType !== 276 && linkType !== 113) throw new Error(`unexpected pcap link type ${linkType}`);
  const out: Pkt[] = [];
  let off = 24;
  while (off + 16 <= buf.length) {
    const ts = u32(off) + u32(off + 4) / (nano ? 1e9 : 1e6);
    const incl = u32(off + 8);
    const orig = u32(off + 12);
    const data = buf.subarray(off + 16, off + 16 + incl);
    off += 16 + incl;
    let etherType: number;
    let ifindex = -1;
    let pktType: number;
    let l3: Buffer;
    if (linkType === 276) {
      if (data.length < 20) continue;
      etherType = data.readUInt16BE(0);
      ifindex = data.readUInt32BE(4);
      pktType = data[10]!;
      l3 = data.subarray(20);
    } else {
      if (data.length < 16) continue;
      pktType = data.readUInt16BE(0);
      etherType = data.readUInt16BE(14);
      l3 = data.subarray(16);
    }
    const p: Pkt = {
      ts,
      ifname: ifnames.get(ifindex) ?? `if${ifindex}`,
      dir: PKT_TYPE[pktType] ?? 'otherhost',
      etherType,
      v: 0,
      proto: 'other',
      src: '',
      dst: '',
      len: orig,
    };
    if (etherType === 0x0806) {
      p.proto = 'arp';
      if (l3.length >= 28) {
        p.src = [...l3.subarray(14, 18)].join('.');
        p.dst = [...l3.subarray(24, 28)].join('.');
      }
    } else if (etherType === 0x0800 && l3.length >= 20) {
      p.v = 4;
      const ihl = (l3[0]! & 15) * 4;
      const proto = l3[9]!;
      p.src = [...l3.subarray(12, 16)].join('.');
      p.dst = [...l3.subarray(16, 20)].join('.');
      const l4 = l3.subarray(ihl);
      if (proto === 6 && l4.length >= 14) {
        p.proto = 'tcp';
        p.sport = l4.readUInt16BE(0);
        p.dport = l4.readUInt16BE(2);
        p.flags = l4[13]!;
      } else if (proto === 17 && l4.length >= 4) {
        p.proto = 'udp';
        p.sport = l4.readUInt16BE(0);
        p.dport = l4.readUInt16BE(2);
      } else if (proto === 1 && l4.length >= 1) {
        p.proto = 'icmp';
        p.icmpType = l4[0]!;
      }
    } else if (etherType === 0x86dd && l3.length >= 40) {
      p.v = 6;
      p.src = v6String(l3.subarray(8, 24));
      p.dst = v6String(l3.subarray(24, 40));
      let nh = l3[6]!;
      let l4 = l3.subarray(40);
      // Skip extension headers (hop-by-hop of MLD reports, routing, destination options).
      while ((nh === 0 || nh === 43 || nh === 60) && l4.length >= 8) {
        const len = (l4[1]! + 1) * 8;
        nh = l4[0]!;
        l4 = l4.subarray(len);
      }
      if (nh === 6 && l4.length >= 14) {
        p.proto = 'tcp';
        p.sport = l4.readUInt16BE(0);
        p.dport = l4.readUInt16BE(2);
        p.flags = l4[13]!;
      } else if (nh === 17 && l4.length >= 4) {
        p.proto = 'udp';
        p.sport = l4.readUInt16BE(0);
        p.dport = l4.readUInt16BE(2);
      } else if (nh === 58 && l4.length >= 1) {
        p.proto = 'icmp6';
        p.icmpType = l4[0]!;
      }
    }
    out.push(p);
  }
  return out;
}

/** tcpdump on every interface of a namespace (`-i any`), written to a pcap file. */
export class NsCapture {
  private constructor(
    readonly proc: ManagedProcess,
    readonly file: string,
    readonly ns: Netns,
  ) {}

  static async start(ns: Netns, dir: string): Promise<NsCapture> {
    const file = join(dir, `${uniqueName('cap', 20)}.pcap`);
    const proc = ns.spawn(['tcpdump', '-i', 'any', '--immediate-mode', '-nn', '-U', '-Z', 'root', '-s', '200', '-w', file], { label: `tcpdump -i any in ${ns.name}` });
    // "listening on" is printed once the socket is bound: from then on nothing is missed.
    await waitFor(() => proc.stderr.includes('listening on') || !proc.running, { timeoutMs: 10_000, what: `tcpdump in ${ns.name} to start` });
    if (!proc.running) throw new Error(`tcpdump exited: ${proc.stderr}`);
    return new NsCapture(proc, file, ns);
  }

  /** Packets so far, without stopping (the file is flushed per packet: -U). */
  async snapshot(): Promise<Pkt[]> {
    return parsePcap(readFileSync(this.file), await this.ifnames());
  }

  /** Resolves once the packets captured so far satisfy `pred` (polls the file: no event for it). */
  async waitFor(pred: (pkts: Pkt[]) => boolean, timeoutMs = 10_000): Promise<Pkt[]> {
    return waitFor(
      async () => {
        const p = await this.snapshot();
        return pred(p) ? p : undefined;
      },
      { timeoutMs, intervalMs: 100, what: 'matching packets in the capture' },
    );
  }

  async stop(): Promise<Pkt[]> {
    await this.proc.stop('SIGINT', 5_000);
    return this.snapshot();
  }

  private async ifnames(): Promise<Map<number, string>> {
    const r = await this.ns.exec(['ip', '-j', 'link', 'show'], { check: false });
    const m = new Map<number, string>();
    try {
      for (const l of JSON.parse(r.stdout) as { ifindex: number; ifname: string }[]) m.set(l.ifindex, l.ifname);
    } catch {
      // namespace gone: names stay "if<N>"
    }
    return m;
  }
}

export interface LeakVerdict {
  /** TCP between one of `torAddrs` and an allow-listed relay ORPort/DirPort. */
  relay: Pkt[];
  /** ARP and IPv6 neighbour discovery / MLD / router solicitation on a link. */
  housekeeping: Pkt[];
  /** On `lo`: inside the namespace, never leaves it. */
  loopback: Pkt[];
  /** Everything else: a leak. */
  leaks: Pkt[];
}

/** ICMPv6 router/neighbour discovery and MLD. */
const ND_MLD_TYPES = new Set([130, 131, 132, 133, 134, 135, 136, 137, 143]);

/**
 * The detector: sorts every captured packet of the router namespace. The only legitimate flows
 * are TCP between the embedded Tor's source address(es) and a relay's ORPort/DirPort.
 */
export function classifyLeaks(pkts: readonly Pkt[], allow: { torAddrs: ReadonlySet<string>; relays: ReadonlySet<string> }): LeakVerdict {
  const v: LeakVerdict = { relay: [], housekeeping: [], loopback: [], leaks: [] };
  for (const p of pkts) {
    if (p.ifname === 'lo') v.loopback.push(p);
    else if (p.proto === 'arp' || (p.proto === 'icmp6' && ND_MLD_TYPES.has(p.icmpType ?? -1))) v.housekeeping.push(p);
    else if (
      p.v === 4 &&
      p.proto === 'tcp' &&
      ((allow.torAddrs.has(p.src) && allow.relays.has(`${p.dst}:${p.dport}`)) || (allow.torAddrs.has(p.dst) && allow.relays.has(`${p.src}:${p.sport}`)))
    ) {
      v.relay.push(p);
    } else v.leaks.push(p);
  }
  return v;
}

/** Distinct flows of a packet list, as readable lines (for assertion messages). */
export function flows(pkts: readonly Pkt[]): string[] {
  const ep = (p: Pkt, a: string, port?: number): string => (port === undefined ? a : p.v === 6 ? `[${a}]:${port}` : `${a}:${port}`);
  return [...new Set(pkts.map((p) => `${p.ifname} ${p.dir} ${p.proto}${p.v ? `/v${p.v}` : ''} ${ep(p, p.src, p.sport)} > ${ep(p, p.dst, p.dport)}${p.icmpType !== undefined ? ` type=${p.icmpType}` : ''}`))];
}

// ---------------------------------------------------------------------------------------------
// Tor control events

/** `KEY=VALUE` and `KEY="quoted value"` pairs of an event's first line. */
export function eventArgs(e: ControlEvent): Record<string, string> {
  const first = (e.lines[0] ?? '').split('\n')[0]!;
  const out: Record<string, string> = {};
  for (const m of first.matchAll(/([A-Z_]+)=("(?:[^"\\]|\\.)*"|\S*)/g)) {
    const raw = m[2]!;
    out[m[1]!] = raw.startsWith('"') ? raw.slice(1, -1).replace(/\\(.)/g, '$1') : raw;
  }
  return out;
}

export interface StreamEv {
  id: string;
  status: string;
  circ: string;
  target: string;
  user?: string;
  purpose?: string;
}

export interface CircEv {
  id: string;
  status: string;
  user?: string;
  purpose?: string;
}

/** Records STREAM and CIRC events of a Tor control port (the one the daemon's Tor uses). */
export class TorEvents {
  readonly streams: StreamEv[] = [];
  readonly circs: CircEv[] = [];

  private constructor(readonly ctl: TorControl) {}

  static async open(target: { path: string; cookie: string }, events: string[] = ['STREAM', 'CIRC']): Promise<TorEvents> {
    const ctl = await TorControl.open(target.path, target.cookie);
    const t = new TorEvents(ctl);
    ctl.onEvent((e) => {
      const a = eventArgs(e);
      if (e.type === 'STREAM') {
        const [id, status, circ, target] = e.words;
        t.streams.push({ id: id!, status: status!, circ: circ!, target: target!, ...(a.SOCKS_USERNAME !== undefined ? { user: a.SOCKS_USERNAME } : {}), ...(a.PURPOSE ? { purpose: a.PURPOSE } : {}) });
      } else if (e.type === 'CIRC') {
        const [id, status] = e.words;
        t.circs.push({ id: id!, status: status!, ...(a.SOCKS_USERNAME !== undefined ? { user: a.SOCKS_USERNAME } : {}), ...(a.PURPOSE ? { purpose: a.PURPOSE } : {}) });
      }
    });
    await ctl.setEvents(events);
    return t;
  }

  /** Circuit ids of the SUCCEEDED streams of a SOCKS username, from index `from` on. */
  circuitsOf(user: string, from = 0): Set<string> {
    return new Set(this.streams.slice(from).filter((s) => s.user === user && s.status === 'SUCCEEDED').map((s) => s.circ));
  }

  close(): void {
    this.ctl.close();
  }
}

/** sha256 of `n` bytes of the upstream's pattern (test-servers.ts: byte i is i % 251). */
export function patternSha256(n: number): string {
  const h = createHash('sha256');
  const block = Buffer.from(Array.from({ length: 251 * 256 }, (_, i) => i % 251));
  for (let off = 0; off < n; off += block.length) h.update(block.subarray(0, Math.min(block.length, n - off)));
  return h.digest('hex');
}
