/**
 * The end-to-end topology of the stack tests:
 *
 *   VM namespaces ──TAP (created by the daemon)──> daemon in the ROUTER namespace
 *                                                     │ veth (router default route)
 *                                                     v
 *                                   UPSTREAM namespace: "the internet" (HTTP, half-close,
 *                                   reset and UDP echo servers of the test's own, dnsmasq)
 *
 * Every namespace, process, temp dir and /etc/netns/<ns> directory is registered with the
 * netns.ts registry, so `cleanupAll()` (and the exit hooks) remove it even when a test fails.
 * Nothing here talks to an address outside these namespaces: the upstream namespace has no
 * route beyond its veth, and the daemon's upstream resolver is set to the upstream namespace.
 *
 * VMs configure themselves like real ones: the kernel's own stack, `udhcpc` (busybox) for DHCP
 * with a script that applies address/router/MTU, the namespace's own resolv.conf
 * (/etc/netns/<ns>/resolv.conf, which `ip netns exec` bind-mounts), curl and small Node
 * clients (stack-programs.ts) for traffic.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, existsSync, mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startDaemon, type Daemon, type LogLine } from './daemon.js';
import {
  addVeth,
  createNetns,
  makeTempDir,
  registerCleanup,
  run,
  uniqueName,
  waitFor,
  type ManagedProcess,
  type Netns,
  type RunResult,
} from './netns.js';
import { writePrograms, type ProgramPaths } from './stack-programs.js';

/** The router↔upstream link (addresses inside the test's own namespaces only). */
export const ROUTER_IP = '10.200.0.1';
export const UPSTREAM_IP = '10.200.0.2';
export const ROUTER_IP6 = 'fd00:200::1';
export const UPSTREAM_IP6 = 'fd00:200::2';
/** Names dnsmasq in the upstream namespace answers (A and AAAA → the upstream namespace). */
export const UPSTREAM_NAME = 'www.example.test';

export const PORTS = {
  http: 80,
  /** Half-close server: reads to the client's FIN, then sends a JSON line and `halfReply` bytes. */
  half: 7001,
  /** Answers the client's first bytes with a RST. */
  rst: 7002,
  udpEcho: 7003,
  /** Nothing listens; see `blackholePort()` to make SYNs to it vanish. */
  blackhole: 7004,
} as const;

export const HALF_REPLY_BYTES = 2 * 1024 * 1024;

export interface TopologyOptions {
  /** Namespace name prefix (short: it becomes part of mvt-<prefix>-r-<random>). */
  prefix: string;
  /** IPv6 on the router↔upstream link (and in the router namespace). Default false. */
  ipv6?: boolean;
  /** Extra daemon config (merged over `{ dns: { upstream } }`). */
  config?: Record<string, unknown>;
  /** Daemon log level (default "info"). */
  logLevel?: string;
}

export interface DhcpLease {
  event: string;
  interface: string;
  ip: string;
  mask: string;
  router: string;
  dns: string;
  mtu: string;
  domain: string;
  lease: string;
  serverid: string;
  subnet: string;
  message: string;
}

/** tcpdump text of ARP, neighbour discovery, router solicitation and MLD packets. */
const LINK_HOUSEKEEPING = /ethertype ARP|ICMP6, (neighbor (solicitation|advertisement)|router solicitation|multicast listener)/;

export interface CaptureOptions {
  /** pcap-filter expression. */
  filter?: string;
}

export interface CapturedPacket {
  /** Seconds since the epoch (kernel timestamp). */
  ts: number;
  srcMac: string;
  dstMac: string;
  /** The rest of tcpdump's line after the link header. */
  text: string;
  line: string;
}

/** A running tcpdump inside a namespace; `stop()` returns the packets it saw. */
export class Capture {
  constructor(
    readonly proc: ManagedProcess,
    readonly file: string,
    private readonly ns: Netns,
  ) {}

