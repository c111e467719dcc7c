/**
 * Test peers that talk to the daemon exactly like QEMU 7.2's network backends do.
 *
 * - Stream (`-netdev stream,addr.type=unix,...` and the older `-netdev socket`): every frame is
 *   preceded by its length as a 4-byte big-endian integer, nothing else (net/stream.c:
 *   `uint32_t len = htonl(size)` + the frame in one iovec). A QEMU with `server=on` listens on
 *   the path and serves one client at a time: `QemuStreamServer` (the daemon's `--unix PATH`
 *   connects to it). A QEMU with `server=off` connects: `QemuStreamClient` (to the daemon's
 *   `--unix-listen PATH`).
 * - Datagram (`-netdev dgram,local.type=unix,local.path=A,remote.type=unix,remote.path=B`): one
 *   frame per datagram, no prefix: `QemuDgramPeer`. Node has no AF_UNIX SOCK_DGRAM, so this uses
 *   the project's native addon (openUnixDgram + Device in 'dgram' mode).
 *
 * All peers expose `send(frame)` (framed), `sendRaw(bytes)` (written as-is, to inject broken
 * framing), `nextFrame(pred, timeoutMs)` and an async iterator over received frames.
 */
import { existsSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import { arpReply, icmpEchoReplyFrame, parseArp, parseIcmpEcho } from './frames.js';
import { loadNative, type NativeAddon, type NativeDevice } from '../../plugins/native/index.js';
import { registerCleanup, withTimeout } from './netns.js';

/** Largest frame QEMU's stream receiver accepts (NET_BUFSIZE = 4096 + 65536). */
export const QEMU_NET_BUFSIZE = 4096 + 65536;

/** Prefixes a frame with its 4-byte big-endian length. */
export function qemuFrame(frame: Uint8Array): Buffer {
  const out = Buffer.alloc(4 + frame.length);
  out.writeUInt32BE(frame.length, 0);
  out.set(frame, 4);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Received frames

interface Waiter {
  pred: (f: Buffer) => boolean;
  resolve: (f: Buffer) => void;
}

/**
 * Frames received, in order. `nextFrame(pred)` consumes frames up to and including the first
 * that matches (skipped frames are discarded), or waits for one. Bounded: when more than
 * `limit` frames are queued unread, the oldest are dropped.
 */
export class FrameQueue implements AsyncIterable<Buffer> {
  private readonly queue: Buffer[] = [];
  private readonly waiters: Waiter[] = [];
  /** Frames received since creation. */
  received = 0;
  private ended = false;
  private wake: (() => void) | null = null;

  private readonly listeners = new Set<(f: Buffer) => void>();

  constructor(private readonly limit = 10_000) {}

  /** Calls `listener` for every frame as it arrives (before queueing). Returns an unsubscribe. */
  onFrame(listener: (f: Buffer) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  push(frame: Buffer): void {
    this.received++;
    for (const l of this.listeners) l(frame);
    for (let i = 0; i < this.waiters.length; i++) {
      const w = this.waiters[i]!;
      if (w.pred(frame)) {
        this.waiters.splice(i, 1);
        // Frames queued before this one were not wanted by this waiter either: drop them.
        this.queue.length = 0;
        w.resolve(frame);
        return;
      }
    }
    this.queue.push(frame);
    if (this.queue.length > this.limit) this.queue.shift();
    this.wakeIterator();
  }

  /** Discards every queued frame. */
  clear(): void {
    this.queue.length = 0;
  }

  /** Frames currently queued (unread). */
  get pending(): readonly Buffer[] {
    return this.queue;
  }

  /** Resolves with the next frame matching `pred` (any frame when omitted). */
  nextFrame(pred: (f: Buffer) => boolean = () => true, timeoutMs = 5_000): Promise<Buffer> {
    const i = this.queue.findIndex(pred);
    if (i >= 0) {
      const f = this.queue[i]!;
      this.queue.splice(0, i + 1);
      return Promise.resolve(f);
    }
    this.queue.length = 0;
    const p = new Promise<Buffer>((resolve) => this.waiters.push({ pred, resolve }));
    return withTimeout(p, timeoutMs, 'a matching frame from the daemon').catch((e: unknown) => {
      const k = this.waiters.findIndex((w) => w.pred === pred);
      if (k >= 0) this.waiters.splice(k, 1);
      throw e;
    });
  }

  /** Resolves true if a frame matching `pred` arrives within `ms`, false otherwise. */
  async sees(pred: (f: Buffer) => boolean, ms: number): Promise<boolean> {
    try {
      await this.nextFrame(pred, ms);
      return true;
    } catch {
      return false;
    }
  }

  /** Ends iterators once the queue is drained (the peer closed). */
  end(): void {
    this.ended = true;
    this.wakeIterator();
  }

  private wakeIterator(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  /**
   * Every frame in arrival order until `end()`. Use either the iterator or `nextFrame`, not
   * both at once: a frame handed to a `nextFrame` waiter is not queued for the iterator.
   */
  async *[Symbol.asyncIterator](): AsyncIterator<Buffer> {
    for (;;) {
      if (this.queue.length > 0) {
        yield this.queue.shift()!;
        continue;
      }
      if (this.ended) return;
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
    }
  }
}

/** Incremental parser of the length-prefixed stream. */
class StreamDecoder {
  private buf: Buffer = Buffer.alloc(0);

  /** Feeds bytes; returns complete frames. Throws on a length QEMU itself would reject. */
  push(chunk: Buffer): Buffer[] {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    const out: Buffer[] = [];
    while (this.buf.length >= 4) {
      const len = this.buf.readUInt32BE(0);
      if (len > QEMU_NET_BUFSIZE) throw new Error(`daemon sent a frame length of ${len} (QEMU would disconnect)`);
      if (this.buf.length < 4 + len) break;
      out.push(Buffer.from(this.buf.subarray(4, 4 + len)));
      this.buf = this.buf.subarray(4 + len);
    }
    return out;
  }

  reset(): void {
    this.buf = Buffer.alloc(0);
  }
}

// ---------------------------------------------------------------------------------------------
// Stream peers

abstract class StreamPeer {
  readonly frames = new FrameQueue();
  protected sock: net.Socket | null = null;
  private readonly decoder = new StreamDecoder();
  /** Connections made/accepted so far. */
  connections = 0;
  /** Errors seen on the stream (e.g. a bad length from the daemon). */
  readonly errors: string[] = [];
  private closeWaiters: Array<() => void> = [];
  private connectWaiters: Array<{ after: number; resolve: () => void }> = [];

  get connected(): boolean {
    return this.sock !== null && !this.sock.destroyed;
  }

  protected adopt(sock: net.Socket): void {
    if (this.sock && !this.sock.destroyed) this.sock.destroy();
    this.sock = sock;
    this.connections++;
    this.decoder.reset();
    sock.on('data', (chunk: Buffer) => {
      if (this.sock !== sock) return;
      try {
        for (const f of this.decoder.push(chunk)) this.frames.push(f);
      } catch (e) {
        this.errors.push((e as Error).message);
        sock.destroy();
      }
    });
    sock.on('error', (e) => this.errors.push(e.message));
    sock.on('close', () => {
      if (this.sock === sock) this.sock = null;
      const ws = this.closeWaiters;
      this.closeWaiters = [];
      for (const w of ws) w();
    });
    const n = this.connections;
    this.connectWaiters = this.connectWaiters.filter((w) => {
      if (n > w.after) {
        w.resolve();
        return false;
      }
      return true;
    });
  }

  /** Sends one frame with QEMU's length prefix. Throws when not connected. */
  send(frame: Uint8Array): void {
    this.sendRaw(qemuFrame(frame));
  }

  /** Writes bytes as they are (broken framing, partial prefixes...). */
  sendRaw(bytes: Uint8Array): void {
    if (!this.sock || this.sock.destroyed) throw new Error('stream peer: not connected');
    this.sock.write(bytes);
  }

  nextFrame(pred?: (f: Buffer) => boolean, timeoutMs?: number): Promise<Buffer> {
    return this.frames.nextFrame(pred, timeoutMs);
  }

  [Symbol.asyncIterator](): AsyncIterator<Buffer> {
    return this.frames[Symbol.asyncIterator]();
  }

  /** Resolves when the current connection is closed (by either side). */
  waitDisconnected(timeoutMs = 5_000): Promise<void> {
    if (!this.connected) return Promise.resolve();
    return withTimeout(new Promise<void>((r) => this.closeWaiters.push(r)), timeoutMs, 'the stream to close');
  }

  /** Resolves once a connection is up (immediately if one is). */
  waitConnected(timeoutMs = 10_000): Promise<void> {
    if (this.connected) return Promise.resolve();
    return this.waitConnection(this.connections, timeoutMs);
  }

  /**
   * Resolves when a connection newer than number `after` is up: take `peer.connections` before
   * provoking a reconnect, then await this.
   */
  waitConnection(after: number, timeoutMs = 10_000): Promise<void> {
    if (this.connections > after && this.connected) return Promise.resolve();
    return withTimeout(
      new Promise<void>((resolve) => this.connectWaiters.push({ after, resolve })),
      timeoutMs,
      `connection #${after + 1} to be made`,
    );
  }

  /** Drops the current connection (like QEMU's NIC being unplugged). */
  disconnect(): void {
    this.sock?.destroy();
  }
}

/**
 * QEMU `-netdev stream,server=on,addr.type=unix,addr.path=PATH`: listens, the daemon connects
 * (`mvnet vm attach --unix PATH`). One client at a time; a newer connection replaces the older.
 */
export class QemuStreamServer extends StreamPeer {
  private server: net.Server | null = null;
  private readonly unregister: () => Promise<void>;

  private constructor(readonly path: string) {
    super();
    this.unregister = registerCleanup(
      `qemu stream server ${path}`,
      async () => this.closeNow(),
      () => this.closeNow(),
    );
  }

  /** Starts listening on `path` (a stale socket file is replaced). */
  static async listen(path: string): Promise<QemuStreamServer> {
    const peer = new QemuStreamServer(path);
    await peer.open();
    return peer;
  }

  private async open(): Promise<void> {
    if (existsSync(this.path)) unlinkSync(this.path);
    const server = net.createServer((sock) => this.adopt(sock));
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.path, () => {
        server.off('error', reject);
        resolve();
      });
    });
  }

  /** Stops listening, drops the connection and removes the socket file (QEMU quitting). */
  async close(): Promise<void> {
    await this.unregister();
  }

  /** Like a restarted QEMU: stop listening and drop the connection, then listen on the same path again. */
  async restart(): Promise<void> {
    this.shutdown();
    await this.open();
  }

  private shutdown(): void {
    this.sock?.destroy();
    this.server?.close();
    this.server = null;
    try {
      unlinkSync(this.path);
    } catch {
      // already gone
    }
  }

  private closeNow(): void {
    this.shutdown();
    this.frames.end();
  }
}

/**
 * QEMU `-netdev stream,server=off,addr.type=unix,addr.path=PATH`: connects to the daemon's
 * listening socket (`mvnet vm attach --unix-listen PATH`).
 */
export class QemuStreamClient extends StreamPeer {
  private readonly unregister: () => Promise<void>;
  private closed = false;

  private constructor(readonly path: string) {
    super();
    this.unregister = registerCleanup(
      `qemu stream client ${path}`,
      async () => this.closeNow(),
      () => this.closeNow(),
    );
  }

  /**
   * Connects, retrying while the socket does not exist yet or refuses (the daemon may still be
   * creating it), until `timeoutMs`.
   */
  static async connect(path: string, timeoutMs = 10_000): Promise<QemuStreamClient> {
    const peer = new QemuStreamClient(path);
    await peer.reconnect(timeoutMs);
    return peer;
  }

  /** (Re)connects to the same path, like QEMU with `reconnect=1`. */
  async reconnect(timeoutMs = 10_000): Promise<void> {
    if (this.closed) throw new Error('stream client closed');
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        const sock = await new Promise<net.Socket>((resolve, reject) => {
          const s = net.createConnection({ path: this.path });
          s.once('connect', () => {
            s.off('error', reject);
            resolve(s);
          });
          s.once('error', reject);
        });
        this.adopt(sock);
        return;
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if ((code !== 'ENOENT' && code !== 'ECONNREFUSED') || Date.now() >= deadline) {
          throw new Error(`connect ${this.path}: ${(e as Error).message}`);
        }
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  }

  async close(): Promise<void> {
    await this.unregister();
  }

  private closeNow(): void {
    this.closed = true;
    this.sock?.destroy();
    this.frames.end();
  }
}

/**
 * QEMU `-netdev stream,addr.type=fd,addr.str=N` (or `-netdev socket,fd=N`): one end of a
 * connected stream (a socketpair) whose other end the daemon holds (`mvnet vm attach --fd N`).
 */
export class QemuFdPeer extends StreamPeer {
  private readonly unregister: () => Promise<void>;

  private constructor(sock: net.Socket) {
    super();
    this.adopt(sock);
    this.unregister = registerCleanup(
      'qemu fd peer',
      async () => this.closeNow(),
      () => this.closeNow(),
    );
  }

  /** Takes over `sock`, our end of the pair. */
  static adopt(sock: net.Socket): QemuFdPeer {
    return new QemuFdPeer(sock);
  }

  async close(): Promise<void> {
    await this.unregister();
  }

  private closeNow(): void {
    this.sock?.destroy();
    this.frames.end();
  }
}

// ---------------------------------------------------------------------------------------------
// Datagram peer (native addon)

/**
 * QEMU `-netdev dgram,local.type=unix,local.path=LOCAL,remote.type=unix,remote.path=REMOTE`:
 * binds LOCAL, sends each frame as one datagram to REMOTE (the daemon's `--dgram PATH`).
 * Attach the VM with `--dgram REMOTE --dgram-peer LOCAL` (or without the peer: the daemon then
 * learns it from our first datagram).
 */
export class QemuDgramPeer {
  readonly frames = new FrameQueue();
  private readonly dev: NativeDevice;
  private readonly unregister: () => Promise<void>;
  readonly errors: string[] = [];

  private constructor(
    readonly localPath: string,
    readonly remotePath: string,
    addon: NativeAddon,
    maxFrame: number,
  ) {
    const { fd } = addon.openUnixDgram({ path: localPath });
    const dev: NativeDevice = new addon.Device({
      fd,
      mode: 'dgram',
      maxFrame,
      batch: 32,
      queueFrames: 1024,
      queueBytes: 4 * 1024 * 1024,
      onRead: (count) => {
        for (let i = 0; i < count; i++) {
          const start = i * maxFrame;
          this.frames.push(Buffer.from(dev.buffer.subarray(start, start + dev.lengths[i]!)));
        }
      },
      onError: (message) => this.errors.push(message),
    });
    this.dev = dev;
    dev.setPeer(remotePath);
    dev.start();
    this.unregister = registerCleanup(
      `qemu dgram peer ${localPath}`,
      async () => this.closeNow(),
      () => this.closeNow(),
    );
  }

  /** Binds `localPath` and sends to `remotePath`. */
  static async open(localPath: string, remotePath: string, maxFrame = QEMU_NET_BUFSIZE): Promise<QemuDgramPeer> {
    return new QemuDgramPeer(localPath, remotePath, loadNative(), maxFrame);
  }

  /** One frame, one datagram. */
  send(frame: Uint8Array): void {
    this.sendRaw(frame);
  }

  /** Sends bytes as one datagram (runts, garbage). Throws if the addon refused it outright. */
  sendRaw(bytes: Uint8Array): void {
    const buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes);
    const n = this.dev.write([buf], 1);
    if (n !== 1) throw new Error(`dgram peer: datagram to ${this.remotePath} not accepted`);
  }

  nextFrame(pred?: (f: Buffer) => boolean, timeoutMs?: number): Promise<Buffer> {
    return this.frames.nextFrame(pred, timeoutMs);
  }

  [Symbol.asyncIterator](): AsyncIterator<Buffer> {
    return this.frames[Symbol.asyncIterator]();
  }

  async close(): Promise<void> {
    await this.unregister();
  }

  private closeNow(): void {
    this.dev.close();
    try {
      unlinkSync(this.localPath);
    } catch {
      // gone
    }
    this.frames.end();
  }
}

