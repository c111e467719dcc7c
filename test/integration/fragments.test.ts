/**
 * IPv4 fragments from a VM are put back together by the router: the VM's own kernel fragments a
 * UDP datagram larger than the link MTU (1500), and
 *
 * - a ~4000-byte datagram on the direct route reaches a UDP server in the upstream namespace
 *   whole and byte-exact (the server hashes what it got and answers with the digest);
 * - a DNS query over UDP larger than the MTU (an EDNS0 OPT record carrying a big padding
 *   option) sent to the gateway's port 53 is answered, with the query's ID.
 *
 * Both show up in the network's router counters (`reassembled`) in `mvnet net list --json`.
 *
 * The other way too: a UDP reply larger than the network's MTU (the server echoing the 4000
 * bytes) is fragmented by the endpoint (gateway/frames.ts udpFrames) and reassembled by the VM's
 * kernel.
 */
import { createHash, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupAll, uniqueName, waitFor, type ManagedProcess } from '../support/netns.js';
import { ROUTER_IP, UPSTREAM_IP, startTopology, type DhcpLease, type StackVm, type Topology } from '../support/stack-topology.js';

const SUBNET = '10.215.0.0/24';
const GATEWAY = '10.215.0.1';
/** The test's own UDP servers in the upstream namespace (not among the topology's PORTS). */
const SINK_PORT = 7010;
const ECHO_PORT = 7011;

/**
 * Upstream: logs every datagram it gets (one JSON line: port, size, sha256) and answers on
 * SINK_PORT with that JSON (small), on ECHO_PORT with the datagram itself.
 */
const SINK_JS = String.raw`
'use strict';
const dgram = require('node:dgram');
const crypto = require('node:crypto');
const [host, sinkPort, echoPort] = process.argv.slice(2);
let pending = 2;
for (const port of [Number(sinkPort), Number(echoPort)]) {
  const s = dgram.createSocket('udp4');
  s.on('message', (m, r) => {
    const ev = { ev: 'rx', port, bytes: m.length, sha256: crypto.createHash('sha256').update(m).digest('hex'), from: r.address };
    process.stdout.write(JSON.stringify(ev) + '\n');
    s.send(port === Number(echoPort) ? m : Buffer.from(JSON.stringify(ev)), r.port, r.address);
  });
  s.bind(port, host, () => { if (--pending === 0) process.stdout.write(JSON.stringify({ ev: 'ready' }) + '\n'); });
}
`;

/**
 * VM side: sends the bytes of FILE as one datagram to HOST:PORT (the kernel fragments it) and
 * prints one JSON line: the first reply's size, sha256 and (when small) hex, or a timeout.
 */
const SEND_JS = String.raw`
'use strict';
const dgram = require('node:dgram');
const crypto = require('node:crypto');
const fs = require('node:fs');
const [host, port, file, timeoutStr] = process.argv.slice(2);
const data = fs.readFileSync(file);
const out = (o) => { process.stdout.write(JSON.stringify(o) + '\n'); process.exit(0); };
const s = dgram.createSocket('udp4');
const timer = setTimeout(() => out({ ok: false, code: 'TIMEOUT' }), Number(timeoutStr));
s.on('message', (m) => {
  clearTimeout(timer);
  out({ ok: true, bytes: m.length, sha256: crypto.createHash('sha256').update(m).digest('hex'), hex: m.length <= 4096 ? m.toString('hex') : '' });
});
s.on('error', (e) => { clearTimeout(timer); out({ ok: false, code: e.code || e.message }); });
s.send(data, Number(port), host);
`;

interface SendResult {
  ok: boolean;
  code?: string;
  bytes?: number;
  sha256?: string;
  hex?: string;
}

interface SinkEvent {
  ev: string;
  port?: number;
  bytes?: number;
  sha256?: string;
  from?: string;
}

interface RouterCounters {
  reassembled: number;
  fragDropped: number;
  [k: string]: number;
}

afterAll(cleanupAll);

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

function dnsName(name: string): Buffer {
  const parts = name.split('.').map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l, 'ascii')]));
  return Buffer.concat([...parts, Buffer.from([0])]);
}

