/**
 * The event bus: the daemon emits, followers read. Emitting never waits for anyone: in-process
 * listeners are called synchronously (and their exceptions are theirs), and each follower on the
 * control socket has a bounded output queue (its socket's write buffer). A follower that reads
 * too slowly for that bound gets one last line, an `events.overflow` notice, and is disconnected:
 * a stuck `mvnet events` never makes the daemon hold an unbounded backlog for it.
 *
 * The last BACKLOG events are kept, so a follower can start with what just happened (`backlog`)
 * or resume after the last seq it saw (`since`).
 */
import type { Socket } from 'node:net';
import { UserError } from '../errors.js';
import { EVENT_TYPES, type EventBody, type MvnetEvent } from './types.js';

/** Events kept for `backlog` and `since`. */
export const BACKLOG = 1000;
/** Bytes queued for one follower before it is dropped with an overflow notice. */
export const FOLLOWER_QUEUE_BYTES = 1 << 20;

export interface FollowParams {
  /** Type prefixes ("vm.", "route.failclosed", "tor"); none: every type. */
  types: string[];
  /** Start with the last N matching events kept. */
  backlog: number;
  /** Start with the kept events after this seq (matching the filter). */
  since: number | null;
}

/** Checks `events.follow`'s params (untrusted: they come from the control socket). */
export function checkFollowParams(p: unknown): FollowParams {
  const o = (p ?? {}) as Record<string, unknown>;
  if (typeof o !== 'object' || Array.isArray(o)) throw new UserError('params must be an object');
  const types: string[] = [];
  if (o.types !== undefined) {
    if (!Array.isArray(o.types) || o.types.length > 64) throw new UserError('types must be a list of up to 64 event type prefixes');
    for (const t of o.types as unknown[]) {
      if (typeof t !== 'string' || t.length === 0 || !EVENT_TYPES.some((k) => k.startsWith(t))) {
        throw new UserError(`no event type begins with ${JSON.stringify(t)} (types: ${EVENT_TYPES.join(', ')})`);
      }
      types.push(t);
    }
  }
  const int = (v: unknown, what: string, max: number): number => {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > max) throw new UserError(`${what} must be an integer from 0 to ${max}`);
    return v;
  };
  return {
    types,
    backlog: o.backlog === undefined ? 0 : int(o.backlog, 'backlog', BACKLOG),
    since: o.since === undefined ? null : int(o.since, 'since', Number.MAX_SAFE_INTEGER),
  };
}

function matches(types: readonly string[], e: MvnetEvent): boolean {
  return types.length === 0 || types.some((t) => e.type.startsWith(t));
}

type Listener = (e: MvnetEvent) => void;

export interface BusOptions {
  /** Called when an in-process listener throws (a bug): the event still reaches the others. */
  onListenerError?: (err: unknown) => void;
  queueBytes?: number;
  clock?: () => number;
}

export class EventBus {
  private seq = 0;
  private readonly kept: MvnetEvent[] = [];
  private readonly listeners = new Set<Listener>();
  private readonly queueBytes: number;
  private readonly clock: () => number;
  /** Followers dropped for reading too slowly (for metrics). */
  overflows = 0;
  /** Events emitted, by type (for metrics). */
  readonly emitted = new Map<string, number>();

  constructor(private readonly opts: BusOptions = {}) {
    this.queueBytes = opts.queueBytes ?? FOLLOWER_QUEUE_BYTES;
    this.clock = opts.clock ?? Date.now;
  }

  emit(body: EventBody): MvnetEvent {
    const e = { ...body, time: new Date(this.clock()).toISOString(), seq: ++this.seq } as MvnetEvent;
    this.kept.push(e);
    if (this.kept.length > BACKLOG) this.kept.shift();
    this.emitted.set(e.type, (this.emitted.get(e.type) ?? 0) + 1);
    for (const l of this.listeners) {
      try {
        l(e);
      } catch (err) {
        this.opts.onListenerError?.(err);
      }
    }
    return e;
  }

  /** Ends every follower's stream (the daemon stops): their connections close once what was queued is out. */
  endFollowers(): void {
    for (const end of [...this.enders]) end();
  }

  /** Calls `fn` for every event from now on; returns the unsubscribe function. */
  on(fn: Listener): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** Kept events a follower starts with. */
  recent(p: FollowParams): MvnetEvent[] {
    let out = this.kept.filter((e) => matches(p.types, e));
    if (p.since !== null) out = out.filter((e) => e.seq > p.since!);
    else out = p.backlog > 0 ? out.slice(-p.backlog) : [];
    return out;
  }

  /** Followers on the control socket now. */
  followers = 0;
  /** How to end each follower's stream (at shutdown). */
  private readonly enders = new Set<() => void>();

  /**
   * Streams events to `sock` (a control connection taken over after the reply line), one JSON
   * line each, until the client closes it or reads too slowly. `clientEnded`: the client had
   * already half-closed its side: it gets the kept events it asked for, then the connection ends.
   */
  follow(sock: Socket, p: FollowParams, clientEnded: boolean): void {
    let open = true;
    let off: () => void = () => {};
    const stop = (): void => {
      if (!open) return;
      open = false;
      off();
      this.enders.delete(end);
      this.followers--;
    };
    const end = (): void => {
      stop();
      sock.end();
    };
    this.enders.add(end);
    this.followers++;
    const write = (e: MvnetEvent): void => {
      if (!open) return;
      sock.write(JSON.stringify(e) + '\n');
      if (sock.writableLength <= this.queueBytes) return;
      // Too slow: one last line (it may never be read; the socket is destroyed soon anyway).
      stop();
      this.overflows++;
      const notice: MvnetEvent = {
        type: 'events.overflow',
        detail: `more than ${this.queueBytes} bytes of events were waiting for this follower; it was disconnected; follow again with since=SEQ (the last seq read) to resume from the kept events`,
        time: new Date(this.clock()).toISOString(),
        seq: e.seq,
      };
      sock.end(JSON.stringify(notice) + '\n');
      setTimeout(() => sock.destroy(), 2000).unref();
    };
    sock.on('close', stop);
    sock.on('error', () => {
      stop();
      sock.destroy();
    });
    // What the client sends after its request is not read, but must not fill the kernel buffer either.
    sock.on('data', () => {});
    sock.on('end', end);
    for (const e of this.recent(p)) write(e);
    if (clientEnded) return end();
    if (!open) return;
    off = this.on((e) => {
      if (matches(p.types, e)) write(e);
    });
    sock.resume();
  }
}
