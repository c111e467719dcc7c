/**
 * One stream connection carrying protocol messages with QEMU's stream framing (a 4-byte
 * big-endian length, then the message: plugins/common/stream-framer.ts). A length of 0 or more
 * than MAX_MESSAGE ends the connection (`framing`): the stream is out of step and nothing after
 * it can be trusted to start a message. Writes never block: past MAX_QUEUE bytes waiting in the
 * socket, messages are dropped (`queue-full`) as a full UDP socket would drop them, and a queue
 * that makes no progress for STALL_MS ends the connection (a peer gone without a reset).
 */
import type net from 'node:net';
import { StreamFramer, encodeStreamBatch } from '../../plugins/common/stream-framer.js';
import { dataPathFault } from '../errors.js';
import { MAX_MESSAGE, reasonOf, type StatsCounter } from './types.js';

/** Bytes a connection may hold unsent before messages are dropped. */
export const MAX_QUEUE = 4 << 20;
/**
 * Bytes a connection nothing authenticated on yet may hold unsent: it gets only cookie replies and
 * handshake responses, and a stranger that never reads must not make us hold MAX_QUEUE for it.
 */
export const STRANGER_QUEUE = 64 << 10;
/** How long a non-empty write queue may go without any byte leaving before the connection is ended. */
export const STALL_MS = 60_000;

export interface ConnEvents {
  /** The carrier's current handler (it may be set after the connection opened). */
  deliver(msg: Buffer, from: string): void;
  /** Once, when the socket is gone; `why` for logs and status. */
  closed(conn: FramedConnection, why: string): void;
}

export class FramedConnection {
  private readonly framer = new StreamFramer(1, MAX_MESSAGE);
  private why = 'closed by the remote';
  private stallTimer: NodeJS.Timeout | null = null;
  private flushedAtCheck = 0;
  readonly openedAt = Date.now();
  /** When data last arrived (for choosing which connection to shed). */
  lastRx = this.openedAt;
  /** Whether a whole message ever arrived: the remote speaks this framing. */
  gotMessage = false;
  open = true;
  /** Whether a message on it authenticated (or we dialled it): see Carrier.vouch. */
  vouched = false;
  private readonly emit = (frames: readonly Buffer[]): void => {
    this.gotMessage = true;
    const c = this.counters;
    for (const f of frames) {
      c.rxMessages++;
      c.rxBytes += f.length;
      try {
        this.events.deliver(f, this.from);
      } catch (e) {
        dataPathFault('stream carrier message', e, { from: this.from });
      }
    }
  };

  constructor(
    readonly sock: net.Socket,
    /** The source string messages carry ("c<N>", "remote"). */
    readonly from: string,
    private readonly counters: StatsCounter,
    private readonly events: ConnEvents,
  ) {
    sock.on('data', (chunk: Buffer) => this.onData(chunk));
    sock.on('error', (e) => {
      this.why = reasonOf(e);
    });
    sock.on('close', () => {
      this.open = false;
      if (this.stallTimer !== null) clearTimeout(this.stallTimer);
      this.events.closed(this, this.why);
    });
  }

  private onData(chunk: Buffer): void {
    if (!this.open) return;
    this.lastRx = Date.now();
    if (this.framer.push(chunk, this.emit) === 'bad-length') {
      this.counters.drop('framing');
      this.destroy(`bad message length ${this.framer.badLength}`);
    }
  }

  /** Queues `msgs` as one write; drops what does not fit. Returns whether all were queued. */
  write(msgs: readonly Buffer[]): boolean {
    const c = this.counters;
    if (!this.open || this.sock.destroyed) {
      c.drop('no-connection', msgs.length);
      return false;
    }
    const limit = this.vouched ? MAX_QUEUE : STRANGER_QUEUE;
    let room = limit - this.sock.writableLength;
    let bytes = 0;
    let fits = true;
    for (const m of msgs) {
      const need = 4 + m.length;
      if (m.length === 0 || m.length > MAX_MESSAGE || need > room) {
        fits = false;
        break;
      }
      room -= need;
      bytes += m.length;
    }
    let batch: readonly Buffer[] = msgs;
    if (!fits) {
      // The slow path: sort out each message (rare: a full queue or a message the framing cannot carry).
      const keep: Buffer[] = [];
      room = limit - this.sock.writableLength;
      bytes = 0;
      for (const m of msgs) {
        if (m.length === 0 || m.length > MAX_MESSAGE) c.drop('oversize');
        else if (4 + m.length > room) c.drop('queue-full');
        else {
          keep.push(m);
          room -= 4 + m.length;
          bytes += m.length;
        }
      }
      batch = keep;
    }
    if (batch.length > 0) {
      this.sock.write(encodeStreamBatch(batch, batch.length));
      c.txMessages += batch.length;
      c.txBytes += bytes;
      if (this.stallTimer === null && this.sock.writableLength > 0) this.armStallCheck();
    }
    return fits;
  }

  private flushed(): number {
    // bytesWritten counts what is still queued as well.
    return this.sock.bytesWritten - this.sock.writableLength;
  }

  private armStallCheck(): void {
    this.flushedAtCheck = this.flushed();
    this.stallTimer = setTimeout(() => {
      this.stallTimer = null;
      if (!this.open || this.sock.writableLength === 0) return;
      if (this.flushed() === this.flushedAtCheck) this.destroy(`no byte sent for ${STALL_MS / 1000} s`);
      else this.armStallCheck();
    }, STALL_MS);
    this.stallTimer.unref();
  }

  /** Ends the connection at once (queued bytes are dropped). */
  destroy(why: string): void {
    if (!this.open) return;
    this.why = why;
    this.sock.destroy();
  }
}
