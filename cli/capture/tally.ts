/**
 * What the CLI learns from the stream: interface names and link types (IDBs), the packets (EPBs)
 * and, at the end, the daemon's counters (one ISB per interface), for the summary line.
 */
import type { CaptureCounters } from '../../daemon/control/api.js';
import { BLOCK_EPB, BLOCK_IDB, BLOCK_ISB, BLOCK_SHB, parseEpb, parseIdb, parseIsb, type Block, type Interface, type Packet, type Stats } from './pcapng-reader.js';

export interface PointSummary {
  name: string;
  seen: number;
  filteredOut: number;
  dropped: number;
}

export interface CaptureSummary {
  /** Packets the CLI received and wrote. */
  captured: number;
  filteredOut: number;
  /** The daemon's drops (its queue or a port's tee ring was full) plus packets the CLI could not write at the end. */
  dropped: number;
  seen: number;
  /** Whether the daemon sent its statistics (it does whenever it ends a capture itself). */
  complete: boolean;
  /** Without them: the counters came from `daemon.status` taken when the CLI stopped the capture. */
  countersFromStatus?: boolean;
  points: PointSummary[];
}

export class CaptureTally {
  interfaces: Interface[] = [];
  /** EPBs received. */
  packets = 0;
  /** The last ISB per interface id. */
  readonly stats = new Map<number, Stats>();

  /** Takes in one block; returns the packet when it is an EPB and `decode` (else only counts it). */
  onBlock(b: Block, decode = true): Packet | undefined {
    switch (b.type) {
      case BLOCK_SHB:
        this.interfaces = [];
        return undefined;
      case BLOCK_IDB:
        this.interfaces.push(parseIdb(b));
        return undefined;
      case BLOCK_EPB: {
        this.packets++;
        return decode ? parseEpb(b) : undefined;
      }
      case BLOCK_ISB: {
        const s = parseIsb(b);
        this.stats.set(s.interfaceId, s);
        return undefined;
      }
      default:
        return undefined;
    }
  }

  pointName(id: number): string {
    return this.interfaces[id]?.name ?? `if${id}`;
  }

  /**
   * `localDrops`: packets received but not written (the output was gone or stuck at the end).
   * `fallback`: the capture's counters from `daemon.status`, used when no ISB came.
   */
  summary(localDrops = 0, fallback?: CaptureCounters): CaptureSummary {
    const points: PointSummary[] = this.interfaces.map((i, id) => {
      const s = this.stats.get(id);
      const seen = Number(s?.ifRecv ?? 0n);
      const accepted = s?.filterAccept !== undefined ? Number(s.filterAccept) : seen;
      return { name: i.name ?? `if${id}`, seen, filteredOut: Math.max(0, seen - accepted), dropped: Number((s?.osDrop ?? 0n) + (s?.ifDrop ?? 0n)) };
    });
    const sum = (f: (p: PointSummary) => number): number => points.reduce((n, p) => n + f(p), 0);
    const complete = this.interfaces.length > 0 && this.interfaces.every((_, id) => this.stats.has(id));
    if (!complete && fallback !== undefined) {
      return { captured: this.packets - localDrops, filteredOut: fallback.filteredOut, dropped: fallback.dropped + localDrops, seen: fallback.seen, complete: false, countersFromStatus: true, points };
    }
    return {
      captured: this.packets - localDrops,
      filteredOut: sum((p) => p.filteredOut),
      dropped: sum((p) => p.dropped) + localDrops,
      seen: sum((p) => p.seen),
      complete,
      points,
    };
  }
}

export function summaryLine(s: CaptureSummary): string {
  return `${s.captured} packets captured, ${s.filteredOut} filtered out, ${s.dropped} dropped`;
}