  async stop(): Promise<CapturedPacket[]> {
    // SIGINT: tcpdump flushes the file and prints its counts.
    await this.proc.stop('SIGINT', 5_000);
    const r = await this.ns.exec(['tcpdump', '-r', this.file, '-nn', '-tt', '-e', '-v'], { check: false, timeoutMs: 30_000 });
    return parseTcpdump(r.stdout);
  }
}

/** Parses `tcpdump -nn -tt -e [-v]` output (continuation lines are joined to their packet). */
export function parseTcpdump(text: string): CapturedPacket[] {
  const out: CapturedPacket[] = [];
  for (const raw of text.split('\n')) {
    if (raw.length === 0) continue;
    const m = /^(\d+\.\d+) ([0-9a-f:]{17}) > ([0-9a-f:]{17}), (.*)$/.exec(raw);
    if (m) {
      out.push({ ts: Number(m[1]), srcMac: m[2]!, dstMac: m[3]!, text: m[4]!, line: raw });
    } else if (out.length > 0) {
      const last = out[out.length - 1]!;
      last.text += ' ' + raw.trim();
      last.line += '\n' + raw;
    }
  }
  return out;
}

export interface TransferResult {
  /** curl's exit code. */
  code: number;
  stderr: string;
  ms: number;
  bytes: number;
  sha256: string;
}

export function sha256File(file: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    createReadStream(file)
      .on('data', (d) => h.update(d))
      .on('end', () => resolve(h.digest('hex')))
      .on('error', reject);
  });
}

export interface VmOptions {
  /** `--ip` (static lease). */
  ip?: string;
  mac?: string;
  /** Enable IPv6 in the VM namespace (SLAAC: accept_ra=1, forwarding=0). */
  ipv6?: boolean;
  /** Namespace prefix (default `<topology prefix>-<vm>`). */
  prefix?: string;
  /** `--vnet-hdr`: the TAP carries virtio-net headers (TSO, checksum offload). */
  vnetHdr?: boolean;
}

/** A VM: a namespace whose kernel talks through the TAP the daemon created in it. */
export class StackVm {
  private udhcpc: ManagedProcess | undefined;
  private etcDir: string | undefined;

  constructor(
    readonly topo: Topology,
    readonly name: string,
    readonly net: string,
    readonly ns: Netns,
    readonly ifname: string,
  ) {}

  exec(cmd: readonly string[], opts: { timeoutMs?: number; check?: boolean; input?: string } = {}): Promise<RunResult> {
    return this.ns.exec(cmd, { check: false, ...opts });
  }

  /**
   * Starts udhcpc (foreground, kept running for renewals) and resolves with the first bound
   * lease. The MTU option is requested explicitly (`-O mtu`), as a VM that honours it would.
   */
  async dhcp(opts: { timeoutMs?: number; extra?: string[] } = {}): Promise<DhcpLease> {
    if (this.udhcpc?.running) throw new Error(`${this.name}: udhcpc already running`);
    this.udhcpc = this.ns.spawn(
      ['udhcpc', '-f', '-i', this.ifname, '-s', this.topo.programs.udhcpcScript, '-O', 'mtu', '-O', 'domain', '-t', '10', '-T', '1', ...(opts.extra ?? [])],
      { label: `udhcpc ${this.name}` },
    );
    const line = await this.udhcpc.waitForLine((l) => l.startsWith('UDHCPC ') && /"event":"bound"/.test(l), {
      timeoutMs: opts.timeoutMs ?? 20_000,
    });
    return JSON.parse(line.slice('UDHCPC '.length)) as DhcpLease;
  }

  /** SIGUSR1 to udhcpc (renew) and the next renew/bound event. */
  async renew(timeoutMs = 15_000): Promise<DhcpLease> {
    const p = this.udhcpc;
    if (!p?.running) throw new Error(`${this.name}: udhcpc is not running`);
    const from = p.lines.length;
    p.signal('SIGUSR1');
    const line = await p.waitForLine((l) => l.startsWith('UDHCPC ') && /"event":"(renew|bound)"/.test(l), { timeoutMs, fromIndex: from });
    return JSON.parse(line.slice('UDHCPC '.length)) as DhcpLease;
  }