/**
 * A DNS query for NAME/A with RD set and an EDNS0 OPT record (UDP size 4096) whose only option
 * is padding (RFC 7830, code 12) of `padding` zero bytes.
 */
function bigDnsQuery(id: number, name: string, padding: number): Buffer {
  const header = Buffer.alloc(12);
  header.writeUInt16BE(id, 0);
  header.writeUInt16BE(0x0100, 2); // RD
  header.writeUInt16BE(1, 4); // QDCOUNT
  header.writeUInt16BE(1, 10); // ARCOUNT
  const question = Buffer.concat([dnsName(name), Buffer.from([0, 1, 0, 1])]); // A, IN
  const opt = Buffer.alloc(11 + 4 + padding);
  opt.writeUInt8(0, 0); // root name
  opt.writeUInt16BE(41, 1); // TYPE OPT
  opt.writeUInt16BE(4096, 3); // requestor's UDP payload size
  opt.writeUInt32BE(0, 5); // extended RCODE, version, flags
  opt.writeUInt16BE(4 + padding, 9); // RDLENGTH
  opt.writeUInt16BE(12, 11); // option: Padding
  opt.writeUInt16BE(padding, 13);
  return Buffer.concat([header, question, opt]);
}

/** The A records' addresses of a DNS response (the question section is skipped). */
function parseAnswer(msg: Buffer): { id: number; qr: boolean; rcode: number; qdcount: number; addresses: string[] } {
  const id = msg.readUInt16BE(0);
  const flags = msg.readUInt16BE(2);
  const qd = msg.readUInt16BE(4);
  const an = msg.readUInt16BE(6);
  let off = 12;
  const skipName = (): void => {
    for (;;) {
      const len = msg[off]!;
      if (len === 0) {
        off += 1;
        return;
      }
      if ((len & 0xc0) === 0xc0) {
        off += 2;
        return;
      }
      off += 1 + len;
    }
  };
  for (let i = 0; i < qd; i++) {
    skipName();
    off += 4;
  }
  const addresses: string[] = [];
  for (let i = 0; i < an; i++) {
    skipName();
    const type = msg.readUInt16BE(off);
    const rdlen = msg.readUInt16BE(off + 8);
    off += 10;
    if (type === 1 && rdlen === 4) addresses.push(Array.from(msg.subarray(off, off + 4)).join('.'));
    off += rdlen;
  }
  return { id, qr: (flags & 0x8000) !== 0, rcode: flags & 0xf, qdcount: qd, addresses };
}

