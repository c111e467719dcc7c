/**
 * Fuzzes the whole ingress path: random and mutated frames, in batches, into the ports of a
 * running in-memory network (test/support/router-lab.ts: the real switch, router, endpoint and
 * gateway services), with an outside that accepts, refuses, answers, ends and resets at random,
 * a clock that jumps, and routes that change under live flows.
 *
 * A crash is anything the daemon would count as a bug: an exception caught at a data-path
 * boundary (daemon/errors.ts faults), one that escaped inject(), an error-level log line, or a
 * frame the gateway sends that is larger than the port takes. Input i is built from
 * inputSeed(seed, i) alone; its effect may depend on the inputs before it (flows, leases), so a
 * crash is replayed by `replayIngress(seed)` in a fresh lab, and by the run (seed, count) that
 * found it.
 */
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { ARP_REQUEST, encodeArp } from '../../daemon/wire/arp.js';
import { encodeEthernet, ETHERTYPE_ARP } from '../../daemon/wire/ethernet.js';
import { MAC_BROADCAST } from '../../daemon/wire/mac.js';
import { DIRECT_TAG } from '../../daemon/egress/direct.js';
import { UpstreamError, type DatagramUpstream, type StreamUpstream } from '../../daemon/endpoint/upstream.js';
import { faults, setFaultReporter } from '../../daemon/errors.js';
import type { RouterEgress } from '../../daemon/router/net-router.js';
import type { Route } from '../../daemon/routes/route.js';
import type { NetworkSpec } from '../../daemon/state/model.js';
import { duplexPair, RouterLab, type LabVm } from '../support/router-lab.js';
import { FRAME_CONTEXT, framePool, wireInput } from './wire.js';
import { fixChecksums, validFrame, type FrameContext } from './frames.js';
import { inputSeed, mutate, Rng } from './rng.js';
import { errorText, KEEP_CRASHES, type FuzzReport } from './report.js';

export const FUZZ_SPEC: NetworkSpec = { name: 'fuzz', subnet: '10.1.0.0/24', gateway: '10.1.0.1', ipv6: 'fd00:0:0:1::/64', mtu: 1500 };

const ROUTES: Route[] = [{ kind: 'direct' }, { kind: 'none' }, { kind: 'tor' }, { kind: 'direct' }, { kind: 'via', vm: 'vm2' } as Route];

/** The outside, at random: connects or refuses, echoes, ends or resets; UDP answers sometimes. */
class FuzzEgress implements RouterEgress {
  constructor(private readonly rng: Rng) {}

  tcp(): StreamUpstream {
    const rng = this.rng;
    return {
      tag: DIRECT_TAG,
      open: () => {
        const k = rng.int(4);
        if (k === 0) return Promise.reject(new UpstreamError(rng.pick(['refused', 'unreachable', 'timeout'] as const), 'fuzz'));
        const [ours, theirs] = duplexPair();
        theirs.on('error', () => {});
        theirs.on('data', (d: Buffer) => {
          const r = rng.int(10);
          if (r < 5) theirs.write(d);
          else if (r === 5) theirs.end();
          else if (r === 6) theirs.destroy();
          else if (r === 7) theirs.write(rng.bytes(rng.int(5000)));
        });
        if (k === 1) queueMicrotask(() => theirs.write(rng.bytes(rng.int(3000))));
        return Promise.resolve(ours);
      },
    };
  }

  udp(): DatagramUpstream {
    const rng = this.rng;
    return {
      tag: DIRECT_TAG,
      open: (deliver, onError) => ({
        send: (p) => {
          const r = rng.int(10);
          if (r < 3) queueMicrotask(() => deliver(p));
          else if (r === 3) queueMicrotask(() => deliver(rng.bytes(rng.int(2000))));
          else if (r === 4) queueMicrotask(() => onError(new Error('fuzz')));
        },
        close: () => {},
      }),
    };
  }
}

interface Harness {
  lab: RouterLab;
  vms: LabVm[];
  problems: { where: string; error: string }[];
  close(): void;
}

