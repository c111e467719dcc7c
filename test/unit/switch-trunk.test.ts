/**
 * Trunk members of the switch (daemon/switch/network.ts attachTrunk): a link's port carrying
 * many remote VMs' MACs. Each rule is tried the way a hostile or confused far side would break
 * it, and each test fails without the rule it names.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Network, type CutThroughPort, type GatewayHandler, type Member, type SwitchFib } from '../../daemon/switch/network.js';
import type { SwitchTap } from '../../daemon/capture/taps.js';
import { writeMac } from '../../daemon/wire/mac.js';
import type { Port } from '../../plugins/types.js';
import { MemPort } from '../support/mem-port.js';

const M = (n: number): number => 0x020000000000 + n;
const BCAST = 0xffffffffffff;
const GW = 0x02aaaaaaaaaa;
const GW_IP = 0x0a010001; // 10.1.0.1
const AGE_MS = 10_000;
/** An ethertype no guard rule looks at (IEEE local experimental). */
const PLAIN = 0x88b5;

function frame(dst: number, src: number, tag = 0, type = PLAIN, payload?: Buffer): Buffer {
  const f = Buffer.alloc(Math.max(60, 14 + (payload?.length ?? 0)));
  writeMac(f, 0, dst);
  writeMac(f, 6, src);
  f.writeUInt16BE(type, 12);
  if (payload !== undefined) payload.copy(f, 14);
  else f[14] = tag;
  return f;
}

const tagOf = (f: Buffer): number => f[14]!;
const srcOf = (f: Buffer): number => f.readUIntBE(6, 6);

/** A DHCPv4 server's OFFER: UDP 67 → 68 in IPv4. */
function dhcpOffer(src: number): Buffer {
  const ip = Buffer.alloc(20 + 8 + 16);
  ip[0] = 0x45;
  ip.writeUInt16BE(ip.length, 2);
  ip[8] = 64;
  ip[9] = 17;
  ip.writeUInt32BE(0x0a010063, 12);
  ip.writeUInt32BE(0xffffffff, 16);
  ip.writeUInt16BE(67, 20);
  ip.writeUInt16BE(68, 22);
  ip.writeUInt16BE(24, 24);
  return frame(BCAST, src, 0, 0x0800, ip);
}

/** An ICMPv6 router advertisement. */
function routerAdvert(src: number): Buffer {
  const ip = Buffer.alloc(40 + 16);
  ip[0] = 0x60;
  ip.writeUInt16BE(16, 4);
  ip[6] = 58;
  ip[7] = 255;
  ip[8] = 0xfe;
  ip[9] = 0x80;
  ip[23] = 7;
  ip[24] = 0xff;
  ip[25] = 0x02;
  ip[39] = 1;
  ip[40] = 134;
  return frame(0x333300000001, src, 0, 0x86dd, ip);
}

/** An ARP reply claiming the gateway's IPv4 address (cache poisoning). */
function arpClaimingGateway(src: number): Buffer {
  const a = Buffer.alloc(28);
  a.writeUInt16BE(1, 0);
  a.writeUInt16BE(0x0800, 2);
  a[4] = 6;
  a[5] = 4;
  a.writeUInt16BE(2, 6);
  writeMac(a, 8, src);
  a.writeUInt32BE(GW_IP, 14);
  a.writeUInt32BE(0x0a010002, 24);
  return frame(BCAST, src, 0, 0x0806, a);
}

/** Records what the switch hands its gateway. */
class GatewayRecorder implements GatewayHandler {
  readonly got: Buffer[] = [];
  input(frames: readonly Buffer[]): void {
    for (const f of frames) this.got.push(Buffer.from(f));
  }
}

/** Records the capture's drop comments. */
class TapRecorder implements SwitchTap {
  readonly drops: { reason: string; vm: string; src: number }[] = [];
  fromGateway(): void {}
  dropped(f: Buffer, hdrLen: number, reason: string, vm: string): void {
    this.drops.push({ reason, vm, src: f.readUIntBE(hdrLen + 6, 6) });
  }
}

