/**
 * Namespaces as VMs behind the daemon: `attachTapVm` creates a namespace, has the daemon create
 * the VM's TAP inside it (`vm attach --tap IF --netns NS`), and gives the namespace kernel its
 * address. `tcpSink`/`tcpSend` move a TCP stream between two such VMs with small Node programs
 * run inside the namespaces (sha256 on both ends; the sink announces when it is listening).
 */
import type { Daemon } from './daemon.js';
import { createNetns, uniqueName, type ManagedProcess, type Netns } from './netns.js';

export interface TapVm {
  /** VM name in mvnet. */
  name: string;
  net: string;
  ns: Netns;
  /** TAP name inside `ns`. */
  ifname: string;
  /** Address without prefix length. */
  ip: string;
  /** MAC of the TAP as the namespace sees it. */
  mac: string;
}

export interface TapVmOptions {
  vm: string;
  net: string;
  /** Address with prefix length, assigned inside the namespace, e.g. "10.77.1.1/24". */
  cidr: string;
  /** Namespace prefix (default: the VM name). */
  prefix?: string;
  mac?: string;
  vnetHdr?: boolean;
  /** More `vm attach` options. */
  extra?: string[];
}

/** Creates a namespace and attaches it to `net` as VM `vm` through a TAP the daemon creates inside it. */
export async function attachTapVm(d: Daemon, o: TapVmOptions): Promise<TapVm> {
  const ns = await createNetns(o.prefix ?? o.vm);
  const ifname = uniqueName('mvt');
  await d.cliOk([
    'vm',
    'attach',
    o.vm,
    '--net',
    o.net,
    '--tap',
    ifname,
    '--netns',
    ns.name,
    ...(o.mac ? ['--mac', o.mac] : []),
    ...(o.vnetHdr ? ['--vnet-hdr'] : []),
    ...(o.extra ?? []),
  ]);
  await ns.waitForLink(ifname);
  await ns.addAddr(ifname, o.cidr);
  return { name: o.vm, net: o.net, ns, ifname, ip: o.cidr.split('/')[0]!, mac: await ns.mac(ifname) };
}

// ---------------------------------------------------------------------------------------------
// TCP stream through the switch

const SINK_JS = `
const net = require('node:net');
const crypto = require('node:crypto');
const [host, port] = process.argv.slice(1);
const srv = net.createServer((s) => {
  const h = crypto.createHash('sha256');
  let bytes = 0;
  s.on('data', (d) => { h.update(d); bytes += d.length; });
  s.on('end', () => {
    console.log(JSON.stringify({ bytes, sha256: h.digest('hex') }));
    s.end();
    srv.close();
  });
  s.on('error', (e) => { console.log(JSON.stringify({ error: e.message })); process.exit(1); });
});
srv.listen(Number(port), host, () => console.log('listening'));
`;

const SEND_JS = `
const net = require('node:net');
const crypto = require('node:crypto');
const [host, port, size, timeoutMs] = process.argv.slice(1);
const data = crypto.randomBytes(Number(size));
const sha256 = crypto.createHash('sha256').update(data).digest('hex');
const s = net.connect({ host, port: Number(port) });
const timer = setTimeout(() => { console.log(JSON.stringify({ ok: false, error: 'timeout' })); process.exit(0); }, Number(timeoutMs));
s.on('connect', () => s.end(data));
s.on('error', (e) => { clearTimeout(timer); console.log(JSON.stringify({ ok: false, error: e.code || e.message })); process.exit(0); });
s.on('data', () => {});
s.on('close', (hadError) => { if (!hadError) { clearTimeout(timer); console.log(JSON.stringify({ ok: true, bytes: data.length, sha256 })); } });
`;

export interface SinkResult {
  bytes?: number;
  sha256?: string;
  error?: string;
}

export interface TcpSink {
  proc: ManagedProcess;
  /** Resolves with what the sink received once the sender closed. */
  result(timeoutMs?: number): Promise<SinkResult>;
}

/** Starts a one-shot TCP sink inside `ns` on host:port; resolves once it is listening. */
export async function tcpSink(ns: Netns, host: string, port: number): Promise<TcpSink> {
  const proc = ns.spawn(['node', '-e', SINK_JS, host, String(port)], { label: `tcp sink ${host}:${port}` });
  await proc.waitForLine((l) => l === 'listening', { timeoutMs: 15_000 });
  return {
    proc,
    async result(timeoutMs = 60_000) {
      const line = await proc.waitForLine((l) => l.startsWith('{'), { timeoutMs });
      return JSON.parse(line) as SinkResult;
    },
  };
}

export interface SendResult {
  ok: boolean;
  bytes?: number;
  sha256?: string;
  error?: string;
}

/** Sends `size` random bytes from inside `ns` to host:port; never throws for network failure. */
export async function tcpSend(ns: Netns, host: string, port: number, size: number, timeoutMs = 30_000): Promise<SendResult> {
  const r = await ns.exec(['node', '-e', SEND_JS, host, String(port), String(size), String(timeoutMs)], {
    timeoutMs: timeoutMs + 15_000,
  });
  const line = r.stdout.trim().split('\n').pop() ?? '';
  return JSON.parse(line) as SendResult;
}

/** Sends one UDP datagram from inside `ns` (the kernel fills in — or offloads — the checksum). */
export async function udpSend(ns: Netns, host: string, port: number, payload: string): Promise<void> {
  const js =
    "const s = require('node:dgram').createSocket('udp4');" +
    's.send(process.argv[3], Number(process.argv[2]), process.argv[1], (e) => { if (e) { console.error(e.message); process.exit(1); } s.close(); });';
  await ns.exec(['node', '-e', js, host, String(port), payload]);
}

/** Starts a TCP connect from inside `ns` to host:port and leaves it retrying (SYNs) until killed. */
export function tcpConnectAttempt(ns: Netns, host: string, port: number): ManagedProcess {
  const js =
    "const s = require('node:net').connect({ host: process.argv[1], port: Number(process.argv[2]) });" +
    "s.on('error', () => process.exit(0)); setTimeout(() => process.exit(0), 20000);";
  return ns.spawn(['node', '-e', js, host, String(port)], { label: `tcp connect ${host}:${port}` });
}
