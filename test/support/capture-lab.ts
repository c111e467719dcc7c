/**
 * Shared by the capture unit tests: an in-memory sink read back as pcapng, frame builders, and a
 * hub with a fake clock whose rings are drained only when the test says so.
 */
import { pino } from 'pino';
import { CaptureHub } from '../../daemon/capture/hub.js';
import { checkCaptureParams } from '../../daemon/capture/params.js';
import type { Session } from '../../daemon/capture/session.js';
import type { Sink } from '../../daemon/capture/sink.js';
import { encodeEthernet, ETHERTYPE_ARP, ETHERTYPE_IPV4 } from '../../daemon/wire/ethernet.js';
import { encodeIcmpv4 } from '../../daemon/wire/icmpv4.js';
import { encodeIpv4, IPPROTO_ICMP, IPPROTO_TCP } from '../../daemon/wire/ipv4.js';
import { encodeTcp, TCP_SYN } from '../../daemon/wire/tcp.js';
import { MAC_BROADCAST } from '../../daemon/wire/mac.js';
import { TeeRing } from '../../plugins/common/tee-ring.js';
import { readPcapng } from './pcapng-read.js';
import { GW_MAC, ip } from './router-lab.js';

export const silent = pino({ level: 'silent' });
export const MAC1 = 0x0200_0000_0001;
export const MAC2 = 0x0200_0000_0002;
export const IP1 = ip('10.1.0.5');
export const IP2 = ip('10.1.0.6');

export class MemSink implements Sink {
  readonly format = 'pcapng';
  readonly idle = false;
  onGone: ((why: string, clean: boolean) => void) | null = null;
  readonly blocks: Buffer[] = [];
  finished = false;
  /** Packets it will still take (a reader that stops reading: 0). */
  constructor(public left = Infinity) {}
  begin(p: Buffer): void {
    this.blocks.push(Buffer.from(p));
  }
  room(): boolean {
    return this.left > 0;
  }
  write(b: Buffer): boolean {
    if (this.left <= 0) return false;
    this.left--;
    this.blocks.push(Buffer.from(b));
    return true;
  }
  finish(t: Buffer | null): void {
    if (t !== null) this.blocks.push(Buffer.from(t));
    this.finished = true;
  }
  abort(): void {
    this.finished = true;
  }
  state(): { state: 'active'; detail: string } {
    return { state: 'active', detail: '' };
  }
  read(): ReturnType<typeof readPcapng> {
    return readPcapng(Buffer.concat(this.blocks));
  }
}

export function ipv4(src: number, dst: number, protocol: number, payload: Uint8Array): Buffer {
  return encodeIpv4({ dscp: 0, ecn: 0, id: 1, dontFragment: false, moreFragments: false, fragmentOffset: 0, ttl: 64, protocol, src, dst, payload });
}
export function echo(srcMac: number, dstMac: number, src: number, dst: number, kind: 'echo-request' | 'echo-reply', seq = 1): Buffer {
  return encodeEthernet({ dst: dstMac, src: srcMac, etherType: ETHERTYPE_IPV4, payload: ipv4(src, dst, IPPROTO_ICMP, encodeIcmpv4({ kind, id: 7, seq, data: Buffer.from('cap') })) });
}
export function arpish(srcMac: number): Buffer {
  return encodeEthernet({ dst: MAC_BROADCAST, src: srcMac, etherType: ETHERTYPE_ARP, payload: Buffer.alloc(28) });
}
export function syn(srcMac: number, src: number, dst: number, dport: number, sport = 40000): Buffer {
  const seg = encodeTcp({ srcPort: sport, dstPort: dport, seq: 1000, ack: 0, flags: TCP_SYN, window: 65535, options: { mss: 1460 }, payload: Buffer.alloc(0) }, { version: 4, src, dst });
  return encodeEthernet({ dst: GW_MAC, src: srcMac, etherType: ETHERTYPE_IPV4, payload: ipv4(src, dst, IPPROTO_TCP, seg) });
}

let nowNs = 1_700_000_000_000_000_000;
export function newHub(o: { ringBytes?: number } = {}): CaptureHub {
  return new CaptureHub({ log: silent, userappl: 'mvnet test', newRing: (b, s) => new TeeRing(b, s), now: () => (nowNs += 1000), drainMs: 60_000, ...o });
}

export function start(hub: CaptureHub, params: unknown, sink: Sink = new MemSink()): Session {
  return hub.open(hub.prepare(checkCaptureParams(params)), sink);
}
