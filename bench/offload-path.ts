/**
 * `node dist/bench/offload-path.js [--base DIR] [--mb N] [--rounds N]`: the CPU cost of the
 * gateway's frame path alone, per MB of TCP payload, in this process (process.cpuUsage, so a
 * loaded machine slows it down but hardly changes the result), A/B interleaved against the tree
 * in DIR (its dist/ built from the commit before the offload work), medians of the rounds:
 *
 * - down vnet: MSS segments (1448) → frames → Network.fromGateway → a port with a vnet header.
 *   Before: tcpFrame per segment (JS checksum) and a copy with the header in the switch; after:
 *   the endpoint's TcpCoalescer (GSO frames, NEEDS_CSUM) written as one view.
 * - down plain: the same to a port without the header (after: the checksum in native code);
 *   down vnet 65520 and down 65520: the same with 65480-byte segments (MTU 65520, one per frame).
 * - up vnet: a VM's 64 KiB TSO frames (NEEDS_CSUM) → Network → the gateway, which dissects every
 *   frame it gets (checksums verified unless partial). Before: segmented in software.
 *
 * Not a throughput figure: the TCP connection, the sockets and the kernel are left out.
 */
import { pathToFileURL } from 'node:url';
import { join, resolve } from 'node:path';

type Mod = Record<string, unknown>;

interface Tree {
  name: string;
  frames: Mod;
  network: Mod;
  dissect: Mod;
  endpoint: Mod;
}

async function load(dir: string, name: string): Promise<Tree> {
  const imp = (p: string): Promise<Mod> => import(pathToFileURL(join(dir, 'dist', p)).href) as Promise<Mod>;
  const native = await imp('plugins/native/index.js');
  // Loading the addon installs its checksum where the tree has one (after only).
  (native.loadNative as () => unknown)();
  return { name, frames: await imp('daemon/gateway/frames.js'), network: await imp('daemon/switch/network.js'), dissect: await imp('daemon/gateway/dissect.js'), endpoint: await imp('daemon/endpoint/endpoint.js') };
}

const MSS = 1448;
const VM_MAC = 0x020000000001;
const GW_MAC = 0x02aaaaaaaaaa;
const l2 = { vmMac: VM_MAC, gwMac: GW_MAC };
const flow = { vmIp: { v: 4, n: 0x0ae70002 }, vmPort: 40000, remoteIp: { v: 4, n: 0x0ac80002 }, remotePort: 80 };

interface PortLike {
  kind: 'tap';
  layer: 2;
  name: string;
  vnetHdrLen: number;
  maxFrame: number;
  handler: (frames: readonly Buffer[]) => void;
  bytes: number;
  onFrames(h: (frames: readonly Buffer[]) => void): void;
  send(frames: readonly Buffer[]): void;
  stats(): unknown;
  status(): unknown;
  close(): Promise<void>;
}

function port(vnetHdrLen: number): PortLike {
  return {
    kind: 'tap',
    layer: 2,
    name: 'p',
    vnetHdrLen,
    maxFrame: 65550,
    bytes: 0,
    handler: () => {},
    onFrames(h) {
      this.handler = h;
    },
    send(frames) {
      for (const f of frames) this.bytes += f.length;
    },
    stats: () => ({ rxFrames: 0, rxBytes: 0, txFrames: 0, txBytes: 0, drops: {} }),
    status: () => ({ state: 'up', detail: '' }),
    close: async () => {},
  };
}

interface NetworkLike {
  attach(vm: string, p: unknown, mac: number): unknown;
  setGateway(h: unknown): void;
  fromGateway(frames: readonly Buffer[]): void;
  close(): void;
}

function network(t: Tree): NetworkLike {
  const N = t.network.Network as new (o: unknown) => NetworkLike;
  return new N({ name: 'b', mtu: 65520, gatewayMac: GW_MAC, clock: () => 0 });
}

const data = Buffer.alloc(1 << 20, 0x37);