  /** Every udhcpc event line so far. */
  dhcpEvents(): DhcpLease[] {
    return (this.udhcpc?.lines ?? []).filter((l) => l.startsWith('UDHCPC ')).map((l) => JSON.parse(l.slice(7)) as DhcpLease);
  }

  async stopDhcp(): Promise<void> {
    await this.udhcpc?.stop();
  }

  /** Writes this namespace's own /etc/resolv.conf (applied by every later `ip netns exec`). */
  setResolvConf(nameservers: string[], search?: string): void {
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
    const text = [...(search ? [`search ${search}`] : []), ...nameservers.map((n) => `nameserver ${n}`), 'options timeout:2 attempts:2', ''].join('\n');
    writeFileSync(join(this.etcDir, 'resolv.conf'), text);
  }

  /** DHCP, then resolv.conf from the lease's DNS servers. */
  async configure(): Promise<DhcpLease> {
    const lease = await this.dhcp();
    this.setResolvConf(lease.dns.split(/\s+/).filter(Boolean), lease.domain || undefined);
    return lease;
  }

  /** Runs the VM client toolbox (stack-programs.ts) and parses its one JSON line. */
  async client<T = Record<string, unknown>>(args: readonly (string | number)[], timeoutMs = 60_000): Promise<T> {
    const r = await this.exec(['node', this.topo.programs.vmClient, ...args.map(String)], { timeoutMs });
    const line = r.stdout.trim().split('\n').pop() ?? '';
    try {
      return JSON.parse(line) as T;
    } catch {
      throw new Error(`${this.name}: vm client ${args.join(' ')} printed no JSON (exit ${r.code}):\n${r.stdout}\n${r.stderr}`);
    }
  }

  /** Starts a long-running client mode (flood/udpflood) and resolves with its JSON line. */
  async clientHold<T = Record<string, unknown>>(args: readonly (string | number)[], timeoutMs = 60_000): Promise<{ proc: ManagedProcess; result: T }> {
    const proc = this.ns.spawn(['node', this.topo.programs.vmClient, ...args.map(String)], { label: `${this.name}: client ${args[0]}`, stdin: true });
    const line = await proc.waitForLine((l) => l.startsWith('{'), { timeoutMs });
    return { proc, result: JSON.parse(line) as T };
  }

  /** Runs curl in the VM (no proxy, no config), never throws for a failed transfer. */
  curl(args: readonly string[], timeoutMs = 120_000): Promise<RunResult> {
    return this.exec(['curl', '-q', '--noproxy', '*', '-sS', ...args], { timeoutMs });
  }

  /**
   * curl GET `url` into a file, then its size and sha256 (computed here, streaming). Returns
   * curl's exit code and stderr too; never throws for a failed transfer.
   */
  async download(url: string, opts: { timeoutMs?: number; extra?: string[] } = {}): Promise<TransferResult> {
    const file = join(this.topo.dir, `${uniqueName('dl', 20)}.bin`);
    const t0 = Date.now();
    const r = await this.curl(['--fail', '-o', file, '-w', '%{http_code} %{size_download}', ...(opts.extra ?? []), url], opts.timeoutMs ?? 240_000);
    const ms = Date.now() - t0;
    const res: TransferResult = { code: r.code, stderr: r.stderr.trim(), ms, bytes: 0, sha256: '' };
    if (existsSync(file)) {
      res.bytes = statSync(file).size;
      res.sha256 = await sha256File(file);
      rmSync(file, { force: true });
    }
    return res;
  }

