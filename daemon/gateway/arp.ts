/**
 * ARP at the gateway (RFC 826, RFC 5227): answers requests for the gateway's IPv4 address and
 * nothing else. VMs answer for their own addresses, so requests for them, gratuitous
 * announcements and address probes (sender IP 0) for other addresses get no reply. A VM that
 * claims the gateway's address (as sender) is counted as a conflict and answered with a
 * broadcast announcement of the real binding (RFC 5227 §2.4 "defend"), at most once per
 * DEFEND_INTERVAL.
 */
import { ARP_REPLY, ARP_REQUEST, type ArpPacket } from '../wire/arp.js';
import type { EthernetFrame } from '../wire/ethernet.js';
import { MAC_BROADCAST } from '../wire/mac.js';
import { arpFrame } from './frames.js';
import { inSubnet, type GatewayNet } from './types.js';

/** RFC 5227: DEFEND_INTERVAL, 10 seconds. */
export const ARP_DEFEND_INTERVAL_MS = 10_000;

export interface ArpStats {
  requests: number;
  replies: number;
  /** Requests for other addresses (VMs answer for themselves). */
  notForUs: number;
  /** A VM used the gateway's address as its sender address. */
  conflicts: number;
  /** ARP sender hardware address differs from the Ethernet source, or an off-subnet sender. */
  refused: number;
  /** Tagged frames, replies and other operations. */
  ignored: number;
}

export class ArpResponder {
  readonly stats: ArpStats = { requests: 0, replies: 0, notForUs: 0, conflicts: 0, refused: 0, ignored: 0 };
  private lastDefend = -Infinity;

  constructor(private readonly net: GatewayNet) {}

  /**
   * One ARP packet received in `eth` (parsed with `parseArp(eth.payload)`). Returns the reply
   * frame, or null when there is nothing to say.
   */
  handle(eth: EthernetFrame, arp: ArpPacket, now: number): Buffer | null {
    const net = this.net;
    if (eth.vlan !== undefined || arp.op !== ARP_REQUEST) {
      this.stats.ignored++;
      return null;
    }
    this.stats.requests++;
    if (arp.targetIp !== net.gatewayIp) {
      // Requests, probes and announcements for anyone else: not ours to answer.
      this.stats.notForUs++;
      return null;
    }
    if (arp.senderMac !== eth.src) {
      this.stats.refused++;
      return null;
    }
    if (arp.senderIp === net.gatewayIp) {
      // A gratuitous ARP or a conflicting claim for our own address: defend it by broadcast.
      this.stats.conflicts++;
      if (now - this.lastDefend < ARP_DEFEND_INTERVAL_MS) return null;
      this.lastDefend = now;
      this.stats.replies++;
      return arpFrame(
        { srcMac: net.gatewayMac, dstMac: MAC_BROADCAST },
        { op: ARP_REPLY, senderMac: net.gatewayMac, senderIp: net.gatewayIp, targetMac: MAC_BROADCAST, targetIp: net.gatewayIp },
      );
    }
    if (arp.senderIp !== 0 && !inSubnet(arp.senderIp, net.subnet)) {
      this.stats.refused++;
      return null;
    }
    // A normal request, or a probe (sender IP 0) for the gateway's address: the reply tells the
    // prober the address is taken. Unicast to the asker.
    this.stats.replies++;
    return arpFrame(
      { srcMac: net.gatewayMac, dstMac: eth.src },
      { op: ARP_REPLY, senderMac: net.gatewayMac, senderIp: net.gatewayIp, targetMac: arp.senderMac, targetIp: arp.senderIp },
    );
  }
}
