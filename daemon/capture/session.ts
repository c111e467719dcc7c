/**
 * One capture: its points (pcapng interfaces), filter, snaplen, count and duration, counters, and
 * its sink. The hub hands it every packet of its points; the session filters, encodes and offers
 * the block to the sink, and counts. Ending writes one ISB per interface and ends the sink.
 */
import os from 'node:os';
import { compileFilter, type CompiledFilter } from './filter.js';
import { PcapngWriter, type Direction } from './pcapng.js';

/** Packets are encoded into slabs of this size (one allocation per slab, not per packet). */
const SLAB_BYTES = 1 << 20;
/** A session whose sink cannot take a block this big is blocked (see Session.blocked). */
const BLOCKED_BYTES = 2048;
import { linkTypeOf, withEther, type PointDesc, type PointLink } from './points.js';
import type { Sink } from './sink.js';
import { UserError } from '../errors.js';

export interface Counters {
  seen: number;
  filteredOut: number;
  captured: number;
  dropped: number;
  bytes: number;
}

export function zeroCounters(): Counters {
  return { seen: 0, filteredOut: 0, captured: 0, dropped: 0, bytes: 0 };
}

const OS_NAME = `${os.type()} ${os.release()}`;

/** Snaplen when none is given (tcpdump's): big enough for a 64 KiB TSO super-frame. */
export const DEFAULT_SNAPLEN = 262_144;

export interface SessionOptions {
  id: string;
  kind: 'live' | 'tee';
  name?: string;
  points: readonly PointDesc[];
  filter: string;
  snaplen: number;
  count?: number;
  durationSec?: number;
  userappl: string;
  sink: Sink;
  /** Realtime clock, nanoseconds. */
  now: () => number;
  /** Counters to add to (a tee keeps counting across its runs). */
  counters?: Counters;
}

export interface Iface {
  id: number;
  link: PointLink;
  seen: number;
  filteredOut: number;
  dropped: number;
}

/** Compiles a filter or throws the UserError the control API answers with. */
export function checkFilter(text: string): CompiledFilter & { ok: true } {
  const f = compileFilter(text);
  if (!f.ok) throw new UserError(`bad filter: ${f.error} (at column ${f.at + 1}: ${JSON.stringify(text.slice(f.at, f.at + 20))})`);
  return f;
}

export class Session {
  readonly id: string;
  readonly kind: 'live' | 'tee';
  readonly name: string | undefined;
  readonly points: readonly PointDesc[];
  readonly filterText: string;
  readonly snaplen: number;
  readonly counters: Counters;
  readonly sink: Sink;
  private readonly filter: CompiledFilter & { ok: true };
  private readonly matchAll: boolean;
  private readonly writer: PcapngWriter;
  private readonly ifaces = new Map<string, Iface>();
  private readonly count: number;
  private readonly now: () => number;
  private readonly startNs: number;
  private timer: NodeJS.Timeout | null = null;
  /** Timestamp of the last packet written: packets from hooks and port tees read different clocks. */
  private lastTs = 0;
  /** Where packet blocks are encoded; sinks keep views into it until written, so a slab is never reused. */
  private slab: Buffer = Buffer.alloc(0);
  private slabOff = 0;
  /** One options object for every packet (the encoder reads it during the call only). */
  private readonly opts: { direction: Direction; comment: string | undefined; originalLength: number } = { direction: 'in', comment: undefined, originalLength: 0 };
  ended = false;
  /** Called once when the session ends, whatever ended it (the hub forgets it). */
  onEnd: ((s: Session, why: string) => void) | null = null;

  constructor(o: SessionOptions) {
    this.id = o.id;
    this.kind = o.kind;
    this.name = o.name;
    this.points = o.points;
    this.filterText = o.filter;
    this.filter = checkFilter(o.filter);
    this.matchAll = o.filter.trim() === '';
    this.snaplen = o.snaplen;
    this.counters = o.counters ?? zeroCounters();
    this.sink = o.sink;
    this.count = o.count ?? 0;
    this.now = o.now;
    this.startNs = o.now();
    this.writer = new PcapngWriter({ userappl: o.userappl, os: OS_NAME });
    for (const p of o.points) {
      const { id } = this.writer.addInterface({ linkType: linkTypeOf(p.link), snaplen: o.snaplen, name: p.name, description: p.description });
      this.ifaces.set(p.name, { id, link: p.link, seen: 0, filteredOut: 0, dropped: 0 });
    }
    if (o.sink.format === 'pcapng') o.sink.begin(this.writer.preamble());
    o.sink.onGone = (why, clean) => this.stop(why, clean);
    if (o.durationSec !== undefined && o.durationSec > 0) {
      this.timer = setTimeout(() => this.stop('duration over'), o.durationSec * 1000);
      this.timer.unref();
    }
  }