  /** PUT `size` random bytes to the upstream's /upload with curl; the server's answer and ours. */
  async upload(url: string, size: number, opts: { timeoutMs?: number } = {}): Promise<TransferResult & { sentSha256: string; server?: { bytes: number; sha256: string } }> {
    const file = join(this.topo.dir, `${uniqueName('ul', 20)}.bin`);
    const data = randomBytes(size);
    writeFileSync(file, data);
    const sentSha256 = createHash('sha256').update(data).digest('hex');
    const t0 = Date.now();
    const r = await this.curl(['--fail', '-T', file, '-H', 'Expect:', url], opts.timeoutMs ?? 240_000);
    const ms = Date.now() - t0;
    rmSync(file, { force: true });
    let server: { bytes: number; sha256: string } | undefined;
    try {
      server = JSON.parse(r.stdout) as { bytes: number; sha256: string };
    } catch {
      server = undefined;
    }
    return { code: r.code, stderr: r.stderr.trim(), ms, bytes: size, sha256: server?.sha256 ?? '', sentSha256, ...(server ? { server } : {}) };
  }

  /** The VM's global IPv6 addresses on its TAP. */
  async ipv6Addresses(): Promise<string[]> {
    const r = await this.exec(['ip', '-j', '-6', 'addr', 'show', 'dev', this.ifname, 'scope', 'global']);
    const j = JSON.parse(r.stdout || '[]') as { addr_info?: { local: string; tentative?: boolean }[] }[];
    return (j[0]?.addr_info ?? []).filter((a) => !a.tentative).map((a) => a.local);
  }
}

export class Topology {
  readonly vms = new Map<string, StackVm>();

  constructor(
    readonly opts: TopologyOptions,
    readonly dir: string,
    readonly programs: ProgramPaths,
    readonly router: Netns,
    readonly upstream: Netns,
    /** veth end in the router namespace. */
    readonly routerIf: string,
    /** veth end in the upstream namespace. */
    readonly upstreamIf: string,
    readonly routerMac: string,
    readonly upstreamMac: string,
    readonly daemon: Daemon,
    readonly server: ManagedProcess,
    readonly dnsmasq: ManagedProcess,
  ) {}

  /** `mvnet ...` (requires exit 0). */
  cli(args: readonly string[]): Promise<string> {
    return this.daemon.cliOk(args);
  }

  /** Creates a namespace and attaches it as VM `name` (the daemon creates the TAP inside). */
  async addVm(name: string, net: string, o: VmOptions = {}): Promise<StackVm> {
    const ns = await createNetns(o.prefix ?? `${this.opts.prefix}-${name}`, { ipv6: o.ipv6 ?? false });
    if (o.ipv6) {
      await ns.exec([
        'sysctl',
        '-q',
        '-w',
        'net.ipv6.conf.all.forwarding=0',
        'net.ipv6.conf.default.forwarding=0',
        'net.ipv6.conf.all.accept_ra=1',
        'net.ipv6.conf.default.accept_ra=1',
        'net.ipv6.conf.default.autoconf=1',
        'net.ipv6.conf.default.accept_dad=0',
      ]);
    }
    const ifname = uniqueName('mvtv');
    await this.cli([
      'vm',
      'attach',
      name,
      '--net',
      net,
      '--tap',
      ifname,
      '--netns',
      ns.name,
      ...(o.mac ? ['--mac', o.mac] : []),
      ...(o.ip ? ['--ip', o.ip] : []),
      ...(o.vnetHdr ? ['--vnet-hdr'] : []),
    ]);
    await ns.waitForLink(ifname);
    await ns.exec(['ip', 'link', 'set', ifname, 'up']);
    const vm = new StackVm(this, name, net, ns, ifname);
    this.vms.set(name, vm);
    return vm;
  }