function harness(rng: Rng): Harness {
  const problems: { where: string; error: string }[] = [];
  // Error-level lines from the router are crashes too.
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString().split('\n')) {
        if (line === '') continue;
        try {
          const l = JSON.parse(line) as { level?: number; msg?: string };
          if ((l.level ?? 0) >= 50) problems.push({ where: 'log', error: line.slice(0, 400) });
        } catch {
          problems.push({ where: 'log', error: line.slice(0, 400) });
        }
      }
      cb();
    },
  });
  const log = pino({ level: 'error' }, sink);
  const lab = new RouterLab({ log, spec: FUZZ_SPEC, egress: new FuzzEgress(rng) });
  const vms = [
    lab.attachPort('vm1', { mac: FRAME_CONTEXT.vmMac, ip: '10.1.0.10', route: { kind: 'direct' } }),
    lab.attachPort('vm2', { mac: FRAME_CONTEXT.vmMac + 1, ip: '10.1.0.11', route: { kind: 'none' } }),
    lab.attachPort('vm3', { mac: FRAME_CONTEXT.vmMac + 2, fixedMac: false }),
  ];
  // Each VM's first frame is a clean one: vm3's MAC is learned from it.
  for (const [i, v] of vms.entries()) v.port.inject(validArp(CONTEXTS[i]!));
  // Every frame the gateway sends bigger than the port takes breaks the Port contract.
  for (const v of vms) {
    const send = v.port.send.bind(v.port);
    v.port.send = (frames) => {
      for (const f of frames) if (f.length > v.port.maxFrame) problems.push({ where: `gateway to ${v.name}`, error: `sent a ${f.length}-byte frame, more than the port's ${v.port.maxFrame}` });
      send(frames);
    };
  }
  const old = setFaultReporter((where, err) => problems.push({ where, error: errorText(err) }));
  return {
    lab,
    vms,
    problems,
    close: () => {
      setFaultReporter(old);
      lab.close();
    },
  };
}

/** vm1 (static 10.1.0.10, direct), vm2 (static 10.1.0.11, none), vm3 (MAC learned, no address). */
const CONTEXTS: FrameContext[] = [
  FRAME_CONTEXT,
  { ...FRAME_CONTEXT, vmMac: FRAME_CONTEXT.vmMac + 1, vmIp: FRAME_CONTEXT.peerIp, peerIp: FRAME_CONTEXT.vmIp },
  { ...FRAME_CONTEXT, vmMac: FRAME_CONTEXT.vmMac + 2, vmIp: 0x0a01_000c },
];

function validArp(c: FrameContext): Buffer {
  return encodeEthernet({ dst: MAC_BROADCAST, src: c.vmMac, etherType: ETHERTYPE_ARP, payload: encodeArp({ op: ARP_REQUEST, senderMac: c.vmMac, senderIp: c.vmIp, targetMac: 0, targetIp: c.gwIp }) });
}

/** The batch of input `seed`: which VM sends it, and its frames. */
function ingressInput(seed: number): { vm: number; frames: Buffer[] } {
  const rng = new Rng(seed);
  const vm = rng.pick([0, 0, 0, 0, 1, 2]);
  const c = CONTEXTS[vm]!;
  const n = rng.bool(0.7) ? 1 : 1 + rng.int(8);
  const frames: Buffer[] = [];
  for (let i = 0; i < n; i++) {
    const k = rng.int(10);
    const base = vm === 0 && rng.bool(0.8) ? rng.pick(framePool().frames) : validFrame(rng, c);
    if (k < 2) frames.push(base);
    else if (k < 9) {
      // Half the mutants get their checksums fixed, to reach what sits behind the checks.
      const m = mutate(rng, base);
      frames.push(rng.bool() ? fixChecksums(m) : m);
    } else frames.push(wireInput(rng.u32()));
  }
  return { vm, frames };
}

function inject(h: Harness, input: { vm: number; frames: Buffer[] }): void {
  const v = h.vms[input.vm]!;
  try {
    v.port.inject(...input.frames);
  } catch (e) {
    h.problems.push({ where: 'inject (escaped the switch)', error: errorText(e) });
  }
}

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