describe('switch trunks', () => {
  let now: number;
  let net: Network;
  let gw: GatewayRecorder;
  let tap: TapRecorder;
  let a: MemPort, b: MemPort, t1: MemPort, t2: MemPort;
  let ma: Member, mb: Member, mt1: Member, mt2: Member;

  beforeEach(() => {
    now = 1_000_000;
    net = new Network({ name: 'lan', mtu: 1500, gatewayMac: GW, clock: () => now, macAgeMs: AGE_MS });
    gw = new GatewayRecorder();
    net.setGateway(gw);
    net.setGatewayAddresses({ ip4: GW_IP, ip6: [] });
    tap = new TapRecorder();
    net.capture = tap;
    a = new MemPort('a');
    b = new MemPort('b');
    t1 = new MemPort('t1');
    t2 = new MemPort('t2');
    ma = net.attach('a', a, M(1));
    mb = net.attach('b', b, null);
    mt1 = net.attachTrunk('link1', t1);
    mt2 = net.attachTrunk('link2', t2);
  });

  afterEach(() => net.close());

  describe('source MACs from a trunk', () => {
    it('drops a group source MAC as spoofed', () => {
      t1.inject(frame(BCAST, 0x030000000001, 1));
      expect(a.sent).toHaveLength(0);
      expect(mt1.drops.spoofed).toBe(1);
      expect(net.stats.drops.spoofed).toBe(1);
      expect(net.trunkMacs(mt1)).toBe(0);
      expect(tap.drops).toEqual([{ reason: 'group source MAC', vm: 'link1', src: 0x030000000001 }]);
    });

    it("drops the gateway's MAC as source", () => {
      t1.inject(frame(BCAST, GW, 1), frame(M(1), GW, 2));
      expect(a.sent).toHaveLength(0);
      expect(mt1.drops.spoofed).toBe(2);
      expect(net.trunkMacs(mt1)).toBe(0);
      expect(tap.drops.map((d) => d.reason)).toEqual(["the gateway's MAC as source", "the gateway's MAC as source"]);
    });

    it("drops a local member's fixed MAC, and never moves it to the trunk", () => {
      // a has never sent: its MAC is in no table, only fixed at attach.
      t1.inject(frame(BCAST, M(1), 1));
      expect(b.sent).toHaveLength(0);
      expect(mt1.drops.spoofed).toBe(1);
      expect(tap.drops[0]!.reason).toBe("a local port's MAC as source");
      // Frames to a's MAC still reach a (flooded: a has not sent yet), not the link alone.
      b.inject(frame(M(1), M(2), 2));
      expect(a.sent.map(tagOf)).toEqual([2]);
    });

    it("drops a local member's learned MAC, also after it aged out of the MAC table", () => {
      b.inject(frame(BCAST, M(2), 1));
      expect(mb.mac).toBe(M(2));
      now += AGE_MS * 3;
      t1.inject(frame(BCAST, M(2), 2), frame(M(1), M(2), 3));
      expect(a.sent.filter((f) => tagOf(f) !== 1)).toHaveLength(0);
      expect(mt1.drops.spoofed).toBe(2);
      expect(net.trunkMacs(mt1)).toBe(0);
    });

    it('learns every source of a batch, frame by frame', () => {
      // One read from the link carries three remote VMs, with a spoofed frame in between.
      t1.inject(frame(BCAST, M(10), 1), frame(BCAST, M(11), 2), frame(BCAST, M(1), 3), frame(BCAST, M(12), 4));
      expect(net.trunkMacs(mt1)).toBe(3);
      expect(a.sent.map(tagOf)).toEqual([1, 2, 4]);
      // Each is known now: unicast from a goes to the link only, not flooded to b.
      b.take();
      a.inject(frame(M(10), M(1), 5), frame(M(11), M(1), 6), frame(M(12), M(1), 7));
      expect(t1.sent.map(tagOf)).toEqual([5, 6, 7]);
      expect(b.sent.map(tagOf).filter((x) => x >= 5)).toEqual([]);
      expect(t2.sent.map(tagOf).filter((x) => x >= 5)).toEqual([]);
    });

    it('lets a MAC move from one trunk to another', () => {
      t1.inject(frame(BCAST, M(10), 1));
      t2.inject(frame(BCAST, M(10), 2));
      expect(net.trunkMacs(mt1)).toBe(0);
      expect(net.trunkMacs(mt2)).toBe(1);
      a.inject(frame(M(10), M(1), 3));
      expect(t2.sent.map(tagOf)).toEqual([3]);
      expect(t1.sent.map(tagOf)).toEqual([]);
    });

    it('drops sources past maxMacs as filtered, until learned ones age out', () => {
      const t3 = new MemPort('t3');
      const m3 = net.attachTrunk('link3', t3, { maxMacs: 2 });
      t3.inject(frame(BCAST, M(10), 1), frame(BCAST, M(11), 2), frame(BCAST, M(12), 3), frame(BCAST, M(10), 4));
      expect(net.trunkMacs(m3)).toBe(2);
      expect(a.sent.map(tagOf)).toEqual([1, 2, 4]);
      expect(m3.drops.filtered).toBe(1);
      expect(net.stats.drops.filtered).toBe(1);
      expect(tap.drops).toEqual([{ reason: 'too many MACs on the link', vm: 'link3', src: M(12) }]);
      // Not learned: a's unicast to it is flooded (reaches the other links too).
      a.inject(frame(M(12), M(1), 5));
      expect(t1.sent.map(tagOf)).toContain(5);
      // A MAC of another trunk may not move into a full one either.
      t1.inject(frame(BCAST, M(20), 6));
      t3.inject(frame(BCAST, M(20), 7));
      expect(m3.drops.filtered).toBe(2);
      expect(net.trunkMacs(mt1)).toBe(1);
      // Once the learned ones age out, room again, without waiting for the slow sweep timer.
      now += AGE_MS + 1;
      t3.inject(frame(BCAST, M(12), 8));
      expect(a.sent.map(tagOf)).toContain(8);
      expect(net.trunkMacs(m3)).toBe(1);
    });

    it('a full trunk sweeps for aged MACs at most once a second, not per frame', () => {
      const t3 = new MemPort('t3');
      const m3 = net.attachTrunk('link3', t3, { maxMacs: 1 });
      t3.inject(frame(BCAST, M(10), 1));
      let sweeps = 0;
      const table = (net as unknown as { table: { sweep(n: number): void } }).table;
      const sweep = table.sweep.bind(table);
      table.sweep = (n: number): void => {
        sweeps++;
        sweep(n);
      };
      const flood: Buffer[] = [];
      for (let i = 0; i < 100; i++) flood.push(frame(BCAST, M(100 + i), 2));
      t3.inject(...flood);
      expect(m3.drops.filtered).toBe(100);
      expect(sweeps).toBe(1);
    });

    it('applies the rogue-service guard to trunk frames', () => {
      t1.inject(dhcpOffer(M(10)), routerAdvert(M(11)), arpClaimingGateway(M(12)), frame(BCAST, M(13), 9));
      expect(a.sent.map(tagOf)).toEqual([9]);
      expect(mt1.drops.filtered).toBe(3);
      expect(tap.drops.map((d) => d.reason)).toEqual(['rogue DHCP server', 'rogue RA', "claims the gateway's address"]);
      // What the guard dropped was not learned either.
      expect(net.trunkMacs(mt1)).toBe(1);
    });
  });

  describe('split horizon', () => {
    it('floods from a trunk to local members only', () => {
      t1.inject(frame(BCAST, M(10), 1), frame(M(99), M(10), 2));
      expect(a.sent.map(tagOf)).toEqual([1, 2]);
      expect(b.sent.map(tagOf)).toEqual([1, 2]);
      expect(t2.sent).toHaveLength(0);
      expect(t1.sent).toHaveLength(0);
    });

    it('never forwards unicast from one trunk to another', () => {
      t2.inject(frame(BCAST, M(20), 1));
      t1.inject(frame(M(20), M(10), 2));
      expect(t2.sent).toHaveLength(0);
      expect(a.sent.map(tagOf)).toEqual([1]);
      expect(mt1.drops['no-route']).toBe(1);
      expect(tap.drops.map((d) => d.reason)).toEqual(['from a link to another link']);
    });

    it('forwards unicast from a trunk to a local member', () => {
      t1.inject(frame(M(1), M(10), 1));
      expect(a.sent.map(tagOf)).toEqual([1]);
      b.inject(frame(BCAST, M(2), 2));
      t1.inject(frame(M(2), M(10), 3));
      expect(b.sent.map(tagOf)).toEqual([1, 3]); // 1: a's MAC was unknown to the table, flooded
      expect(a.sent.map(tagOf)).toEqual([1, 2]);
    });
  });

  describe('the gateway serves its own VMs only', () => {
    it('gets no broadcast or unknown unicast from a trunk', () => {
      t1.inject(frame(BCAST, M(10), 1), frame(M(99), M(10), 2));
      expect(gw.got).toHaveLength(0);
      expect(net.stats.toGateway).toBe(0);
      // As a check on the recorder: a local member's broadcast does reach it.
      a.inject(frame(BCAST, M(1), 3));
      expect(gw.got.map(tagOf)).toEqual([3]);
    });

    it('drops unicast to the gateway from a trunk as no-route', () => {
      t1.inject(frame(GW, M(10), 1));
      expect(gw.got).toHaveLength(0);
      expect(a.sent).toHaveLength(0);
      expect(mt1.drops['no-route']).toBe(1);
      expect(tap.drops.map((d) => d.reason)).toEqual(['addressed to the gateway from a link']);
    });

    it('sends nothing from the gateway to a trunk, broadcast or unicast', () => {
      t1.inject(frame(BCAST, M(10), 1));
      a.take();
      net.fromGateway([frame(BCAST, GW, 2), frame(M(10), GW, 3), frame(M(1), GW, 4)]);
      expect(t1.sent).toHaveLength(0);
      expect(t2.sent).toHaveLength(0);
      expect(a.sent.map(tagOf)).toEqual([1, 2, 4]);
      expect(b.sent.map(tagOf)).toEqual([1, 2]);
    });
  });

  describe('local members', () => {
    it('may not learn a MAC currently learned on a trunk', () => {
      t1.inject(frame(BCAST, M(10), 1));
      b.inject(frame(BCAST, M(10), 2));
      expect(mb.mac).toBeNull();
      expect(mb.drops.spoofed).toBe(1);
      expect(a.sent.map(tagOf)).toEqual([1]);
      // Frames to it still go over the link.
      a.inject(frame(M(10), M(1), 3));
      expect(t1.sent.map(tagOf)).toEqual([3]);
      // Once it aged out of the table, it is free.
      now += AGE_MS + 1;
      b.inject(frame(BCAST, M(10), 4));
      expect(mb.mac).toBe(M(10));
      expect(a.sent.map(tagOf)).toEqual([1, 4]);
    });

    it('flood to trunks: broadcast and unknown unicast', () => {
      a.inject(frame(BCAST, M(1), 1), frame(M(50), M(1), 2));
      expect(t1.sent.map(tagOf)).toEqual([1, 2]);
      expect(t2.sent.map(tagOf)).toEqual([1, 2]);
    });

    it('a VM attached with a fixed MAC takes it over from a trunk', () => {
      t1.inject(frame(BCAST, M(30), 1));
      const c = new MemPort('c');
      net.attach('c', c, M(30));
      expect(net.trunkMacs(mt1)).toBe(0);
      a.inject(frame(M(30), M(1), 2));
      expect(c.sent.map(tagOf)).toEqual([2]);
      expect(t1.sent.map(tagOf)).toEqual([]);
      t1.inject(frame(BCAST, M(30), 3));
      expect(mt1.drops.spoofed).toBe(1);
    });
  });

  describe('ageing and detach', () => {
    it('ages trunk MACs like any other', () => {
      t1.inject(frame(BCAST, M(10), 1));
      a.inject(frame(M(10), M(1), 2));
      expect(b.sent.map(tagOf)).toEqual([1]); // known: not flooded
      now += AGE_MS + 1;
      a.inject(frame(M(10), M(1), 3));
      expect(b.sent.map(tagOf)).toEqual([1, 3]); // aged out: flooded
      expect(net.trunkMacs(mt1)).toBe(0);
    });

    it('forgets a detached trunk and its MACs', () => {
      t1.inject(frame(BCAST, M(10), 1));
      net.detach(mt1);
      expect(net.trunkMacs(mt1)).toBe(0);
      a.inject(frame(M(10), M(1), 2));
      expect(t1.sent).toHaveLength(0);
      expect(b.sent.map(tagOf)).toEqual([1, 2]);
      // The MAC may be learned elsewhere now.
      t2.inject(frame(BCAST, M(10), 3));
      expect(net.trunkMacs(mt2)).toBe(1);
    });

    it('counts a MAC once however often it is refreshed', () => {
      for (let i = 0; i < 5; i++) {
        now += 2000;
        t1.inject(frame(BCAST, M(10), i), frame(BCAST, M(11), i));
      }
      expect(net.trunkMacs(mt1)).toBe(2);
      expect(net.trunkMacs(ma)).toBe(0);
    });
  });

  describe('cut-through', () => {
    /** A MemPort that can do cut-through, recording what the switch asks of it. */
    class FibPort extends MemPort implements CutThroughPort {
      bound = 0;
      readonly fibSets: { mac: number; port: Port }[] = [];
      newSwitchFib(): SwitchFib {
        return {
          set: (mac, port) => {
            this.fibSets.push({ mac, port });
            return true;
          },
          delete: () => {},
          clear: () => {},
        };
      }
      bindSwitch(): boolean {
        this.bound++;
        return true;
      }
      setSwitchMac(): void {}
      unbindSwitch(): void {}
    }

    it('never binds a trunk, nor puts a trunk-learned MAC in the native table', () => {
      const n2 = new Network({ name: 'n2', mtu: 1500, gatewayMac: GW, clock: () => now, macAgeMs: AGE_MS });
      const vm = new FibPort('vm');
      const link = new FibPort('link');
      n2.attach('vm', vm, M(1));
      n2.attachTrunk('link', link);
      expect(vm.bound).toBe(1);
      expect(link.bound).toBe(0);
      link.inject(frame(BCAST, M(10), 1));
      vm.inject(frame(M(10), M(1), 2));
      expect(link.sent.map(tagOf)).toEqual([2]);
      expect(vm.fibSets.filter((s) => s.port === link)).toEqual([]);
      expect(vm.fibSets.map((s) => s.mac)).toEqual([M(1)]);
      expect(srcOf(link.sent[0]!)).toBe(M(1));
      n2.close();
    });
  });
});