  /** tcpdump on `ifname` inside `ns` (default: the upstream end of the router link). */
  async capture(o: CaptureOptions & { ns?: Netns; ifname?: string } = {}): Promise<Capture> {
    const ns = o.ns ?? this.upstream;
    const ifname = o.ifname ?? this.upstreamIf;
    const file = join(this.dir, `${uniqueName('cap', 20)}.pcap`);
    const proc = ns.spawn(['tcpdump', '-i', ifname, '--immediate-mode', '-nn', '-U', '-Z', 'root', '-s', '256', '-w', file, ...(o.filter ? [o.filter] : [])], {
      label: `tcpdump ${ifname}`,
    });
    // tcpdump says "listening on" once the socket is bound: from then on nothing is missed.
    await waitFor(() => proc.stderr.includes('listening on') || !proc.running, { timeoutMs: 10_000, what: `tcpdump on ${ifname} to start` });
    if (!proc.running) throw new Error(`tcpdump exited: ${proc.stderr}`);
    return new Capture(proc, file, ns);
  }

  /** Packets the router namespace sent onto the upstream link (by source MAC). */
  fromRouter(pkts: CapturedPacket[]): CapturedPacket[] {
    return pkts.filter((p) => p.srcMac === this.routerMac);
  }

  /**
   * Packets the router namespace sent onto the upstream link that carry something: everything
   * but the link's own housekeeping (ARP, IPv6 neighbour discovery and MLD), which the router
   * kernel does on its own (e.g. answering the upstream's ARP re-probes).
   */
  fromRouterTraffic(pkts: CapturedPacket[]): CapturedPacket[] {
    return this.fromRouter(pkts).filter((p) => !LINK_HOUSEKEEPING.test(p.text));
  }

  /**
   * TCP to UPSTREAM:port (v4 and v6) vanishes at the upstream namespace's input routing: a
   * policy rule of type blackhole placed before the local table (this kernel has neither netem
   * nor tc actions nor netfilter tools). SYNs get no answer at all, as from a dead host.
   */
  async blackholePort(port: number): Promise<void> {
    for (const [fam, addr] of [['-4', UPSTREAM_IP], ['-6', UPSTREAM_IP6]] as const) {
      await this.upstream.exec(['ip', fam, 'rule', 'add', 'pref', '10', 'to', addr, 'ipproto', 'tcp', 'dport', String(port), 'blackhole']);
      await this.upstream.exec(['ip', fam, 'rule', 'add', 'pref', '100', 'lookup', 'local']);
      await this.upstream.exec(['ip', fam, 'rule', 'del', 'pref', '0']);
    }
  }

  /** The sha256 the upstream HTTP server serves for /bytes/N (asked inside the upstream namespace). */
  async blobSha(n: number): Promise<string> {
    const r = await this.upstream.exec(['curl', '-q', '--noproxy', '*', '-sS', '--fail', `http://${UPSTREAM_IP}:${PORTS.http}/sha/${n}`], {
      timeoutMs: 60_000,
    });
    return r.stdout.trim();
  }

  /** Upstream server events (parsed JSON lines) so far. */
  serverEvents(): { ev: string; [k: string]: unknown }[] {
    const out: { ev: string; [k: string]: unknown }[] = [];
    for (const l of this.server.lines) {
      try {
        out.push(JSON.parse(l) as { ev: string });
      } catch {
        // not an event
      }
    }
    return out;
  }

  /** Daemon log lines (this run) matching `pred`. */
  logs(pred: (l: LogLine) => boolean): LogLine[] {
    return this.daemon.logs.filter(pred);
  }

  /** Status of a VM, network and daemon, for assertion messages. */
  async describe(): Promise<string> {
    try {
      return JSON.stringify(await this.daemon.status());
    } catch (e) {
      return `(status failed: ${(e as Error).message})`;
    }
  }
}

/**
 * Builds the router and upstream namespaces, the link between them, the upstream servers and the
 * daemon (inside the router namespace). Call `cleanupAll()` in `afterAll`.
 */