  /** The interface of `point` in this session, or undefined. */
  iface(point: string): Iface | undefined {
    return this.ifaces.get(point);
  }

  /**
   * One packet at one of the session's points. `frame` is valid only during the call; it matches
   * the interface's link type (the hub adds a synthetic Ethernet header where needed).
   */
  deliver(i: Iface, tsNs: number, frame: Buffer, origLen: number, dir: Direction, comment: string | undefined): void {
    if (this.ended) return;
    i.seen++;
    this.counters.seen++;
    if (!this.matchAll && !this.filter.match(frame, i.link)) {
      i.filteredOut++;
      this.counters.filteredOut++;
      return;
    }
    if (this.sink.idle) return;
    // Never back in time within one capture (a hook's clock and a tee's may differ by a fraction of a millisecond).
    if (tsNs < this.lastTs) tsNs = this.lastTs;
    else this.lastTs = tsNs;
    let ok: boolean;
    let bytes: number;
    if (this.sink.format === 'frames') {
      const f = i.link === 'raw' ? withEther(frame) : frame;
      ok = this.sink.write(f);
      bytes = f.length;
    } else {
      const o = this.opts;
      o.direction = dir;
      o.comment = comment;
      o.originalLength = Math.max(origLen, frame.length);
      bytes = this.writer.packetLength(i.id, frame.length, o);
      // A reader that does not keep up: drop before any encoding.
      ok = this.sink.room(bytes);
      if (ok) {
        if (this.slabOff + bytes > this.slab.length) {
          this.slab = Buffer.allocUnsafe(Math.max(SLAB_BYTES, bytes));
          this.slabOff = 0;
        }
        const n = this.writer.packetInto(this.slab, this.slabOff, i.id, tsNs, frame, o);
        ok = this.sink.write(this.slab.subarray(this.slabOff, this.slabOff + n));
        this.slabOff += n;
      }
    }
    if (!ok) {
      i.dropped++;
      this.counters.dropped++;
      return;
    }
    this.counters.captured++;
    this.counters.bytes += bytes;
    if (this.count > 0 && this.counters.captured >= this.count) this.stop('count reached');
  }

  /**
   * The output cannot take even a small packet now: the hub then leaves the port rings alone,
   * so the native side refuses the copies (counted there, nearly free) instead of JS draining
   * and dropping them one by one.
   */
  blocked(): boolean {
    return this.ended || this.sink.idle || !this.sink.room(BLOCKED_BYTES);
  }

  /** Packets of `point` lost before the session saw them (the port's tee ring was full). */
  lost(i: Iface, n: number): void {
    i.dropped += n;
    this.counters.dropped += n;
  }

  /** Packets of `point` the port's prefilter rejected before the copy: seen and filtered out. */
  filtered(i: Iface, n: number): void {
    if (this.ended) return;
    i.seen += n;
    this.counters.seen += n;
    i.filteredOut += n;
    this.counters.filteredOut += n;
  }

  /** Ends the session: ISBs and end of the output (`clean`), or just closes it. Idempotent. */
  stop(why: string, clean = true): void {
    if (this.ended) return;
    // The hub drains the rings first so the packets before the stop are in.
    this.onEnd?.(this, why);
    this.ended = true;
    if (this.timer !== null) clearTimeout(this.timer);
    if (!clean) {
      this.sink.abort();
      return;
    }
    let tail: Buffer | null = null;
    if (this.sink.format === 'pcapng') {
      const t = this.now();
      tail = Buffer.concat(
        [...this.ifaces.values()].map((i) =>
          this.writer.stats(i.id, t, { startNs: this.startNs, endNs: t, ifRecv: i.seen, filterAccept: i.seen - i.filteredOut, osDrop: i.dropped }),
        ),
      );
    }
    this.sink.finish(tail);
  }
}