export async function fuzzIngress(count: number, seed: number): Promise<FuzzReport> {
  const t0 = performance.now();
  const r: FuzzReport = { target: 'ingress (switch, router, endpoint, gateway)', ran: 0, crashed: 0, crashes: [], ms: 0 };
  const rng = new Rng(seed ^ 0x1badb002);
  const h = harness(rng);
  const faults0 = faults.dataPath;
  const uncaught: unknown[] = [];
  const onUncaught = (e: unknown): void => {
    uncaught.push(e);
  };
  process.on('uncaughtException', onUncaught);
  process.on('unhandledRejection', onUncaught);
  const record = (s: number, where: string, error: string, frames: Buffer[], vm = 0): void => {
    r.crashed++;
    if (r.crashes.length < KEEP_CRASHES) r.crashes.push({ seed: s, where, error, input: formatBatch(vm, frames) });
  };
  try {
    for (let i = 0; i < count; i++) {
      const s = inputSeed(seed, i);
      const input = ingressInput(s);
      inject(h, input);
      r.ran++;
      if (h.problems.length > 0) {
        for (const p of h.problems.splice(0)) record(s, p.where, p.error, input.frames, input.vm);
      }
      if (uncaught.length > 0) for (const e of uncaught.splice(0)) record(s, 'uncaught', errorText(e), input.frames, input.vm);
      if ((i & 63) === 63) {
        // Let upstream promises, socket events and timers run; move time on; now and then
        // change a route under live flows, and forget what the ports sent.
        if (rng.bool(0.5)) h.lab.clock.advance(rng.pick([1, 10, 200, 1000, 30_000, 700_000]));
        if (rng.bool(0.05)) h.lab.setRoute('vm1', rng.pick(ROUTES));
        await tick();
        for (const v of h.vms) {
          v.port.take();
          v.port.sent.length = 0;
        }
      }
    }
    await tick();
    for (const p of h.problems.splice(0)) record(0, `${p.where} (after the last input)`, p.error, []);
    // What the inputs reached, so a corpus that stops getting past the first checks shows.
    const prefixed = (p: string, o: object): Record<string, number> => Object.fromEntries(Object.entries(o).map(([k, v]) => [`${p}.${k}`, v as number]));
    r.coverage = {
      ...prefixed('switch.drops', h.lab.sw.stats.drops),
      'switch.toGateway': h.lab.sw.stats.toGateway,
      ...prefixed('router', h.lab.router.counters),
      ...prefixed('endpoint', h.lab.router.endpoint.counters),
      'vm1.sent': h.vms[0]!.port.stats().txFrames,
      ...Object.assign({}, ...h.vms.map((v) => prefixed(`${v.name}.drops`, v.member.drops))),
    };
  } finally {
    process.off('uncaughtException', onUncaught);
    process.off('unhandledRejection', onUncaught);
    h.close();
  }
  r.ms = performance.now() - t0;
  // Every caught fault was reported into problems; this cross-checks that none went unseen.
  if (faults.dataPath - faults0 > r.crashed) r.crashed = faults.dataPath - faults0;
  return r;
}

/** A batch as seeds.json keeps it: "vm<i> <frame hex> <frame hex> ...". */
export function formatBatch(vm: number, frames: readonly Buffer[]): string {
  return [`vm${vm}`, ...frames.map((f) => f.toString('hex'))].join(' ');
}

function parseBatch(text: string): { vm: number; frames: Buffer[] } {
  const [vm, ...hex] = text.split(' ');
  return { vm: Number(vm!.slice(2)), frames: hex.map((h) => Buffer.from(h, 'hex')) };
}

/**
 * Replays one input into a fresh lab: the batch kept in seeds.json (`input`) when there is
 * one, else the batch the seed makes now. Returns the problems it caused.
 */
export async function replayIngress(seed: number, input?: string): Promise<string[]> {
  const h = harness(new Rng(seed));
  try {
    inject(h, input !== undefined ? parseBatch(input) : ingressInput(seed));
    await tick();
    return h.problems.map((p) => `${p.where}: ${p.error}`);
  } finally {
    h.close();
  }
}