export async function startTopology(opts: TopologyOptions): Promise<Topology> {
  const dir = makeTempDir(`${opts.prefix}`);
  const programs = writePrograms(dir);
  const router = await createNetns(`${opts.prefix}-r`, { ipv6: opts.ipv6 ?? false });
  // The upstream namespace always has IPv6 (its servers listen dual-stack); it never routes.
  const upstream = await createNetns(`${opts.prefix}-u`, { ipv6: true });
  await upstream.exec(['sysctl', '-q', '-w', 'net.ipv4.ip_forward=0', 'net.ipv6.conf.all.forwarding=0', 'net.ipv6.conf.all.accept_ra=0', 'net.ipv6.conf.default.accept_ra=0']);
  const routerIf = uniqueName('mvtr');
  const upstreamIf = uniqueName('mvtu');
  await addVeth({ name: routerIf, netns: router }, { name: upstreamIf, netns: upstream });
  await router.exec(['ip', 'addr', 'add', `${ROUTER_IP}/24`, 'dev', routerIf]);
  await upstream.exec(['ip', 'addr', 'add', `${UPSTREAM_IP}/24`, 'dev', upstreamIf]);
  await router.exec(['ip', 'route', 'add', 'default', 'via', UPSTREAM_IP]);
  if (opts.ipv6) {
    await router.exec(['ip', '-6', 'addr', 'add', `${ROUTER_IP6}/64`, 'dev', routerIf, 'nodad']);
    await upstream.exec(['ip', '-6', 'addr', 'add', `${UPSTREAM_IP6}/64`, 'dev', upstreamIf, 'nodad']);
    await router.exec(['ip', '-6', 'route', 'add', 'default', 'via', UPSTREAM_IP6]);
  }
  const routerMac = await router.mac(routerIf);
  const upstreamMac = await upstream.mac(upstreamIf);

  const hosts = [UPSTREAM_IP, ...(opts.ipv6 ? [UPSTREAM_IP6] : [])];
  const server = upstream.spawn(
    ['node', programs.upstreamServer, JSON.stringify({ hosts, http: PORTS.http, half: PORTS.half, rst: PORTS.rst, udpEcho: PORTS.udpEcho, halfReply: HALF_REPLY_BYTES })],
    { label: 'upstream servers' },
  );
  await server.waitForLine((l) => l.includes('"ev":"ready"'), { timeoutMs: 20_000 });

  const dnsmasq = upstream.spawn(
    [
      'dnsmasq',
      '--no-daemon',
      '--conf-file=/dev/null',
      '--no-resolv',
      '--no-hosts',
      '--no-poll',
      '--bind-interfaces',
      '--user=root',
      '--pid-file=',
      '--log-queries',
      '--log-facility=-',
      `--listen-address=${UPSTREAM_IP}`,
      ...(opts.ipv6 ? [`--listen-address=${UPSTREAM_IP6}`] : []),
      `--address=/example.test/${UPSTREAM_IP}`,
      ...(opts.ipv6 ? [`--address=/example.test/${UPSTREAM_IP6}`] : []),
    ],
    { label: 'dnsmasq (upstream)' },
  );
  // dnsmasq logs "started" after binding its sockets.
  await waitFor(() => /started, version/.test(dnsmasq.stderr) || !dnsmasq.running, { timeoutMs: 10_000, what: 'dnsmasq to start' });
  if (!dnsmasq.running) throw new Error(`dnsmasq exited: ${dnsmasq.stderr}`);

  const cfgFile = join(dir, 'mvnet.json');
  const cfg = { logLevel: opts.logLevel ?? 'info', ...opts.config, dns: { upstream: UPSTREAM_IP, ...(opts.config?.dns as object | undefined) } };
  writeFileSync(cfgFile, JSON.stringify(cfg));
  const daemon = await startDaemon({ netns: router, config: cfgFile });
  return new Topology(opts, dir, programs, router, upstream, routerIf, upstreamIf, routerMac, upstreamMac, daemon, server, dnsmasq);
}

/** Runs a shell pipeline in `ns` (bash -o pipefail), never throwing for a non-zero exit. */
export function sh(ns: Netns, script: string, timeoutMs = 120_000): Promise<RunResult> {
  return run(['bash', '-o', 'pipefail', '-c', script], { netns: ns.name, check: false, timeoutMs });
}