describe('router: IPv4 fragments from a VM are reassembled', () => {
  let t: Topology;
  let vm: StackVm;
  let lease: DhcpLease;
  let sink: ManagedProcess;
  let sendJs: string;

  async function counters(): Promise<RouterCounters> {
    const nets = await t.daemon.cliJson<{ name: string; router: RouterCounters }[]>(['net', 'list']);
    const n = nets.find((x) => x.name === 'lan');
    if (!n) throw new Error(`network lan not in net list: ${JSON.stringify(nets)}`);
    return n.router;
  }

  /** Sends `data` as one UDP datagram from the VM (fragmented by the VM's kernel). */
  async function send(host: string, port: number, data: Buffer, timeoutMs = 5_000): Promise<SendResult> {
    const file = join(t.dir, `${uniqueName('frag', 20)}.bin`);
    writeFileSync(file, data);
    const r = await vm.exec(['node', sendJs, host, String(port), file, String(timeoutMs)], { timeoutMs: timeoutMs + 10_000 });
    const line = r.stdout.trim().split('\n').pop() ?? '';
    try {
      return JSON.parse(line) as SendResult;
    } catch {
      throw new Error(`sender printed no JSON (exit ${r.code}):\n${r.stdout}\n${r.stderr}`);
    }
  }

  beforeAll(async () => {
    t = await startTopology({ prefix: 'frg' });
    await t.cli(['net', 'create', 'lan', '--subnet', SUBNET]);
    vm = await t.addVm('d', 'lan');
    await t.cli(['route', '--direct', 'd']);
    lease = await vm.configure();
    expect(lease.mtu).toBe('1500');

    const sinkJs = join(t.dir, 'udp-sink.cjs');
    sendJs = join(t.dir, 'udp-send.cjs');
    writeFileSync(sinkJs, SINK_JS);
    writeFileSync(sendJs, SEND_JS);
    sink = t.upstream.spawn(['node', sinkJs, UPSTREAM_IP, String(SINK_PORT), String(ECHO_PORT)], { label: 'udp sink (upstream)' });
    await sink.waitForLine((l) => l.includes('"ev":"ready"'), { timeoutMs: 10_000 });
  });

  /** What the upstream server logged for datagrams to `port` (once it logged at least one). */
  async function received(port: number): Promise<SinkEvent[]> {
    const events = (): SinkEvent[] => sink.lines.map((l) => JSON.parse(l) as SinkEvent).filter((e) => e.ev === 'rx' && e.port === port);
    await waitFor(() => events().length > 0, { timeoutMs: 3_000, what: `the upstream server to get a datagram on port ${port}` }).catch(() => undefined);
    return events();
  }

  it('a 4000-byte UDP datagram reaches the upstream server whole and byte-exact', async () => {
    expect((await vm.ns.link(vm.ifname))?.mtu).toBe(1500);
    const before = await counters();
    const data = randomBytes(4000);
    const want = sha256(data);

    const r = await send(UPSTREAM_IP, SINK_PORT, data);

    // The server got exactly one datagram: all 4000 bytes, as sent, from the router namespace.
    const rx = await received(SINK_PORT);
    expect(rx, await t.describe()).toHaveLength(1);
    expect(rx[0]).toMatchObject({ bytes: 4000, sha256: want, from: ROUTER_IP });
    // Its answer (that digest) came back to the VM through the same flow.
    expect(r, await t.describe()).toMatchObject({ ok: true });
    expect(JSON.parse(Buffer.from(r.hex ?? '', 'hex').toString())).toMatchObject({ ev: 'rx', bytes: 4000, sha256: want });

    const after = await counters();
    expect(after.reassembled).toBe(before.reassembled + 1);
    expect(after.fragDropped).toBe(before.fragDropped);
  });

  let echoed: { sent: Buffer; reply: SendResult } | undefined;

  it('a 4000-byte datagram to an echo server: the server gets it byte-exact', async () => {
    const before = await counters();
    const data = randomBytes(4000);
    const reply = await send(UPSTREAM_IP, ECHO_PORT, data, 2_000);
    echoed = { sent: data, reply };
    const rx = await received(ECHO_PORT);
    expect(rx).toHaveLength(1);
    expect(rx[0]).toMatchObject({ bytes: 4000, sha256: sha256(data), from: ROUTER_IP });
    expect((await counters()).reassembled).toBe(before.reassembled + 1);
  });

  // Before udpFrames, the 4042-byte echo frame was dropped by the VM's port as `oversize`.
  it('the 4000-byte echo comes back to the VM, fragmented to the MTU', () => {
    expect(echoed, 'the previous test did not run').toBeDefined();
    expect(echoed!.reply).toMatchObject({ ok: true, bytes: 4000, sha256: sha256(echoed!.sent) });
  });

  it('a DNS query larger than the MTU (EDNS0 padding) to the gateway is answered with its ID', async () => {
    const before = await counters();
    const id = randomBytes(2).readUInt16BE(0);
    // The VM's own name: answered by the gateway itself with the VM's lease.
    const query = bigDnsQuery(id, 'd.lan.mvnet', 2000);
    expect(query.length).toBeGreaterThan(1500 - 28);

    const r = await send(GATEWAY, 53, query);
    expect(r.ok, `${r.code ?? ''} ${await t.describe()}`).toBe(true);
    const a = parseAnswer(Buffer.from(r.hex ?? '', 'hex'));
    expect(a).toMatchObject({ id, qr: true, rcode: 0, qdcount: 1 });
    expect(a.addresses).toEqual([lease.ip]);

    const after = await counters();
    expect(after.reassembled).toBe(before.reassembled + 1);
    expect(after.fragDropped).toBe(before.fragDropped);
  });
});
