/**
 * A port over a byte stream with QEMU's framing: unix sockets in either direction, passed
 * fds and FIFO pairs. The subclass owns the connection lifecycle (connect/retry, listen/accept,
 * fd); this class owns framing, counters, backpressure and the "broken framing" rule: a stream
 * whose length prefix cannot be right is closed and the port waits for the VM to come back.
 */
import type { Duplex, Writable, Readable } from 'node:stream';
import type { Logger } from 'pino';
import { Counters } from './counters.js';
import { StreamFramer, encodeStreamBatch } from './stream-framer.js';
import type { FrameHandler, Port, PortKind, PortStats, PortStatus } from '../types.js';

/** Bytes we let the kernel/socket buffer hold for a slow reader before dropping. */
const MAX_PENDING_BYTES = 4 * 1024 * 1024;

export interface StreamEnds {
  readable: Readable;
  writable: Writable & { writableLength: number };
  /** Destroys both ends. */
  destroy(): void;
}

export function duplexEnds(sock: Duplex): StreamEnds {
  return { readable: sock, writable: sock, destroy: () => sock.destroy() };
}

export abstract class StreamPort implements Port {
  readonly layer = 2 as const;
  readonly vnetHdrLen = 0;
  protected readonly counters = new Counters();
  private handler: FrameHandler = () => {};
  private readonly framer: StreamFramer;
  private ends: StreamEnds | null = null;
  protected closed = false;
  protected waitingDetail: string;

  protected constructor(
    readonly kind: PortKind,
    readonly name: string,
    readonly maxFrame: number,
    protected readonly log: Logger,
    waitingDetail: string,
  ) {
    // A length prefix of 1..13 is framed correctly: the frame is a runt, dropped and counted by the
    // switch; only 0 or more than the largest frame means the framing itself is broken.
    this.framer = new StreamFramer(1, maxFrame);
    this.waitingDetail = waitingDetail;
  }

  onFrames(handler: FrameHandler): void {
    this.handler = handler;
  }

  /** Takes over a connected stream; a previous one is dropped (the VM reconnected). */
  protected attach(ends: StreamEnds): void {
    if (this.ends !== null) this.ends.destroy();
    this.ends = ends;
    this.framer.reset();
    const onData = (chunk: Buffer): void => {
      if (this.ends !== ends) return;
      const r = this.framer.push(chunk, this.deliver);
      if (r === 'bad-length') {
        this.counters.drop('framing');
        this.log.warn({ port: this.name, length: this.framer.badLength }, 'broken stream framing; closing the connection');
        this.detach(ends, 'broken framing (length prefix ' + this.framer.badLength + ')');
      }
    };
    ends.readable.on('data', onData);
    const onEnd = (why: string) => () => this.detach(ends, why);
    ends.readable.on('end', onEnd('peer closed'));
    ends.readable.on('close', onEnd('peer closed'));
    ends.readable.on('error', (e: Error) => this.detach(ends, e.message));
    if ((ends.writable as unknown) !== ends.readable) ends.writable.on('error', (e: Error) => this.detach(ends, e.message));
    this.log.info({ port: this.name }, 'stream connected');
  }

  private readonly deliver = (frames: readonly Buffer[]): void => {
    for (const f of frames) {
      this.counters.rxFrames++;
      this.counters.rxBytes += f.length;
    }
    this.handler(frames);
  };

  private detach(ends: StreamEnds, why: string): void {
    if (this.ends !== ends) return;
    this.ends = null;
    ends.destroy();
    if (!this.closed) {
      this.log.info({ port: this.name, why }, 'stream disconnected');
      this.onDisconnect(why);
    }
  }

  /** Called once per lost connection (not on close): reconnect, or wait for the VM. */
  protected abstract onDisconnect(why: string): void;

  protected get connected(): boolean {
    return this.ends !== null;
  }

  send(frames: readonly Buffer[]): void {
    const ends = this.ends;
    const count = frames.length;
    if (ends === null) {
      this.counters.drop('no-peer', count);
      return;
    }
    let ok = 0;
    let bytes = 0;
    // Oversize frames are filtered in place by compaction into a scratch list only when present.
    let list: readonly Buffer[] = frames;
    for (let i = 0; i < count; i++) {
      if (frames[i]!.length > this.maxFrame) {
        list = frames.filter((f) => f.length <= this.maxFrame);
        this.counters.drop('oversize', count - list.length);
        break;
      }
    }
    if (list.length === 0) return;
    if (ends.writable.writableLength > MAX_PENDING_BYTES) {
      this.counters.drop('queue-full', list.length);
      return;
    }
    for (const f of list) {
      ok++;
      bytes += f.length;
    }
    ends.writable.write(encodeStreamBatch(list, list.length));
    this.counters.txFrames += ok;
    this.counters.txBytes += bytes;
  }

  stats(): PortStats {
    return this.counters.snapshot();
  }

  status(): PortStatus {
    if (this.closed) return { state: 'down', detail: 'closed' };
    if (this.ends !== null) return { state: 'up', detail: 'connected' };
    return { state: 'waiting', detail: this.waitingDetail };
  }

  async close(opts?: { remove?: boolean }): Promise<void> {
    this.closed = true;
    if (this.ends !== null) {
      this.ends.destroy();
      this.ends = null;
    }
    await this.shutdown(opts?.remove ?? false);
  }

  protected abstract shutdown(remove: boolean): Promise<void>;
}