/** CPU µs per MB of payload sent down to a port (vnet or plain), `mb` MB. */
function down(t: Tree, vnet: boolean, mb: number, after: boolean, mss = MSS): number {
  const net = network(t);
  const p = port(vnet ? 10 : 0);
  net.attach('vm', p, VM_MAC);
  const tcpFrame = t.frames.tcpFrame as (...a: unknown[]) => Buffer;
  const out: Buffer[] = [];
  const Co = t.endpoint.TcpCoalescer as (new (send: (f: Buffer) => void, c: unknown) => { push(l2: unknown, a: unknown, s: unknown): void; flush(): void }) | undefined;
  const co = after && vnet && Co ? new Co((f) => out.push(f), { tcpSuperOut: 0, tcpOffloadSegments: 0, tcpOffloadFrames: 0 }) : null;
  const total = mb * 1024 * 1024;
  let seq = 1;
  const t0 = process.cpuUsage();
  for (let sent = 0; sent < total; ) {
    // One "tick": what a window of 45 segments would send, then the router's flush.
    for (let i = 0; i < 45 && sent < total; i++) {
      const off = (sent % (data.length - mss)) | 0;
      const s = { seq, ack: 1, flags: 0x10, window: 500, options: { ts: [1, 2] }, payload: data.subarray(off, off + mss) };
      if (co !== null) co.push(l2, flow, s);
      else out.push(tcpFrame(l2, flow.remoteIp, 80, flow.vmIp, 40000, s));
      seq = (seq + mss) >>> 0;
      sent += mss;
    }
    co?.flush();
    net.fromGateway(out);
    out.length = 0;
  }
  const c = process.cpuUsage(t0);
  net.close();
  return (c.user + c.system) / mb;
}

/** CPU µs per MB of a VM's TSO frames (45 × 1448) up to the gateway, which dissects each frame. */
function up(t: Tree, after: Tree, mb: number): number {
  // The VM's frames: built once with the new tree's coalescer (the layout Linux hands a TAP).
  const Co = after.endpoint.TcpCoalescer as new (send: (f: Buffer) => void, c: unknown) => { push(l2: unknown, a: unknown, s: unknown): void; flush(): void };
  const built: Buffer[] = [];
  const co = new Co((f) => built.push(f), { tcpSuperOut: 0, tcpOffloadSegments: 0, tcpOffloadFrames: 0 });
  for (let i = 0; i < 45; i++) co.push({ vmMac: GW_MAC, gwMac: VM_MAC }, flow, { seq: 1 + i * MSS, ack: 1, flags: 0x10, window: 500, options: { ts: [1, 2] }, payload: data.subarray(0, MSS) });
  co.flush();
  const f = built[0]!;
  const tso = Buffer.from(Buffer.from(f.buffer, f.byteOffset - 10, f.length + 10));
  const net = network(t);
  const p = port(10);
  net.attach('vm', p, VM_MAC);
  const dissect = t.dissect.dissect as (b: Buffer) => { kind: string; tcp?: { payload: Buffer } };
  let got = 0;
  net.setGateway({
    input: (frames: readonly Buffer[]) => {
      for (const x of frames) got += dissect(x).tcp?.payload.length ?? 0;
    },
  });
  const total = mb * 1024 * 1024;
  const batch = [tso];
  const t0 = process.cpuUsage();
  for (let sent = 0; sent < total; sent += 45 * MSS) p.handler(batch);
  const c = process.cpuUsage(t0);
  net.close();
  if (got < total) throw new Error(`the gateway got ${got} of ${total} bytes`);
  return (c.user + c.system) / mb;
}

function median(v: number[]): number {
  const s = [...v].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const opt = (k: string): string | undefined => {
    const i = args.indexOf(k);
    return i >= 0 ? args[i + 1] : undefined;
  };
  const here = resolve(new URL('../../', import.meta.url).pathname);
  const baseDir = opt('--base');
  const mb = Number(opt('--mb') ?? 64);
  const rounds = Number(opt('--rounds') ?? 7);
  const after = await load(here, 'after');
  const trees = baseDir !== undefined ? [await load(resolve(baseDir), 'before'), after] : [after];
  const cells = ['down vnet', 'down plain', 'down vnet 65520', 'down 65520', 'up vnet'] as const;
  const res = new Map<string, number[]>();
  for (let r = 0; r < rounds; r++) {
    for (const t of trees) {
      const isAfter = t === after;
      const v = [down(t, true, mb, isAfter), down(t, false, mb, isAfter), down(t, true, mb, isAfter, 65480), down(t, false, mb, isAfter, 65480), up(t, after, mb)];
      cells.forEach((c, i) => {
        const k = `${c}|${t.name}`;
        res.set(k, [...(res.get(k) ?? []), v[i]!]);
      });
    }
  }
  console.log(`gateway frame path, CPU ms per MB of payload (median of ${rounds}, min-max), ${mb} MB per run, load ${(await import('node:os')).loadavg()[0]!.toFixed(1)}`);
  for (const c of cells) {
    const line = trees.map((t) => {
      const v = res.get(`${c}|${t.name}`)!;
      return `${t.name} ${(median(v) / 1000).toFixed(2)} (${(Math.min(...v) / 1000).toFixed(2)}-${(Math.max(...v) / 1000).toFixed(2)})`;
    });
    console.log(`${c.padEnd(16)} ${line.join('   ')}`);
  }
}

await main();
