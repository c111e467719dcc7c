/**
 * A tee to a unix socket: the daemon listens at the path (made as VM sockets are:
 * plugins/common/socket-path.ts, never over a live socket or through a symlink) and sends every
 * captured frame to each peer that connects, in QEMU's stream framing (4-byte big-endian length,
 * then the frame), so an analysis VM attaches with
 * `-netdev stream,server=off,addr.type=unix,addr.path=PATH`. Raw-IP points get a synthetic
 * Ethernet header (the session adds it). What peers send is discarded. A peer that goes away is
 * forgotten; the next one to connect gets the frames from then on. Past SINK_QUEUE_BYTES queued for
 * a peer, frames are dropped for it (counted when no peer took the frame).
 */
import net from 'node:net';
import { listenAdopted } from '../../plugins/unix-stream/listen.js';
import { createSocketAt, removeOwnSocket, type FileId } from '../../plugins/common/socket-path.js';
import { SINK_QUEUE_BYTES, type Sink } from './sink.js';

/** Readers of one tee socket at once. */
export const MAX_READERS = 4;

export class UnixSink implements Sink {
  readonly format = 'frames';
  onGone: ((why: string, clean: boolean) => void) | null = null;
  private readonly peers = new Set<net.Socket>();
  private closed = false;

  private constructor(
    readonly path: string,
    private readonly server: net.Server,
    private readonly made: { path: string; id: FileId },
    private readonly maxQueue: number,
  ) {
    server.on('connection', (sock) => {
      // Each reader may hold a full queue: a few at once, and never to whoever connects first.
      if (this.closed || this.peers.size >= MAX_READERS) {
        sock.destroy();
        return;
      }
      this.peers.add(sock);
      sock.on('data', () => {});
      sock.on('error', () => sock.destroy());
      sock.on('close', () => this.peers.delete(sock));
    });
    server.on('error', () => {});
  }

  /** Listens at `path`; throws (a plain Error) when the socket cannot be made there. */
  static async listen(path: string, gid: number | undefined, maxQueue = SINK_QUEUE_BYTES): Promise<UnixSink> {
    const made = await createSocketAt(path, gid, listenAdopted, (s) => s.close());
    return new UnixSink(path, made.value, { path: made.path, id: made.id }, maxQueue);
  }

  get idle(): boolean {
    return this.peers.size === 0;
  }

  begin(): void {}

  room(bytes: number): boolean {
    for (const p of this.peers) if (p.writableLength + bytes + 4 <= this.maxQueue) return true;
    return false;
  }

  write(frame: Buffer): boolean {
    let sent = false;
    for (const p of this.peers) {
      // A slow reader loses frames, not its connection: QEMU, as a client, never reconnects.
      if (p.writableLength + frame.length + 4 > this.maxQueue) continue;
      const b = Buffer.allocUnsafe(4 + frame.length);
      b.writeUInt32BE(frame.length, 0);
      frame.copy(b, 4);
      p.write(b);
      sent = true;
    }
    return sent;
  }

  finish(): void {}

  abort(): void {}

  /** Stops listening and disconnects the peers; `remove` (tee removed) also removes the socket, only the one made here. */
  async close(remove: boolean): Promise<void> {
    this.closed = true;
    for (const p of this.peers) p.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    if (remove) removeOwnSocket(this.made.path, this.made.id);
  }

  state(): { state: 'active' | 'waiting'; detail: string } {
    return this.peers.size > 0 ? { state: 'active', detail: `${this.peers.size} reader(s) on ${this.path}` } : { state: 'waiting', detail: `waiting for a reader to connect to ${this.path}` };
  }
}
