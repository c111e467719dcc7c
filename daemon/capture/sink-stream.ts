/**
 * A live capture's output: the control connection itself, after the reply line. Blocks are
 * batched per tick; past SINK_QUEUE_BYTES waiting in the socket the capture drops packets (a
 * reader that does not read loses packets, forwarding never waits). Whatever the client sends is
 * discarded; its half-close (EOF) ends the capture cleanly (ISBs, then the daemon ends the connection).
 */
import type { Duplex } from 'node:stream';
import { SINK_QUEUE_BYTES, type Sink } from './sink.js';

export class StreamSink implements Sink {
  readonly format = 'pcapng';
  onGone: ((why: string, clean: boolean) => void) | null = null;
  readonly idle = false;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private flushQueued = false;
  private done = false;

  constructor(
    private readonly sock: Duplex,
    private readonly maxQueue = SINK_QUEUE_BYTES,
  ) {
    sock.on('data', () => {});
    sock.on('end', () => this.onGone?.('the client ended its side', true));
    sock.on('close', () => {
      this.done = true;
      this.onGone?.('the connection closed', false);
    });
    sock.on('error', () => sock.destroy());
    sock.resume();
  }

  begin(preamble: Buffer): void {
    this.push(preamble);
  }

  room(bytes: number): boolean {
    return !this.done && this.pendingBytes + this.sock.writableLength + bytes <= this.maxQueue;
  }

  write(block: Buffer): boolean {
    if (!this.room(block.length)) return false;
    this.push(block);
    return true;
  }

  private push(b: Buffer): void {
    this.pending.push(b);
    this.pendingBytes += b.length;
    if (!this.flushQueued) {
      this.flushQueued = true;
      setImmediate(() => this.flush());
    }
  }

  private flush(): void {
    this.flushQueued = false;
    if (this.pending.length === 0 || this.done || this.sock.destroyed) return;
    const b = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending, this.pendingBytes);
    this.pending = [];
    this.pendingBytes = 0;
    this.sock.write(b);
  }

  finish(tail: Buffer | null): void {
    if (this.done) return;
    if (tail !== null) this.push(tail);
    this.flush();
    this.done = true;
    this.sock.end();
    // A client that never reads would keep the connection forever.
    setTimeout(() => this.sock.destroy(), 10_000).unref();
  }

  abort(): void {
    this.done = true;
    this.sock.destroy();
  }

  state(): { state: 'active'; detail: string } {
    return { state: 'active', detail: 'streaming' };
  }
}
