/**
 * Per-VM stream isolation: two all-tor VMs on one network, one embedded Tor. Their streams —
 * the TCP connections and the SOCKS RESOLVEs behind their DNS answers — carry the VM's own SOCKS
 * username (`mvnet-<vm>-<generation>`) and run on disjoint circuits, as Tor's STREAM events on
 * the daemon's Tor control port show. `mvnet tor newnym vm1` moves vm1's next streams to a new
 * circuit (new username generation) while vm2's stay on the circuit they had; `--all` moves
 * both.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupAll, waitFor } from '../support/netns.js';
import { torUpstream } from './context.js';
import { TorEvents, TorRouter, type StreamEv, type TorVm } from './mvnet-harness.js';
import type { TorNewnymResult } from '../../daemon/control/api.js';

const up = torUpstream();

afterAll(cleanupAll);

const intersect = (a: Set<string>, b: Set<string>): string[] => [...a].filter((x) => b.has(x));

describe('per-VM isolation on Tor circuits', () => {
  let r: TorRouter;
  let vm1: TorVm;
  let vm2: TorVm;
  let ev: TorEvents;
  const first: Record<string, Set<string>> = {};

  /** Fetches /whoami by name from `vm` and waits for its stream's SUCCEEDED event. */
  const fetchAs = async (vm: TorVm, user: string, from: number): Promise<void> => {
    const res = await vm.curl(['--max-time', '30', `${up.nameUrl}whoami`]);
    expect(res.stderr, r.logTail()).toBe('');
    expect(res.stdout).toBe(`${up.exitAddress}\n`);
    await waitFor(() => ev.circuitsOf(user, from).size > 0, { timeoutMs: 5_000, what: `a SUCCEEDED stream of ${user}` });
  };

  const describeStreams = (from = 0): string =>
    ev.streams
      .slice(from)
      .map((s: StreamEv) => `${s.id} ${s.status} circ=${s.circ} ${s.target} user=${s.user ?? '-'} ${s.purpose ?? ''}`)
      .join('\n');

  beforeAll(async () => {
    r = await TorRouter.create({ prefix: 'tis', mode: 'embedded' });
    await r.cli(['net', 'create', 'lan', '--subnet', '10.235.0.0/24']);
    vm1 = await r.addVm('vm1', 'lan');
    vm2 = await r.addVm('vm2', 'lan');
    await r.cli(['route', '--all-tor', 'vm1']);
    await r.cli(['route', '--all-tor', 'vm2']);
    await Promise.all([vm1.configure(), vm2.configure()]);
    await r.waitTorReady(90_000);
    ev = await TorEvents.open(r.controlTarget());
  }, 150_000);

  afterAll(() => ev?.close());

  it("each VM's streams carry its own SOCKS username and use circuits of their own", async () => {
    expect((await r.torStatus()).vms.sort()).toEqual(['vm1', 'vm2']);
    // Twice each, interleaved: a VM keeps its circuit, and never shares the other's.
    for (let i = 0; i < 2; i++) {
      await fetchAs(vm1, 'mvnet-vm1-0', 0);
      await fetchAs(vm2, 'mvnet-vm2-0', 0);
    }
    first.vm1 = ev.circuitsOf('mvnet-vm1-0');
    first.vm2 = ev.circuitsOf('mvnet-vm2-0');
    const msg = describeStreams();
    expect(first.vm1.size, msg).toBeGreaterThan(0);
    expect(first.vm2.size, msg).toBeGreaterThan(0);
    expect(intersect(first.vm1, first.vm2), msg).toEqual([]);
    // Every client stream Tor saw (PURPOSE USER or DNS_REQUEST, given on its NEW/NEWRESOLVE
    // event; tor's own directory streams are DIR_FETCH) has a VM's username in every event:
    // none escapes isolation. That includes the RESOLVEs behind the VMs' DNS lookups.
    const purpose = new Map<string, string>();
    for (const s of ev.streams) if (s.purpose !== undefined && !purpose.has(s.id)) purpose.set(s.id, s.purpose);
    const client = ev.streams.filter((s) => ['USER', 'DNS_REQUEST'].includes(purpose.get(s.id) ?? ''));
    expect(client.length, msg).toBeGreaterThan(0);
    for (const s of client) expect(s.user ?? '(none)', `${s.id} ${s.status} ${s.target}`).toMatch(/^mvnet-vm[12]-0$/);
    // (Streams begun before we subscribed have no known purpose: tor's own, the VMs had not
    // connected anywhere yet.)
    const unexplained = ev.streams.filter((s) => purpose.has(s.id) && s.user === undefined && !/^(USER|DNS_REQUEST|DIR_.*)$/.test(purpose.get(s.id)!));
    expect(unexplained.map((s) => `${s.id} ${s.status} ${s.target} ${purpose.get(s.id) ?? '?'}`), msg).toEqual([]);
    // (A resolve goes NEWRESOLVE → SENTRESOLVE on a circuit → REMAP → CLOSED.)
    const resolves = ev.streams.filter((s) => s.target.startsWith(`${up.name}:`) && s.status === 'SENTRESOLVE');
    expect(new Set(resolves.map((s) => s.user)), msg).toEqual(new Set(['mvnet-vm1-0', 'mvnet-vm2-0']));
    for (const s of resolves) expect(first[s.user === 'mvnet-vm1-0' ? 'vm1' : 'vm2']!.has(s.circ), `resolve ${s.id} on circuit ${s.circ}\n${msg}`).toBe(true);
    // Tor's own view of its circuits (GETINFO circuit-status: a circuit's isolation is set by
    // its first stream, after its CIRC BUILT event) names the owner of each the same way.
    const status = await ev.ctl.getInfo('circuit-status');
    const circOwner = new Map<string, string>();
    for (const line of status.split('\n')) {
      const m = /^(\d+) \S+ .*SOCKS_USERNAME="([^"]*)"/.exec(line);
      if (m) circOwner.set(m[1]!, m[2]!);
    }
    for (const id of first.vm1) expect(circOwner.get(id), `circuit ${id}\n${status}`).toBe('mvnet-vm1-0');
    for (const id of first.vm2) expect(circOwner.get(id), `circuit ${id}\n${status}`).toBe('mvnet-vm2-0');
  }, 90_000);

  it("tor newnym vm1 moves vm1's next streams to a new circuit; vm2 stays on its own", async () => {
    const res = await r.cliJson<TorNewnymResult>(['tor', 'newnym', 'vm1']);
    expect(res).toEqual({ vms: ['vm1'] });
    const from = ev.streams.length;
    await fetchAs(vm1, 'mvnet-vm1-1', from);
    await fetchAs(vm2, 'mvnet-vm2-0', from);
    const msg = describeStreams(from);
    // vm1: the new generation only, on circuits it never used before, and not vm2's.
    expect(ev.circuitsOf('mvnet-vm1-0', from).size, msg).toBe(0);
    const vm1New = ev.circuitsOf('mvnet-vm1-1', from);
    expect(intersect(vm1New, first.vm1!), msg).toEqual([]);
    expect(intersect(vm1New, first.vm2!), msg).toEqual([]);
    // vm2: same username (fetchAs checked it) and never on vm1's circuits, old or new.
    const vm2Now = ev.circuitsOf('mvnet-vm2-0', from);
    expect(vm2Now.size, msg).toBeGreaterThan(0);
    expect(intersect(vm2Now, vm1New), msg).toEqual([]);
    expect(intersect(vm2Now, first.vm1!), msg).toEqual([]);
    // Tor may hand vm2 a fresh circuit of its own (it retires circuits by itself), but every
    // circuit vm2 uses is isolated for vm2's unchanged credentials, never for vm1's.
    const owner = new Map<string, string>();
    for (const line of (await ev.ctl.getInfo('circuit-status')).split('\n')) {
      const m = /^(\d+) \S+ .*SOCKS_USERNAME="([^"]*)"/.exec(line);
      if (m) owner.set(m[1]!, m[2]!);
    }
    for (const c of vm2Now) if (owner.has(c)) expect(owner.get(c), `circuit ${c}\n${msg}`).toBe('mvnet-vm2-0');
  }, 90_000);

  it('tor newnym --all moves both VMs to new circuits', async () => {
    const before2 = new Set([...ev.circuitsOf('mvnet-vm2-0')]);
    const before1 = ev.circuitsOf('mvnet-vm1-1');
    const res = await r.cliJson<TorNewnymResult>(['tor', 'newnym', '--all']);
    expect(res.vms.sort()).toEqual(['vm1', 'vm2']);
    const from = ev.streams.length;
    await fetchAs(vm1, 'mvnet-vm1-2', from);
    await fetchAs(vm2, 'mvnet-vm2-1', from);
    const msg = describeStreams(from);
    const n1 = ev.circuitsOf('mvnet-vm1-2', from);
    const n2 = ev.circuitsOf('mvnet-vm2-1', from);
    expect(intersect(n1, before1), msg).toEqual([]);
    expect(intersect(n2, before2), msg).toEqual([]);
    expect(intersect(n1, n2), msg).toEqual([]);
  }, 90_000);
});