// ---------------------------------------------------------------------------------------------
// A minimal guest

/** What `actAsHost` needs of a peer. */
export interface FramePeer {
  readonly frames: FrameQueue;
  send(frame: Uint8Array): void;
}

/**
 * Makes `peer` behave like a tiny guest OS with `mac`/`ip`: it answers ARP requests for `ip`
 * and ICMP echo requests to `ip`, so a namespace can `ping` it. Frames are still queued for
 * `nextFrame`. Returns a function that stops answering.
 */
export function actAsHost(peer: FramePeer, host: { mac: string; ip: string }): () => void {
  return peer.frames.onFrame((f) => {
    try {
      const arp = parseArp(f);
      if (arp && arp.op === 1 && arp.targetIp === host.ip) {
        peer.send(arpReply({ srcMac: host.mac, srcIp: host.ip, dstMac: arp.senderMac, dstIp: arp.senderIp }));
        return;
      }
      const echo = parseIcmpEcho(f);
      if (echo && echo.type === 8 && echo.ip.dst === host.ip && echo.ip.eth.dst === host.mac) {
        peer.send(
          icmpEchoReplyFrame({
            srcMac: host.mac,
            dstMac: echo.ip.eth.src,
            srcIp: host.ip,
            dstIp: echo.ip.src,
            id: echo.id,
            seq: echo.seq,
            data: echo.data,
          }),
        );
      }
    } catch {
      // not connected right now: a real guest would drop it too
    }
  });
}
